//! The WAL archive as the command line reaches it: `archive-push` (archive_command),
//! `archive-get` (restore_command) and `check`.
//!
//! PostgreSQL runs archive_command in its data directory. A cluster restored into another
//! directory still carries production's archive_command in its restored postgresql.conf; if
//! it ran, the copy's new timeline would enter production's archive and a later plain restore
//! of production would follow it. So archive-push insists that its working directory is the
//! configured pg-path, as pgBackRest insists on pg1-path.

use super::identity::Identity;
use super::wal::{WalFileKind, WalFileName};
use super::{archive_async, backup, options};
use crate::engine::{LogArchive, Options, Spool};
use async_trait::async_trait;
use cairn_repo::BackupType;
use cairn_repo::archive::PushOutcome;
use cairn_repo::catalog::Catalog;
use cairn_repo::expire::{ArchiveRetention, LogPlan, LogPruner};
use cairn_repo::{Error, Result, Stanza};
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct WalArchive;

fn wal_name(name: &str) -> Result<WalFileName> {
    WalFileName::parse(name).ok_or_else(|| {
        Error::Usage(format!(
            "'{name}' is not a WAL segment, .partial, .history or .backup file name"
        ))
    })
}

fn file_name(wal_path: &Path) -> Result<&str> {
    wal_path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Usage(format!("{} does not name a WAL file", wal_path.display())))
}

#[async_trait]
impl LogArchive for WalArchive {
    async fn push(
        &self,
        stanza: &Stanza,
        wal_path: &Path,
        compress_level: i32,
        opts: &dyn Options,
    ) -> Result<()> {
        let name = wal_name(file_name(wal_path)?)?;
        check_working_directory(stanza.name().as_str(), opts)?;
        let identity = Identity::from_meta(&stanza.info.meta)?;
        let data = std::fs::read(wal_path).map_err(|e| {
            Error::Invalid(format!("cannot read WAL file {}: {e}", wal_path.display()))
        })?;
        identity.check_wal(&name, &data)?;
        let id = identity.archive_id();
        let outcome = stanza
            .archive_push(&id, name.timeline, &name.name, data, compress_level)
            .await?;
        match outcome {
            PushOutcome::Stored => {
                tracing::info!("pushed WAL file {} to the archive", name.name)
            }
            PushOutcome::AlreadyArchived => {
                tracing::warn!(
                    "WAL file {} was already in the archive with the same content",
                    name.name
                )
            }
        }
        Ok(())
    }

    async fn get(&self, stanza: &Stanza, name: &str, dest: &Path) -> Result<bool> {
        let name = wal_name(name)?;
        let identity = Identity::recovering(&stanza.info.meta)?;
        let Some(data) = stanza
            .archive_get(&identity.archive_id(), name.timeline, &name.name)
            .await?
        else {
            tracing::info!("unable to find {} in the archive", name.name);
            return Ok(false);
        };
        identity.check_archived(&name, &data)?;
        crate::durable::write_durably(dest, &data)
            .map_err(|e| Error::Invalid(format!("cannot write {}: {e}", dest.display())))?;
        tracing::info!("found {} in the archive", name.name);
        Ok(true)
    }

    async fn push_async(
        &self,
        stanza: &Stanza,
        wal_path: &Path,
        opts: &dyn Options,
        spool: &Spool,
        start_worker: &(dyn Fn() -> Result<()> + Send + Sync),
    ) -> Result<()> {
        let name = wal_name(file_name(wal_path)?)?;
        check_working_directory(stanza.name().as_str(), opts)?;
        archive_async::wait_pushed(stanza, wal_path, &name, spool, start_worker).await
    }

    async fn push_queued(
        &self,
        stanza: &Stanza,
        wal_path: &Path,
        compress_level: i32,
        spool: &Spool,
    ) -> Result<()> {
        let wal_dir = wal_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        archive_async::push_queued(stanza, wal_dir, compress_level, spool).await
    }

    async fn get_async(
        &self,
        stanza: &Stanza,
        name: &str,
        dest: &Path,
        spool: &Spool,
        start_worker: &(dyn Fn() -> Result<()> + Send + Sync),
    ) -> Result<bool> {
        let parsed = wal_name(name)?;
        let sp = archive_async::prefetch_dir(spool, stanza)?;
        if parsed.kind == WalFileKind::Segment {
            let took = archive_async::take_prefetched(&sp, name, dest)?;
            // What follows is fetched while recovery replays this one; a worker is started
            // only when none runs and the spool holds less than half of what should follow
            // (a process per segment would compete with recovery for the CPU).
            if archive_async::needs_prefetch(&sp, stanza, &parsed, spool)?
                && let Err(e) = start_worker()
            {
                tracing::warn!("cannot start prefetching the WAL after {name}: {e}");
            }
            if took {
                tracing::info!("found {name} in the spool (prefetched)");
                return Ok(true);
            }
        }
        self.get(stanza, name, dest).await
    }

    async fn prefetch(&self, stanza: &Stanza, name: &str, spool: &Spool) -> Result<()> {
        archive_async::prefetch(stanza, &wal_name(name)?, spool).await
    }

    fn pruner(&self) -> &dyn LogPruner {
        self
    }

    async fn check(&self, stanza: &Stanza, opts: &dyn Options) -> Result<String> {
        let pg = options::backup_options(opts)?;
        let wal = backup::check(stanza, &pg).await?;
        tracing::info!("WAL segment {wal} was archived: archive_command works");
        Ok(format!(
            "check: WAL segment {wal} reached the archive of stanza '{}'",
            stanza.name()
        ))
    }
}

