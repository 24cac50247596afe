//! One module per command. Each resolves its options (flag > env > config file), opens the
//! repository and stanza, and calls into the repo and engines crates.

use self::{
    archive_get::*, archive_push::*, backup::*, check::*, info::*, restore::*, stanza_create::*,
    verify::*,
};
use crate::Cli;
use crate::Command;
use crate::exit::usage;
use crate::settings::Settings;
use anyhow::{Context, Result, anyhow};
use cairn_engines::EngineKind;
use cairn_engines::postgres::identity::Identity;
use cairn_engines::postgres::wal::WalFileName;
use cairn_repo::{Repository, Stanza};
use std::path::PathBuf;
use std::process::ExitCode;

mod archive_get;
mod archive_push;
mod backup;
mod check;
mod info;
mod restore;
mod stanza_create;
mod verify;

pub fn run(cli: Cli) -> Result<ExitCode> {
    let settings = Settings::resolve(&cli)?;
    let level = settings
        .string(&cli.global.log_level, "log-level")?
        .unwrap_or_else(|| "info".into());
    crate::logging::init_logging(&level)?;
    let quiet = level == "off" || level == "error" || level == "warn";
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.process_max.clamp(2, 16))
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        // Heavy commands report what they cost in requests; archive-push, run for every WAL
        // segment by PostgreSQL, stays quiet unless asked (--log-level debug).
        let heavy = matches!(
            cli.command,
            Command::Backup { .. } | Command::Restore { .. }
        );
        let result = dispatch(cli.command, &settings, quiet).await;
        for line in settings.request_summaries() {
            if heavy {
                tracing::info!("{line}");
            } else {
                tracing::debug!("{line}");
            }
        }
        result
    })
}

pub(crate) async fn dispatch(command: Command, s: &Settings, quiet: bool) -> Result<ExitCode> {
    match command {
        Command::StanzaCreate { engine } => stanza_create(s, engine).await,
        Command::ArchivePush { wal_path } => archive_push(s, &wal_path).await,
        Command::ArchiveGet { wal_name, dest } => archive_get(s, &wal_name, &dest).await,
        Command::Backup {
            kind,
            source,
            delta,
            archive_timeout,
            allow_empty,
            command,
        } => {
            let stream = StreamArgs {
                allow_empty,
                command,
            };
            backup(s, kind, source, delta, archive_timeout, stream, quiet).await
        }
        Command::Restore {
            set,
            dest,
            kind,
            target,
            target_action,
            target_timeline,
            tablespace_map,
            delta,
            command,
        } => {
            let mut maps = Vec::new();
            for m in &tablespace_map {
                let (name, path) = m
                    .split_once('=')
                    .ok_or_else(|| usage(format!("--tablespace-map '{m}': use NAME=PATH")))?;
                maps.push((name.to_string(), PathBuf::from(path)));
            }
            let args = RestoreArgs {
                tablespace_map: maps,
                set: s.string(&set, "set")?,
                dest: s.path(&dest, "dest")?,
                kind: s.string(&kind, "type")?,
                target: s.string(&target, "target")?,
                target_action: s.string(&target_action, "target-action")?,
                target_timeline: s.string(&target_timeline, "target-timeline")?,
                delta: s.flag(delta, "delta")?,
                command,
            };
            restore(s, args, quiet).await
        }
        Command::Info { output } => info_cmd(s, output).await,
        Command::Check { archive_timeout } => check_cmd(s, archive_timeout).await,
        Command::Verify { set } => verify_cmd(s, set).await,
    }
}

pub(crate) async fn open_stanza(s: &Settings) -> Result<Stanza> {
    let name = s.stanza_name()?;
    let repo = Repository::open(s.store(false).await?).await?;
    Ok(repo.stanza(&name).await?)
}

pub(crate) fn engine_of(stanza: &Stanza) -> Result<EngineKind> {
    EngineKind::parse(&stanza.info.engine).map_err(|_| {
        anyhow!(
            "stanza '{}' uses engine '{}', which this cairn does not know; upgrade cairn",
            stanza.name(),
            stanza.info.engine
        )
    })
}

pub(crate) async fn postgres_stanza(s: &Settings) -> Result<(Stanza, Identity)> {
    let stanza = open_stanza(s).await?;
    if engine_of(&stanza)? != EngineKind::Postgres {
        return Err(usage(format!(
            "stanza '{}' uses the {} engine; archive-push and archive-get are for postgres stanzas",
            stanza.name(),
            stanza.info.engine
        )));
    }
    let identity = Identity::from_meta(&stanza.info.meta)?;
    Ok((stanza, identity))
}

pub(crate) fn wal_name(name: &str) -> Result<WalFileName> {
    WalFileName::parse(name).ok_or_else(|| {
        usage(format!(
            "'{name}' is not a WAL segment, .partial, .history or .backup file name"
        ))
    })
}
