//! `stanza-upgrade`: after pg_upgrade, point the stanza at the cluster's new identity (system
//! id, major version). The old identity joins the stanza's history: its backups stay listed
//! and restorable, with their WAL under their own archive id; new backups and WAL go to the new
//! one, and the first backup after the upgrade is a full.

use super::{engine_of, open_stanza};
use crate::options::EngineOptions;
use crate::settings::Settings;
use anyhow::Result;
use cairn_engines::Options;
use std::process::ExitCode;

pub(crate) async fn stanza_upgrade(s: &Settings, opts: &EngineOptions<'_>) -> Result<ExitCode> {
    let stanza = open_stanza(s).await?;
    let engine = engine_of(&stanza)?;
    let Some(meta) = engine
        .upgrade_identity(&stanza, opts as &dyn Options)
        .await?
    else {
        tracing::info!(
            "stanza '{}' is already up to date with the cluster at --pg-path",
            stanza.name()
        );
        return Ok(ExitCode::SUCCESS);
    };
    let show = |m: &std::collections::BTreeMap<String, String>| {
        format!(
            "PostgreSQL {}, system {}",
            m.get("version").map_or("?", String::as_str),
            m.get("system-id").map_or("?", String::as_str)
        )
    };
    let before = show(&stanza.info.meta);
    let upgraded = stanza.replace_info_meta(meta).await?;
    tracing::info!(
        "stanza '{}' upgraded from {before} to {}: earlier backups stay listed and restorable; the next backup is a full",
        upgraded.name(),
        show(&upgraded.info.meta)
    );
    Ok(ExitCode::SUCCESS)
}
