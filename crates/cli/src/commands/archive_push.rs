//! `archive-push`: PostgreSQL's archive_command; the stanza's engine stores the log file
//! (see `cairn_engines::postgres::archive` for why it checks its working directory).

use super::log_archive;
use crate::options::EngineOptions;
use crate::settings::Settings;
use anyhow::Result;
use std::path::Path;
use std::process::ExitCode;

pub(crate) async fn archive_push(
    s: &Settings,
    wal_path: &Path,
    opts: &EngineOptions<'_>,
) -> Result<ExitCode> {
    let (stanza, archive) = log_archive(s).await?;
    archive
        .push(&stanza, wal_path, s.compress_level, opts)
        .await?;
    Ok(ExitCode::SUCCESS)
}
