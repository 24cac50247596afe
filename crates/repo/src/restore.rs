//! Fetching chunks back. `fetch_positioned` plans all reads first: the chunks a restore needs
//! are grouped by pack, sorted by offset and coalesced into ranged reads (nearby chunks in one
//! request), which run `process_max` at a time; each range is decompressed and checked on the
//! CPU pool and written where it belongs with positioned writes. `fetch_ordered` streams one
//! file's chunks in order (for stdout) with a bounded read-ahead window.
//!
//! Every chunk is checked against its BLAKE3 name before a byte of it is written.

use crate::error::{Error, Result};
use crate::ids::{ChunkId, PackId};
use crate::index::{Index, Location};
use crate::manifest::ChunkRef;
use crate::pages::Shape;
use crate::pipeline::Progress;
use crate::repository::Stanza;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Write};
use std::sync::Arc;

/// Nearby chunks closer than this are fetched in one request, wasting at most this much.
const COALESCE_GAP: u64 = 256 * 1024;
/// And no request reads more than this, bounding memory per in-flight request.
const MAX_RANGE: u64 = 16 * 1024 * 1024;
/// Fetched bytes not yet written, across all requests in flight: whatever `--process-max`
/// and the backup's size, a restore holds at most this much pack data (plus one decoded chunk
/// per worker).
pub const MEMORY_BUDGET: u64 = 128 * 1024 * 1024;
/// The budget is counted in units of this many bytes (semaphore permits are `u32`).
const BUDGET_UNIT: u64 = 64 * 1024;

/// Where restored bytes go: `target` is the caller's file number.
pub trait WriteAt: Send + Sync {
    fn write_at(&self, target: usize, offset: u64, data: &[u8]) -> io::Result<()>;
    fn describe(&self, target: usize) -> String;
}

#[derive(Clone, Copy, Debug)]
pub struct Placement {
    pub target: usize,
    pub offset: u64,
    pub chunk: ChunkRef,
    /// Which of the chunk's bytes go where (a paged file's unit base or delta, `pages`).
    pub shape: Shape,
}

/// One use of a chunk: target, offset, shape.
type Use = (usize, u64, Shape);

/// Decode a stored chunk located through the index and check it against its name.
pub fn open_chunk(object: &str, id: &ChunkId, loc: &Location, stored: &[u8]) -> Result<Vec<u8>> {
    let plain = if loc.compressed() {
        crate::pack::decompress(stored, loc.raw_len as usize)
            .map_err(|e| Error::corrupt(object, format!("chunk {id}: cannot decompress: {e}")))?
    } else {
        stored.to_vec()
    };
    if plain.len() != loc.raw_len as usize || ChunkId::of(&plain) != *id {
        return Err(Error::corrupt(
            object,
            format!("chunk {id}: content does not match its BLAKE3 name"),
        ));
    }
    Ok(plain)
}

/// A manifest's chunk reference must give the length the index gives: the manifest places
/// the chunk in its file by that length, the index decodes it by its own. Restore and verify
/// both apply this check.
pub fn check_len(c: &ChunkRef, loc: &Location) -> std::result::Result<(), String> {
    if loc.raw_len == c.len {
        return Ok(());
    }
    Err(format!(
        "chunk {} has length {} in the index, {} in the manifest",
        c.id, loc.raw_len, c.len
    ))
}

#[derive(Debug)]
struct Request {
    pack: PackId,
    start: u64,
    end: u64,
    chunks: Vec<(ChunkId, Location)>,
}

fn plan(
    index: &Index,
    needed: &HashMap<ChunkId, Vec<Use>>,
    sink: &dyn WriteAt,
) -> Result<Vec<Request>> {
    let mut by_pack: BTreeMap<PackId, Vec<(ChunkId, Location)>> = BTreeMap::new();
    for (id, uses) in needed {
        let (pack, loc) = index.get(id).ok_or_else(|| {
            let file = uses
                .first()
                .map(|(t, _, _)| sink.describe(*t))
                .unwrap_or_default();
            Error::corrupt(
                format!("chunk {id}"),
                format!("needed by {file}, but the repository has no usable copy of it (its pack is missing or was found damaged by verify, or the index that places it is lost); `cairn verify` says which, and `cairn stanza-repair` indexes packs again if only the index is lost"),
            )
        })?;
        by_pack.entry(pack).or_default().push((*id, loc));
    }
    let mut out = Vec::new();
    for (pack, mut chunks) in by_pack {
        chunks.sort_by_key(|(_, l)| l.offset);
        let mut cur: Option<Request> = None;
        for (id, loc) in chunks {
            let (s, e) = (loc.offset as u64, loc.offset as u64 + loc.stored_len as u64);
            match &mut cur {
                Some(r) if s <= r.end + COALESCE_GAP && e - r.start <= MAX_RANGE => {
                    r.end = r.end.max(e);
                    r.chunks.push((id, loc));
                }
                _ => {
                    out.extend(cur.take());
                    cur = Some(Request {
                        pack,
                        start: s,
                        end: e,
                        chunks: vec![(id, loc)],
                    });
                }
            }
        }
        out.extend(cur);
    }
    Ok(interleave_by_file(out, needed))
}

