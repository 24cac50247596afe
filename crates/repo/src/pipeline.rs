//! The backup pipeline, where blocking reads, CPU work and async uploads meet, bounded at
//! every step so memory does not grow with the input:
//!
//! ```text
//! reader thread --raw chunks--> rayon pool (BLAKE3, dedup, zstd) --sealed--> packer thread --PUT--> tokio
//!                                      \--chunk refs--> collector (this thread)
//! ```
//! Channels hold at most a few chunks per worker, the packer holds one pack being filled, and
//! at most `process_max` pack uploads are in flight, so peak memory is about
//! `(4 * process_max + 2) * max_chunk + (process_max + 1) * pack_target`.

use crate::chunker::{ChunkPolicy, chunk_stream};
use crate::error::{Error, Result};
use crate::ids::{ChunkId, PackId};
use crate::index::Index;
use crate::manifest::{ChunkRef, Content};
use crate::pack::{PackBuilder, PackEntry, SealedChunk};
use crate::pages::{self, Delta, PageProbe, Planned, Unit};
use crate::storage::{Key, PutMode, Storage, StorageError};
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, bounded};
use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub type Opener = Box<dyn FnOnce() -> io::Result<Box<dyn Read + Send>> + Send>;

/// Progress reporting; the CLI draws a bar, tests and cron runs log.
pub trait Progress: Send + Sync {
    fn set_total(&self, _bytes: u64) {}
    fn advance(&self, _bytes: u64) {}
    fn finish(&self) {}
}

#[derive(Debug)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// What to do when a file to read is gone by the time it is opened.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum VanishPolicy {
    /// A plain directory tree: the user should know.
    Fail,
    /// A live database: files come and go, WAL replay fixes it up.
    Skip,
}

pub struct ReadItem {
    pub policy: ChunkPolicy,
    /// Where the bytes come from, as a noun phrase for messages (`source file /data/x`,
    /// `standard input`, `the output of 'pg_dump'`).
    pub origin: String,
    pub open: Opener,
    /// For a file that may change while it is read: how to tell, and how to read it again.
    pub watch: Option<Watch>,
    /// For a paged file (`crate::pages`): read in units, planned against the parent's units.
    /// `policy` is then not used.
    pub pages: Option<PagePlan>,
}

/// How a paged file is read: its page size, the parent backup's units of the same file, and
/// the engine's way of telling a page that may have changed since (None: every unit of the
/// file is stored whole, deduplicated by its name).
#[derive(Debug)]
pub struct PagePlan {
    pub page_size: u32,
    pub prior: Vec<Unit>,
    pub probe: Option<Arc<dyn PageProbe>>,
}

/// What identifies a file's contents without reading them: size, mtime and ctime (ns).
/// ctime catches a rewrite that restored the old mtime.
pub type Stamp = (u64, i64, i64);

/// A file is re-read at most this many times when it changed while it was read; after that
/// it is kept as last read and marked (`Outcome::Read::changed`).
pub const MAX_REREADS: u32 = 3;

/// How the reader notices a file that changed while it was read: its stamp before opening and
/// after reading must match, or it is read again (from the start, its earlier chunks dropped).
pub struct Watch {
    pub stamp: Box<dyn Fn() -> io::Result<Stamp> + Send>,
    pub reopen: Box<dyn Fn() -> io::Result<Box<dyn Read + Send>> + Send>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watch")
    }
}

impl std::fmt::Debug for ReadItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReadItem({})", self.origin)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `changed`: the file still changed while it was read the last time it was tried, so
    /// its bytes may mix old and new contents.
    Read {
        content: Content,
        size: u64,
        changed: bool,
    },
    Vanished,
}

#[derive(Clone, Copy, Debug)]
pub struct PipelineConfig {
    pub process_max: usize,
    pub compress_level: i32,
    pub pack_target: usize,
    pub vanish: VanishPolicy,
}

