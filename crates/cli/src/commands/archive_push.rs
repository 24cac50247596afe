//! `archive-push`: PostgreSQL's archive_command.

use super::{postgres_stanza, wal_name};
use crate::exit::usage;
use crate::settings::Settings;
use anyhow::{Context, Result};
use std::path::Path;
use std::process::ExitCode;

pub(crate) async fn archive_push(s: &Settings, wal_path: &Path) -> Result<ExitCode> {
    let file_name = wal_path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| usage(format!("{} does not name a WAL file", wal_path.display())))?;
    let name = wal_name(file_name)?;
    let (stanza, identity) = postgres_stanza(s).await?;
    let data = std::fs::read(wal_path)
        .with_context(|| format!("cannot read WAL file {}", wal_path.display()))?;
    identity.check_wal(&name, &data)?;
    let outcome = stanza
        .archive_push(
            &identity.archive_id(),
            name.timeline,
            &name.name,
            &data,
            s.compress_level,
        )
        .await?;
    match outcome {
        cairn_repo::archive::PushOutcome::Stored => {
            tracing::info!("pushed WAL file {} to the archive", name.name)
        }
        cairn_repo::archive::PushOutcome::AlreadyArchived => {
            tracing::warn!(
                "WAL file {} was already in the archive with the same content",
                name.name
            )
        }
    }
    Ok(ExitCode::SUCCESS)
}
