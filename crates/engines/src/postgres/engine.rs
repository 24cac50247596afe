//! The `postgres` engine on the command line: the cluster's identity at stanza-create, a
//! backup of the running cluster, a restore with its recovery target (refused when the WAL
//! archive cannot get replay there), the WAL archive, its checks in `verify` and the reachable
//! window of each backup in `info`.

use super::archive::WalArchive;
use super::choose::{choose_backup, reach_for};
use super::identity::Identity;
use super::reach::{self, Reach, backup_position};
use super::restore::{self as pg_restore, Recovery, RestoreOptions};
use super::selective;
use super::{backup as pg_backup, options, verify};
use crate::engine::{
    BackupFacts, BackupOutcome, BackupRequest, Command, Counted, Engine, LogArchive, Options,
    RestoreRequest, VerifyExtras,
};
use async_trait::async_trait;
use cairn_repo::catalog::{BackupRecord, Catalog};
use cairn_repo::pipeline::VanishPolicy;
use cairn_repo::{BackupLabel, BackupType, Error, Result, Stanza};
use serde_json::{Value, json};
use std::collections::BTreeMap;

#[derive(Debug)]
pub struct Postgres;

/// Tablespaces are symlinks in `pg_tblspc`, restored to their own or mapped locations.
pub const TABLESPACE_LINKS: &[&[u8]] = &[b"pg_tblspc"];

