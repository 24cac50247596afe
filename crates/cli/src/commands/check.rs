//! `check`: confirm that archive_command delivers WAL to the stanza.

use super::postgres_stanza;
use crate::settings::Settings;
use anyhow::Result;
use cairn_engines::postgres::backup::{self as pg_backup};
use std::process::ExitCode;

pub(crate) async fn check_cmd(s: &Settings, archive_timeout: Option<u64>) -> Result<ExitCode> {
    let (stanza, _) = postgres_stanza(s).await?;
    let pg = s.pg_options(archive_timeout)?;
    let wal = pg_backup::check(&stanza, &pg).await?;
    tracing::info!("WAL segment {wal} was archived: archive_command works");
    println!(
        "check: WAL segment {wal} reached the archive of stanza '{}'",
        stanza.name()
    );
    Ok(ExitCode::SUCCESS)
}