/// Order requests so that those in flight together write different files where they can:
/// round robin over the files (by each request's first chunk's first use), each file's
/// requests keeping their order. Two threads writing one file contend for its inode lock: a
/// profile of restoring a 1.5 GB cluster spent 15% of its CPU spinning on it.
fn interleave_by_file(requests: Vec<Request>, needed: &HashMap<ChunkId, Vec<Use>>) -> Vec<Request> {
    let mut turns: VecDeque<usize> = VecDeque::new();
    let mut by_file: HashMap<usize, VecDeque<Request>> = HashMap::new();
    let mut out = Vec::with_capacity(requests.len());
    for r in requests {
        let file = r
            .chunks
            .first()
            .and_then(|(id, _)| needed.get(id))
            .and_then(|uses| uses.first())
            .map(|(t, _, _)| *t)
            .unwrap_or(usize::MAX);
        if !by_file.contains_key(&file) {
            turns.push_back(file);
        }
        by_file.entry(file).or_default().push_back(r);
    }
    while let Some(file) = turns.pop_front() {
        if let Some(q) = by_file.get_mut(&file)
            && let Some(r) = q.pop_front()
        {
            out.push(r);
            if !q.is_empty() {
                turns.push_back(file);
            }
        }
    }
    out
}

fn cpu_pool(process_max: usize) -> Result<Arc<rayon::ThreadPool>> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(process_max.max(1))
        .thread_name(|i| format!("cairn-restore-{i}"))
        .build()
        .map(Arc::new)
        .map_err(|e| Error::Invalid(format!("cannot start worker threads: {e}")))
}

/// Run `f` on the CPU pool and wait for it without blocking the async runtime.
async fn on_pool<T: Send + 'static>(
    pool: &rayon::ThreadPool,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    pool.spawn(move || {
        let _ = tx.send(f());
    });
    rx.await
        .map_err(|_| Error::Invalid("a restore worker stopped unexpectedly".into()))
}

pub async fn fetch_positioned(
    stanza: &Stanza,
    index: &Index,
    placements: Vec<Placement>,
    process_max: usize,
    sink: Arc<dyn WriteAt>,
    progress: Arc<dyn Progress>,
) -> Result<()> {
    let mut needed: HashMap<ChunkId, Vec<Use>> = HashMap::new();
    let mut total = 0u64;
    for p in placements {
        total += p.shape.written(p.chunk.len as usize);
        if let Some((_, loc)) = index.get(&p.chunk.id) {
            check_len(&p.chunk, &loc)
                .map_err(|why| Error::corrupt(sink.describe(p.target), why))?;
        }
        needed
            .entry(p.chunk.id)
            .or_default()
            .push((p.target, p.offset, p.shape));
    }
    progress.set_total(total);
    let requests = plan(index, &needed, sink.as_ref())?;
    let needed = Arc::new(needed);
    let pool = cpu_pool(process_max)?;
    let limit = Arc::new(tokio::sync::Semaphore::new(process_max.max(1)));
    let budget_units = (MEMORY_BUDGET / BUDGET_UNIT) as u32;
    let budget = Arc::new(tokio::sync::Semaphore::new(budget_units as usize));
    let mut tasks = tokio::task::JoinSet::new();
    for req in requests {
        let closed = |_| Error::Invalid("restore limiter closed".into());
        let permit = limit.clone().acquire_owned().await.map_err(closed)?;
        // A request larger than the whole budget (one huge chunk) runs alone.
        let units = (req.end - req.start)
            .div_ceil(BUDGET_UNIT)
            .min(budget_units as u64) as u32;
        let memory = budget
            .clone()
            .acquire_many_owned(units)
            .await
            .map_err(closed)?;
        let (stanza, needed, sink, pool, progress) = (
            stanza.clone(),
            needed.clone(),
            sink.clone(),
            pool.clone(),
            progress.clone(),
        );
        tasks.spawn(async move {
            let _permits = (permit, memory);
            let key = stanza.pack_key(&req.pack)?;
            let bytes = read_pack_range(&stanza, &key, req.start..req.end).await?;
            let object = key.to_string();
            on_pool(&pool, move || -> Result<()> {
                for (id, loc) in &req.chunks {
                    let at = (loc.offset as u64 - req.start) as usize;
                    let stored = bytes.get(at..at + loc.stored_len as usize).ok_or_else(|| {
                        Error::corrupt(&object, format!("chunk {id} lies past the end of the pack"))
                    })?;
                    let plain = open_chunk(&object, id, loc, stored)?;
                    for (target, offset, shape) in needed.get(id).map(Vec::as_slice).unwrap_or(&[])
                    {
                        for (at, range) in shape.pieces(plain.len()) {
                            let n = range.len() as u64;
                            sink.write_at(*target, *offset + at, &plain[range])
                                .map_err(|e| {
                                    Error::io(format!("cannot write {}", sink.describe(*target)), e)
                                })?;
                            progress.advance(n);
                        }
                    }
                }
                Ok(())
            })
            .await?
        });
        // Surface failures early instead of queueing more work behind them.
        while let Some(done) = tasks.try_join_next() {
            flatten(done)?;
        }
    }
    while let Some(done) = tasks.join_next().await {
        flatten(done)?;
    }
    progress.finish();
    Ok(())
}

