//! `stop`, `start` and `stanza-delete`.

use super::{engine_of, open_stanza};
use crate::options::EngineOptions;
use crate::settings::Settings;
use anyhow::Result;
use std::process::ExitCode;

pub(crate) async fn stop_cmd(s: &Settings) -> Result<ExitCode> {
    let stanza = open_stanza(s).await?;
    if stanza.stop().await? {
        tracing::info!(
            "stanza '{}' is stopped: backups, expires, repairs and archive-push refuse until `cairn --stanza={} start`",
            stanza.name(),
            stanza.name()
        );
    } else {
        tracing::warn!("stanza '{}' was already stopped", stanza.name());
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn start_cmd(s: &Settings) -> Result<ExitCode> {
    let stanza = open_stanza(s).await?;
    if stanza.start().await? {
        tracing::info!("stanza '{}' is started again", stanza.name());
    } else {
        tracing::warn!("stanza '{}' was not stopped", stanza.name());
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn stanza_delete_cmd(
    s: &Settings,
    force: bool,
    opts: &EngineOptions<'_>,
) -> Result<ExitCode> {
    let stanza = open_stanza(s).await?;
    // Never from the config file: a standing --force would defeat the check.
    if !force {
        engine_of(&stanza)?.refuse_delete(opts)?;
    }
    let n = stanza.delete_all().await?;
    tracing::info!("stanza '{}' is deleted ({n} objects)", stanza.name());
    Ok(ExitCode::SUCCESS)
}
