//! `stanza-create`: the stanza's engine and identity, and the repository if it is new.

use crate::exit::usage;
use crate::settings::Settings;
use anyhow::Result;
use cairn_engines::EngineKind;
use cairn_engines::postgres::identity::Identity;
use cairn_repo::Repository;
use cairn_repo::repository::StanzaInfo;
use std::collections::BTreeMap;
use std::process::ExitCode;

pub(crate) async fn stanza_create(s: &Settings, engine: Option<String>) -> Result<ExitCode> {
    let name = s.stanza_name()?;
    let engine = s
        .string(&engine, "engine")?
        .unwrap_or_else(|| "postgres".into());
    let kind = EngineKind::parse(&engine).map_err(|e| usage(e.to_string()))?;
    let meta = if kind == EngineKind::Postgres {
        let pg_path = s.pg_path()?;
        Identity::from_data_dir(&pg_path)?.to_meta()
    } else {
        BTreeMap::new()
    };
    let repo = Repository::open_or_init(s.store(true).await?).await?;
    let info = StanzaInfo {
        name: name.clone(),
        engine: kind.as_str().to_string(),
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