/// A range of a pack, as the index places chunks in it. A pack that is gone or shorter than
/// the index says is damage (swapped or truncated packs), reported with the hint to verify,
/// not as a storage failure.
async fn read_pack_range(
    stanza: &Stanza,
    key: &crate::storage::Key,
    range: std::ops::Range<u64>,
) -> Result<bytes::Bytes> {
    use crate::storage::StorageError;
    match stanza.store().get(key, Some(range.clone())).await {
        Ok(b) => Ok(b),
        Err(StorageError::NotFound { .. }) => Err(Error::corrupt(
            key.as_str(),
            "the pack is missing, and a backup being restored needs it",
        )),
        Err(StorageError::OutOfRange { message, .. }) => Err(Error::corrupt(
            key.as_str(),
            format!(
                "the index places chunks at bytes {}..{} of it, beyond its end ({message})",
                range.start, range.end
            ),
        )),
        Err(e) => Err(e.into()),
    }
}

fn flatten(r: std::result::Result<Result<()>, tokio::task::JoinError>) -> Result<()> {
    r.map_err(|e| Error::Invalid(format!("restore task failed: {e}")))?
}

/// Fetch one file's chunks in order and write them to `out` (stdout), reading ahead up to
/// `2 * process_max` chunks.
pub async fn fetch_ordered(
    stanza: &Stanza,
    index: &Index,
    chunks: &[ChunkRef],
    process_max: usize,
    out: &mut (dyn Write + Send),
    progress: Arc<dyn Progress>,
) -> Result<()> {
    progress.set_total(chunks.iter().map(|c| c.len as u64).sum());
    let window = process_max.max(1) * 2;
    let mut inflight = VecDeque::new();
    let mut next = 0;
    loop {
        while inflight.len() < window && next < chunks.len() {
            let c = chunks[next];
            next += 1;
            let (pack, loc) = index.get(&c.id).ok_or_else(|| {
                Error::corrupt(
                    format!("chunk {}", c.id),
                    "needed by the stream, but the repository has no usable copy of it (its pack is missing or was found damaged by verify, or the index that places it is lost); `cairn verify` says which, and `cairn stanza-repair` indexes packs again if only the index is lost",
                )
            })?;
            check_len(&c, &loc).map_err(|why| Error::corrupt("the stream's manifest", why))?;
            let stanza = stanza.clone();
            inflight.push_back(tokio::spawn(async move {
                let key = stanza.pack_key(&pack)?;
                let range = loc.offset as u64..loc.offset as u64 + loc.stored_len as u64;
                let stored = read_pack_range(&stanza, &key, range).await?;
                tokio::task::spawn_blocking(move || open_chunk(key.as_str(), &c.id, &loc, &stored))
                    .await
                    .map_err(|e| Error::Invalid(format!("restore task failed: {e}")))?
            }));
        }
        let Some(h) = inflight.pop_front() else { break };
        let plain = h
            .await
            .map_err(|e| Error::Invalid(format!("restore task failed: {e}")))??;
        out.write_all(&plain)
            .map_err(|e| Error::io("cannot write the restored stream", e))?;
        progress.advance(plain.len() as u64);
    }
    out.flush()
        .map_err(|e| Error::io("cannot write the restored stream", e))?;
    progress.finish();
    Ok(())
}

