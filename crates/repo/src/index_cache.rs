//! The local cache of index segments (format.md, "Index segment", "The local index cache").
//! Segments are content-named and never change, so a cached copy stays valid for as long as
//! the segment exists: it is fetched once, in ranges, checked against its name (BLAKE3 of its
//! bytes), and read in place by `SegmentFile` from then on.
//!
//! The cache is `--cache-path` (environment `CAIRN_CACHE_PATH`), else `$XDG_CACHE_HOME/cairn`,
//! else `$HOME/.cache/cairn`; under it, one directory per repository location and stanza.
//! When none of these can be written, a temporary directory serves the one process. Files of
//! segments the repository no longer lists are removed whenever the index is opened.

use crate::error::{Error, Result};
use crate::ids::{ChunkId, PackId};
use crate::index::{INDEX_RECORD_LEN, Location, Segment};
use crate::segment_file::{Merged, SegmentFile};
use crate::storage::{Key, ObjectMeta, Storage};
use std::collections::BTreeSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

static ROOT: OnceLock<PathBuf> = OnceLock::new();

/// Set the cache's root for this process (`--cache-path`); the first call wins.
pub fn set_root(path: PathBuf) {
    let _ = ROOT.set(path);
}

fn default_root() -> Option<PathBuf> {
    if let Some(p) = ROOT.get() {
        return Some(p.clone());
    }
    if let Some(p) = std::env::var_os("CAIRN_CACHE_PATH").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p).join("cairn"));
    }
    std::env::var_os("HOME")
        .filter(|p| !p.is_empty())
        .map(|h| PathBuf::from(h).join(".cache/cairn"))
}

/// One stanza's directory in the cache.
#[derive(Debug)]
pub struct SegmentCache {
    dir: PathBuf,
    /// Held while the directory is a temporary one: removed when the last user drops it.
    _temp: Option<tempfile::TempDir>,
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

fn io_err(what: String) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io { what, source }
}

