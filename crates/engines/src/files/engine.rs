//! The `files` engine on the command line: back up `--source` (a directory), restore into
//! `--dest` (an absent or empty directory).

use crate::engine::job::{self, GIVE_DEST};
use crate::engine::{BackupOutcome, BackupRequest, Command, Engine, Options, RestoreRequest};
use async_trait::async_trait;
use cairn_repo::pipeline::VanishPolicy;
use cairn_repo::{Error, Result, Stanza};
use std::collections::BTreeMap;

#[derive(Debug)]
pub struct Files;

#[async_trait]
impl Engine for Files {
    fn name(&self) -> &'static str {
        "files"
    }

    fn refuse_foreign(&self, command: Command, opts: &dyn Options) -> Result<()> {
        // A stream stanza given --source would back up its standard input instead (from cron:
        // an empty one), with the directory silently ignored.
        if command == Command::Backup && opts.path("source")?.is_some() {
            return Err(Error::Usage(
                "--source is for files stanzas; a stream stanza backs up the output of a command (`cairn backup -- COMMAND`) or its standard input".into(),
            ));
        }
        Ok(())
    }

    async fn backup(&self, stanza: &Stanza, req: BackupRequest<'_>) -> Result<BackupOutcome> {
        let dir = req.options.path("source")?.ok_or_else(|| {
            Error::Usage("a files stanza backs up --source <directory>; give --source".into())
        })?;
        let dir = std::fs::canonicalize(&dir).map_err(|e| {
            Error::Invalid(format!(
                "cannot open source directory {}; check --source: {e}",
                dir.display()
            ))
        })?;
        // Refused here, before the stanza is locked and the backup logged as started: the tree
        // scan would find it only after both.
        if !dir.is_dir() {
            return Err(Error::Usage(format!(
                "--source {} is not a directory: --source must be a directory (a files stanza backs up a directory tree)",
                dir.display()
            )));
        }
        let empty = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(format!("cannot read --source {}", dir.display()), e))?
            .next()
            .is_none();
        if empty && !req.options.flag("allow-empty")? {
            return Err(Error::Usage(format!(
                "--source {} is empty, so nothing is backed up (is a file system not mounted?); give --allow-empty if an empty directory is what you mean",
                dir.display()
            )));
        }
        refuse_repository_inside(stanza, &dir)?;
        let mut meta = BTreeMap::new();
        meta.insert("source".to_string(), dir.display().to_string());
        // A file that vanishes from a tree nobody should be changing is an error, not a skip.
        let job = job::begin(stanza, req.job_options(VanishPolicy::Fail)).await?;
        let sources = tokio::task::spawn_blocking(move || super::sources(&dir))
            .await
            .unwrap_or_else(|e| Err(Error::Invalid(format!("the source scan stopped: {e}"))));
        job::finish(job, sources, req.progress, meta).await
    }

    async fn restore(&self, stanza: &Stanza, req: RestoreRequest<'_>) -> Result<()> {
        let (label, entries, index) = job::chosen_entries(stanza, req.catalog, req.set).await?;
        let dest = req.dest.ok_or_else(|| Error::Usage(GIVE_DEST.into()))?;
        super::restore(
            stanza,
            &index,
            &entries,
            &dest,
            req.process_max,
            req.progress,
        )
        .await?;
        tracing::info!("restored backup {label} to {}", dest.display());
        Ok(())
    }
}

/// A repository on local disk inside the tree it backs up would back itself up, growing with
/// every backup (and a restore would bring back a stale copy of it).
fn refuse_repository_inside(stanza: &Stanza, source: &std::path::Path) -> Result<()> {
    let location = stanza.store().location();
    let Ok(repo) = std::fs::canonicalize(&location) else {
        return Ok(()); // not a local path (s3://...)
    };
    if source.starts_with(&repo) {
        return Err(Error::Usage(format!(
            "--source {} is inside the repository {}: back up the data, not the repository (`cairn restore` brings a backup back)",
            source.display(),
            repo.display()
        )));
    }
    if repo.starts_with(source) {
        return Err(Error::Usage(format!(
            "the repository {} is inside --source {}: the backup would include the repository itself; keep the repository outside the tree you back up",
            repo.display(),
            source.display()
        )));
    }
    Ok(())
}