/// Bytes of one file `fetch_file_ordered` assembles in memory before writing them out.
const ORDERED_WINDOW: u64 = 16 * 1024 * 1024;

/// Write one file of a manifest to `out` in order (`repo-get`): its chunks, or its paged
/// units with their deltas applied. The file is assembled a window (about 16 MiB) at a time
/// by `fetch_positioned`, the restore path itself, so a paged file's base and delta meet
/// exactly as restore lays them down and every chunk is checked against its name. `Inherit`
/// content must have been resolved by the caller; `None` is `size` zero bytes (format.md,
/// "Manifest").
pub async fn fetch_file_ordered(
    stanza: &Stanza,
    index: &Index,
    name: &str,
    content: &crate::manifest::Content,
    size: u64,
    process_max: usize,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    if *content == crate::manifest::Content::Inherit {
        return Err(Error::Invalid(format!(
            "{name}: its content is inherited from an earlier backup; resolve the backup first"
        )));
    }
    if let Some(why) = content.misfit(size) {
        return Err(Error::corrupt(name, format!("it {why}")));
    }
    let placements = content.placements();
    let write = |out: &mut (dyn Write + Send), bytes: &[u8]| {
        out.write_all(bytes)
            .map_err(|e| Error::io(format!("cannot write {name}"), e))
    };
    let mut done = 0u64;
    let mut rest = placements.as_slice();
    while !rest.is_empty() {
        let start = rest[0].0;
        if start != done {
            return Err(Error::corrupt(
                name,
                format!("its content starts at byte {start}, expected {done}"),
            ));
        }
        // Placements at one offset (a unit's base and delta) stay in one window.
        let n = rest
            .iter()
            .position(|p| p.0 != start && p.0 - start >= ORDERED_WINDOW)
            .unwrap_or(rest.len());
        let end = rest.get(n).map_or(size, |p| p.0);
        if end < start || end - start > MAX_RANGE * 8 {
            return Err(Error::corrupt(
                name,
                format!("its content does not add up to its size of {size} bytes"),
            ));
        }
        let sink = Arc::new(Window {
            name: name.to_string(),
            start,
            bytes: std::sync::Mutex::new(vec![0; (end - start) as usize]),
        });
        let window = rest[..n]
            .iter()
            .map(|&(offset, chunk, shape)| Placement {
                target: 0,
                offset,
                chunk,
                shape,
            })
            .collect();
        fetch_positioned(
            stanza,
            index,
            window,
            process_max,
            sink.clone(),
            Arc::new(crate::pipeline::NoProgress),
        )
        .await?;
        let bytes = sink
            .bytes
            .lock()
            .map_err(|_| Error::Invalid("a restore thread panicked".into()))?;
        write(out, &bytes)?;
        done = end;
        rest = &rest[n..];
    }
    // A file with no content (an empty file, or `None`): its size in zero bytes.
    let zeros = vec![0u8; 64 * 1024];
    while done < size {
        let n = (size - done).min(zeros.len() as u64);
        write(out, &zeros[..n as usize])?;
        done += n;
    }
    out.flush()
        .map_err(|e| Error::io(format!("cannot write {name}"), e))
}

/// One window of a file being written in order: placements land in memory first.
struct Window {
    name: String,
    start: u64,
    bytes: std::sync::Mutex<Vec<u8>>,
}

impl WriteAt for Window {
    fn write_at(&self, _target: usize, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut bytes = self
            .bytes
            .lock()
            .map_err(|_| io::Error::other("a restore thread panicked"))?;
        let at = offset
            .checked_sub(self.start)
            .map(|a| a as usize)
            .filter(|a| a + data.len() <= bytes.len())
            .ok_or_else(|| {
                io::Error::other(format!(
                    "{}: a chunk lies outside the file's size (damaged manifest)",
                    self.name
                ))
            })?;
        bytes[at..at + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn describe(&self, _target: usize) -> String {
        self.name.clone()
    }
}
