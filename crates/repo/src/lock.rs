//! Stanza locks. A lock is a create-only object naming its holder (host, pid, command, time),
//! so it works the same on local disk and S3. A holder that died (same host, process gone)
//! leaves a stale lock that the next command takes over; a lock held from another host is
//! reported with what to do.

use crate::codec::{self, magic};
use crate::error::{Error, Result};
use crate::storage::{Key, PutMode, Storage, StorageError};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LockInfo {
    pub host: String,
    pub pid: u32,
    pub command: String,
    pub since: i64,
}

#[derive(Debug)]
pub struct Lock {
    store: Arc<dyn Storage>,
    key: Key,
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

impl Lock {
    pub async fn acquire(
        store: Arc<dyn Storage>,
        key: Key,
        what: &str,
        command: &str,
    ) -> Result<Lock> {
        let me = LockInfo {
            host: hostname(),
            pid: std::process::id(),
            command: command.to_string(),
            since: crate::time::now_unix(),
        };
        let bytes = Bytes::from(codec::seal(magic::LOCK, &me, false));
        for _ in 0..3 {
            match store.put(&key, bytes.clone(), PutMode::Create).await {
                Ok(()) => return Ok(Lock { store, key }),
                Err(StorageError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let held = match store.get(&key, None).await {
                Ok(b) => codec::open::<LockInfo>(key.as_str(), magic::LOCK, &b).ok(),
                Err(StorageError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            match held {
                Some(h) if h.host == me.host && !alive(h.pid) => {
                    tracing::warn!(
                        "taking over the lock on {what} left by `{}` (pid {}), which is no longer running",
                        h.command,
                        h.pid
                    );
                    store.delete(&key).await?;
                }
                Some(h) => {
                    return Err(Error::Locked(format!(
                        "{what} is locked by `{}` (pid {} on host {}, since {}); wait for it to finish, or if no cairn process is running there, remove {}/{}",
                        h.command,
                        h.pid,
                        h.host,
                        crate::time::display(h.since),
                        store.location(),
                        key
                    )));
                }
                None => {
                    return Err(Error::Locked(format!(
                        "{what} is locked and the lock object {}/{} is unreadable; if no cairn process is running, remove it",
                        store.location(),
                        key
                    )));
                }
            }
        }
        Err(Error::Locked(format!(
            "could not take the lock on {what}: it keeps changing hands"
        )))
    }

    pub async fn release(self) -> Result<()> {
        self.store.delete(&self.key).await?;
        Ok(())
    }
}
