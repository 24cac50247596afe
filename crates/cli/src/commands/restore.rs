//! `restore`: a backup (and for PostgreSQL its recovery settings) back onto disk.

use super::{engine_of, open_stanza};
use crate::exit::usage;
use crate::progress::Reporter;
use crate::settings::Settings;
use anyhow::{Context, Result};
use cairn_engines::postgres::choose as pg_choose;
use cairn_engines::postgres::identity::Identity;
use cairn_engines::postgres::restore::{self as pg_restore, Recovery, RestoreOptions, TargetType};
use cairn_engines::{EngineKind, files, stream};
use cairn_repo::pipeline::Progress;
use cairn_repo::storage::s3::DEFAULT_IO_TIMEOUT;
use cairn_repo::{BackupLabel, Stanza, manifest};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

pub(crate) struct RestoreArgs {
    pub(crate) tablespace_map: Vec<(String, PathBuf)>,
    pub(crate) set: Option<String>,
    pub(crate) dest: Option<PathBuf>,
    pub(crate) kind: Option<String>,
    pub(crate) target: Option<String>,
    pub(crate) target_action: Option<String>,
    pub(crate) target_timeline: Option<String>,
    pub(crate) delta: bool,
    pub(crate) archive_mode: Option<String>,
    pub(crate) ignore_archive_gap: bool,
    /// Stream: the consumer to feed.
    pub(crate) command: Vec<String>,
}

