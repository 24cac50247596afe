//! `expire`: apply the retention (or remove `--set` and its dependents), then collect what no
//! kept backup needs: packs (two-step, see docs/format.md "Condemned packs") and WAL (the
//! engine's log archive). `backup` calls `after_backup` to expire once it succeeded.

use super::{engine_of, open_stanza};
use crate::RetentionArgs;
use crate::exit::usage;
use crate::info::human;
use crate::settings::Settings;
use anyhow::Result;
use cairn_repo::BackupLabel;
use cairn_repo::BackupType;
use cairn_repo::expire::{self, ArchiveRetention, Selection};
use cairn_repo::gc::GcOptions;
use cairn_repo::retention::{FullType, Policy};
use std::process::ExitCode;

/// Default `--gc-margin`, in seconds.
const DEFAULT_GC_MARGIN: i64 = 3600;

/// The retention from flags, environment and config file; None when none is set.
fn policy(s: &Settings, r: &RetentionArgs) -> Result<Option<Policy>> {
    let count = |flag: Option<u32>, key: &str| -> Result<Option<u32>> {
        match s.integer(flag.map(u64::from), key)? {
            None => Ok(None),
            Some(n) if (1..=9_999_999).contains(&n) => Ok(Some(n as u32)),
            Some(n) => Err(usage(format!(
                "--{key} {n} is out of range: give 1 or more (leave it unset to keep every backup)"
            ))),
        }
    };
    let full = count(r.retention_full, "retention-full")?;
    let diff = count(r.retention_diff, "retention-diff")?;
    let full_type = match s
        .string(&r.retention_full_type, "retention-full-type")?
        .as_deref()
    {
        None | Some("count") => FullType::Count,
        Some("time") => FullType::Time,
        Some(other) => {
            return Err(usage(format!(
                "--retention-full-type '{other}': use count or time"
            )));
        }
    };
    let p = Policy {
        full,
        full_type,
        diff,
    };
    Ok((!p.is_empty()).then_some(p))
}

/// `--retention-archive` and its type, if set.
fn archive_retention(s: &Settings, r: &RetentionArgs) -> Result<Option<ArchiveRetention>> {
    let count = match s.integer(r.retention_archive.map(u64::from), "retention-archive")? {
        None => return Ok(None),
        Some(n) if (1..=9_999_999).contains(&n) => n as u32,
        Some(n) => {
            return Err(usage(format!(
                "--retention-archive {n} is out of range: give 1 or more"
            )));
        }
    };
    let kind = match s
        .string(&r.retention_archive_type, "retention-archive-type")?
        .as_deref()
    {
        None => BackupType::Full,
        Some(t) => BackupType::parse(t).map_err(|_| {
            usage(format!(
                "--retention-archive-type '{t}': use full, diff or incr"
            ))
        })?,
    };
    Ok(Some(ArchiveRetention { count, kind }))
}

fn margin(s: &Settings, r: &RetentionArgs) -> Result<GcOptions> {
    let margin = match s.integer(r.gc_margin, "gc-margin")? {
        None => DEFAULT_GC_MARGIN,
        Some(n) if (0..=30 * 86_400).contains(&n) => n,
        Some(n) => {
            return Err(usage(format!(
                "--gc-margin {n} is out of range: use 0 to 2592000 seconds"
            )));
        }
    };
    let repack_garbage_pct = match s.integer(r.repack_threshold, "repack-threshold")? {
        None => cairn_repo::gc::DEFAULT_REPACK_GARBAGE_PCT,
        Some(n) if (1..=100).contains(&n) => n as u8,
        Some(n) => {
            return Err(usage(format!(
                "--repack-threshold {n} is out of range: give the percentage of garbage (1 to 100; 100 never repacks)"
            )));
        }
    };
    Ok(GcOptions {
        margin,
        repack_garbage_pct,
    })
}

pub(crate) async fn expire_cmd(
    s: &Settings,
    set: Option<String>,
    dry_run: bool,
    r: &RetentionArgs,
) -> Result<ExitCode> {
    let dry_run = s.flag(dry_run, "dry-run")?;
    let selection = match set {
        Some(label) => {
            let label = BackupLabel::parse(&label).map_err(|e| usage(format!("--set: {e}")))?;
            if policy(s, r)?.is_some() {
                tracing::warn!(
                    "expire --set removes {label} and the backups that depend on it; the retention settings are not applied in this run"
                );
            }
            Selection::Set(label)
        }
        None => match policy(s, r)? {
            Some(p) => Selection::Policy(p),
            None => {
                return Err(usage(
                    "nothing to expire by: give --retention-full (and/or --retention-diff), set retention-full in the config file, or name a backup with --set",
                ));
            }
        },
    };
    let archive = archive_retention(s, r)?;
    run(s, &selection, archive, margin(s, r)?, dry_run).await?;
    Ok(ExitCode::SUCCESS)
}

