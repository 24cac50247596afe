//! Asynchronous WAL archiving (`--archive-async`, pgBackRest's `archive-async`), through a
//! spool directory of this host (`spool_dir`).
//!
//! **archive-push.** PostgreSQL marks each segment it wants archived with
//! `pg_wal/archive_status/<segment>.ready` before it runs archive_command for it, one at a
//! time. The call for one segment starts a worker (this cairn again, detached) unless one
//! runs; the worker pushes every queued segment, `process-max` at a time, and for each one the
//! repository has made durable writes `out/<segment>.ok` holding the BLAKE3 of the bytes it
//! pushed. A call returns 0 only when it finds an `.ok` whose hash is that of the segment it
//! was given: so an acknowledgement always means durable in the repository, and an `.ok` left
//! by another cluster or an older incarnation of this one (the same name, other bytes) never
//! acknowledges a segment it did not store. Later calls find their `.ok` already written and
//! return at once. A push that fails writes `out/<segment>.error`, which the call reports
//! (PostgreSQL keeps the segment and calls again).
//!
//! `--archive-push-queue-max`: when the repository cannot be reached and the segments
//! waiting in pg_wal exceed this size, the worker gives them up, writing `.ok` files that say
//! *dropped*: PostgreSQL may then recycle them instead of filling its disk; each call for a
//! dropped segment logs a warning that says what it means (a hole in the archive: point-in-time
//! recovery across it is impossible until the next backup). Then, and only then, is a segment
//! acknowledged that is not in the repository, as pgBackRest does.
//!
//! **archive-get.** A call for a segment the spool holds (`in/<archive id>/<segment>`, written
//! whole and checked by a worker) moves it into place; otherwise it fetches it directly. Either
//! way it starts a worker that fetches the segments after it on the same timeline, in parallel,
//! up to `--archive-get-queue-max` bytes, so recovery does not wait a round trip per segment.
//! Prefetched files are kept per archive id, so a stanza created again for another cluster
//! never hands out the old one's WAL.

use super::identity::Identity;
use super::wal::{WalFileKind, WalFileName, XLogFileName};
use crate::engine::{DEFAULT_GET_QUEUE_MAX, Spool};
use cairn_repo::{Error, Result, Stanza};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::Invalid(format!("{what}: {e}"))
}

/// The spool of `stanza` of this repository: `<spool-path>/archive/<stanza>/<repository>`,
/// the last the first 16 hex digits of BLAKE3 of the repository's location, so that one
/// cluster archiving into two repositories (a migration) never takes one's acknowledgement
/// for the other's.
pub fn spool_dir(spool: &Spool, stanza: &Stanza) -> PathBuf {
    let repo = blake3::hash(stanza.store().location().as_bytes()).to_hex();
    spool
        .path
        .join("archive")
        .join(stanza.name().as_str())
        .join(&repo.as_str()[..16])
}

/// The spool directory of one stanza.
pub(super) struct StanzaSpool {
    dir: PathBuf,
}

/// What the worker said about a segment.
pub(super) enum Outcome {
    Pushed,
    Dropped(String),
    Failed(String),
}

