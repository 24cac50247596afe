//! The chunk index: chunk id -> (pack, offset, stored length, plain length).
//!
//! Each backup writes one index *segment* listing the chunks it added. A segment is a sealed
//! object whose body is a table of pack ids followed by fixed 48-byte records sorted by chunk
//! id (format.md, "Index segment"), so it is binary-searchable in place and can be memory-
//! mapped as it is. That costs 48 bytes per chunk plus 32 bytes per pack (about 1 byte per chunk
//! at 1 MiB chunks in 32 MiB packs). At open the segments merge into one sorted table.
//!
//! The blob encoding is not stored: a chunk is zstd-compressed exactly when its stored length
//! is smaller than its plain length (a blob that would not shrink is stored plain).

use crate::codec::{self, le4, le8, magic};
use crate::error::{Error, Result};
use crate::ids::{ChunkId, PackId};
use crate::index_cache::SegmentCache;
use crate::segment_file::{Merged, SegmentFile};
use std::io::{self, Write};
use std::sync::Arc;

pub const INDEX_RECORD_LEN: usize = 48;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Location {
    pub pack: u32,
    pub offset: u32,
    pub stored_len: u32,
    pub raw_len: u32,
}

impl Location {
    pub fn compressed(&self) -> bool {
        self.stored_len < self.raw_len
    }
}

/// One segment, as written by one backup.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Segment {
    pub packs: Vec<PackId>,
    /// Sorted by chunk id, no duplicates; `Location::pack` indexes `packs`.
    pub entries: Vec<(ChunkId, Location)>,
}

impl Segment {
    /// Add pack `id` to the pack table and a record for each of its `entries`.
    pub fn add_pack(
        &mut self,
        id: PackId,
        entries: impl IntoIterator<Item = crate::pack::PackEntry>,
    ) {
        let ord = self.packs.len() as u32;
        self.packs.push(id);
        for e in entries {
            self.entries.push((
                e.id,
                Location {
                    pack: ord,
                    offset: e.offset as u32,
                    stored_len: e.stored_len,
                    raw_len: e.raw_len,
                },
            ));
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing into a Vec cannot fail.
        self.write_sealed(&mut out)
            .unwrap_or_else(|e| panic!("encoding an index segment failed: {e}"));
        out
    }

    /// The sealed segment, written to `w` without building it in memory.
    pub fn write_sealed(&self, w: &mut dyn Write) -> io::Result<()> {
        codec::seal_to(w, magic::INDEX, false, &|w| self.write_body(w))
    }

    fn write_body(&self, w: &mut dyn Write) -> io::Result<()> {
        w.write_all(&(self.packs.len() as u32).to_le_bytes())?;
        w.write_all(&0u32.to_le_bytes())?;
        for p in &self.packs {
            w.write_all(p.as_bytes())?;
        }
        w.write_all(&(self.entries.len() as u64).to_le_bytes())?;
        let mut record = [0u8; INDEX_RECORD_LEN];
        for (id, loc) in &self.entries {
            record[..32].copy_from_slice(id.as_bytes());
            for (i, v) in [loc.pack, loc.offset, loc.stored_len, loc.raw_len]
                .into_iter()
                .enumerate()
            {
                record[32 + i * 4..36 + i * 4].copy_from_slice(&v.to_le_bytes());
            }
            w.write_all(&record)?;
        }
        Ok(())
    }

    /// The segment's object name: the hash of its sealed bytes, computed without keeping them.
    pub fn stream_name(&self) -> io::Result<String> {
        let mut h = blake3::Hasher::new();
        self.write_sealed(&mut h)?;
        Ok(PackId(*h.finalize().as_bytes()).to_string())
    }

    pub fn decode(object: &str, bytes: &[u8]) -> Result<Segment> {
        let body = codec::open_raw(object, magic::INDEX, bytes)?;
        let bad = |d: &str| Error::corrupt(object, d.to_string());
        if body.len() < 8 {
            return Err(bad("index body truncated"));
        }
        let packs_n = u32::from_le_bytes(le4(&body[0..4])) as usize;
        let packs_end = 8 + packs_n
            .checked_mul(32)
            .ok_or_else(|| bad("pack count overflows"))?;
        if body.len() < packs_end + 8 {
            return Err(bad("index pack table truncated"));
        }
        let packs: Vec<PackId> = body[8..packs_end]
            .chunks_exact(32)
            .map(|c| {
                let mut a = [0u8; 32];
                a.copy_from_slice(c);
                PackId(a)
            })
            .collect();
        let n = u64::from_le_bytes(le8(&body[packs_end..packs_end + 8]));
        let recs = &body[packs_end + 8..];
        if n.checked_mul(INDEX_RECORD_LEN as u64) != Some(recs.len() as u64) {
            return Err(bad("index record count does not match its length"));
        }
        let mut entries = Vec::with_capacity(n as usize);
        for r in recs.chunks_exact(INDEX_RECORD_LEN) {
            let mut id = [0u8; 32];
            id.copy_from_slice(&r[..32]);
            let f = |i: usize| u32::from_le_bytes(le4(&r[32 + i * 4..]));
            let loc = Location {
                pack: f(0),
                offset: f(1),
                stored_len: f(2),
                raw_len: f(3),
            };
            if loc.pack as usize >= packs.len() {
                return Err(bad("index record names a pack outside its pack table"));
            }
            let id = ChunkId(id);
            if entries
                .last()
                .is_some_and(|(prev, _): &(ChunkId, Location)| *prev >= id)
            {
                return Err(bad("index records are not sorted by chunk id"));
            }
            entries.push((id, loc));
        }
        Ok(Segment { packs, entries })
    }

    /// The object name of a segment: BLAKE3 of its encoding.
    pub fn name(encoded: &[u8]) -> String {
        PackId::of(encoded).to_string()
    }
}

/// Which records a job may use: (pack, chunk, where in the pack) -> usable.
pub type Keep = Arc<dyn Fn(&PackId, &ChunkId, &Location) -> bool + Send + Sync>;

/// The index a job looks chunks up in: segment files of the local cache, looked up in place
/// (`SegmentFile`).
/// `keep` leaves out records a job may not use (a lost, condemned or damaged pack's).
#[derive(Clone, Default)]
pub struct Index {
    files: Arc<Vec<SegmentFile>>,
    keep: Option<Keep>,
    /// The cache the files are in, kept while they are read (a temporary one is removed
    /// when dropped).
    _cache: Option<Arc<SegmentCache>>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("files", &self.files.len())
            .finish()
    }
}