fn check_working_directory(stanza: &str, opts: &dyn Options) -> Result<()> {
    let pg_path = opts.path("pg-path")?.ok_or_else(|| {
        Error::Usage(format!(
            "archive-push needs pg-path, the data directory of the cluster archiving into stanza '{stanza}' (as pgBackRest needs pg1-path): set pg-path in the config file, CAIRN_PG_PATH, or --pg-path in archive_command"
        ))
    })?;
    let cwd = std::env::current_dir().map_err(|e| {
        Error::Invalid(format!("cannot read archive-push's working directory: {e}"))
    })?;
    let resolve = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (here, configured): (PathBuf, PathBuf) = (resolve(&cwd), resolve(&pg_path));
    if here != configured {
        return Err(Error::Invalid(format!(
            "refusing to archive: archive-push runs in {} (PostgreSQL runs archive_command in its data directory), but stanza '{stanza}' archives the cluster at pg-path {}. A cluster restored or copied into {} is archiving with the original's settings, and its WAL would enter the original's archive. In that cluster set archive_mode = off (`cairn restore --archive-mode off` does); if it is the new primary, set its pg-path to {}",
            here.display(),
            configured.display(),
            here.display(),
            here.display()
        )));
    }
    Ok(())
}

/// The backup meta entry that says the WAL after this backup's end was expired
/// (`--retention-archive`): it restores to its consistency point (or a target before the gap),
/// and verify does not call the gap damage.
pub const WAL_AFTER_STOP: &str = "wal-after-stop";

#[async_trait]
impl LogPruner for WalArchive {
    /// Everything before the start of the oldest backup whose WAL stays whole: the oldest
    /// kept backup, or with `--retention-archive N`, the oldest of the newest N backups of the
    /// type; older kept backups keep only their own start-to-stop range (and are marked).
    /// Timeline histories always stay. Nothing when a kept backup does not say its range.
    async fn plan(
        &self,
        stanza: &Stanza,
        kept: &Catalog,
        retention: Option<ArchiveRetention>,
    ) -> Result<LogPlan> {
        let mut ranges = Vec::new();
        for b in &kept.backups {
            match (b.meta.get("wal-start"), b.meta.get("wal-stop")) {
                (Some(s), Some(e))
                    if WalFileName::parse(s).is_some() && WalFileName::parse(e).is_some() =>
                {
                    ranges.push((b, s.clone(), e.clone()));
                }
                _ => return Ok(LogPlan::default()),
            }
        }
        if ranges.is_empty() {
            return Ok(LogPlan::default());
        }
        let anchor = match retention {
            None => 0,
            Some(r) => {
                let counted: Vec<usize> = ranges
                    .iter()
                    .enumerate()
                    .filter(|(_, (b, _, _))| match r.kind {
                        BackupType::Full => b.kind == BackupType::Full,
                        BackupType::Diff => b.kind != BackupType::Incr,
                        BackupType::Incr => true,
                    })
                    .map(|(i, _)| i)
                    .collect();
                if counted.len() > r.count as usize {
                    counted[counted.len() - r.count as usize]
                } else {
                    0
                }
            }
        };
        let cutoff = ranges[anchor].1.clone();
        let older = &ranges[..anchor];
        let mut plan = LogPlan {
            kept_from: Some(cutoff.clone()),
            ..LogPlan::default()
        };
        for (b, _, _) in older {
            plan.marks.push((
                b.label.clone(),
                WAL_AFTER_STOP.to_string(),
                "expired".to_string(),
            ));
        }
        // Each archive id holds the WAL of one identity of the stanza (before and after a
        // stanza-upgrade), whose file names the other's may repeat: what is needed is decided
        // per id, from the backups of that identity only.
        let current = Identity::from_meta(&stanza.info.meta)?.archive_id();
        let mut of_id: Vec<String> = Vec::with_capacity(ranges.len());
        for (b, _, _) in &ranges {
            of_id.push(Identity::of_backup(&stanza.info.meta, &b.meta)?.archive_id());
        }
        for id in stanza.archive_ids().await? {
            let here: Vec<usize> = (0..ranges.len()).filter(|i| of_id[*i] == id).collect();
            if here.is_empty() && id == current {
                // The cluster's WAL since stanza-upgrade, before its first backup: all kept.
                continue;
            }
            // From the first of this identity's backups that keeps its WAL whole (the current
            // identity's first backup at the least: never less than before the upgrade).
            let cutoff_here = here
                .iter()
                .find(|i| **i >= anchor)
                .or(if id == current { here.first() } else { None })
                .map(|i| ranges[*i].1.as_str());
            let older_here: Vec<&(&cairn_repo::catalog::BackupRecord, String, String)> = here
                .iter()
                .filter(|i| **i < anchor)
                .map(|i| &ranges[*i])
                .collect();
            for a in stanza.archive_list(&id).await? {
                if a.name.ends_with(".history") || a.name.len() < 24 {
                    continue;
                }
                let pos = &a.name[..24];
                let needed = cutoff_here.is_some_and(|c| pos >= c)
                    || older_here
                        .iter()
                        .any(|(_, s, e)| pos >= s.as_str() && pos <= e.as_str());
                if !needed {
                    plan.bytes += a.size;
                    plan.delete
                        .push(stanza.archive_key(&id, a.timeline, &a.name)?);
                }
            }
        }
        Ok(plan)
    }
}