impl StanzaSpool {
    pub fn open(spool: &Spool, stanza: &Stanza, sub: &str) -> Result<StanzaSpool> {
        let dir = spool_dir(spool, stanza).join(sub);
        fs::create_dir_all(&dir).map_err(io_err(format!(
            "cannot create the spool directory {} (--spool-path: a directory this user can write)",
            dir.display()
        )))?;
        Ok(StanzaSpool { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The worker's lock: held while it runs (released by the kernel when it dies).
    pub fn try_lock(&self) -> Result<Option<fs::File>> {
        let path = self.dir.join(".worker.lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(format!("cannot open {}", path.display())))?;
        match f.try_lock() {
            Ok(()) => Ok(Some(f)),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => {
                Err(io_err(format!("cannot lock {}", path.display()))(e))
            }
        }
    }

    pub fn worker_running(&self) -> Result<bool> {
        Ok(self.try_lock()?.is_none())
    }

    /// Write `name` with `text` whole (a reader never sees half of it).
    fn put(&self, name: &str, text: &str) -> Result<()> {
        let tmp = self.dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let path = self.dir.join(name);
        let mut f =
            fs::File::create(&tmp).map_err(io_err(format!("cannot write {}", tmp.display())))?;
        f.write_all(text.as_bytes())
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(io_err(format!("cannot write {}", path.display())))
    }

    pub fn pushed(&self, segment: &str, hash: &str) -> Result<()> {
        self.put(&format!("{segment}.ok"), &format!("ok {hash}\n"))
    }

    pub fn dropped(&self, segment: &str, hash: &str, why: &str) -> Result<()> {
        self.put(&format!("{segment}.ok"), &format!("dropped {hash} {why}\n"))
    }

    pub fn failed(&self, segment: &str, why: &str) -> Result<()> {
        self.put(&format!("{segment}.error"), why)
    }

    pub fn has_ok(&self, segment: &str) -> bool {
        self.dir.join(format!("{segment}.ok")).exists()
    }

    pub fn forget_error(&self, segment: &str) {
        let _ = fs::remove_file(self.dir.join(format!("{segment}.error")));
    }

    /// What the worker wrote for `segment` whose bytes hash to `hash`; an `.ok` for other
    /// bytes is removed and counts as nothing. A result once read is removed.
    pub fn outcome(&self, segment: &str, hash: &str) -> Option<Outcome> {
        let ok = self.dir.join(format!("{segment}.ok"));
        if let Ok(text) = fs::read_to_string(&ok) {
            let _ = fs::remove_file(&ok);
            let mut words = text.trim_end().splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("ok"), Some(h), None) if h == hash => return Some(Outcome::Pushed),
                (Some("dropped"), Some(h), why) if h == hash => {
                    return Some(Outcome::Dropped(why.unwrap_or_default().to_string()));
                }
                _ => tracing::debug!("{} is not for these bytes; ignored", ok.display()),
            }
        }
        let err = self.dir.join(format!("{segment}.error"));
        let text = fs::read_to_string(&err).ok()?;
        let _ = fs::remove_file(&err);
        Some(Outcome::Failed(text))
    }

    /// Remove results for segments no longer queued (`keep`).
    pub fn clean(&self, keep: &std::collections::HashSet<String>) {
        for e in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let segment = name
                .strip_suffix(".ok")
                .or_else(|| name.strip_suffix(".error"));
            match segment {
                Some(s) if !keep.contains(s) => {
                    let _ = fs::remove_file(e.path());
                }
                _ => {}
            }
        }
    }
}

/// BLAKE3 of a segment's bytes, hex.
pub(super) fn hash(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// The files PostgreSQL has queued for archiving in `wal_dir`, oldest first, with their sizes.
pub(super) fn ready(wal_dir: &Path) -> Result<Vec<(String, u64)>> {
    let status = wal_dir.join("archive_status");
    let mut out = Vec::new();
    for e in fs::read_dir(&status)
        .map_err(io_err(format!("cannot list {}", status.display())))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(file) = name.strip_suffix(".ready") else {
            continue;
        };
        if WalFileName::parse(file).is_none() {
            continue;
        }
        let size = fs::metadata(wal_dir.join(file)).map_or(0, |m| m.len());
        out.push((file.to_string(), size));
    }
    // History files first (a new timeline's history before its segments), then by name.
    out.sort_by_key(|(n, _)| (!n.ends_with(".history"), n.clone()));
    Ok(out)
}

/// Wait for the worker's word on `wal_path`, starting a worker when none runs.
pub(super) async fn wait_pushed(
    stanza: &Stanza,
    wal_path: &Path,
    name: &WalFileName,
    spool: &Spool,
    start_worker: &(dyn Fn() -> Result<()> + Send + Sync),
) -> Result<()> {
    let data = fs::read(wal_path)
        .map_err(|e| Error::Invalid(format!("cannot read WAL file {}: {e}", wal_path.display())))?;
    let hash = hash(&data);
    drop(data);
    let sp = StanzaSpool::open(spool, stanza, "out")?;
    // An error file from an earlier attempt is not this attempt's answer.
    if !sp.worker_running()? {
        sp.forget_error(&name.name);
    }
    let deadline = Instant::now() + spool.timeout;
    let mut started: Option<Instant> = None;
    loop {
        match sp.outcome(&name.name, &hash) {
            Some(Outcome::Pushed) => {
                tracing::info!(
                    "pushed WAL file {} to the archive (asynchronously)",
                    name.name
                );
                return Ok(());
            }
            Some(Outcome::Dropped(why)) => {
                tracing::warn!(
                    "WAL file {} was DROPPED, not archived: {why}. The archive now has a hole: point-in-time recovery across it is impossible; take a new backup once the repository is reachable",
                    name.name
                );
                return Ok(());
            }
            Some(Outcome::Failed(why)) => {
                return Err(Error::Invalid(format!(
                    "the asynchronous archiver could not push {}: {}",
                    name.name,
                    why.trim_end()
                )));
            }
            None => {}
        }
        // A worker that finished before this segment was queued has to be started again.
        if started.is_none_or(|t| t.elapsed() > Duration::from_millis(500))
            && !sp.worker_running()?
        {
            start_worker()?;
            started = Some(Instant::now());
        }
        if Instant::now() >= deadline {
            return Err(Error::Invalid(format!(
                "{} was not acknowledged by the asynchronous archiver within {} s (--archive-timeout); see its log in {}",
                name.name,
                spool.timeout.as_secs(),
                sp.dir().display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The push worker: every queued segment, `process_max` at a time, until none is left.
pub(super) async fn push_queued(
    stanza: &Stanza,
    wal_dir: &Path,
    compress_level: i32,
    spool: &Spool,
) -> Result<()> {
    use futures_util::StreamExt;
    let sp = StanzaSpool::open(spool, stanza, "out")?;
    let Some(_lock) = sp.try_lock()? else {
        return Ok(()); // another worker runs
    };
    let identity = Identity::from_meta(&stanza.info.meta)?;
    let archive_id = identity.archive_id();
    let batch_len = (spool.process_max * 4).clamp(4, 64);
    loop {
        let queued = ready(wal_dir)?;
        sp.clean(&queued.iter().map(|(n, _)| n.clone()).collect());
        let todo: Vec<(String, u64)> = queued.into_iter().filter(|(n, _)| !sp.has_ok(n)).collect();
        if todo.is_empty() {
            return Ok(());
        }
        let batch: Vec<String> = todo
            .iter()
            .take(batch_len)
            .map(|(f, _)| f.clone())
            .collect();
        let mut results = futures_util::stream::iter(batch)
            .map(|file: String| {
                let (identity, archive_id) = (&identity, &archive_id);
                async move {
                    let pushed = async {
                        let name = WalFileName::parse(&file)
                            .ok_or_else(|| Error::Invalid(format!("{file}: not a WAL name")))?;
                        let data = fs::read(wal_dir.join(&file)).map_err(|e| {
                            Error::Invalid(format!("cannot read WAL file {file}: {e}"))
                        })?;
                        identity.check_wal(&name, &data)?;
                        let h = hash(&data);
                        stanza
                            .archive_push(archive_id, name.timeline, &file, data, compress_level)
                            .await?;
                        Ok::<_, Error>(h)
                    }
                    .await;
                    match pushed {
                        Ok(h) => (file, Some(h), Ok(())),
                        Err(e) => (file, None, Err(e)),
                    }
                }
            })
            .buffer_unordered(spool.process_max.max(1));
        let mut unreachable = None;
        let mut failed = false;
        // Each acknowledged as soon as it is durable: the call waiting for it returns then,
        // not when the whole batch is done.
        while let Some((file, h, r)) = results.next().await {
            match (h, r) {
                (Some(h), Ok(())) => {
                    cairn_repo::failpoint::hit("archive-async-before-ok");
                    sp.pushed(&file, &h)?;
                }
                (_, Err(e)) => {
                    failed = true;
                    if matches!(e, Error::Storage(_)) {
                        unreachable = Some(e.to_string());
                    }
                    tracing::warn!("pushing {file}: {e}");
                    sp.failed(&file, &e.to_string())?;
                }
                (None, Ok(())) => {}
            }
        }
        if !failed {
            continue;
        }
        let waiting: u64 = todo.iter().map(|(_, s)| s).sum();
        if let (Some(why), Some(max)) = (unreachable, spool.queue_max)
            && waiting > max
        {
            let why = format!(
                "the repository cannot be reached ({why}) and {waiting} bytes of WAL wait, more than --archive-push-queue-max {max}"
            );
            for (file, _) in &todo {
                if sp.has_ok(file) {
                    continue;
                }
                let Ok(data) = fs::read(wal_dir.join(file)) else {
                    continue;
                };
                tracing::warn!("dropping WAL file {file}: {why}");
                sp.forget_error(file);
                sp.dropped(file, &hash(&data), &why)?;
            }
        }
        return Ok(());
    }
}

/// The segments after `name` on its timeline, as many as fit in `queue_max` bytes.
pub(super) fn following(name: &WalFileName, seg_size: u32, queue_max: u64) -> Vec<String> {
    if name.kind != WalFileKind::Segment {
        return Vec::new();
    }
    let Some(segno) = name.segno(seg_size) else {
        return Vec::new();
    };
    let n = (queue_max / seg_size.max(1) as u64).max(1);
    (1..=n)
        .map(|i| XLogFileName(name.timeline, segno + i, seg_size))
        .collect()
}

/// The spool directory of prefetched segments of this cluster.
pub(super) fn prefetch_dir(spool: &Spool, stanza: &Stanza) -> Result<StanzaSpool> {
    let identity = Identity::recovering(&stanza.info.meta)?;
    StanzaSpool::open(spool, stanza, &format!("in/{}", identity.archive_id()))
}

/// Whether a prefetch worker should start after `name` was asked for: none runs, and fewer
/// than half of the segments that should follow it are in the spool.
pub(super) fn needs_prefetch(
    sp: &StanzaSpool,
    stanza: &Stanza,
    name: &WalFileName,
    spool: &Spool,
) -> Result<bool> {
    let identity = Identity::recovering(&stanza.info.meta)?;
    let window = following(
        name,
        identity.wal_segment_size,
        spool.queue_max.unwrap_or(DEFAULT_GET_QUEUE_MAX),
    );
    let present = window.iter().filter(|n| sp.dir().join(n).exists()).count();
    Ok(present * 2 < window.len() && !sp.worker_running()?)
}

/// Move a prefetched `name` into `dest`, if the spool has it: renamed when the spool is on
/// the same file system, else copied. Not synced: PostgreSQL replays the file it asked for
/// and syncs it itself when it keeps it (a crash before then fetches it again), as
/// pgBackRest's archive-get leaves it; a sync per segment cost recovery 18 ms each.
pub(super) fn take_prefetched(sp: &StanzaSpool, name: &str, dest: &Path) -> Result<bool> {
    let path = sp.dir().join(name);
    if !path.exists() {
        return Ok(false);
    }
    if fs::rename(&path, dest).is_ok() {
        return Ok(true);
    }
    let data = fs::read(&path).map_err(io_err(format!("cannot read {}", path.display())))?;
    fs::write(dest, &data)
        .map_err(|e| Error::Invalid(format!("cannot write {}: {e}", dest.display())))?;
    let _ = fs::remove_file(&path);
    Ok(true)
}

/// The prefetch worker: fetch the segments after `name` not in the spool yet, in parallel;
/// stop at the first one the archive lacks (the end of the archive, or a timeline switch).
pub(super) async fn prefetch(stanza: &Stanza, name: &WalFileName, spool: &Spool) -> Result<()> {
    use futures_util::StreamExt;
    let sp = prefetch_dir(spool, stanza)?;
    let Some(_lock) = sp.try_lock()? else {
        return Ok(());
    };
    let identity = Identity::recovering(&stanza.info.meta)?;
    let window = following(
        name,
        identity.wal_segment_size,
        spool.queue_max.unwrap_or(DEFAULT_GET_QUEUE_MAX),
    );
    // Segments outside the window are behind recovery (or on another timeline): remove them.
    let keep: std::collections::HashSet<&String> = window.iter().collect();
    for e in fs::read_dir(sp.dir()).into_iter().flatten().flatten() {
        let f = e.file_name().to_string_lossy().into_owned();
        if WalFileName::parse(&f).is_some() && !keep.contains(&f) || f.starts_with(".tmp-") {
            let _ = fs::remove_file(e.path());
        }
    }
    let archive_id = identity.archive_id();
    let wanted: Vec<String> = window
        .iter()
        .filter(|n| !sp.dir().join(n).exists())
        .cloned()
        .collect();
    let mut fetched = futures_util::stream::iter(wanted)
        .map(|n: String| {
            let archive_id = &archive_id;
            async move {
                let got = match WalFileName::parse(&n) {
                    Some(w) => match stanza.archive_get(archive_id, w.timeline, &n).await {
                        Ok(Some(data)) => identity.check_archived(&w, &data).map(|()| Some(data)),
                        other => other,
                    },
                    None => Ok(None),
                };
                (n, got)
            }
        })
        .buffered(spool.process_max.max(1));
    while let Some((n, got)) = fetched.next().await {
        match got {
            Ok(Some(data)) => {
                let tmp = sp.dir().join(format!(".tmp-{n}"));
                fs::write(&tmp, &data)
                    .and_then(|()| fs::rename(&tmp, sp.dir().join(&n)))
                    .map_err(io_err(format!("cannot write {} into the spool", n)))?;
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!("prefetching {n}: {e}");
                break;
            }
        }
    }
    Ok(())
}
