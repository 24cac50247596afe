//! An index segment as jobs read it: the segment's object, byte for byte (format.md, "Index
//! segment"), in a file of the local cache, looked up in place. In memory stay only its pack
//! table and a *fence*: the first 8 bytes of the first chunk id of every block of 85 records
//! (4,080 bytes). A lookup finds the block in the fence and reads that one block, so a segment
//! costs about 0.1 byte of memory per chunk it lists instead of 48.
//!
//! Blocks are read with `pread`, not through a memory map: pages of a map that a lookup touches
//! count in the process's resident set until the kernel reclaims them, so a backup probing a
//! multi-gigabyte index at random would look (and be accounted) as large as the index; the
//! page cache serves `pread` just as well and stays the kernel's. Opening a file reads it once
//! from end to end to check its CRC, its order and its pack ordinals and to build the fence,
//! so a damaged cache file is never used: it is fetched again.

use crate::codec::{self, magic};
use crate::error::{Error, Result};
use crate::ids::{ChunkId, PackId};
use crate::index::{INDEX_RECORD_LEN, Location};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Records per block: one block is what a lookup reads.
pub const BLOCK: u64 = 85;

#[derive(Debug)]
pub struct SegmentFile {
    /// The segment's repository key, for messages.
    name: String,
    file: File,
    packs: Vec<PackId>,
    records_at: u64,
    count: u64,
    fence: Vec<u64>,
}

fn prefix(id: &ChunkId) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&id.as_bytes()[..8]);
    u64::from_be_bytes(a)
}

fn record(r: &[u8], packs: usize) -> Option<(ChunkId, Location)> {
    let mut id = [0u8; 32];
    id.copy_from_slice(&r[..32]);
    let f = |i: usize| u32::from_le_bytes(codec::le4(&r[32 + i * 4..]));
    let loc = Location {
        pack: f(0),
        offset: f(1),
        stored_len: f(2),
        raw_len: f(3),
    };
    ((loc.pack as usize) < packs).then_some((ChunkId(id), loc))
}

