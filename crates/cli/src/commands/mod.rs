//! One module per command. Each resolves its options (flag > env > config file), opens the
//! repository and stanza, and calls into the repo and engines crates.

use self::{
    annotate::*, archive_get::*, archive_push::*, backup::*, check::*, control::*, expire::*,
    info::*, repo_get::*, repo_ls::*, restore::*, stanza_create::*, stanza_repair::*,
    stanza_upgrade::*, verify::*,
};
use crate::Cli;
use crate::Command;
use crate::exit::usage;
use crate::options::{self, EngineOptions};
use crate::settings::Settings;
use anyhow::{Context, Result, anyhow};
use cairn_engines::engine::one_of;
use cairn_engines::{Engine, LogArchive};
use cairn_repo::{Repository, Stanza};
use std::process::ExitCode;

mod annotate;
mod archive_get;
use std::path::PathBuf;

mod archive_push;
mod backup;
mod check;
mod control;
mod expire;
mod info;
mod repo_get;
mod repo_ls;
mod restore;
mod stanza_create;
mod stanza_repair;
mod stanza_upgrade;
mod verify;
mod version;

pub fn run(cli: Cli) -> Result<ExitCode> {
    // Needs no repository, configuration or runtime.
    if let Command::Version { output } = &cli.command {
        return version::version_cmd(output.as_deref());
    }
    let settings = Settings::resolve(&cli)?;
    // PostgreSQL logs what archive_command and restore_command print: a line per segment
    // would flood it, so they say only what goes wrong unless asked.
    let default_level = match cli.command {
        Command::ArchivePush { .. } | Command::ArchiveGet { .. } => "warn",
        _ => "info",
    };
    let level = settings
        .string(&cli.global.log_level, "log-level")?
        .unwrap_or_else(|| default_level.into());
    // The stanza name becomes part of the log file's name: checked before it is used.
    if settings.stanza.is_some() {
        settings.stanza_name()?;
    }
    let log_file = match settings.path(&cli.global.log_path, "log-path")? {
        Some(dir) if dir.as_os_str().is_empty() => {
            return Err(usage(
                "log-path is empty; give a directory, or leave it out to log to the console only",
            ));
        }
        Some(dir) => Some(crate::logging::LogFile::new(
            &dir,
            settings.stanza.as_deref(),
            &cli.command_name,
            settings
                .string(&cli.global.log_level_file, "log-level-file")?
                .unwrap_or_else(|| "info".into()),
        )),
        None => None,
    };
    crate::logging::init_logging(&level, log_file.as_ref())?;
    let started = std::time::Instant::now();
    let mut shown = cli.given.clone();
    shown.extend(cli.negated.iter().map(|n| (format!("no-{n}"), None)));
    for (k, v) in settings.file.applicable() {
        if !shown.iter().any(|(g, _)| *g == k) {
            shown.push((k, Some(v)));
        }
    }
    shown.sort();
    tracing::info!(
        target: crate::logging::FILE_ONLY,
        "{} command begin {}: {}",
        cli.command_name,
        env!("CARGO_PKG_VERSION"),
        crate::logging::show_options(&shown)
    );
    // PostgreSQL logs what archive_command and restore_command print: what the shared
    // configuration holds that cairn ignores is said by every other command, not once per
    // WAL segment.
    let per_segment = matches!(
        cli.command,
        Command::ArchivePush { .. } | Command::ArchiveGet { .. }
    );
    for w in &settings.file.notes.warnings {
        if per_segment {
            tracing::debug!("{w}");
        } else {
            tracing::warn!("{w}");
        }
    }
    for d in &settings.file.notes.details {
        tracing::debug!("{d}");
    }
    if let Some(p) = settings.string(&cli.global.cache_path, "cache-path")? {
        cairn_repo::index_cache::set_root(PathBuf::from(p));
    }
    let quiet = level == "off" || level == "error" || level == "warn";
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.process_max.clamp(2, 16))
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let cli_name = cli.command_name.clone();
    let result = rt.block_on(async {
        // Heavy commands report what they cost in requests; archive-push, run for every WAL
        // segment by PostgreSQL, stays quiet unless asked (--log-level debug).
        let heavy = matches!(
            cli.command,
            Command::Backup { .. } | Command::Restore { .. }
        );
        let aftermath = match cli.command {
            Command::Backup { .. } => "a backup that did not finish is not listed",
            Command::Restore { .. } => {
                "the restore is not complete: what it wrote to the destination is partial; restore again into an empty destination (postgres: or with --delta)"
            }
            Command::ArchivePush { .. } => {
                "the WAL file was not acknowledged, so PostgreSQL keeps it and tries again"
            }
            _ => "it did not finish",
        };
        let result = guarded(dispatch(cli, &settings, quiet), aftermath).await;
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
    let elapsed = started.elapsed().as_millis();
    match &result {
        Ok(_) => tracing::info!(
            target: crate::logging::FILE_ONLY,
            "{} command end: completed successfully ({elapsed}ms)",
            cli_name
        ),
        Err(e) => tracing::info!(
            target: crate::logging::FILE_ONLY,
            "{} command end: aborted with exception [{}]: {} ({elapsed}ms)",
            cli_name,
            crate::exit::exit_status(e),
            crate::exit::describe(e)
        ),
    }
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
async fn guarded(
    command: impl std::future::Future<Output = Result<ExitCode>>,
    aftermath: &'static str,
) -> Result<ExitCode> {
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
        _ = int.recv() => {
            cairn_engines::stream::command::stop_running(2);
            Err(anyhow::Error::new(crate::exit::Interrupted(2, aftermath)))
        }
        _ = term.recv() => {
            cairn_engines::stream::command::stop_running(15);
            Err(anyhow::Error::new(crate::exit::Interrupted(15, aftermath)))
        }
    };
    let released = cairn_repo::lock::release_all_held().await;
    if released > 0 {
        tracing::debug!("released {released} lock(s) at exit");
    }
    outcome
}

pub(crate) async fn dispatch(cli: Cli, s: &Settings, quiet: bool) -> Result<ExitCode> {
    let pg = cli.global.pg.given();
    let opts =
        |given: Vec<options::Flags>| EngineOptions::new(s, given.into_iter().flatten().collect());
    match cli.command {
        Command::StanzaCreate { engine } => stanza_create(s, engine, &opts(vec![pg])).await,
        Command::ArchivePush {
            wal_path,
            spool,
            archive_push_queue_max,
        } => {
            let spool =
                spool_settings(s, &spool, &archive_push_queue_max, "archive-push-queue-max")?;
            archive_push(s, &wal_path, &opts(vec![pg]), spool).await
        }
        Command::ArchiveGet {
            wal_name,
            dest,
            spool,
            archive_get_queue_max,
        } => {
            let spool = spool_settings(s, &spool, &archive_get_queue_max, "archive-get-queue-max")?;
            archive_get(s, &wal_name, &dest, spool).await
        }
        Command::Backup {
            kind,
            delta,
            allow_empty,
            no_expire,
            annotation,
            retention,
            pg: pg_backup,
            files,
            stream,
        } => {
            let empty = vec![("allow-empty", options::Given::FlagOnly(allow_empty))];
            let given = vec![pg, pg_backup.given(), files.given(), stream.given(), empty];
            let annotation = if annotation.is_empty() {
                s.file.list("annotation")?
            } else {
                annotation
            };
            let code = backup(s, kind, delta, annotation, &opts(given), quiet).await?;
            after_backup(s, &retention, no_expire, code).await
        }
        Command::Restore {
            set,
            dest,
            delta,
            pg: pg_restore,
            stream,
        } => {
            let delta = vec![("delta", options::Given::Switch(delta))];
            let given = vec![pg, pg_restore.given(), stream.given(), delta];
            let set = s.string(&set, "set")?;
            let dest = s.path(&dest, "dest")?;
            restore(s, set, dest, &opts(given), quiet).await
        }
        Command::Info { output, set, kind } => info_cmd(s, output, set, kind).await,
        Command::Version { output } => version::version_cmd(output.as_deref()),
        Command::StanzaRepair => stanza_repair(s).await,
        Command::StanzaUpgrade => stanza_upgrade(s, &opts(vec![pg])).await,
        Command::Annotate { set, annotation } => annotate_cmd(s, set, annotation).await,
        Command::Stop => stop_cmd(s).await,
        Command::Start => start_cmd(s).await,
        Command::StanzaDelete { force } => stanza_delete_cmd(s, force, &opts(vec![pg])).await,
        Command::Expire {
            set,
            dry_run,
            retention,
        } => expire_cmd(s, set, dry_run, &retention).await,
        Command::Check { archive_timeout } => {
            let timeout = vec![options::archive_timeout(archive_timeout)];
            check_cmd(s, &opts(vec![pg, timeout])).await
        }
        Command::Verify { set } => verify_cmd(s, set).await,
        Command::RepoLs {
            path,
            output,
            recurse,
            filter,
            sort,
        } => {
            let args = LsArgs {
                path,
                output,
                recurse,
                filter,
                sort,
            };
            repo_ls_cmd(s, args).await
        }
        Command::RepoGet {
            file,
            ignore_missing,
            raw,
        } => repo_get_cmd(s, &file, ignore_missing, raw).await,
    }
}

/// The asynchronous archiving settings, or None when `--archive-async` is not on.
fn spool_settings(
    s: &Settings,
    args: &crate::SpoolArgs,
    queue_max: &Option<String>,
    queue_key: &str,
) -> Result<Option<cairn_engines::engine::Spool>> {
    if !s.flag(args.archive_async, "archive-async")? {
        return Ok(None);
    }
    let path = s
        .path(&args.spool_path, "spool-path")?
        .unwrap_or_else(|| PathBuf::from("/var/spool/cairn"));
    let queue_max = match s.string(queue_max, queue_key)? {
        Some(v) => Some(
            options::parse_size(&v)
                .ok_or_else(|| usage(format!("--{queue_key} {v}: not a size; use bytes or a number with KiB, MiB, GiB or TiB (KB, MB, GB, TB mean the same, as in pgBackRest)")))?,
        ),
        None => None,
    };
    let timeout = s
        .integer(args.archive_timeout, "archive-timeout")?
        .unwrap_or(60);
    if !(1..=86_400).contains(&timeout) {
        return Err(usage(format!(
            "--archive-timeout {timeout} is out of range: use 1 to 86400 seconds"
        )));
    }
    Ok(Some(cairn_engines::engine::Spool {
        path,
        queue_max,
        timeout: std::time::Duration::from_secs(timeout as u64),
        process_max: s.process_max,
    }))
}

/// Start this cairn again, detached, as the background worker of an asynchronous archive
/// command: the same arguments and environment, `CAIRN_ASYNC_WORKER=1`, its output appended
/// to `log` in the spool.
pub(crate) fn start_async_worker(log: &std::path::Path) -> cairn_repo::Result<()> {
    use std::os::unix::process::CommandExt;
    let fail = |e: std::io::Error| {
        cairn_repo::Error::Invalid(format!("cannot start the asynchronous archive worker: {e}"))
    };
    let exe = std::env::current_exe().map_err(fail)?;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(fail)?;
    std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(ASYNC_WORKER, "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(out)
        .process_group(0)
        .spawn()
        .map_err(fail)?;
    Ok(())
}

/// Set in the environment of a background worker (`start_async_worker`).
pub(crate) const ASYNC_WORKER: &str = "CAIRN_ASYNC_WORKER";

pub(crate) fn is_async_worker() -> bool {
    std::env::var_os(ASYNC_WORKER).is_some_and(|v| v == "1")
}

pub(crate) async fn open_stanza(s: &Settings) -> Result<Stanza> {
    let name = s.stanza_name()?;
    let repo = Repository::open(s.store(false).await?).await?;
    Ok(repo.stanza(&name).await?)
}

/// The engine the stanza was created with.
pub(crate) fn engine_of(stanza: &Stanza) -> Result<&'static dyn Engine> {
    cairn_engines::engine(&stanza.info.engine).map_err(|_| {
        anyhow!(
            "stanza '{}' uses engine '{}', which this cairn does not know; upgrade cairn",
            stanza.name(),
            stanza.info.engine
        )
    })
}

/// The stanza and its engine's log archive, for archive-push, archive-get and check.
pub(crate) async fn log_archive(s: &Settings) -> Result<(Stanza, &'static dyn LogArchive)> {
    let stanza = open_stanza(s).await?;
    match engine_of(&stanza)?.log_archive() {
        Some(archive) => Ok((stanza, archive)),
        None => {
            let with_archive = cairn_engines::engines()
                .iter()
                .filter(|e| e.log_archive().is_some())
                .map(|e| e.name());
            Err(usage(format!(
                "stanza '{}' uses the {} engine; archive-push and archive-get are for {} stanzas",
                stanza.name(),
                stanza.info.engine,
                one_of(with_archive)
            )))
        }
    }
}
