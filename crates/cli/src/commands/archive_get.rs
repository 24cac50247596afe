//! `archive-get`: PostgreSQL's restore_command; exit 1 when the archive lacks the file.

use super::{is_async_worker, log_archive, start_async_worker};
use crate::settings::Settings;
use anyhow::Result;
use cairn_engines::engine::Spool;
use std::path::Path;
use std::process::ExitCode;

pub(crate) async fn archive_get(
    s: &Settings,
    name: &str,
    dest: &Path,
    spool: Option<Spool>,
) -> Result<ExitCode> {
    let (stanza, archive) = log_archive(s).await?;
    let got = match &spool {
        None => archive.get(&stanza, name, dest).await,
        Some(spool) if is_async_worker() => {
            archive.prefetch(&stanza, name, spool).await?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(spool) => {
            let log = cairn_engines::postgres::archive_async::spool_dir(spool, &stanza)
                .join("get-worker.log");
            archive
                .get_async(&stanza, name, dest, spool, &|| start_async_worker(&log))
                .await
        }
    };
    match got {
        Ok(true) => Ok(ExitCode::SUCCESS),
        Ok(false) => Ok(ExitCode::from(1)),
        // PostgreSQL takes any failure of restore_command up to 125 for "not in the archive":
        // recovery would end there and promote, losing every transaction after the damaged
        // file without a word. A status above 125 makes it stop recovery instead.
        Err(e @ cairn_repo::Error::Corrupt { .. }) => {
            Err(anyhow::Error::new(crate::exit::StopRecovery(format!(
                "{e}. PostgreSQL must not treat this as the end of the archive: recovery stops here (exit {})",
                crate::exit::STOP_RECOVERY
            ))))
        }
        Err(e) => Err(e.into()),
    }
}
