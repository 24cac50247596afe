//! `expire`: remove the backups a retention policy (or `--set`) selects, then collect the
//! garbage no kept backup needs (`gc`). Under the stanza lock, in an order that a crash at any
//! point leaves safe: the catalog first (the backups stop existing), then their manifests
//! (newest first, so that what a crash leaves behind is still a usable chain), then packs.

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::gc::{self, GcOptions, GcReport};
use crate::ids::BackupLabel;
use crate::lock::Lock;
use crate::repository::Stanza;
use crate::retention::{self, Expired, Policy};

/// `--retention-archive N` with `--retention-archive-type`: keep the log needed to recover
/// to any point from the newest N backups of that type (full: fulls; diff: fulls and diffs;
/// incr: all); older kept backups keep only the log that makes them consistent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchiveRetention {
    pub count: u32,
    pub kind: crate::ids::BackupType,
}

/// What an engine's log archive will remove (`LogPruner::plan`): the objects, and the backups
/// whose log after their end goes (recorded in their catalog records first, so that verify and
/// restore know the gap is on purpose).
#[derive(Debug, Default, Clone)]
pub struct LogPlan {
    pub delete: Vec<crate::storage::Key>,
    pub bytes: u64,
    /// The first log file kept whole (everything after it stays).
    pub kept_from: Option<String>,
    /// Backups whose log past their end is removed: (label, meta key, value) to record.
    pub marks: Vec<(BackupLabel, String, String)>,
}

/// An engine's log archive, as expire prunes it (postgres: the WAL archive).
#[async_trait::async_trait]
pub trait LogPruner: Send + Sync {
    async fn plan(
        &self,
        stanza: &Stanza,
        kept: &Catalog,
        retention: Option<ArchiveRetention>,
    ) -> Result<LogPlan>;
}

/// What to expire.
#[derive(Clone, Debug)]
pub enum Selection {
    Policy(Policy),
    Set(BackupLabel),
}

#[derive(Debug)]
pub struct ExpireReport {
    pub expired: Vec<Expired>,
    pub gc: GcReport,
    /// The backups that stay, as the catalog now lists them (or would, with dry_run).
    pub kept: Catalog,
    /// Manifests of backups that were never listed (or whose expire was interrupted),
    /// removed (or, with dry_run, that would be).
    pub unlisted: Vec<BackupLabel>,
    /// What the log archive lost (or would).
    pub log: LogPlan,
}

/// Expire what `selection` selects, then collect garbage with `gc_opts` (its margin in seconds: see
/// format.md, "Condemned packs"). With `dry_run`, change nothing and report what would go.
pub async fn expire(
    stanza: &Stanza,
    selection: &Selection,
    log: Option<(&dyn LogPruner, Option<ArchiveRetention>)>,
    gc_opts: GcOptions,
    dry_run: bool,
) -> Result<ExpireReport> {
    // A dry run changes nothing, so it needs no lock (and runs on a stopped or busy stanza).
    if dry_run {
        return expire_locked(stanza, None, selection, log, gc_opts, true).await;
    }
    let lock = stanza.lock("expire").await?;
    let result = expire_locked(stanza, Some(&lock), selection, log, gc_opts, false).await;
    lock.release().await?;
    result
}

async fn expire_locked(
    stanza: &Stanza,
    lock: Option<&Lock>,
    selection: &Selection,
    log: Option<(&dyn LogPruner, Option<ArchiveRetention>)>,
    gc_opts: GcOptions,
    dry_run: bool,
) -> Result<ExpireReport> {
    let now = crate::time::now_unix();
    let at = stanza.catalog_for_write().await?;
    let catalog = at.catalog;
    let expired = match selection {
        Selection::Policy(p) => retention::select(&catalog, p, now),
        Selection::Set(label) => retention::select_set(&catalog, label)?,
    };
    let mut kept = retention::remaining(&catalog, &expired);
    let log = match log {
        Some((pruner, keep)) => pruner.plan(stanza, &kept, keep).await?,
        None => LogPlan::default(),
    };
    let mut marked = false;
    for (label, key, value) in &log.marks {
        if let Some(b) = kept.backups.iter_mut().find(|b| &b.label == label)
            && b.meta.get(key) != Some(value)
        {
            b.meta.insert(key.clone(), value.clone());
            marked = true;
        }
    }
    if !dry_run && (!expired.is_empty() || marked) {
        if let Some(lock) = lock {
            lock.confirm().await?;
        }
        // Compare-and-swap on the generation read above: the deletions below were planned
        // from it, so if anyone wrote the catalog since, nothing is deleted.
        match stanza.commit_catalog(&kept, at.generation).await {
            Ok(_) => {}
            Err(Error::Conflict(why)) => {
                return Err(Error::Conflict(format!(
                    "{why} while expire ran: nothing was deleted; run expire again"
                )));
            }
            Err(e) => return Err(e),
        }
        crate::failpoint::hit("expire-after-catalog");
        for e in expired.iter().rev() {
            stanza
                .store()
                .delete(&stanza.manifest_key(&e.label)?)
                .await?;
        }
    }
    // Manifests the catalog does not list are not backups (format.md, "Commit order"): an
    // interrupted backup's, or an interrupted expire's. With the stanza locked, nothing is
    // about to list them; they go, as pgBackRest's expire removes unlisted backup paths.
    // Not one a kept backup depends on, though: stanza-repair may list a backup whose parent
    // it left out, and the child's restore still reads the parent's manifest.
    let needed: std::collections::HashSet<&BackupLabel> = kept
        .backups
        .iter()
        .flat_map(|b| b.references.iter())
        .collect();
    let mut unlisted = Vec::new();
    for label in stanza.manifest_labels().await? {
        if kept.get(&label).is_none()
            && !needed.contains(&label)
            && !expired.iter().any(|e| e.label == label)
        {
            unlisted.push(label);
        }
    }
    if !dry_run {
        if let Some(lock) = lock {
            lock.confirm().await?;
        }
        for label in &unlisted {
            stanza.store().delete(&stanza.manifest_key(label)?).await?;
        }
        // The log the kept backups do not need (their records say so already).
        stanza.store().delete_many(&log.delete).await?;
    }
    let gc = gc::collect(stanza, &kept, gc_opts, now, dry_run).await?;
    Ok(ExpireReport {
        expired,
        gc,
        kept,
        unlisted,
        log,
    })
}