/// The `restore_command` a restored cluster uses: this cairn, this repository and stanza.
/// `s` as one word of restore_command, which PostgreSQL hands to the shell after expanding
/// `%` escapes: as is when it is plain, else in double quotes (which survive
/// postgresql.auto.conf's single-quoted string), with `%` doubled.
pub(crate) fn shell_word(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        return s.to_string();
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' | '$' | '`' => out.extend(['\\', c]),
            '%' => out.push_str("%%"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

pub(crate) fn restore_command(s: &Settings, stanza: &Stanza) -> Result<String> {
    let exe = std::env::current_exe().context("cannot find the cairn executable's path")?;
    let repo = s.repo.as_deref().unwrap_or_default();
    let repo = std::fs::canonicalize(repo)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| repo.to_string());
    let mut cmd = format!(
        "{} --repo {} --stanza {}",
        shell_word(&exe.display().to_string()),
        shell_word(&repo),
        stanza.name()
    );
    if repo.starts_with("s3://") {
        if let Some(e) = s.string(&s.s3.endpoint, "s3-endpoint")? {
            cmd.push_str(&format!(" --s3-endpoint {}", shell_word(&e)));
        }
        if let Some(r) = s.string(&s.s3.region, "s3-region")? {
            cmd.push_str(&format!(" --s3-region {}", shell_word(&r)));
        }
        if s.flag(s.s3.path_style, "s3-path-style")? {
            cmd.push_str(" --s3-path-style");
        }
        if let Some(ca) = s.path(&s.s3.ca_file, "s3-ca-file")? {
            let ca = std::fs::canonicalize(&ca).unwrap_or(ca);
            cmd.push_str(&format!(
                " --s3-ca-file {}",
                shell_word(&ca.display().to_string())
            ));
        }
    }
    if s.io_timeout != DEFAULT_IO_TIMEOUT {
        cmd.push_str(&format!(" --io-timeout {}", s.io_timeout.as_secs()));
    }
    if let Some(c) = &s.config_path {
        cmd.push_str(&format!(
            " --config {}",
            shell_word(&c.display().to_string())
        ));
    }
    cmd.push_str(" archive-get %f \"%p\"");
    Ok(cmd)
}

/// Refuse (before anything is written) a target that replay cannot reach because of a hole
/// in the WAL archive, unless `--ignore-archive-gap`.
async fn check_reach(
    stanza: &Stanza,
    record: &cairn_repo::catalog::BackupRecord,
    recovery: &Recovery,
    ignore_gap: bool,
) -> Result<()> {
    let identity = Identity::from_meta(&stanza.info.meta)?;
    let view = cairn_engines::postgres::reach::load(stanza, &identity).await?;
    let Some((reach, refusal)) =
        pg_choose::reach_for(&view, record, recovery).map_err(|e| usage(e.to_string()))?
    else {
        return Ok(());
    };
    match refusal {
        Some(why) if ignore_gap => {
            tracing::warn!("--ignore-archive-gap: {why}");
        }
        Some(why) => anyhow::bail!("refusing to restore: {why}"),
        None => tracing::info!(
            "WAL replay from backup {} can reach {} (timeline {})",
            record.label,
            reach.until.as_deref().unwrap_or("no archived segment"),
            reach.timeline
        ),
    }
    Ok(())
}

pub(crate) async fn restore(s: &Settings, args: RestoreArgs, quiet: bool) -> Result<ExitCode> {
    let stanza = open_stanza(s).await?;
    let engine = engine_of(&stanza)?;
    if engine != EngineKind::Postgres && !args.tablespace_map.is_empty() {
        return Err(usage("--tablespace-map is for postgres stanzas"));
    }
    let pitr = args.kind.is_some()
        || args.target.is_some()
        || args.target_action.is_some()
        || args.target_timeline.is_some()
        || args.archive_mode.is_some()
        || args.ignore_archive_gap;
    if engine != EngineKind::Stream && !args.command.is_empty() {
        return Err(usage(
            "a command after `--` is for stream stanzas (the consumer of the restored stream)",
        ));
    }
    if engine != EngineKind::Postgres && (pitr || args.delta) {
        return Err(usage(
            "--type, --target, --target-action, --target-timeline, --archive-mode, --ignore-archive-gap and --delta are for postgres stanzas; restore a files or stream stanza with --dest",
        ));
    }
    let catalog = stanza.catalog().await?;
    if catalog.backups.is_empty() {
        return Err(cairn_repo::Error::NotFound(format!(
            "stanza '{}' has no backup to restore",
            stanza.name()
        ))
        .into());
    }
    let set = match &args.set {
        Some(l) => Some(BackupLabel::parse(l).map_err(|e| usage(e.to_string()))?),
        None => None,
    };
    // Progress on stderr never mixes with a stream restored to stdout.
    let progress: Arc<dyn Progress> = Arc::new(Reporter::new("restore", quiet));
    if engine == EngineKind::Postgres {
        let recovery = Recovery {
            kind: TargetType::parse(args.kind.as_deref().unwrap_or("default"))
                .map_err(|e| usage(e.to_string()))?,
            target: args.target.clone(),
            action: args.target_action.clone(),
            timeline: args.target_timeline.clone(),
            restore_command: restore_command(s, &stanza)?,
            archive_off: match args.archive_mode.as_deref() {
                None | Some("preserve") => false,
                Some("off") => true,
                Some(m) => {
                    return Err(usage(format!("--archive-mode '{m}': use off or preserve")));
                }
            },
        };
        recovery.validate().map_err(|e| usage(e.to_string()))?;
        let record = pg_choose::choose_backup(&catalog, set.as_ref(), &recovery)?;
        check_reach(&stanza, &record, &recovery, args.ignore_archive_gap).await?;
        let dest = match args.dest.clone() {
            Some(d) => d,
            None => s.pg_path()?,
        };
        let chain = stanza.chain(&catalog, &record.label).await?;
        let entries = manifest::resolve(&chain)?;
        let index = stanza.index().await?;
        pg_restore::restore(
            &stanza,
            &index,
            &record,
            &entries,
            &RestoreOptions {
                dest: dest.clone(),
                delta: args.delta,
                process_max: s.process_max,
                recovery: recovery.clone(),
                tablespace_map: args.tablespace_map.clone(),
            },
            progress,
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
        return Ok(ExitCode::SUCCESS);
    }
    let label = match set {
        Some(l) => l,
        None => catalog
            .latest()
            .map(|b| b.label.clone())
            .ok_or_else(|| usage("no backup"))?,
    };
    let chain = stanza.chain(&catalog, &label).await?;
    let entries = manifest::resolve(&chain)?;
    let index = stanza.index().await?;
    if engine == EngineKind::Stream && !args.command.is_empty() {
        if args.dest.is_some() {
            return Err(usage(
                "give either --dest or a consumer command after `--`, not both",
            ));
        }
        let consumer = stream::command::Consumer::start(&args.command)?;
        let dest = std::path::Path::new("-");
        stream::restore(
            &stanza,
            &index,
            &entries,
            dest,
            Some(consumer),
            s.process_max,
            progress,
        )
        .await?;
        tracing::info!("restored backup {label} into '{}'", args.command[0]);
        return Ok(ExitCode::SUCCESS);
    }
    let dest = args.dest.ok_or_else(|| {
        usage("give --dest: a directory (files), or a file or - for stdout or a consumer command after `--` (stream)")
    })?;
    match engine {
        EngineKind::Files => {
            files::restore(&stanza, &index, &entries, &dest, s.process_max, progress).await?
        }
        _ => {
            stream::restore(
                &stanza,
                &index,
                &entries,
                &dest,
                None,
                s.process_max,
                progress,
            )
            .await?
        }
    }
    tracing::info!("restored backup {label} to {}", dest.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::shell_word;

    #[test]
    fn restore_command_words_survive_the_shell_and_percent_expansion() {
        assert_eq!(shell_word("/var/lib/cairn"), "/var/lib/cairn");
        assert_eq!(shell_word("s3://bucket/prefix"), "s3://bucket/prefix");
        assert_eq!(shell_word("/srv/my repo"), "\"/srv/my repo\"");
        assert_eq!(
            shell_word("/a/$HOME`x`\"q\""),
            "\"/a/\\$HOME\\`x\\`\\\"q\\\"\""
        );
        assert_eq!(shell_word("/data/100%"), "\"/data/100%%\"");
        assert_eq!(shell_word(""), "\"\"");
    }
}
