//! `archive-push`: PostgreSQL's archive_command.
//!
//! PostgreSQL runs archive_command in its data directory. A cluster restored into another
//! directory still carries production's archive_command in its restored postgresql.conf; if
//! it ran, the copy's new timeline would enter production's archive and a later plain restore
//! of production would follow it. So archive-push insists that its working directory is the
//! configured pg-path, as pgBackRest insists on pg1-path.

use super::{postgres_stanza, wal_name};
use crate::exit::usage;
use crate::settings::Settings;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub(crate) async fn archive_push(s: &Settings, wal_path: &Path) -> Result<ExitCode> {
    let file_name = wal_path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| usage(format!("{} does not name a WAL file", wal_path.display())))?;
    let name = wal_name(file_name)?;
    check_working_directory(s)?;
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

fn check_working_directory(s: &Settings) -> Result<()> {
    let stanza = s.stanza.as_deref().unwrap_or("?");
    let pg_path = s.path(&s.pg_path_flag, "pg-path")?.ok_or_else(|| {
        usage(format!(
            "archive-push needs pg-path, the data directory of the cluster archiving into stanza '{stanza}' (as pgBackRest needs pg1-path): set pg-path in the config file, CAIRN_PG_PATH, or --pg-path in archive_command"
        ))
    })?;
    let cwd = std::env::current_dir().context("cannot read archive-push's working directory")?;
    let resolve = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (here, configured): (PathBuf, PathBuf) = (resolve(&cwd), resolve(&pg_path));
    if here != configured {
        anyhow::bail!(
            "refusing to archive: archive-push runs in {} (PostgreSQL runs archive_command in its data directory), but stanza '{stanza}' archives the cluster at pg-path {}. A cluster restored or copied into {} is archiving with the original's settings, and its WAL would enter the original's archive. In that cluster set archive_mode = off (`cairn restore --archive-mode off` does); if it is the new primary, set its pg-path to {}",
            here.display(),
            configured.display(),
            here.display(),
            here.display()
        );
    }
    Ok(())
}
