//! `backup`: a full, diff or incr backup of the stanza's source.

use super::{engine_of, open_stanza};
use crate::exit::usage;
use crate::info;
use crate::progress::Reporter;
use crate::settings::Settings;
use anyhow::{Context, Result};
use cairn_engines::postgres::backup::{self as pg_backup};
use cairn_engines::{EngineKind, files, stream};
use cairn_repo::BackupType;
use cairn_repo::backup::{BackupJob, BackupOptions, CHANGED_DURING_BACKUP, DEFAULT_PACK_TARGET};
use cairn_repo::pipeline::{MAX_REREADS, Progress, VanishPolicy};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// A stream backup's producer (`-- COMMAND ARGS...`; empty: stdin) and whether an empty
/// stream is kept.
pub(crate) struct StreamArgs {
    pub(crate) allow_empty: bool,
    pub(crate) command: Vec<String>,
}

pub(crate) async fn backup(
    s: &Settings,
    kind: Option<String>,
    source: Option<PathBuf>,
    delta: bool,
    archive_timeout: Option<u64>,
    stream_args: StreamArgs,
    quiet: bool,
) -> Result<ExitCode> {
    let stanza = open_stanza(s).await?;
    let engine = engine_of(&stanza)?;
    let kind = s.string(&kind, "type")?.unwrap_or_else(|| "incr".into());
    let kind = BackupType::parse(&kind).map_err(|e| usage(e.to_string()))?;
    if engine != EngineKind::Stream && (!stream_args.command.is_empty() || stream_args.allow_empty)
    {
        return Err(usage(
            "a command after `--` and --allow-empty are for stream stanzas",
        ));
    }
    let mut meta = BTreeMap::new();
    let source = match engine {
        EngineKind::Files => {
            let dir = s.path(&source, "source")?.ok_or_else(|| {
                usage("a files stanza backs up --source <directory>; give --source")
            })?;
            let dir = std::fs::canonicalize(&dir).with_context(|| {
                format!(
                    "cannot open source directory {}; check --source",
                    dir.display()
                )
            })?;
            // Refused here, before the stanza is locked and the backup logged as started: the
            // tree scan would find it only after both.
            if !dir.is_dir() {
                return Err(usage(format!(
                    "--source {} is not a directory: --source must be a directory (a files stanza backs up a directory tree)",
                    dir.display()
                )));
            }
            meta.insert("source".to_string(), dir.display().to_string());
            Some(dir)
        }
        EngineKind::Stream => {
            if stream_args.command.is_empty() && std::io::stdin().is_terminal() {
                return Err(usage(
                    "a stream stanza backs up the output of a command: `cairn backup -- pg_dump -Fc -Z0 db` (or pipe it into standard input)",
                ));
            }
            None
        }
        EngineKind::Postgres => None,
    };
    let opts = BackupOptions {
        kind,
        process_max: s.process_max,
        compress_level: s.compress_level,
        pack_target: DEFAULT_PACK_TARGET,
        vanish: if engine == EngineKind::Postgres {
            VanishPolicy::Skip
        } else {
            VanishPolicy::Fail
        },
        delta: s.flag(delta, "delta")?,
        command: "backup".into(),
    };
    if engine == EngineKind::Postgres {
        let pg = s.pg_options(archive_timeout)?;
        let progress: Arc<dyn Progress> = Arc::new(Reporter::new("backup", quiet));
        let rec = pg_backup::backup(&stanza, opts, &pg, progress).await?;
        log_backup(&rec);
        if rec
            .meta
            .get("checksum-page-errors")
            .is_some_and(|n| n != "0")
        {
            tracing::warn!(
                "backup {} found invalid page checksums: {}",
                rec.label,
                rec.meta
                    .get("checksum-page-error-list")
                    .map(String::as_str)
                    .unwrap_or("")
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut job = BackupJob::begin(&stanza, opts).await?;
    tracing::info!("backup {} ({}) started", job.label, job.kind);
    // The producer starts once the stanza is locked, and from this (the main) thread: its
    // parent-death signal is tied to the thread that started it.
    let producer = if engine == EngineKind::Stream && !stream_args.command.is_empty() {
        match stream::command::Producer::start(&stream_args.command) {
            Ok(p) => Some(p),
            Err(e) => {
                let _ = job.abort().await;
                return Err(e.into());
            }
        }
    } else {
        None
    };
    let result = async {
        let sources = match &source {
            Some(dir) => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || files::sources(&dir)).await??
            }
            None => vec![match producer {
                Some(p) => {
                    let origin = format!("the output of '{}'", p.name());
                    let r = stream::command::Checked::producer(p, stream_args.allow_empty);
                    stream::source_from(Box::new(r), origin)
                }
                None => {
                    let r = stream::command::Checked::stdin(stream_args.allow_empty);
                    stream::source(Box::new(r))
                }
            }],
        };
        let progress: Arc<dyn Progress> = Arc::new(Reporter::new("backup", quiet));
        job.copy(sources, progress).await?;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        let _ = job.abort().await;
        return Err(e);
    }
    let changed: Vec<String> = job
        .entries()
        .iter()
        .filter(|e| e.meta.contains_key(CHANGED_DURING_BACKUP))
        .map(|e| e.display_path())
        .collect();
    for path in &changed {
        tracing::warn!(
            "{path} changed while it was read, {MAX_REREADS} times in a row; it is kept as last read and may mix old and new contents (marked {CHANGED_DURING_BACKUP} in the manifest)"
        );
    }
    if !changed.is_empty() {
        meta.insert(
            "files-changed-during-backup".to_string(),
            changed.len().to_string(),
        );
    }
    let rec = job.commit(meta).await?;
    log_backup(&rec);
    if !changed.is_empty() {
        tracing::warn!(
            "backup {} completed with warnings: {} file(s) changed while they were read",
            rec.label,
            changed.len()
        );
        return Ok(ExitCode::from(crate::exit::WARNINGS));
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn log_backup(rec: &cairn_repo::catalog::BackupRecord) {
    tracing::info!(
        "backup {} ({}) complete: {} files, {} logical, {} read, {} new in the repository ({} new chunks)",
        rec.label,
        rec.kind,
        rec.file_count,
        info::human(rec.size),
        info::human(rec.delta),
        info::human(rec.repo_delta),
        rec.new_chunk_count
    );
}
