//! `archive-get`: PostgreSQL's restore_command; exit 1 when the archive lacks the file.

use super::log_archive;
use crate::settings::Settings;
use anyhow::Result;
use std::path::Path;
use std::process::ExitCode;

pub(crate) async fn archive_get(s: &Settings, name: &str, dest: &Path) -> Result<ExitCode> {
    let (stanza, archive) = log_archive(s).await?;
    if archive.get(&stanza, name, dest).await? {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(1))
    }
}
