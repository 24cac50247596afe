//! `archive-get`: PostgreSQL's restore_command.

use super::{postgres_stanza, wal_name};
use crate::settings::Settings;
use anyhow::{Context, Result};
use std::path::Path;
use std::process::ExitCode;

pub(crate) async fn archive_get(s: &Settings, name: &str, dest: &Path) -> Result<ExitCode> {
    let name = wal_name(name)?;
    let (stanza, identity) = postgres_stanza(s).await?;
    let Some(data) = stanza
        .archive_get(&identity.archive_id(), name.timeline, &name.name)
        .await?
    else {
        tracing::info!("unable to find {} in the archive", name.name);
        return Ok(ExitCode::from(1));
    };
    cairn_engines::durable::write_durably(dest, &data)
        .with_context(|| format!("cannot write {}", dest.display()))?;
    tracing::info!("found {} in the archive", name.name);
    Ok(ExitCode::SUCCESS)
}