#[derive(Debug, Default)]
pub struct PipelineOutput {
    /// One per input item, in input order.
    pub outcomes: Vec<Outcome>,
    /// Packs written, with their trailer entries.
    pub packs: Vec<(PackId, Vec<PackEntry>)>,
    pub bytes_read: u64,
}

/// A file being collected: its parts by position, and its end once read.
type Partial = (Vec<Option<Part>>, Option<End>);
/// A raw piece: item, attempt, position, what to store.
type Raw = (usize, u32, usize, Piece);

/// What the reader hands the workers.
#[derive(Debug)]
enum Piece {
    /// A chunk's bytes.
    Bytes(Vec<u8>),
    /// A paged file's unit, as planned.
    Unit(Planned),
}

/// What a worker hands the collector.
#[derive(Clone, Copy, Debug)]
enum Part {
    Chunk(ChunkRef),
    Unit(Unit),
}

#[derive(Clone, Copy, Debug)]
struct End {
    size: u64,
    count: usize,
    changed: bool,
    page_size: Option<u32>,
}

enum Msg {
    Chunk {
        item: usize,
        attempt: u32,
        pos: usize,
        r: Part,
    },
    /// The item is being read again from the start: drop what earlier attempts sent.
    Restart {
        item: usize,
        attempt: u32,
    },
    End {
        item: usize,
        outcome: EndKind,
    },
}

enum EndKind {
    Read(End),
    Vanished,
}

struct Shared {
    abort: AtomicBool,
    error: Mutex<Option<Error>>,
}

impl Shared {
    fn fail(&self, e: Error) {
        self.abort.store(true, Ordering::SeqCst);
        let mut slot = match self.error.lock() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        slot.get_or_insert(e);
    }
    fn aborted(&self) -> bool {
        self.abort.load(Ordering::SeqCst)
    }
}