/// After a successful backup: expire when a retention is set and --no-expire is not given. A
/// failed expire does not undo the backup (it is listed): the backup ends with warnings.
pub(crate) async fn after_backup(
    s: &Settings,
    r: &RetentionArgs,
    no_expire: bool,
    code: ExitCode,
) -> Result<ExitCode> {
    let Some(p) = policy(s, r)? else {
        return Ok(code);
    };
    if no_expire {
        return Ok(code);
    }
    let archive = archive_retention(s, r)?;
    match run(s, &Selection::Policy(p), archive, margin(s, r)?, false).await {
        Ok(()) => Ok(code),
        Err(e) => {
            tracing::warn!("the backup is listed, but the expire after it failed: {e:#}");
            Ok(ExitCode::from(crate::exit::WARNINGS))
        }
    }
}

async fn run(
    s: &Settings,
    selection: &Selection,
    archive: Option<ArchiveRetention>,
    margin: GcOptions,
    dry_run: bool,
) -> Result<()> {
    let stanza = open_stanza(s).await?;
    let engine = engine_of(&stanza)?;
    let log = match engine.log_archive() {
        Some(a) => Some((a.pruner(), archive)),
        None if archive.is_some() => {
            return Err(usage(format!(
                "--retention-archive is for stanzas with a log archive (postgres); stanza '{}' is a {} stanza",
                stanza.name(),
                stanza.info.engine
            )));
        }
        None => None,
    };
    if dry_run
        && let cairn_repo::lock::LockState::Held(h) =
            cairn_repo::lock::Lock::inspect(stanza.store(), &stanza.lock_prefix()?).await?
    {
        // The dry run takes no lock: what a running backup is writing is not listed yet.
        tracing::warn!(
            "stanza '{}' is locked by {} (pid {} on {}): packs it is writing count as garbage in this dry run (a real expire refuses until it ends)",
            stanza.name(),
            h.command,
            h.pid,
            h.host
        );
    }
    let report = expire::expire(&stanza, selection, log, margin, dry_run).await?;
    let would = if dry_run { "would expire" } else { "expired" };
    for e in &report.expired {
        tracing::info!("{would} backup {} ({})", e.label, e.reason);
    }
    if report.expired.is_empty() {
        tracing::info!("no backup to expire");
    }
    for l in &report.unlisted {
        let verb = if dry_run { "would remove" } else { "removed" };
        tracing::info!(
            "{verb} the manifest of {l}, which the catalog does not list (an interrupted backup or expire)"
        );
    }
    let g = &report.gc;
    let w = &report.log;
    for (label, _, _) in &w.marks {
        tracing::info!(
            "backup {label} keeps only the WAL that makes it consistent (--retention-archive): restore it with --type immediate or a target before its end"
        );
    }
    let (freed, wal_note) = if w.delete.is_empty() {
        (g.deleted_bytes, String::new())
    } else {
        (
            g.deleted_bytes + w.bytes,
            format!(
                ", {} WAL file(s) ({}) not needed from {} on",
                w.delete.len(),
                human(w.bytes),
                w.kept_from.as_deref().unwrap_or("?")
            ),
        )
    };
    let verb = if dry_run { "would free" } else { "freed" };
    tracing::info!(
        "expire: {} backup(s); {verb} {}: {} pack(s) ({}){wal_note}; {} pack(s) newly condemned, {} waiting for their margin ({}), {} live",
        report.expired.len(),
        human(freed),
        g.deleted_packs,
        human(g.deleted_bytes),
        g.condemned,
        g.waiting,
        human(g.waiting_bytes),
        g.live_packs,
    );
    if g.repacked > 0 {
        let into = if dry_run {
            "would copy the {} they hold that kept backups need into new packs".to_string()
        } else {
            format!(
                "copied the {{}} they hold that kept backups need into {} new pack(s)",
                g.new_packs
            )
        };
        tracing::info!(
            "{} pack(s) at least {}% garbage: {}; the old ones go as dead ones do",
            g.repacked,
            margin.repack_garbage_pct,
            into.replace("{}", &human(g.repacked_bytes)),
        );
    }
    if g.unknown_packs > 0 {
        tracing::warn!(
            "{} pack(s) that no index segment names have a trailer that cannot be read: kept; `cairn verify` reports them",
            g.unknown_packs
        );
    }
    Ok(())
}