impl Index {
    /// The segment files `files`, using only records `keep` accepts.
    pub fn from_files(
        files: Vec<SegmentFile>,
        keep: Option<Keep>,
        cache: Arc<SegmentCache>,
    ) -> Index {
        Index {
            files: Arc::new(files),
            keep,
            _cache: Some(cache),
        }
    }

    /// The same records, with `keep` deciding which lookups may use.
    pub fn with_keep(&self, keep: Option<Keep>) -> Index {
        Index {
            keep,
            ..self.clone()
        }
    }

    /// Where a usable copy of `id` is. A cache file that cannot be read counts as not placing
    /// the chunk (a backup stores it again; a restore says it is missing), with a warning.
    pub fn get(&self, id: &ChunkId) -> Option<(PackId, Location)> {
        for f in self.files.iter() {
            match f.get(id) {
                Ok(Some((pack, loc))) if self.keep.as_ref().is_none_or(|k| k(&pack, id, &loc)) => {
                    return Some((pack, loc));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("reading the cached copy of {}: {e}", f.name()),
            }
        }
        None
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        self.get(id).is_some()
    }

    /// Records (a chunk listed in two segment files counts twice).
    pub fn len(&self) -> usize {
        self.files.iter().map(|f| f.len() as usize).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Plaintext bytes of every distinct chunk the index places (the files streamed, in
    /// chunk id order).
    pub fn raw_bytes(&self) -> Result<u64> {
        let mut total: u64 = 0;
        let files: Vec<&SegmentFile> = self.files.iter().collect();
        let io = |e: std::io::Error| Error::Io {
            what: "reading the index cache".into(),
            source: e,
        };
        let mut last: Option<ChunkId> = None;
        for r in Merged::new(&files).map_err(io)? {
            let (id, pack, loc) = r.map_err(io)?;
            if last == Some(id) || !self.keep.as_ref().is_none_or(|k| k(&pack, &id, &loc)) {
                continue;
            }
            last = Some(id);
            total += loc.raw_len as u64;
        }
        Ok(total)
    }

    /// Every pack a record names.
    pub fn packs(&self) -> Vec<PackId> {
        let mut all = std::collections::BTreeSet::new();
        for f in self.files.iter() {
            all.extend(f.packs().iter().copied());
        }
        all.into_iter().collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A segment placing the chunk of each byte in `ids` in `pack` (tests of the index).
    pub(crate) fn segment(ids: &[u8], pack: PackId) -> Segment {
        let mut entries: Vec<_> = ids
            .iter()
            .map(|b| {
                (
                    ChunkId::of(&[*b]),
                    Location {
                        pack: 0,
                        offset: *b as u32 * 10,
                        stored_len: 5,
                        raw_len: 9,
                    },
                )
            })
            .collect();
        entries.sort_by_key(|a| a.0);
        entries.dedup_by(|b, a| a.0 == b.0);
        Segment {
            packs: vec![pack],
            entries,
        }
    }

    proptest! {
        #[test]
        fn segment_round_trip(ids in proptest::collection::vec(any::<u8>(), 0..200)) {
            let seg = segment(&ids, PackId::of(b"p"));
            let bytes = seg.encode();
            prop_assert_eq!(Segment::decode("i", &bytes).ok(), Some(seg));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Segment::decode("i", &bytes);
        }
    }

    #[test]
    fn encoded_size_per_chunk_is_48_bytes_plus_pack_table() {
        let ids: Vec<u8> = (0..=255).collect();
        let seg = segment(&ids, PackId::of(b"p"));
        let bytes = seg.encode();
        // envelope 28 + header 8 + one pack 32 + count 8 + 256 records.
        assert_eq!(bytes.len(), 28 + 8 + 32 + 8 + 256 * INDEX_RECORD_LEN);
    }
}
