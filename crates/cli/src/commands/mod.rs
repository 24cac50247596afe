//! One module per command. Each resolves its options (flag > env > config file), opens the
//! repository and stanza, and calls into the repo and engines crates.

use self::{
    archive_get::*, archive_push::*, backup::*, check::*, info::*, restore::*, stanza_create::*,
    stanza_repair::*, verify::*,
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
mod stanza_repair;
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
    let result = rt.block_on(async {
        // Heavy commands report what they cost in requests; archive-push, run for every WAL
        // segment by PostgreSQL, stays quiet unless asked (--log-level debug).
        let heavy = matches!(
            cli.command,
            Command::Backup { .. } | Command::Restore { .. }
        );
        let result = guarded(dispatch(cli.command, &settings, quiet)).await;
        for line in settings.request_summaries() {
            if heavy {
                tracing::info!("{line}");
            } else {
                tracing::debug!("{line}");
            }
        }
        result
    });
    // Whatever is still running (a blocking read of a source after Ctrl-C) is not waited for.
    rt.shutdown_background();
    result
}

/// The last panic's message and place, kept by the panic hook so a panic ends as one error
/// line (exit 70) instead of a backtrace dump.
static LAST_PANIC: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::debug!("panic: {msg}{at}");
        if let Ok(mut last) = LAST_PANIC.lock() {
            *last = Some(format!("{msg}{at}"));
        }
    }));
}

/// Run a command so that every way out releases the locks it holds: success, error, panic,
/// SIGINT or SIGTERM.
async fn guarded(command: impl std::future::Future<Output = Result<ExitCode>>) -> Result<ExitCode> {
    use futures_util::FutureExt;
    use tokio::signal::unix::{SignalKind, signal};
    install_panic_hook();
    let mut term = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch for SIGINT")?;
    let outcome = tokio::select! {
        r = std::panic::AssertUnwindSafe(command).catch_unwind() => match r {
            Ok(r) => r,
            Err(_) => {
                let msg = LAST_PANIC
                    .lock()
                    .ok()
                    .and_then(|mut m| m.take())
                    .unwrap_or_else(|| "panic".into());
                Err(anyhow::Error::new(crate::exit::Internal(msg)))
            }
        },
        _ = int.recv() => Err(anyhow::Error::new(crate::exit::Interrupted(2))),
        _ = term.recv() => Err(anyhow::Error::new(crate::exit::Interrupted(15))),
    };
    let released = cairn_repo::lock::release_all_held().await;
    if released > 0 {
        tracing::debug!("released {released} lock(s) at exit");
    }
    outcome
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
            archive_mode,
            ignore_archive_gap,
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
                archive_mode: s.string(&archive_mode, "archive-mode")?,
                ignore_archive_gap: s.flag(ignore_archive_gap, "ignore-archive-gap")?,
                command,
            };
            restore(s, args, quiet).await
        }
        Command::Info { output } => info_cmd(s, output).await,
        Command::StanzaRepair => stanza_repair(s).await,
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