impl SegmentFile {
    /// Open and check the cached copy at `path` of the segment object `name`; with
    /// `hashed_name`, its bytes must also hash to that name (BLAKE3, hex): a cached file is
    /// read whole here anyway, and one that is not the segment it claims to be (another
    /// segment's bytes, crafted bytes with a recomputed CRC) must never be looked up in or
    /// merged into the repository.
    pub fn open(name: &str, path: &Path, hashed_name: Option<&str>) -> Result<SegmentFile> {
        let io_err = |e: io::Error| Error::Io {
            what: format!("reading {} (the cached copy of {name})", path.display()),
            source: e,
        };
        let bad = |d: String| Error::corrupt(name, d);
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let mut crc = crc32fast::Hasher::new();
        let mut hash = hashed_name.map(|_| blake3::Hasher::new());
        let mut r = BufReader::with_capacity(1 << 20, &file);
        let mut take = |buf: &mut [u8], crc: &mut crc32fast::Hasher| -> Result<()> {
            r.read_exact(buf).map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => bad("truncated".into()),
                _ => io_err(e),
            })?;
            crc.update(buf);
            if let Some(h) = hash.as_mut() {
                h.update(buf);
            }
            Ok(())
        };
        let mut header = [0u8; codec::ENVELOPE_HEADER_LEN];
        take(&mut header, &mut crc)?;
        if &header[..8] != magic::INDEX {
            return Err(bad("bad magic: not an index segment".into()));
        }
        let version = u16::from_le_bytes([header[8], header[9]]);
        if version > codec::FORMAT_VERSION {
            return Err(Error::NewerFormat {
                object: name.to_string(),
                found: version,
                supported: codec::FORMAT_VERSION,
            });
        }
        if u16::from_le_bytes([header[10], header[11]]) != 0 {
            return Err(bad(
                "index segments are stored uncompressed; this one is not".into(),
            ));
        }
        let body_len = u64::from_le_bytes(codec::le8(&header[16..24]));
        if (codec::ENVELOPE_HEADER_LEN as u64)
            .checked_add(body_len)
            .and_then(|n| n.checked_add(4))
            != Some(len)
        {
            return Err(bad(format!(
                "length mismatch: {len} bytes, header says a {body_len}-byte body"
            )));
        }
        let mut head = [0u8; 8];
        take(&mut head, &mut crc)?;
        let packs_n = u32::from_le_bytes(codec::le4(&head[..4])) as u64;
        if packs_n * 32 + 16 > body_len {
            return Err(bad("index pack table truncated".into()));
        }
        let mut packs = Vec::with_capacity(packs_n as usize);
        for _ in 0..packs_n {
            let mut p = [0u8; 32];
            take(&mut p, &mut crc)?;
            packs.push(PackId(p));
        }
        let mut n = [0u8; 8];
        take(&mut n, &mut crc)?;
        let count = u64::from_le_bytes(n);
        if count.checked_mul(INDEX_RECORD_LEN as u64) != Some(body_len - 16 - packs_n * 32) {
            return Err(bad("index record count does not match its length".into()));
        }
        let records_at = codec::ENVELOPE_HEADER_LEN as u64 + 16 + packs_n * 32;
        let mut fence = Vec::with_capacity(count.div_ceil(BLOCK) as usize);
        let mut prev: Option<ChunkId> = None;
        let mut buf = [0u8; INDEX_RECORD_LEN];
        for i in 0..count {
            take(&mut buf, &mut crc)?;
            let (id, _) = record(&buf, packs.len())
                .ok_or_else(|| bad("index record names a pack outside its pack table".into()))?;
            if prev.is_some_and(|p| p >= id) {
                return Err(bad("index records are not sorted by chunk id".into()));
            }
            if i % BLOCK == 0 {
                fence.push(prefix(&id));
            }
            prev = Some(id);
        }
        let mut stored = [0u8; 4];
        take(&mut stored, &mut crc32fast::Hasher::new())?;
        if let (Some(h), Some(want)) = (hash, hashed_name) {
            let got = h.finalize().to_hex();
            if got.as_str() != want {
                return Err(bad(format!(
                    "the cached copy {} hashes to {got}, not to the segment's name",
                    path.display()
                )));
            }
        }
        let crc = crc.finalize();
        if crc != u32::from_le_bytes(stored) {
            return Err(bad(format!(
                "invalid CRC: expected 0x{:08x}, was 0x{crc:08x}",
                u32::from_le_bytes(stored)
            )));
        }
        Ok(SegmentFile {
            name: name.to_string(),
            file,
            packs,
            records_at,
            count,
            fence,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn packs(&self) -> &[PackId] {
        &self.packs
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Where the segment places `id`: one block read (more only when ids share their first 8
    /// bytes across a block boundary, which only crafted ids do).
    pub fn get(&self, id: &ChunkId) -> io::Result<Option<(PackId, Location)>> {
        let p = prefix(id);
        let end = self.fence.partition_point(|f| *f <= p);
        if end == 0 {
            return Ok(None);
        }
        let start = self.fence.partition_point(|f| *f < p).saturating_sub(1);
        let mut buf = [0u8; BLOCK as usize * INDEX_RECORD_LEN];
        for block in start..end {
            let first = block as u64 * BLOCK;
            let n = BLOCK.min(self.count - first) as usize;
            let bytes = &mut buf[..n * INDEX_RECORD_LEN];
            self.file
                .read_exact_at(bytes, self.records_at + first * INDEX_RECORD_LEN as u64)?;
            let (mut lo, mut hi) = (0, n);
            while lo < hi {
                let mid = (lo + hi) / 2;
                let r = &bytes[mid * INDEX_RECORD_LEN..(mid + 1) * INDEX_RECORD_LEN];
                match r[..32].cmp(id.as_bytes()) {
                    std::cmp::Ordering::Less => lo = mid + 1,
                    std::cmp::Ordering::Greater => hi = mid,
                    std::cmp::Ordering::Equal => {
                        return Ok(record(r, self.packs.len())
                            .map(|(_, l)| (self.packs[l.pack as usize], l)));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Every record in order, read sequentially (the file was checked when opened).
    pub fn records(&self) -> io::Result<Records<'_>> {
        let file = self.file.try_clone()?;
        let mut r = BufReader::with_capacity(256 * 1024, file);
        io::Seek::seek(&mut r, io::SeekFrom::Start(self.records_at))?;
        Ok(Records {
            seg: self,
            reader: r,
            left: self.count,
        })
    }
}

/// The records of one segment file, in chunk id order.
#[derive(Debug)]
pub struct Records<'a> {
    seg: &'a SegmentFile,
    reader: BufReader<File>,
    left: u64,
}

impl Iterator for Records<'_> {
    type Item = io::Result<(ChunkId, PackId, Location)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let mut buf = [0u8; INDEX_RECORD_LEN];
        if let Err(e) = self.reader.read_exact(&mut buf) {
            self.left = 0;
            return Some(Err(e));
        }
        match record(&buf, self.seg.packs.len()) {
            Some((id, loc)) => Some(Ok((id, self.seg.packs[loc.pack as usize], loc))),
            None => {
                self.left = 0;
                Some(Err(io::Error::other(format!(
                    "{} changed on disk since it was checked",
                    self.seg.name
                ))))
            }
        }
    }
}

/// The order of merged records: chunk id, pack, offset.
type MergeKey = (ChunkId, PackId, u32);

/// The records of several segment files as one stream in (chunk id, pack, offset) order.
#[derive(Debug)]
pub struct Merged<'a> {
    inputs: Vec<Records<'a>>,
    heap: std::collections::BinaryHeap<std::cmp::Reverse<(MergeKey, usize)>>,
    /// The location of each input's record in the heap.
    head: Vec<Location>,
    /// The input of the record returned last.
    source: usize,
}

impl<'a> Merged<'a> {
    pub fn new(files: &[&'a SegmentFile]) -> io::Result<Merged<'a>> {
        let mut m = Merged {
            inputs: files
                .iter()
                .map(|f| f.records())
                .collect::<io::Result<_>>()?,
            heap: Default::default(),
            head: vec![
                Location {
                    pack: 0,
                    offset: 0,
                    stored_len: 0,
                    raw_len: 0
                };
                files.len()
            ],
            source: 0,
        };
        for i in 0..m.inputs.len() {
            m.refill(i)?;
        }
        Ok(m)
    }

    /// Which of the files the record returned last came from.
    pub fn source(&self) -> usize {
        self.source
    }

    fn refill(&mut self, i: usize) -> io::Result<()> {
        if let Some(r) = self.inputs[i].next() {
            let (id, pack, loc) = r?;
            self.head[i] = loc;
            self.heap
                .push(std::cmp::Reverse(((id, pack, loc.offset), i)));
        }
        Ok(())
    }
}

impl Iterator for Merged<'_> {
    type Item = io::Result<(ChunkId, PackId, Location)>;

    fn next(&mut self) -> Option<Self::Item> {
        let std::cmp::Reverse(((id, pack, _), i)) = self.heap.pop()?;
        let loc = self.head[i];
        self.source = i;
        if let Err(e) = self.refill(i) {
            return Some(Err(e));
        }
        Some(Ok((id, pack, loc)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Segment;

    fn segment(n: u32, pack: PackId) -> Segment {
        let mut entries: Vec<_> = (0..n)
            .map(|i| {
                (
                    ChunkId::of(&i.to_le_bytes()),
                    Location {
                        pack: 0,
                        offset: i,
                        stored_len: 1,
                        raw_len: 2,
                    },
                )
            })
            .collect();
        entries.sort_by_key(|e| e.0);
        Segment {
            packs: vec![pack],
            entries,
        }
    }

    #[test]
    fn every_record_is_found_and_nothing_else() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Invalid(e.to_string()))?;
        for n in [0u32, 1, 84, 85, 86, 1000] {
            let seg = segment(n, PackId::of(b"p"));
            let path = dir.path().join(format!("s{n}"));
            std::fs::write(&path, seg.encode()).map_err(|e| Error::Invalid(e.to_string()))?;
            let f = SegmentFile::open("s", &path, None)?;
            assert_eq!(f.len(), n as u64);
            for (id, loc) in &seg.entries {
                assert_eq!(f.get(id).ok().flatten(), Some((PackId::of(b"p"), *loc)));
            }
            for i in n..n + 50 {
                assert_eq!(f.get(&ChunkId::of(&i.to_le_bytes())).ok().flatten(), None);
            }
            let all: Vec<_> = f
                .records()
                .map_err(|e| Error::Invalid(e.to_string()))?
                .collect();
            assert_eq!(all.len(), n as usize);
        }
        Ok(())
    }

    #[test]
    fn every_flipped_byte_is_refused() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Invalid(e.to_string()))?;
        let bytes = segment(200, PackId::of(b"p")).encode();
        let path = dir.path().join("s");
        for i in (0..bytes.len()).step_by(7) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            std::fs::write(&path, &bad).map_err(|e| Error::Invalid(e.to_string()))?;
            assert!(
                SegmentFile::open("s", &path, None).is_err(),
                "flip at {i} not seen"
            );
        }
        std::fs::write(&path, &bytes[..bytes.len() - 1])
            .map_err(|e| Error::Invalid(e.to_string()))?;
        assert!(SegmentFile::open("s", &path, None).is_err());
        Ok(())
    }

    #[test]
    fn merged_is_in_order_across_files() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Invalid(e.to_string()))?;
        let mut files = Vec::new();
        for (n, p) in [(100u32, b"a"), (300, b"b"), (7, b"c")] {
            let path = dir.path().join(format!("s{n}"));
            std::fs::write(&path, segment(n, PackId::of(p)).encode())
                .map_err(|e| Error::Invalid(e.to_string()))?;
            files.push(SegmentFile::open("s", &path, None)?);
        }
        let refs: Vec<&SegmentFile> = files.iter().collect();
        let all: Vec<_> = Merged::new(&refs)
            .map_err(|e| Error::Invalid(e.to_string()))?
            .collect::<io::Result<_>>()
            .map_err(|e| Error::Invalid(e.to_string()))?;
        assert_eq!(all.len(), 407);
        assert!(all.windows(2).all(|w| (w[0].0, w[0].1) <= (w[1].0, w[1].1)));
        Ok(())
    }
}