/// Run the pipeline over `items`. Must be called from a blocking thread (not a tokio worker).
pub fn run(
    rt: &tokio::runtime::Handle,
    store: Arc<dyn Storage>,
    pack_key: &(dyn Fn(&PackId) -> Result<Key> + Sync),
    known: &Index,
    items: Vec<ReadItem>,
    cfg: PipelineConfig,
    progress: &dyn Progress,
) -> Result<PipelineOutput> {
    let workers = cfg.process_max.max(1);
    let n_items = items.len();
    let shared = Shared {
        abort: AtomicBool::new(false),
        error: Mutex::new(None),
    };
    let (raw_tx, raw_rx) = bounded::<Raw>(workers * 2);
    let (msg_tx, msg_rx) = bounded::<Msg>(workers * 4 + 16);
    let (pack_tx, pack_rx) = bounded::<SealedChunk>(workers * 2);
    let seen = Mutex::new(HashSet::<ChunkId>::new());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .thread_name(|i| format!("cairn-cpu-{i}"))
        .build()
        .map_err(|e| Error::Invalid(format!("cannot start {workers} worker threads: {e}")))?;

    let mut outcomes: Vec<Option<Outcome>> = vec![None; n_items];
    let mut bytes_read = 0u64;
    let mut packs = Vec::new();

    std::thread::scope(|s| {
        // Reader: one file at a time, chunked by its policy.
        let reader_msg = msg_tx.clone();
        let shared_r = &shared;
        s.spawn(move || {
            read_all(
                items, cfg.vanish, known, raw_tx, reader_msg, shared_r, progress,
            )
        });

        // CPU workers on the rayon pool.
        for _ in 0..workers {
            let (raw_rx, msg_tx, pack_tx) = (raw_rx.clone(), msg_tx.clone(), pack_tx.clone());
            let (seen, shared) = (&seen, &shared);
            let level = cfg.compress_level;
            let pool = &pool;
            s.spawn(move || {
                pool.install(move || work(raw_rx, msg_tx, pack_tx, known, seen, shared, level))
            });
        }
        drop((raw_rx, msg_tx, pack_tx));

        // Packer and uploads.
        let packer = s.spawn(|| pack_all(rt, store, pack_key, pack_rx, cfg, &shared));

        // Collector: put chunk refs back in file order.
        let mut partial: HashMap<usize, Partial> = HashMap::new();
        // The current attempt per re-read item. A worker may deliver a chunk of an earlier
        // attempt after its Restart (the reader sends Restart before any chunk of the new
        // attempt, on the channel the workers send to after it), so stale ones are dropped.
        let mut attempts: HashMap<usize, u32> = HashMap::new();
        for msg in msg_rx {
            let item = match msg {
                Msg::Restart { item, attempt } => {
                    attempts.insert(item, attempt);
                    partial.remove(&item);
                    continue;
                }
                Msg::Chunk { item, attempt, .. }
                    if attempt < attempts.get(&item).copied().unwrap_or(0) =>
                {
                    continue;
                }
                Msg::Chunk { item, pos, r, .. } => {
                    let slot = &mut partial.entry(item).or_default().0;
                    if slot.len() <= pos {
                        slot.resize(pos + 1, None);
                    }
                    slot[pos] = Some(r);
                    item
                }
                Msg::End {
                    item,
                    outcome: EndKind::Vanished,
                } => {
                    partial.remove(&item);
                    outcomes[item] = Some(Outcome::Vanished);
                    continue;
                }
                Msg::End {
                    item,
                    outcome: EndKind::Read(end),
                } => {
                    bytes_read += end.size;
                    partial.entry(item).or_default().1 = Some(end);
                    item
                }
            };
            let done = partial.get(&item).is_some_and(|(refs, end)| {
                end.is_some_and(|e| refs.len() == e.count && refs.iter().all(Option::is_some))
            });
            if done && let Some((parts, Some(end))) = partial.remove(&item) {
                outcomes[item] = Some(Outcome::Read {
                    content: assemble(parts.into_iter().flatten(), end.page_size),
                    size: end.size,
                    changed: end.changed,
                });
            }
        }
        match packer.join() {
            Ok(Ok(p)) => packs = p,
            Ok(Err(e)) => shared.fail(e),
            Err(_) => shared.fail(Error::Invalid("the packer thread panicked".into())),
        }
    });

    match shared.error.lock() {
        Ok(mut e) => {
            if let Some(e) = e.take() {
                return Err(e);
            }
        }
        Err(mut poisoned) => {
            return Err(poisoned.get_mut().take().unwrap_or_else(|| {
                Error::Invalid("a backup worker panicked; the backup is abandoned".into())
            }));
        }
    }
    if shared.aborted() {
        return Err(Error::Invalid(
            "the backup pipeline stopped without saying why; the backup is abandoned".into(),
        ));
    }
    let outcomes = outcomes
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            o.ok_or_else(|| Error::Invalid(format!("internal: item {i} was never finished")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(PipelineOutput {
        outcomes,
        packs,
        bytes_read,
    })
}

/// A file's content from its parts, in order.
fn assemble(parts: impl Iterator<Item = Part>, page_size: Option<u32>) -> Content {
    match page_size {
        Some(page_size) => Content::Pages {
            page_size,
            units: parts
                .filter_map(|p| match p {
                    Part::Unit(u) => Some(u),
                    Part::Chunk(_) => None,
                })
                .collect(),
        },
        None => Content::Chunks(
            parts
                .filter_map(|p| match p {
                    Part::Chunk(c) => Some(c),
                    Part::Unit(_) => None,
                })
                .collect(),
        ),
    }
}

fn read_all(
    items: Vec<ReadItem>,
    vanish: VanishPolicy,
    known: &Index,
    raw_tx: Sender<Raw>,
    msg_tx: Sender<Msg>,
    shared: &Shared,
    progress: &dyn Progress,
) {
    for (
        item,
        ReadItem {
            policy,
            origin,
            open,
            watch,
            pages,
        },
    ) in items.into_iter().enumerate()
    {
        if shared.aborted() {
            return;
        }
        let stamp = || watch.as_ref().map(|w| (w.stamp)().ok());
        let mut before = stamp();
        let reader = match open() {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound && vanish == VanishPolicy::Skip => {
                let _ = msg_tx.send(Msg::End {
                    item,
                    outcome: EndKind::Vanished,
                });
                continue;
            }
            Err(e) => {
                shared.fail(open_error(&origin, e));
                return;
            }
        };
        let mut reader = Some(reader);
        let mut attempt = 0u32;
        loop {
            let Some(r) = reader.take() else { return };
            let how = match &pages {
                Some(plan) => How::Pages(plan, known),
                None => How::Chunks(policy),
            };
            let Some((size, count)) =
                read_one(item, attempt, how, r, &origin, &raw_tx, shared, progress)
            else {
                return;
            };
            let after = stamp();
            // A stamp that cannot be taken (the file is gone) counts as a change.
            let changed = before != after || after.is_some_and(|a| a.is_none());
            if changed
                && attempt < MAX_REREADS
                && let Some(w) = &watch
            {
                attempt += 1;
                let _ = msg_tx.send(Msg::Restart { item, attempt });
                before = stamp();
                match (w.reopen)() {
                    Ok(r) => reader = Some(r),
                    Err(e) => {
                        shared.fail(open_error(&origin, e));
                        return;
                    }
                }
                continue;
            }
            let _ = msg_tx.send(Msg::End {
                item,
                outcome: EndKind::Read(End {
                    size,
                    count,
                    changed,
                    page_size: pages.as_ref().map(|p| p.page_size),
                }),
            });
            break;
        }
    }
}

fn open_error(origin: &str, e: io::Error) -> Error {
    let what = if e.kind() == io::ErrorKind::NotFound {
        format!("{origin} vanished during the backup; run the backup again")
    } else {
        format!("cannot open {origin}; make it readable by the user running cairn")
    };
    Error::io(what, e)
}

/// How an item is cut into pieces.
enum How<'a> {
    Chunks(ChunkPolicy),
    Pages(&'a PagePlan, &'a Index),
}

/// Read a paged file unit by unit, planning each against the parent's unit at its place.
fn read_units(
    plan: &PagePlan,
    known: &Index,
    mut reader: impl Read,
    mut emit: impl FnMut(Piece, usize) -> io::Result<()>,
) -> io::Result<u64> {
    let unit = (plan.page_size * pages::UNIT_PAGES) as usize;
    let usable = |c: &ChunkRef| known.contains(&c.id);
    let mut total = 0u64;
    for k in 0.. {
        let mut buf = vec![0u8; unit];
        let mut filled = 0;
        while filled < unit {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        total += filled as u64;
        let planned = pages::plan_unit(
            plan.page_size,
            buf,
            plan.prior.get(k),
            plan.probe.as_deref(),
            &usable,
        );
        emit(Piece::Unit(planned), filled)?;
        if filled < unit {
            break;
        }
    }
    Ok(total)
}

/// Cut one attempt at reading an item into the workers' channel; None when the backup
/// failed or was aborted.
#[allow(clippy::too_many_arguments)]
fn read_one(
    item: usize,
    attempt: u32,
    how: How,
    reader: Box<dyn Read + Send>,
    origin: &str,
    raw_tx: &Sender<Raw>,
    shared: &Shared,
    progress: &dyn Progress,
) -> Option<(u64, usize)> {
    let mut pos = 0usize;
    let mut send = |piece: Piece, len: usize| {
        if shared.aborted() {
            return Err(io::Error::other("backup aborted"));
        }
        if attempt == 0 {
            progress.advance(len as u64);
        }
        raw_tx
            .send((item, attempt, pos, piece))
            .map_err(|_| io::Error::other("backup aborted"))?;
        pos += 1;
        Ok(())
    };
    let result = match how {
        How::Chunks(policy) => chunk_stream(policy, reader, |data| {
            let len = data.len();
            send(Piece::Bytes(data), len)
        }),
        How::Pages(plan, known) => read_units(plan, known, reader, send),
    };
    match result {
        Ok(size) => Some((size, pos)),
        Err(e) => {
            if !shared.aborted() {
                shared.fail(Error::io(format!("cannot read {origin}"), e));
            }
            None
        }
    }
}

fn work(
    raw_rx: Receiver<Raw>,
    msg_tx: Sender<Msg>,
    pack_tx: Sender<SealedChunk>,
    known: &Index,
    seen: &Mutex<HashSet<ChunkId>>,
    shared: &Shared,
    level: i32,
) {
    // Store a chunk unless the repository or this backup has it; None when the backup fails.
    let store = |data: &[u8]| -> Option<ChunkRef> {
        let id = ChunkId::of(data);
        // A poisoned set (a worker panicked) must fail the backup: treating the chunk as
        // already stored would record a backup that references bytes nobody wrote.
        let is_new = if known.contains(&id) {
            false
        } else {
            match seen.lock() {
                Ok(mut s) => s.insert(id),
                Err(_) => {
                    shared.fail(Error::Invalid(
                        "a backup worker panicked; the backup is abandoned".into(),
                    ));
                    return None;
                }
            }
        };
        if is_new && pack_tx.send(SealedChunk::seal(id, data, level)).is_err() {
            shared.fail(Error::Invalid("the packer stopped early".into()));
            return None;
        }
        Some(ChunkRef {
            id,
            len: data.len() as u32,
        })
    };
    for (item, attempt, pos, piece) in raw_rx {
        if shared.aborted() {
            continue; // drain so the reader never blocks forever
        }
        let r = match piece {
            Piece::Bytes(data) => store(&data).map(Part::Chunk),
            Piece::Unit(Planned::Keep(u)) => Some(Part::Unit(u)),
            Piece::Unit(Planned::Cut { len, base }) => Some(Part::Unit(Unit {
                len,
                base,
                delta: None,
            })),
            Piece::Unit(Planned::Base(data)) => store(&data).map(|base| {
                Part::Unit(Unit {
                    len: base.len,
                    base,
                    delta: None,
                })
            }),
            Piece::Unit(Planned::Delta {
                len,
                base,
                pages,
                bytes,
            }) => store(&bytes).map(|chunk| {
                Part::Unit(Unit {
                    len,
                    base,
                    delta: Some(Delta { pages, chunk }),
                })
            }),
        };
        let Some(r) = r else { continue };
        if msg_tx
            .send(Msg::Chunk {
                item,
                attempt,
                pos,
                r,
            })
            .is_err()
        {
            shared.fail(Error::Invalid("the collector stopped early".into()));
        }
    }
}

fn pack_all(
    rt: &tokio::runtime::Handle,
    store: Arc<dyn Storage>,
    pack_key: &(dyn Fn(&PackId) -> Result<Key> + Sync),
    pack_rx: Receiver<SealedChunk>,
    cfg: PipelineConfig,
    shared: &Shared,
) -> Result<Vec<(PackId, Vec<PackEntry>)>> {
    let uploads = Arc::new(tokio::sync::Semaphore::new(cfg.process_max.max(1)));
    let mut pending = Vec::new();
    let mut done = Vec::new();
    let mut builder = PackBuilder::new();
    let mut upload = |builder: PackBuilder| -> Result<()> {
        let (id, bytes, entries) = builder.finish();
        let key = pack_key(&id)?;
        let permit = rt
            .block_on(uploads.clone().acquire_owned())
            .map_err(|_| Error::Invalid("upload limiter closed".into()))?;
        let store = store.clone();
        pending.push(rt.spawn(async move {
            let _permit = permit;
            let bytes = Bytes::from(bytes);
            match store.put(&key, bytes.clone(), PutMode::Create).await {
                Ok(()) => Ok(()),
                // Same name, so these are the bytes that belong there; the object in place may
                // be a damaged copy (verify found it, and this backup stores its chunks
                // again): write them over it.
                Err(StorageError::AlreadyExists { .. }) => store
                    .put(&key, bytes, PutMode::Overwrite)
                    .await
                    .map_err(Error::from),
                Err(e) => Err(Error::from(e)),
            }
        }));
        done.push((id, entries));
        Ok(())
    };
    for chunk in pack_rx {
        if shared.aborted() {
            continue;
        }
        builder.add(&chunk);
        if builder.len() >= cfg.pack_target
            && let Err(e) = upload(std::mem::take(&mut builder))
        {
            shared.fail(e);
        }
    }
    if !builder.is_empty() && !shared.aborted() {
        upload(builder)?;
    }
    for h in pending {
        match rt.block_on(h) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => shared.fail(e),
            Err(e) => shared.fail(Error::Invalid(format!("pack upload task failed: {e}"))),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunker::DEFAULT_CDC;
    use crate::storage::local::LocalStorage;

    #[test]
    fn item11_a_poisoned_seen_set_fails_the_backup_and_never_counts_a_chunk_as_stored() {
        let seen = Mutex::new(HashSet::new());
        // Poison the set the way a panicking worker would.
        let _ = std::thread::scope(|s| {
            s.spawn(|| {
                let _held = seen.lock();
                panic!("a worker panicked while holding the set");
            })
            .join()
        });
        assert!(seen.is_poisoned());
        let shared = Shared {
            abort: AtomicBool::new(false),
            error: Mutex::new(None),
        };
        let (raw_tx, raw_rx) = bounded::<Raw>(1);
        let (msg_tx, msg_rx) = bounded::<Msg>(4);
        let (pack_tx, pack_rx) = bounded::<SealedChunk>(4);
        let sent = raw_tx.send((0, 0, 0, Piece::Bytes(vec![7u8; 4096])));
        assert!(sent.is_ok());
        drop(raw_tx);
        work(
            raw_rx,
            msg_tx,
            pack_tx,
            &Index::default(),
            &seen,
            &shared,
            3,
        );
        assert!(shared.aborted(), "the backup was not failed");
        assert!(
            matches!(shared.error.lock().map(|e| e.is_some()), Ok(true)),
            "no error says why"
        );
        assert!(msg_rx.try_recv().is_err(), "the chunk was counted");
        assert!(pack_rx.try_recv().is_err(), "the chunk was sealed");
    }

    fn item(origin: &str, result: io::Result<Vec<u8>>) -> ReadItem {
        let mut slot = Some(result);
        ReadItem {
            policy: DEFAULT_CDC,
            origin: origin.into(),
            open: Box::new(move || match slot.take() {
                Some(Ok(data)) => Ok(Box::new(io::Cursor::new(data)) as Box<dyn Read + Send>),
                Some(Err(e)) => Err(e),
                None => Err(io::Error::other("opened twice")),
            }),
            watch: None,
            pages: None,
        }
    }

    fn run_items(items: Vec<ReadItem>, vanish: VanishPolicy) -> Result<PipelineOutput> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let store: Arc<dyn Storage> = Arc::new(LocalStorage::new(dir.path())?);
        let rt = tokio::runtime::Runtime::new().map_err(|e| Error::io("runtime", e))?;
        let cfg = PipelineConfig {
            process_max: 2,
            compress_level: 3,
            pack_target: 1 << 20,
            vanish,
        };
        let key = |id: &PackId| Ok(Key::new(format!("pack/{id}"))?);
        run(
            rt.handle(),
            store,
            &key,
            &Index::default(),
            items,
            cfg,
            &NoProgress,
        )
    }

    fn vanished() -> io::Result<Vec<u8>> {
        Err(io::Error::new(io::ErrorKind::NotFound, "gone"))
    }

    #[test]
    fn a_vanished_file_fails_a_tree_backup_naming_it() {
        let items = vec![
            item("/src/a", Ok(vec![1; 1000])),
            item("/src/gone", vanished()),
        ];
        let err = run_items(items, VanishPolicy::Fail)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("/src/gone") && err.contains("vanished"),
            "{err}"
        );
    }

    #[test]
    fn a_vanished_file_is_skipped_for_a_live_database() -> Result<()> {
        let data = crate::chunker::seeded_bytes(3, 3_000_000);
        let items = vec![
            item("/pg/a", Ok(data.clone())),
            item("/pg/gone", vanished()),
            item("/pg/b", Ok(data)),
        ];
        let out = run_items(items, VanishPolicy::Skip)?;
        assert_eq!(out.outcomes[1], Outcome::Vanished);
        // Same content twice: stored once.
        let stored: usize = out.packs.iter().map(|(_, e)| e.len()).sum();
        match (&out.outcomes[0], &out.outcomes[2]) {
            (
                Outcome::Read {
                    content: Content::Chunks(a),
                    size: 3_000_000,
                    changed: false,
                },
                Outcome::Read { content: b, .. },
            ) => {
                assert_eq!(&Content::Chunks(a.clone()), b);
                assert_eq!(stored, a.len());
            }
            other => panic!("unexpected outcomes {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn a_read_error_names_the_file() {
        let items = vec![item(
            "/src/bad",
            Err(io::Error::from_raw_os_error(libc::EIO)),
        )];
        let err = run_items(items, VanishPolicy::Skip)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("/src/bad"), "{err}");
    }

    /// A watched item whose stamp changes during the first `changes` reads, then holds.
    fn watched(data: Vec<Vec<u8>>, changes: u32) -> ReadItem {
        use std::sync::atomic::AtomicU32;
        let reads = Arc::new(AtomicU32::new(0));
        let stamps = Arc::new(AtomicU32::new(0));
        let data = Arc::new(data);
        let open = {
            let (reads, data) = (reads.clone(), data.clone());
            move || -> io::Result<Box<dyn Read + Send>> {
                let n = reads.fetch_add(1, Ordering::SeqCst) as usize;
                let d = data[n.min(data.len() - 1)].clone();
                Ok(Box::new(io::Cursor::new(d)))
            }
        };
        let first = open.clone();
        ReadItem {
            policy: DEFAULT_CDC,
            origin: "/src/busy".into(),
            open: Box::new(first),
            watch: Some(Watch {
                // Stamps are taken before and after each read: a different one after each of
                // the first `changes` reads means "changed while read".
                stamp: Box::new(move || {
                    let n = stamps.fetch_add(1, Ordering::SeqCst);
                    let read = n / 2; // two stamps per read
                    let after = n % 2 == 1;
                    let v = if after && read < changes {
                        n + 1000
                    } else {
                        read
                    };
                    Ok((v as u64, 0, 0))
                }),
                reopen: Box::new(open),
            }),
            pages: None,
        }
    }

    #[test]
    fn item9_a_file_that_changed_while_read_is_read_again_and_kept_whole() -> Result<()> {
        let old = crate::chunker::seeded_bytes(5, 3_000_000);
        let new = crate::chunker::seeded_bytes(6, 2_000_000);
        let out = run_items(vec![watched(vec![old, new.clone()], 1)], VanishPolicy::Fail)?;
        match &out.outcomes[0] {
            Outcome::Read {
                content,
                size,
                changed,
            } => {
                assert_eq!(*size, 2_000_000, "the second read is what is kept");
                assert!(!changed, "the second read was stable");
                let len: u64 = content.chunks().map(|c| c.len as u64).sum();
                assert_eq!(
                    len, 2_000_000,
                    "no chunk of the first read is left in the file"
                );
            }
            other => panic!("unexpected outcome {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn item9_a_file_that_keeps_changing_is_kept_and_marked_after_bounded_rereads() -> Result<()> {
        let data = vec![vec![7u8; 10_000]];
        let out = run_items(vec![watched(data, u32::MAX)], VanishPolicy::Fail)?;
        assert!(
            matches!(
                &out.outcomes[0],
                Outcome::Read {
                    changed: true,
                    size: 10_000,
                    ..
                }
            ),
            "{:?}",
            out.outcomes[0]
        );
        Ok(())
    }
}