impl SegmentCache {
    /// The cache directory of `stanza` of the repository at `location`.
    pub fn open(location: &str, stanza: &str) -> Arc<SegmentCache> {
        let repo = blake3::hash(location.as_bytes()).to_hex();
        if let Some(root) = default_root() {
            let dir = root.join(&repo.as_str()[..16]).join(stanza);
            let probe = dir.join(format!(".probe-{}", std::process::id()));
            let writable = std::fs::create_dir_all(&dir)
                .and_then(|_| std::fs::write(&probe, b""))
                .and_then(|_| std::fs::remove_file(&probe));
            match writable {
                Ok(()) => return Arc::new(SegmentCache { dir, _temp: None }),
                Err(e) => tracing::debug!(
                    "the index cache {} cannot be written ({e}); using a temporary one",
                    dir.display()
                ),
            }
        }
        match tempfile::Builder::new().prefix("cairn-index-").tempdir() {
            Ok(t) => Arc::new(SegmentCache {
                dir: t.path().to_path_buf(),
                _temp: Some(t),
            }),
            Err(e) => {
                tracing::warn!("no directory for the index cache ({e}); using the current one");
                Arc::new(SegmentCache {
                    dir: PathBuf::from("."),
                    _temp: None,
                })
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn temp_path(&self, name: &str) -> PathBuf {
        let n = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join(format!(".tmp-{name}-{}-{n}", std::process::id()))
    }

    /// The segment object `meta`, from the cache or fetched into it.
    pub async fn segment(
        &self,
        store: &Arc<dyn Storage>,
        meta: &ObjectMeta,
    ) -> Result<SegmentFile> {
        let name = meta.key.name().to_string();
        let path = self.dir.join(&name);
        if path.exists() {
            match SegmentFile::open(meta.key.as_str(), &path, Some(&name)) {
                Ok(f) => return Ok(f),
                Err(e) => {
                    // The local copy is at fault, not the repository's object.
                    let why = match &e {
                        Error::Corrupt { detail, .. } => detail.clone(),
                        other => other.to_string(),
                    };
                    tracing::warn!(
                        "the cached copy {} of {} is damaged ({why}); it is fetched again",
                        path.display(),
                        meta.key
                    );
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        self.fetch_open(store, meta, &path).await
    }

    /// The segment object `meta` read from the repository again whatever the cache holds, and
    /// checked against its name (verify): the cached copy is replaced by what was read.
    pub async fn segment_fresh(
        &self,
        store: &Arc<dyn Storage>,
        meta: &ObjectMeta,
    ) -> Result<SegmentFile> {
        self.fetch_open(store, meta, &self.dir.join(meta.key.name()))
            .await
    }

    /// Fetch `meta` to `path` (checked against its name) and open it; a cache removed
    /// meanwhile (it may be, at any time) is made again once.
    async fn fetch_open(
        &self,
        store: &Arc<dyn Storage>,
        meta: &ObjectMeta,
        path: &Path,
    ) -> Result<SegmentFile> {
        match self.fetch(store, &meta.key, meta.size, path).await {
            Err(Error::Io { .. }) => self.fetch(store, &meta.key, meta.size, path).await?,
            other => other?,
        }
        SegmentFile::open(meta.key.as_str(), path, None)
    }

    /// Copy the object at `key` to `path` in ranges of 8 MiB, checking it against its name.
    async fn fetch(
        &self,
        store: &Arc<dyn Storage>,
        key: &Key,
        size: u64,
        path: &Path,
    ) -> Result<()> {
        const RANGE: u64 = 8 << 20;
        let _ = std::fs::create_dir_all(&self.dir);
        crate::failpoint::act("index-cache-fetch", || {
            let _ = std::fs::remove_dir_all(&self.dir);
        });
        let tmp = self.temp_path(key.name());
        let what = format!("writing {}", tmp.display());
        let mut file = std::fs::File::create(&tmp).map_err(io_err(what.clone()))?;
        let mut hash = blake3::Hasher::new();
        let mut at = 0;
        let result: Result<()> = async {
            while at < size {
                let end = (at + RANGE).min(size);
                let bytes = store.get(key, Some(at..end)).await?;
                hash.update(&bytes);
                file.write_all(&bytes).map_err(io_err(what.clone()))?;
                at = end;
            }
            let got = hash.finalize().to_hex();
            if got.as_str() != key.name() {
                return Err(Error::corrupt(
                    key.as_str(),
                    format!("its bytes hash to {got}, not to its name"),
                ));
            }
            std::fs::rename(&tmp, path).map_err(io_err(format!("renaming {}", tmp.display())))
        }
        .await;
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Remove cached segments not among `listed` (names), and temporary files of processes
    /// that are gone.
    pub fn prune(&self, listed: &BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let stale = if let Some(rest) = name.strip_prefix(".tmp-") {
                // .tmp-<name>-<pid>-<n>
                let pid = rest.rsplit('-').nth(1).and_then(|p| p.parse::<i32>().ok());
                pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists())
            } else {
                name.len() == 64 && !listed.contains(&name)
            };
            if stale {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Merge `inputs` into one segment file in the cache, keeping the records of packs `keep`
    /// accepts: the first copy of each chunk goes into the file (returned with its name and
    /// record count); further copies of a chunk in other places (rare: a chunk stored again
    /// after damage, two backups racing) into the returned in-memory segments, one layer per
    /// copy. Records that are the same in two inputs (the same chunk at the same place) count
    /// once. Reads the inputs twice (to learn the pack table, then to write), never holding
    /// their records.
    pub fn merge(
        &self,
        inputs: &[&SegmentFile],
        keep: &(dyn Fn(&PackId) -> bool + Sync),
    ) -> Result<Option<MergedFile>> {
        let io = |e: io::Error| Error::Io {
            what: "merging index segments".into(),
            source: e,
        };
        // Pass 1: the packs, the count, the further copies.
        let mut packs = BTreeSet::new();
        let mut count = 0u64;
        let mut extra: Vec<(ChunkId, PackId, Location)> = Vec::new();
        let mut last: Option<(ChunkId, PackId, u32)> = None;
        for r in Merged::new(inputs).map_err(io)? {
            let (id, pack, loc) = r.map_err(io)?;
            if !keep(&pack) || last == Some((id, pack, loc.offset)) {
                continue;
            }
            if last.is_some_and(|l| l.0 == id) {
                extra.push((id, pack, loc));
            } else {
                packs.insert(pack);
                count += 1;
            }
            last = Some((id, pack, loc.offset));
        }
        if count == 0 {
            return Ok(None);
        }
        let packs: Vec<PackId> = packs.into_iter().collect();
        // Pass 2: the sealed segment, written and hashed.
        let body = |w: &mut dyn Write| -> io::Result<()> {
            w.write_all(&(packs.len() as u32).to_le_bytes())?;
            w.write_all(&0u32.to_le_bytes())?;
            for p in &packs {
                w.write_all(p.as_bytes())?;
            }
            w.write_all(&count.to_le_bytes())?;
            let mut last: Option<(ChunkId, PackId, u32)> = None;
            let mut rec = [0u8; INDEX_RECORD_LEN];
            for r in Merged::new(inputs)? {
                let (id, pack, loc) = r?;
                if !keep(&pack) || last.is_some_and(|l| l.0 == id) {
                    continue;
                }
                last = Some((id, pack, loc.offset));
                let ord = packs
                    .binary_search(&pack)
                    .map_err(|_| io::Error::other("a pack appeared between two passes"))?
                    as u32;
                rec[..32].copy_from_slice(id.as_bytes());
                for (i, v) in [ord, loc.offset, loc.stored_len, loc.raw_len]
                    .into_iter()
                    .enumerate()
                {
                    rec[32 + i * 4..36 + i * 4].copy_from_slice(&v.to_le_bytes());
                }
                w.write_all(&rec)?;
            }
            Ok(())
        };
        let _ = std::fs::create_dir_all(&self.dir);
        let tmp = self.temp_path("merge");
        let what = format!("writing {}", tmp.display());
        let file = std::fs::File::create(&tmp).map_err(io_err(what.clone()))?;
        let mut out = HashingWriter {
            inner: io::BufWriter::with_capacity(1 << 20, file),
            hash: blake3::Hasher::new(),
        };
        let written = crate::codec::seal_to_version(
            &mut out,
            crate::codec::magic::INDEX,
            crate::codec::FORMAT_VERSION,
            false,
            &body,
        )
        .and_then(|_| out.inner.flush());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err(what)(e));
        }
        let name = PackId(*out.hash.finalize().as_bytes()).to_string();
        let path = self.dir.join(&name);
        std::fs::rename(&tmp, &path).map_err(io_err(format!("renaming {}", tmp.display())))?;
        Ok(Some(MergedFile {
            path,
            name,
            records: count,
            extra: layers(extra),
        }))
    }
}

/// A segment written by `SegmentCache::merge`.
#[derive(Debug)]
pub struct MergedFile {
    pub path: PathBuf,
    pub name: String,
    pub records: u64,
    pub extra: Vec<Segment>,
}

/// Further copies of chunks as segments: the n-th further copy of a chunk in the n-th.
fn layers(mut extra: Vec<(ChunkId, PackId, Location)>) -> Vec<Segment> {
    extra.sort_by_key(|(id, p, l)| (*id, *p, l.offset));
    let mut out: Vec<Segment> = Vec::new();
    let mut copy = 0;
    for i in 0..extra.len() {
        let (id, pack, loc) = extra[i];
        copy = if i > 0 && extra[i - 1].0 == id {
            copy + 1
        } else {
            0
        };
        if out.len() == copy {
            out.push(Segment::default());
        }
        let seg = &mut out[copy];
        let ord = match seg.packs.iter().position(|p| *p == pack) {
            Some(o) => o,
            None => {
                seg.packs.push(pack);
                seg.packs.len() - 1
            }
        } as u32;
        seg.entries.push((id, Location { pack: ord, ..loc }));
    }
    out
}

struct HashingWriter<W: Write> {
    inner: W,
    hash: blake3::Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::tests::segment;

    /// The first copy of each chunk goes into the file, further copies into layers; records
    /// of packs `keep` refuses go; a segment given twice counts once; the file is a segment
    /// that opens, hashes to its name and finds what it should.
    #[test]
    fn merge_keeps_every_copy_drops_what_keep_refuses() -> Result<()> {
        let t = tempfile::tempdir().map_err(io_err("tempdir".into()))?;
        let cache = SegmentCache {
            dir: t.path().join("cache"),
            _temp: None,
        };
        let (a, b, c) = (PackId([1; 32]), PackId([2; 32]), PackId([3; 32]));
        let mut files = Vec::new();
        for (i, seg) in [
            segment(&[1, 2, 3], a),
            segment(&[2, 3, 4], b),
            segment(&[5], c),
            segment(&[1, 2, 3], a),
        ]
        .iter()
        .enumerate()
        {
            let path = t.path().join(format!("s{i}"));
            std::fs::write(&path, seg.encode()).map_err(io_err("write".into()))?;
            files.push(SegmentFile::open("s", &path, None)?);
        }
        let refs: Vec<&SegmentFile> = files.iter().collect();
        let merged = cache
            .merge(&refs, &|p| *p != c)?
            .ok_or_else(|| Error::Invalid("nothing merged".into()))?;
        assert_eq!(merged.records, 4);
        // Chunks 2 and 3 are in a and b: one layer holds their second copies.
        assert_eq!(merged.extra.len(), 1);
        assert_eq!(merged.extra[0].entries.len(), 2);
        assert_eq!(merged.extra[0].packs, vec![b]);
        let file = SegmentFile::open("m", &merged.path, Some(&merged.name))?;
        assert_eq!(file.packs(), &[a, b]);
        for (byte, pack) in [(1u8, a), (2, a), (3, a), (4, b)] {
            let got = file
                .get(&ChunkId::of(&[byte]))
                .map_err(io_err("get".into()))?;
            assert_eq!(got.map(|g| g.0), Some(pack));
        }
        assert_eq!(
            file.get(&ChunkId::of(&[5])).map_err(io_err("get".into()))?,
            None
        );
        Ok(())
    }
}
