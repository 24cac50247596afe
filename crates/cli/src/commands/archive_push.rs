//! `archive-push`: PostgreSQL's archive_command; the stanza's engine stores the log file
//! (see `cairn_engines::postgres::archive` for why it checks its working directory). With
//! `--archive-async`, a background worker pushes what PostgreSQL has queued, in parallel, and
//! each call returns once the worker says its file is durable
//! (`cairn_engines::postgres::archive_async`).

use super::{is_async_worker, log_archive, start_async_worker};
use crate::options::EngineOptions;
use crate::settings::Settings;
use anyhow::Result;
use cairn_engines::engine::Spool;
use std::path::Path;
use std::process::ExitCode;

pub(crate) async fn archive_push(
    s: &Settings,
    wal_path: &Path,
    opts: &EngineOptions<'_>,
    spool: Option<Spool>,
) -> Result<ExitCode> {
    let (stanza, archive) = log_archive(s).await?;
    match spool {
        None => {
            archive
                .push(&stanza, wal_path, s.compress_level, opts)
                .await?
        }
        Some(spool) if is_async_worker() => {
            archive
                .push_queued(&stanza, wal_path, s.compress_level, &spool)
                .await?
        }
        Some(spool) => {
            let log = cairn_engines::postgres::archive_async::spool_dir(&spool, &stanza)
                .join("push-worker.log");
            archive
                .push_async(&stanza, wal_path, opts, &spool, &|| {
                    start_async_worker(&log)
                })
                .await?
        }
    }
    Ok(ExitCode::SUCCESS)
}
