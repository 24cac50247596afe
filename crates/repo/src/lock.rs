//! Stanza locks. A lock is a create-only object naming its holder (host, pid, command, time),
//! so it works the same on local disk and S3. A holder that died (same host, process gone)
//! leaves a stale lock that the next command takes over; a lock held from another host is
//! reported with what to do.

use crate::codec::{self, magic};
use crate::error::{Error, Result};
use crate::storage::{Key, PutMode, Storage, StorageError};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

/// Every lock this process holds, so the binary can release them on any way out: an error
/// that skipped a release, a panic, Ctrl-C. A stanza lock left behind blocks every later
/// backup until someone removes it by hand (or, on this host, until it is found stale).
static HELD: Mutex<Vec<(Arc<dyn Storage>, Key)>> = Mutex::new(Vec::new());

fn register(store: &Arc<dyn Storage>, key: &Key) {
    if let Ok(mut held) = HELD.lock() {
        held.push((store.clone(), key.clone()));
    }
}

fn unregister(key: &Key) {
    if let Ok(mut held) = HELD.lock() {
        held.retain(|(_, k)| k != key);
    }
}

/// Release every lock this process still holds; returns how many there were. Called by the
/// binary once a command has ended, however it ended.
pub async fn release_all_held() -> usize {
    let held: Vec<_> = match HELD.lock() {
        Ok(mut h) => std::mem::take(&mut *h),
        Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
    };
    let n = held.len();
    for (store, key) in held {
        if let Err(e) = store.delete(&key).await {
            tracing::warn!(
                "cannot release the lock {}/{key}: {e}; remove it if no cairn process is running",
                store.location()
            );
        }
    }
    n
}

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

/// What is at a lock's key, for `info`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum LockState {
    Free,
    /// Held by a running process, or by a process on another host (which cannot be checked
    /// from here).
    Held(LockInfo),
    /// Left by a process of this host that is no longer running: the next command takes it
    /// over.
    Stale(LockInfo),
    /// Present but unreadable.
    Unreadable,
}

impl Lock {
    /// Look at the lock at `key` without taking it.
    pub async fn inspect(store: &Arc<dyn Storage>, key: &Key) -> Result<LockState> {
        match store.get(key, None).await {
            Ok(b) => Ok(
                match codec::open::<LockInfo>(key.as_str(), magic::LOCK, &b) {
                    Ok(h) if h.host == hostname() && !alive(h.pid) => LockState::Stale(h),
                    Ok(h) => LockState::Held(h),
                    Err(_) => LockState::Unreadable,
                },
            ),
            Err(StorageError::NotFound { .. }) => Ok(LockState::Free),
            Err(e) => Err(e.into()),
        }
    }

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
                Ok(()) => {
                    register(&store, &key);
                    return Ok(Lock { store, key });
                }
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
        unregister(&self.key);
        Ok(())
    }
}
