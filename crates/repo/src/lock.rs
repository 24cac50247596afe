//! Stanza locks that hold across hosts (format.md, "Lock"): leases in the repository, so
//! they work the same on local disk and S3 and whichever host runs the command.
//!
//! A lock is a generation: the object `stanza/<s>/lease/<gen>` with the highest `gen` is the
//! lock; it names its holder and the time its lease runs out. Taking the lock creates the next
//! generation create-only, so of two processes that find the lock free or stale, exactly one
//! gets it, and nobody ever deletes a lock someone else just took (the takeover race of a
//! delete-then-create lock). The holder renews its lease in the background and confirms,
//! before each write that commits something, that it is still the newest generation with
//! time left on its lease; a holder that stalled past its lease finds its lock taken over
//! and fails instead of writing.

use crate::codec::{self, magic};
use crate::error::{Error, Result};
use crate::storage::{Key, PutMode, Storage, StorageError};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a lease lasts without renewal.
pub const LEASE_SECS: i64 = 300;
/// How often the holder renews it.
const RENEW_EVERY: Duration = Duration::from_secs(60);
/// A holder confirms it has at least this long left before a committing write.
const CONFIRM_MARGIN: i64 = 120;

/// Every lock this process holds, so the binary can release them on any way out: an error
/// that skipped a release, a panic, Ctrl-C. A lock left behind blocks every later command on
/// the stanza until its lease runs out (or, on this host, until it is found stale).
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
                "cannot release the lock {}/{key}: {e}; it is taken over once its lease runs out",
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
    /// Unix seconds when the lease runs out unless renewed (0 for a stop mark).
    pub lease_until: i64,
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

impl LockInfo {
    /// Whether the holder is known to be gone: a process of this host that is not running,
    /// or a lease that ran out (`now`).
    fn stale(&self, now: i64) -> bool {
        (self.host == hostname() && !alive(self.pid)) || self.lease_until < now
    }
}

/// What the lock of a stanza is, for `info`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum LockState {
    Free,
    /// Held by a running process (or one of another host whose lease has not run out).
    Held(LockInfo),
    /// Left by a holder that is gone (process not running, or lease run out): the next
    /// command takes it over.
    Stale(LockInfo),
    /// Present but unreadable.
    Unreadable,
}

fn gen_key(prefix: &Key, generation: u64) -> Result<Key> {
    Ok(prefix.join(&format!("{generation:016x}"))?)
}

fn parse_gen(prefix: &Key, key: &Key) -> Option<u64> {
    let rest = key
        .as_str()
        .strip_prefix(prefix.as_str())?
        .strip_prefix('/')?;
    (rest.len() == 16)
        .then(|| u64::from_str_radix(rest, 16).ok())
        .flatten()
}

/// The generations under `prefix`, newest first.
pub(crate) async fn generations(store: &Arc<dyn Storage>, prefix: &Key) -> Result<Vec<(u64, Key)>> {
    let mut gens: Vec<(u64, Key)> = store
        .list(prefix)
        .await?
        .into_iter()
        .filter_map(|m| parse_gen(prefix, &m.key).map(|g| (g, m.key)))
        .collect();
    gens.sort_by_key(|g| std::cmp::Reverse(g.0));
    Ok(gens)
}

async fn read(store: &Arc<dyn Storage>, key: &Key) -> Result<Option<Option<LockInfo>>> {
    match store.get(key, None).await {
        Ok(b) => Ok(Some(codec::open(key.as_str(), magic::LOCK, &b).ok())),
        Err(StorageError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug)]
pub struct Lock {
    store: Arc<dyn Storage>,
    prefix: Key,
    key: Key,
    generation: u64,
    info: Arc<Mutex<LockInfo>>,
    renew: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Some(t) = self.renew.take() {
            t.abort();
        }
    }
}

impl Lock {
    /// Look at the lock under `prefix` without taking it.
    pub async fn inspect(store: &Arc<dyn Storage>, prefix: &Key) -> Result<LockState> {
        let now = crate::time::now_unix();
        let Some((_, key)) = generations(store, prefix).await?.into_iter().next() else {
            return Ok(LockState::Free);
        };
        Ok(match read(store, &key).await? {
            None => LockState::Free,
            Some(None) => LockState::Unreadable,
            Some(Some(h)) if h.stale(now) => LockState::Stale(h),
            Some(Some(h)) => LockState::Held(h),
        })
    }