#[async_trait]
impl Engine for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn identity(&self, opts: &dyn Options) -> Result<BTreeMap<String, String>> {
        Ok(Identity::from_data_dir(&options::pg_path(opts)?)?.to_meta())
    }

    async fn upgrade_identity(
        &self,
        stanza: &Stanza,
        opts: &dyn Options,
    ) -> Result<Option<BTreeMap<String, String>>> {
        super::upgrade::upgrade_identity(stanza, &options::pg_path(opts)?).await
    }

    fn refuse_foreign(&self, command: Command, opts: &dyn Options) -> Result<()> {
        if command != Command::Restore {
            return Ok(());
        }
        if !opts.list("tablespace-map")?.is_empty() {
            return Err(Error::Usage(
                "--tablespace-map is for postgres stanzas".into(),
            ));
        }
        if options::recovery_given(opts)? || opts.flag("delta")? {
            return Err(Error::Usage(
                "--type, --target, --target-action, --target-timeline, --archive-mode, --ignore-archive-gap and --delta are for postgres stanzas; restore a files or stream stanza with --dest".into(),
            ));
        }
        Ok(())
    }

    fn refuse_delete(&self, opts: &dyn Options) -> Result<()> {
        if let Some(pg_path) = opts.path("pg-path")?
            && pg_path.join("postmaster.pid").exists()
        {
            return Err(Error::Usage(format!(
                "the cluster at pg-path {} is running (it has a postmaster.pid) and may still archive into this stanza; stop it first, or give --force if it archives elsewhere now",
                pg_path.display()
            )));
        }
        Ok(())
    }

    async fn backup(&self, stanza: &Stanza, req: BackupRequest<'_>) -> Result<BackupOutcome> {
        // A relation file dropped while the backup runs is normal for a live cluster: WAL
        // replay recreates what it needs.
        if req.options.flag("allow-empty")? {
            return Err(Error::Usage(
                "--allow-empty is for files and stream stanzas; a PostgreSQL cluster is never empty".into(),
            ));
        }
        let mut req = req;
        full_after_upgrade(stanza, &mut req).await?;
        let opts = req.job_options(VanishPolicy::Skip);
        let pg = options::backup_options(req.options)?;
        let record = pg_backup::backup(stanza, opts, &pg, (req.progress)("backup")).await?;
        let mut warnings = Vec::new();
        if record
            .meta
            .get("checksum-page-errors")
            .is_some_and(|n| n != "0")
        {
            warnings.push(format!(
                "backup {} found invalid page checksums: {}",
                record.label,
                record
                    .meta
                    .get("checksum-page-error-list")
                    .map(String::as_str)
                    .unwrap_or("")
            ));
        }
        Ok(BackupOutcome {
            record,
            warnings,
            completed_with_warnings: false,
        })
    }

    async fn restore(&self, stanza: &Stanza, req: RestoreRequest<'_>) -> Result<()> {
        let opts = req.options;
        let tablespace_map = options::tablespace_map(opts)?;
        let links = options::links(opts)?;
        let recovery = options::recovery(opts)?;
        let record = choose_backup(req.catalog, req.set.as_ref(), &recovery)?;
        let own = Identity::of_backup(&stanza.info.meta, &record.meta)?;
        if own != Identity::from_meta(&stanza.info.meta)? {
            tracing::warn!(
                "backup {} is of database system {} (PostgreSQL {}), before the stanza's upgrade: recovery from it goes no further than that cluster's archived WAL, so a target after that cluster stopped cannot be reached",
                record.label,
                own.system_id,
                own.version
            );
        }
        check_reach(stanza, &record, &recovery, opts.flag("ignore-archive-gap")?).await?;
        let dest = match req.dest {
            Some(d) if d.as_os_str() == "-" => {
                return Err(Error::Usage(
                    "--dest - (standard output) is for stream stanzas; a postgres restore needs a directory: give --dest DIR (or --pg-path)".into(),
                ));
            }
            Some(d) => d,
            None => options::pg_path(opts)?,
        };
        tracing::info!(
            "restoring backup {} ({}, ended {}) into {}; recovery starts from WAL {} (LSN {}, timeline {})",
            record.label,
            record.kind,
            cairn_repo::time::display(record.stop),
            dest.display(),
            record.meta.get("wal-start").map_or("?", String::as_str),
            record.meta.get("start-lsn").map_or("?", String::as_str),
            record.meta.get("timeline").map_or("?", String::as_str),
        );
        let (include, exclude) = (opts.list("db-include")?, opts.list("db-exclude")?);
        let delta = opts.flag("delta")?;
        let mut entries = stanza.resolved(req.catalog, &record.label).await?;
        if !include.is_empty() || !exclude.is_empty() {
            let databases = super::backup::recorded_databases(&record.meta);
            let zeroed = selective::zeroed_databases(&databases, &entries, &include, &exclude)?;
            if !zeroed.is_empty() {
                tracing::info!(
                    "databases left out (their files restored zeroed, to be dropped): {}",
                    zeroed
                        .iter()
                        .map(|oid| match databases.iter().find(|(o, _)| o == oid) {
                            Some((_, name)) => format!("{name} ({oid})"),
                            None => oid.to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            pg_restore::check_destination(&dest)?;
            if delta {
                pg_restore::check_delta_destination(&dest)?;
            }
            entries = selective::zero_databases(entries, &zeroed, &dest, delta)?;
        }
        let index = stanza.index().await?;
        let restore_options = RestoreOptions {
            dest: dest.clone(),
            delta,
            process_max: req.process_max,
            recovery: recovery.clone(),
            tablespace_map,
            links,
        };
        pg_restore::restore(
            stanza,
            &index,
            &record,
            &entries,
            &restore_options,
            req.progress,
        )
        .await?;
        tracing::info!(
            "restored backup {} to {}; start PostgreSQL there to recover{}",
            record.label,
            dest.display(),
            match &recovery.target {
                Some(t) => format!(" to {t}"),
                None => String::new(),
            }
        );
        Ok(())
    }

    fn links_restored_through(&self) -> &'static [&'static [u8]] {
        TABLESPACE_LINKS
    }

    fn log_archive(&self) -> Option<&dyn LogArchive> {
        Some(&WalArchive)
    }

    async fn verify_extras(
        &self,
        stanza: &Stanza,
        only: Option<&BackupLabel>,
    ) -> Result<Option<VerifyExtras>> {
        let catalog = stanza.catalog().await?;
        let wal = verify::verify_wal(stanza, &catalog, only).await?;
        Ok(Some(VerifyExtras {
            problems: wal.problems,
            unreadable: wal.unreadable,
            counted: vec![Counted {
                count: wal.files,
                what: "WAL file(s)",
                bytes: wal.bytes,
            }],
        }))
    }

    async fn info_facts(
        &self,
        stanza: &Stanza,
        catalog: &Catalog,
    ) -> BTreeMap<String, BackupFacts> {
        let mut facts = BTreeMap::new();
        // One view of the archive per identity the backups were taken from.
        let mut views: BTreeMap<String, reach::ArchiveView> = BTreeMap::new();
        for b in &catalog.backups {
            let Ok(identity) = Identity::of_backup(&stanza.info.meta, &b.meta) else {
                return facts;
            };
            let id = identity.archive_id();
            if !views.contains_key(&id) {
                match reach::load(stanza, &identity).await {
                    Ok(view) => {
                        views.insert(id.clone(), view);
                    }
                    Err(e) => {
                        tracing::warn!("cannot follow the WAL archive: {e}");
                        return facts;
                    }
                }
            }
            let Some(view) = views.get(&id) else {
                continue;
            };
            if let Some((tli, start, stop)) = backup_position(&b.meta) {
                let r = view.reach(tli, start, stop, None);
                facts.insert(
                    b.label.to_string(),
                    BackupFacts {
                        recovery: recovery_json(&r),
                        lines: vec![("recovery".to_string(), recovery_text(&r))],
                    },
                );
            }
        }
        facts
    }
}

/// A diff or incr whose parent was taken from the stanza's identity before a `stanza-upgrade`
/// (another database system: its pages mean nothing to the new one) becomes a full, as in
/// pgBackRest.
async fn full_after_upgrade(stanza: &Stanza, req: &mut BackupRequest<'_>) -> Result<()> {
    if req.kind == BackupType::Full {
        return Ok(());
    }
    let catalog = stanza.catalog().await?;
    let parent = match req.kind {
        BackupType::Diff => catalog.latest_full(),
        _ => catalog.latest(),
    };
    let current = Identity::from_meta(&stanza.info.meta)?;
    if let Some(p) = parent
        && Identity::of_backup(&stanza.info.meta, &p.meta)? != current
    {
        tracing::warn!(
            "the newest backup {} is of the cluster before stanza-upgrade; this {} backup is taken as full",
            p.label,
            req.kind
        );
        req.kind = BackupType::Full;
    }
    Ok(())
}

/// Refuse (before anything is written) a target that replay cannot reach because of a hole
/// in the WAL archive, unless `--ignore-archive-gap`.
async fn check_reach(
    stanza: &Stanza,
    record: &BackupRecord,
    recovery: &Recovery,
    ignore_gap: bool,
) -> Result<()> {
    // The WAL of the backup's own cluster (before a stanza-upgrade, an older identity's).
    let identity = Identity::of_backup(&stanza.info.meta, &record.meta)?;
    let view = reach::load(stanza, &identity).await?;
    let Some((reach, refusal)) =
        reach_for(&view, record, recovery).map_err(|e| Error::Usage(e.to_string()))?
    else {
        return Ok(());
    };
    match refusal {
        Some(why) if ignore_gap => {
            tracing::warn!("--ignore-archive-gap: {why}");
        }
        Some(why) => return Err(Error::Invalid(format!("refusing to restore: {why}"))),
        None => tracing::info!(
            "WAL replay from backup {} can reach {} (timeline {})",
            record.label,
            reach.until.as_deref().unwrap_or("no archived segment"),
            reach.timeline
        ),
    }
    Ok(())
}

/// A backup's reachable window: `reachable-until` is the last segment replay can read, `gap`
/// the hole that stops it (null when replay reaches the end of the archive).
fn recovery_json(r: &Reach) -> Value {
    json!({
        "timeline": r.timeline,
        "reachable-until": r.until,
        "gap": r.first_gap().map(|g| json!({
            "first-missing": g.first,
            "last-missing": g.last,
            "stop-lsn": g.stop_lsn.to_string(),
        })),
    })
}

fn recovery_text(r: &Reach) -> String {
    let until = r.until.as_deref().unwrap_or("no segment");
    match r.first_gap() {
        None => format!(
            "to the end of the archive, WAL {until} (timeline {})",
            r.timeline
        ),
        Some(g) => format!(
            "only up to {} (WAL {until}, timeline {}): segment {} is missing from the archive; `cairn verify` lists every hole",
            g.stop_lsn, r.timeline, g.first
        ),
    }
}
