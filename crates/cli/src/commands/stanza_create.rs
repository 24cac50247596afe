//! `stanza-create`: the stanza's engine and identity, and the repository if it is new.

use crate::exit::usage;
use crate::options::EngineOptions;
use crate::settings::Settings;
use anyhow::Result;
use cairn_engines::Options;
use cairn_repo::Repository;
use cairn_repo::repository::StanzaInfo;
use std::process::ExitCode;

pub(crate) async fn stanza_create(
    s: &Settings,
    engine: Option<String>,
    opts: &EngineOptions<'_>,
) -> Result<ExitCode> {
    let name = s.stanza_name()?;
    let engine = match s.string(&engine, "engine")? {
        Some(e) => cairn_engines::engine(&e).map_err(|e| usage(e.to_string()))?,
        None => cairn_engines::engine::default_engine(),
    };
    let meta = engine.identity(opts as &dyn Options)?;
    let repo = Repository::open_or_init(s.store(true).await?).await?;
    let info = StanzaInfo {
        name: name.clone(),
        engine: engine.name().to_string(),
        created: cairn_repo::time::now_unix(),
        meta,
    };
    let stanza = repo.create_stanza(info).await?;
    tracing::info!(
        "stanza '{}' ({} engine) is ready in {}",
        stanza.name(),
        stanza.info.engine,
        repo.location()
    );
    Ok(ExitCode::SUCCESS)
}
