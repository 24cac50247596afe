//! `backup`: a full, diff or incr backup of the stanza's source. The engine does the backup;
//! this module resolves the generic options, logs the summary and picks the exit code.

use super::{engine_of, open_stanza};
use crate::exit::usage;
use crate::info;
use crate::options::EngineOptions;
use crate::progress::Reporter;
use crate::settings::Settings;
use anyhow::Result;
use cairn_engines::engine::{BackupRequest, Command, refuse_foreign_options};
use cairn_repo::BackupType;
use cairn_repo::pipeline::Progress;
use std::process::ExitCode;
use std::sync::Arc;

pub(crate) async fn backup(
    s: &Settings,
    kind: Option<String>,
    delta: bool,
    annotations: Vec<String>,
    opts: &EngineOptions<'_>,
    quiet: bool,
) -> Result<ExitCode> {
    let stanza = open_stanza(s).await?;
    let engine = engine_of(&stanza)?;
    let kind = s.string(&kind, "type")?.unwrap_or_else(|| "incr".into());
    let kind = BackupType::parse(&kind).map_err(|e| usage(e.to_string()))?;
    refuse_foreign_options(engine, Command::Backup, opts)?;
    let status =
        crate::status_file::StatusFile::start(&s.lock_path, stanza.name().as_str(), "backup")
            .map(Arc::new);
    let progress = move |what| -> Arc<dyn Progress> {
        Arc::new(Reporter::new(what, quiet).with_status(status.clone()))
    };
    let request = BackupRequest {
        kind,
        delta: s.flag(delta, "delta")?,
        process_max: s.process_max,
        compress_level: s.compress_level,
        options: opts,
        progress: &progress,
        annotations: cairn_repo::annotate::parse(&annotations)?,
    };
    let outcome = engine.backup(&stanza, request).await?;
    log_backup(&outcome.record);
    for w in &outcome.warnings {
        tracing::warn!("{w}");
    }
    if outcome.completed_with_warnings {
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
