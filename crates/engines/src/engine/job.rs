//! The backup and restore steps the `files` and `stream` engines share: a backup job whose
//! sources come from the engine, with the warnings for files that changed while they were read
//! (exit 6), and the restore of `--set` or the newest backup. PostgreSQL runs its own job
//! (start and stop the backup on the server, wait for WAL) and chooses its own backup.

use super::request::{BackupOutcome, ProgressFactory};
use cairn_repo::backup::{BackupJob, BackupOptions, CHANGED_DURING_BACKUP, SourceEntry};
use cairn_repo::catalog::Catalog;
use cairn_repo::index::Index;
use cairn_repo::manifest::FileEntry;
use cairn_repo::pipeline::MAX_REREADS;
use cairn_repo::{BackupLabel, Error, Result, Stanza};
use std::collections::BTreeMap;

/// Lock the stanza and start the job; from here on a failure must `abort` it.
pub async fn begin(stanza: &Stanza, opts: BackupOptions) -> Result<BackupJob> {
    let job = BackupJob::begin(stanza, opts).await?;
    tracing::info!("backup {} ({}) started", job.label, job.kind);
    Ok(job)
}

/// Copy `sources` (aborting the job if they could not be had or copied), warn about every file
/// that changed while it was read, and commit with `meta`.
pub async fn finish(
    mut job: BackupJob,
    sources: Result<Vec<SourceEntry>>,
    progress: &ProgressFactory,
    mut meta: BTreeMap<String, String>,
) -> Result<BackupOutcome> {
    let copied = match sources {
        Ok(sources) => job.copy(sources, progress("backup")).await,
        Err(e) => Err(e),
    };
    if let Err(e) = copied {
        let _ = job.abort().await;
        return Err(e);
    }
    let changed: Vec<String> = job
        .entries()
        .iter()
        .filter(|e| e.meta.contains_key(CHANGED_DURING_BACKUP))
        .map(|e| e.display_path())
        .collect();
    for path in &changed {
        tracing::warn!(
            "{path} changed while it was read, {MAX_REREADS} times in a row; it is kept as last read and may mix old and new contents (marked {CHANGED_DURING_BACKUP} in the manifest)"
        );
    }
    if !changed.is_empty() {
        meta.insert(
            "files-changed-during-backup".to_string(),
            changed.len().to_string(),
        );
    }
    let record = job.commit(meta).await?;
    let warnings = if changed.is_empty() {
        Vec::new()
    } else {
        vec![format!(
            "backup {} completed with warnings: {} file(s) changed while they were read",
            record.label,
            changed.len()
        )]
    };
    Ok(BackupOutcome {
        completed_with_warnings: !warnings.is_empty(),
        warnings,
        record,
    })
}

/// `set`, else the newest backup; its files resolved through its chain, and the index to
/// fetch them with.
pub async fn chosen_entries(
    stanza: &Stanza,
    catalog: &Catalog,
    set: Option<BackupLabel>,
) -> Result<(BackupLabel, Vec<FileEntry>, Index)> {
    let label = match set {
        Some(l) => l,
        None => catalog
            .latest()
            .map(|b| b.label.clone())
            .ok_or_else(|| Error::Usage("no backup".into()))?,
    };
    let entries = stanza.resolved(catalog, &label).await?;
    let index = stanza.index().await?;
    Ok((label, entries, index))
}

/// The restore of a files or stream stanza without `--dest` (or a consumer).
pub const GIVE_DEST: &str = "give --dest: a directory (files), or a file or - for stdout or a consumer command after `--` (stream)";
