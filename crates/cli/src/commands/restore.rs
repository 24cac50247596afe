//! `restore`: a backup (and for PostgreSQL its recovery settings) back onto disk. The engine
//! chooses the backup and lays it down; this module checks what every restore needs.

use super::{engine_of, open_stanza};
use crate::exit::usage;
use crate::options::EngineOptions;
use crate::progress::Reporter;
use crate::settings::Settings;
use anyhow::Result;
use cairn_engines::engine::{Command, RestoreRequest, refuse_foreign_options};
use cairn_repo::BackupLabel;
use cairn_repo::pipeline::Progress;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

pub(crate) async fn restore(
    s: &Settings,
    set: Option<String>,
    dest: Option<PathBuf>,
    opts: &EngineOptions<'_>,
    quiet: bool,
) -> Result<ExitCode> {
    if let (Some(d), Some(repo)) = (&dest, &s.repo)
        && d.as_os_str() != "-"
        && !repo.starts_with("s3://")
    {
        let real = |p: &std::path::Path| {
            cairn_engines::postgres::restore::resolved(
                &std::path::absolute(p).unwrap_or(p.to_path_buf()),
            )
        };
        let (d, r) = (real(d), real(std::path::Path::new(repo)));
        if d.starts_with(&r) || r.starts_with(&d) {
            return Err(usage(format!(
                "restore destination {} and the repository {} lie one inside the other; restore outside the repository",
                d.display(),
                r.display()
            )));
        }
    }
    let stanza = open_stanza(s).await?;
    let engine = engine_of(&stanza)?;
    refuse_foreign_options(engine, Command::Restore, opts)?;
    let catalog = stanza.catalog().await?;
    if catalog.backups.is_empty() {
        return Err(cairn_repo::Error::NotFound(format!(
            "stanza '{}' has no backup to restore",
            stanza.name()
        ))
        .into());
    }
    let set = match &set {
        Some(l) => Some(BackupLabel::parse(l).map_err(|e| usage(e.to_string()))?),
        None => None,
    };
    // Progress on stderr never mixes with a stream restored to stdout.
    let status =
        crate::status_file::StatusFile::start(&s.lock_path, stanza.name().as_str(), "restore")
            .map(Arc::new);
    let progress: Arc<dyn Progress> =
        Arc::new(Reporter::new("restore", quiet).with_status(status.clone()));
    let request = RestoreRequest {
        catalog: &catalog,
        set,
        dest,
        process_max: s.process_max,
        options: opts,
        progress,
    };
    let restored = engine.restore(&stanza, request).await;
    drop(status);
    restored?;
    Ok(ExitCode::SUCCESS)
}