    /// Take the lock under `prefix` for `command` (`what` names it in messages).
    pub async fn acquire(
        store: Arc<dyn Storage>,
        prefix: Key,
        what: &str,
        command: &str,
    ) -> Result<Lock> {
        for _ in 0..5 {
            let now = crate::time::now_unix();
            let gens = generations(&store, &prefix).await?;
            let next = match gens.first() {
                None => 1,
                Some((g, key)) => {
                    match read(&store, key).await? {
                        // Released (or an old generation removed) since the listing.
                        None => continue,
                        Some(Some(h)) if !h.stale(now) => {
                            return Err(Error::Locked(format!(
                                "{what} is locked by `{}` (pid {} on host {}, since {}; its lease runs until {}); wait for it to finish. If no cairn process is running there, the lock is taken over once its lease runs out",
                                h.command,
                                h.pid,
                                h.host,
                                crate::time::display(h.since),
                                crate::time::display(h.lease_until),
                            )));
                        }
                        Some(Some(h)) => {
                            tracing::warn!(
                                "taking over the lock on {what} left by `{}` (pid {} on host {}), which is no longer running or whose lease ran out",
                                h.command,
                                h.pid,
                                h.host
                            );
                        }
                        Some(None) => {
                            return Err(Error::Locked(format!(
                                "{what} is locked and the lock object {}/{key} is unreadable; if no cairn process is running, remove it",
                                store.location()
                            )));
                        }
                    }
                    g.checked_add(1).ok_or_else(|| {
                        Error::Locked(format!(
                            "the lock object {}/{key} has the last possible generation, so it was not written by cairn: if no cairn process is running, remove it",
                            store.location()
                        ))
                    })?
                }
            };
            let info = LockInfo {
                host: hostname(),
                pid: std::process::id(),
                command: command.to_string(),
                since: now,
                lease_until: now + LEASE_SECS,
            };
            let key = gen_key(&prefix, next)?;
            let bytes = Bytes::from(codec::seal(magic::LOCK, &info, false));
            match store.put(&key, bytes, PutMode::Create).await {
                Ok(()) => {}
                // Someone else took this generation first: look again.
                Err(StorageError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
            // Create-only cannot tell a generation never written from one removed since: a
            // taker slow since its listing may create a generation again after a newer holder
            // removed it. Then the newer one holds the lock.
            if generations(&store, &prefix)
                .await?
                .first()
                .is_some_and(|g| g.0 > next)
            {
                let _ = store.delete(&key).await;
                continue;
            }
            register(&store, &key);
            // Older generations are history now.
            for (_, old) in gens {
                let _ = store.delete(&old).await;
            }
            let info = Arc::new(Mutex::new(info));
            let renew = tokio::spawn(renew_loop(store.clone(), key.clone(), info.clone()));
            return Ok(Lock {
                store,
                prefix,
                key,
                generation: next,
                info,
                renew: Some(renew),
            });
        }
        Err(Error::Locked(format!(
            "could not take the lock on {what}: it keeps changing hands"
        )))
    }

    /// Before a write that commits something: the lock must still be this holder's (the
    /// newest generation) with time left on its lease; else someone took it over and this
    /// command must not write.
    pub async fn confirm(&self) -> Result<()> {
        let now = crate::time::now_unix();
        let newest = generations(&self.store, &self.prefix)
            .await?
            .first()
            .map(|g| g.0);
        let mine = self.info.lock().map(|i| i.clone()).ok();
        let until = mine.as_ref().map_or(0, |i| i.lease_until);
        // Still ours: on a store without conditional writes (HEAD, then PUT), another
        // process may have written the same generation over ours.
        let ours = match read(&self.store, &self.key).await? {
            Some(Some(h)) => mine.as_ref().is_some_and(|m| same_holder(&h, m)),
            _ => false,
        };
        if !ours || newest != Some(self.generation) || until < now + CONFIRM_MARGIN {
            return Err(Error::Locked(format!(
                "this command lost its lock ({}/{}): it stalled past its lease and another command took the lock over; nothing more is written",
                self.store.location(),
                self.key
            )));
        }
        Ok(())
    }

    pub async fn release(mut self) -> Result<()> {
        if let Some(t) = self.renew.take() {
            t.abort();
        }
        self.store.delete(&self.key).await?;
        unregister(&self.key);
        Ok(())
    }
}

fn same_holder(a: &LockInfo, b: &LockInfo) -> bool {
    a.host == b.host && a.pid == b.pid && a.since == b.since && a.command == b.command
}

/// Renew the lease every `RENEW_EVERY` until aborted. The holder alone writes its generation,
/// so an overwrite is safe. A failed renewal is retried at the next tick; `confirm` stops the
/// command if the lease ran out meanwhile.
async fn renew_loop(store: Arc<dyn Storage>, key: Key, info: Arc<Mutex<LockInfo>>) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let renewed = match info.lock() {
            Ok(i) => LockInfo {
                lease_until: crate::time::now_unix() + LEASE_SECS,
                ..i.clone()
            },
            Err(_) => return,
        };
        // Never over another holder's lock (see `confirm`): then this one is lost, and the
        // command's next confirm says so.
        match read(&store, &key).await {
            Ok(Some(Some(h))) if same_holder(&h, &renewed) => {}
            // Unreachable for now: try again at the next tick.
            Err(e) => {
                tracing::warn!("cannot renew the lock {key}: {e}");
                continue;
            }
            _ => return,
        }
        let bytes = Bytes::from(codec::seal(magic::LOCK, &renewed, false));
        match store.put(&key, bytes, PutMode::Overwrite).await {
            Ok(()) => {
                if let Ok(mut i) = info.lock() {
                    i.lease_until = renewed.lease_until;
                }
            }
            Err(e) => tracing::warn!("cannot renew the lock {key}: {e}"),
        }
    }
}
