//! `stop`, `start` and `stanza-delete` (pgBackRest's commands of the same names). A stopped
//! stanza refuses backups, expires, repairs and archive-push until started again. The stop
//! mark lives in the repository (`stanza/<s>/stop`), not on one host: a stanza stopped from
//! any host is stopped for all of them.

use crate::codec::{self, magic};
use crate::error::{Error, Result};
use crate::keys;
use crate::lock::{LockInfo, hostname};
use crate::repository::Stanza;
use crate::storage::{Key, PutMode, StorageError};
use bytes::Bytes;

impl Stanza {
    pub fn stop_key(&self) -> Result<Key> {
        keys::stop(self.name())
    }

    /// Who stopped the stanza, if it is stopped.
    pub async fn stopped(&self) -> Result<Option<LockInfo>> {
        let k = self.stop_key()?;
        match self.store().get(&k, None).await {
            // An unreadable mark still means stopped: when in doubt, do not write.
            Ok(b) => Ok(Some(codec::open(k.as_str(), magic::LOCK, &b).unwrap_or(
                LockInfo {
                    host: "unknown".into(),
                    pid: 0,
                    command: "stop".into(),
                    since: 0,
                    lease_until: 0,
                },
            ))),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Refuse `command` on a stopped stanza.
    pub async fn refuse_if_stopped(&self, command: &str) -> Result<()> {
        if let Some(by) = self.stopped().await? {
            return Err(Error::Locked(format!(
                "stanza '{}' is stopped (by `cairn stop` on host {}, {}), so {command} is refused; `cairn --stanza={} start` allows backups, expires and archive-push again",
                self.name(),
                by.host,
                crate::time::display(by.since),
                self.name()
            )));
        }
        Ok(())
    }

    /// Stop the stanza; returns false when it was already stopped.
    pub async fn stop(&self) -> Result<bool> {
        let me = LockInfo {
            host: hostname(),
            pid: std::process::id(),
            command: "stop".into(),
            since: crate::time::now_unix(),
            lease_until: 0,
        };
        let bytes = Bytes::from(codec::seal(magic::LOCK, &me, false));
        match self
            .store()
            .put(&self.stop_key()?, bytes, PutMode::Create)
            .await
        {
            Ok(()) => Ok(true),
            Err(StorageError::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Start the stanza again; returns false when it was not stopped.
    pub async fn start(&self) -> Result<bool> {
        let was = self.stopped().await?.is_some();
        self.store().delete(&self.stop_key()?).await?;
        Ok(was)
    }

    /// Delete every object of the stopped stanza, under its lock: data, WAL, backups and the
    /// catalog first, then `stanza.info`, then the stop mark (so an interrupted delete can be
    /// run again, and the stanza never looks usable half-deleted). Returns objects deleted.
    pub async fn delete_all(&self) -> Result<usize> {
        if self.stopped().await?.is_none() {
            return Err(Error::Usage(format!(
                "stanza '{}' is not stopped: run `cairn --stanza={} stop` first (it makes archive-push refuse, so nothing is written into the stanza while it is deleted)",
                self.name(),
                self.name()
            )));
        }
        let lock = self.lock("stanza-delete").await?;
        lock.confirm().await?;
        let result = self.delete_all_locked().await;
        lock.release().await?;
        result
    }

    async fn delete_all_locked(&self) -> Result<usize> {
        let (info, stop, lease) = (
            keys::stanza_info(self.name())?,
            self.stop_key()?,
            self.lock_prefix()?,
        );
        let all: Vec<Key> = self
            .store()
            .list(&self.prefix()?)
            .await?
            .into_iter()
            .map(|m| m.key)
            .filter(|k| *k != info && *k != stop && !k.as_str().starts_with(lease.as_str()))
            .collect();
        self.store().delete_many(&all).await?;
        self.store().delete(&info).await?;
        self.store().delete(&stop).await?;
        Ok(all.len() + 2)
    }
}
