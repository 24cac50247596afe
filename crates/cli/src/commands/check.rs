//! `check`: confirm that the database delivers its log to the stanza's archive (postgres:
//! archive_command).

use super::log_archive;
use crate::options::EngineOptions;
use crate::settings::Settings;
use anyhow::Result;
use std::process::ExitCode;

pub(crate) async fn check_cmd(s: &Settings, opts: &EngineOptions<'_>) -> Result<ExitCode> {
    let (stanza, archive) = log_archive(s).await?;
    let line = archive.check(&stanza, opts).await?;
    say!("{line}");
    Ok(ExitCode::SUCCESS)
}
