//! Pack objects: many compressed chunks in one object, so a backup costs one PUT per pack
//! rather than per chunk. Layout (format.md, "Pack"): a 16-byte header, the chunk blobs back
//! to back, a trailer of fixed 56-byte entries, and a 32-byte footer. The trailer makes a pack
//! self-describing: the index can be rebuilt from packs alone, and verify checks each chunk
//! against its CRC and its BLAKE3 name.

use crate::codec::{le4, le8};
use crate::error::{Error, Result};
use crate::ids::{ChunkId, PackId};

pub const PACK_MAGIC: &[u8; 8] = b"CAIRNPAK";
pub const PACK_FOOTER_MAGIC: &[u8; 8] = b"CAIRNPKT";
pub const PACK_VERSION: u16 = 1;
pub const PACK_HEADER_LEN: usize = 16;
pub const PACK_ENTRY_LEN: usize = 56;
pub const PACK_FOOTER_LEN: usize = 32;

/// Blob encodings.
pub const COMPRESSION_NONE: u8 = 0;
pub const COMPRESSION_ZSTD: u8 = 1;

thread_local! {
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// zstd-compress with this thread's reusable context (a context per 8 KiB block would cost
/// more than the compression).
pub fn compress(plain: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        match c.as_mut() {
            Some((_, z)) => z.compress(plain),
            None => zstd::bulk::compress(plain, level),
        }
    })
}

/// zstd-decompress at most `capacity` bytes with this thread's reusable context.
pub fn decompress(stored: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        match d.as_mut() {
            Some(z) => z.decompress(stored, capacity),
            None => zstd::bulk::decompress(stored, capacity),
        }
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PackEntry {
    pub id: ChunkId,
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    pub crc: u32,
    pub compression: u8,
}

/// A chunk ready to be packed: named, compressed (or not), checksummed.
#[derive(Debug)]
pub struct SealedChunk {
    pub id: ChunkId,
    pub raw_len: u32,
    pub compression: u8,
    pub data: Vec<u8>,
}

impl SealedChunk {
    /// Hash, compress and checksum a chunk's plaintext. CPU-bound: runs on the rayon pool.
    pub fn seal(id: ChunkId, plain: &[u8], level: i32) -> SealedChunk {
        let raw_len = plain.len() as u32;
        match compress(plain, level) {
            Ok(c) if c.len() < plain.len() => SealedChunk {
                id,
                raw_len,
                compression: COMPRESSION_ZSTD,
                data: c,
            },
            _ => SealedChunk {
                id,
                raw_len,
                compression: COMPRESSION_NONE,
                data: plain.to_vec(),
            },
        }
    }
}

/// Decode one stored blob and check it: CRC of the stored bytes, then BLAKE3 of the
/// plaintext against the chunk's name. Wrong bytes never leave this function.
pub fn open_blob(object: &str, entry: &PackEntry, stored: &[u8]) -> Result<Vec<u8>> {
    if stored.len() != entry.stored_len as usize {
        return Err(Error::corrupt(
            object,
            format!(
                "chunk {} is {} bytes, expected {}",
                entry.id,
                stored.len(),
                entry.stored_len
            ),
        ));
    }
    let crc = crc32fast::hash(stored);
    if crc != entry.crc {
        return Err(Error::corrupt(
            object,
            format!(
                "chunk {}: invalid CRC: expected 0x{:08x}, was 0x{crc:08x}",
                entry.id, entry.crc
            ),
        ));
    }
    let plain = match entry.compression {
        COMPRESSION_NONE => stored.to_vec(),
        COMPRESSION_ZSTD => decompress(stored, entry.raw_len as usize).map_err(|e| {
            Error::corrupt(
                object,
                format!("chunk {}: cannot decompress: {e}", entry.id),
            )
        })?,
        other => {
            return Err(Error::corrupt(
                object,
                format!("chunk {}: unknown compression {other}", entry.id),
            ));
        }
    };
    if plain.len() != entry.raw_len as usize || ChunkId::of(&plain) != entry.id {
        return Err(Error::corrupt(
            object,
            format!("chunk {}: content does not match its BLAKE3 name", entry.id),
        ));
    }
    Ok(plain)
}

/// Accumulates sealed chunks into one pack's bytes.
#[derive(Debug)]
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
}

impl Default for PackBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PackBuilder {
    pub fn new() -> Self {
        let mut buf = Vec::new();
        buf.extend_from_slice(PACK_MAGIC);
        buf.extend_from_slice(&PACK_VERSION.to_le_bytes());
        buf.extend_from_slice(&[0u8; 6]);
        PackBuilder {
            buf,
            entries: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn add(&mut self, chunk: &SealedChunk) {
        self.entries.push(PackEntry {
            id: chunk.id,
            offset: self.buf.len() as u64,
            stored_len: chunk.data.len() as u32,
            raw_len: chunk.raw_len,
            crc: crc32fast::hash(&chunk.data),
            compression: chunk.compression,
        });
        self.buf.extend_from_slice(&chunk.data);
    }

    /// Append trailer and footer; the pack is named by the BLAKE3 of all its bytes.
    pub fn finish(mut self) -> (PackId, Vec<u8>, Vec<PackEntry>) {
        let trailer_offset = self.buf.len() as u64;
        let mut tail = Vec::with_capacity(self.entries.len() * PACK_ENTRY_LEN + PACK_FOOTER_LEN);
        for e in &self.entries {
            tail.extend_from_slice(e.id.as_bytes());
            tail.extend_from_slice(&e.offset.to_le_bytes());
            tail.extend_from_slice(&e.stored_len.to_le_bytes());
            tail.extend_from_slice(&e.raw_len.to_le_bytes());
            tail.extend_from_slice(&e.crc.to_le_bytes());
            tail.push(e.compression);
            tail.extend_from_slice(&[0u8; 3]);
        }
        tail.extend_from_slice(&trailer_offset.to_le_bytes());
        tail.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        tail.extend_from_slice(&PACK_VERSION.to_le_bytes());
        tail.extend_from_slice(&0u16.to_le_bytes());
        let crc = crc32fast::hash(&tail);
        tail.extend_from_slice(&crc.to_le_bytes());
        tail.extend_from_slice(&0u32.to_le_bytes());
        tail.extend_from_slice(PACK_FOOTER_MAGIC);
        self.buf.extend_from_slice(&tail);
        (PackId::of(&self.buf), self.buf, self.entries)
    }
}

/// Parse the footer (last 32 bytes of a pack): (trailer offset, entry count).
pub fn parse_footer(object: &str, footer: &[u8], pack_len: u64) -> Result<(u64, u32)> {
    if footer.len() != PACK_FOOTER_LEN || &footer[24..32] != PACK_FOOTER_MAGIC {
        return Err(Error::corrupt(
            object,
            "pack footer is missing or has a bad magic",
        ));
    }
    let trailer_offset = u64::from_le_bytes(le8(&footer[0..8]));
    let count = u32::from_le_bytes(le4(&footer[8..12]));
    let version = u16::from_le_bytes([footer[12], footer[13]]);
    if version > PACK_VERSION {
        return Err(Error::NewerFormat {
            object: object.to_string(),
            found: version,
            supported: PACK_VERSION,
        });
    }
    let expected = (PACK_HEADER_LEN as u64)
        .max(trailer_offset)
        .checked_add(count as u64 * PACK_ENTRY_LEN as u64 + PACK_FOOTER_LEN as u64);
    if trailer_offset < PACK_HEADER_LEN as u64 || expected != Some(pack_len) {
        return Err(Error::corrupt(
            object,
            format!(
                "pack footer says {count} entries at offset {trailer_offset}, which does not fit the pack's {pack_len} bytes"
            ),
        ));
    }
    Ok((trailer_offset, count))
}

/// Parse trailer entries + footer (`tail` = bytes from the trailer offset to the end).
pub fn parse_trailer(object: &str, tail: &[u8], trailer_offset: u64) -> Result<Vec<PackEntry>> {
    if tail.len() < PACK_FOOTER_LEN
        || !(tail.len() - PACK_FOOTER_LEN).is_multiple_of(PACK_ENTRY_LEN)
    {
        return Err(Error::corrupt(object, "pack trailer has a bad length"));
    }
    let crc_at = tail.len() - 16;
    let stored = u32::from_le_bytes(le4(&tail[crc_at..]));
    let crc = crc32fast::hash(&tail[..crc_at]);
    if crc != stored {
        return Err(Error::corrupt(
            object,
            format!("pack trailer: invalid CRC: expected 0x{stored:08x}, was 0x{crc:08x}"),
        ));
    }
    let mut entries = Vec::new();
    for rec in tail[..tail.len() - PACK_FOOTER_LEN].chunks_exact(PACK_ENTRY_LEN) {
        let mut id = [0u8; 32];
        id.copy_from_slice(&rec[..32]);
        let e = PackEntry {
            id: ChunkId(id),
            offset: u64::from_le_bytes(le8(&rec[32..40])),
            stored_len: u32::from_le_bytes(le4(&rec[40..44])),
            raw_len: u32::from_le_bytes(le4(&rec[44..48])),
            crc: u32::from_le_bytes(le4(&rec[48..52])),
            compression: rec[52],
        };
        let end = e.offset.checked_add(e.stored_len as u64);
        if e.offset < PACK_HEADER_LEN as u64 || end.is_none_or(|end| end > trailer_offset) {
            return Err(Error::corrupt(
                object,
                format!(
                    "pack trailer entry for chunk {} points outside the data area",
                    e.id
                ),
            ));
        }
        entries.push(e);
    }
    Ok(entries)
}

/// Parse a whole pack held in memory: header, trailer, and the pack's own name.
pub fn parse_pack(object: &str, expected: &PackId, bytes: &[u8]) -> Result<Vec<PackEntry>> {
    if bytes.len() < PACK_HEADER_LEN + PACK_FOOTER_LEN || &bytes[..8] != PACK_MAGIC {
        return Err(Error::corrupt(object, "not a pack: bad magic or truncated"));
    }
    let actual = PackId::of(bytes);
    if &actual != expected {
        return Err(Error::corrupt(
            object,
            format!("content hash is {actual}, not the pack's name"),
        ));
    }
    let (trailer_offset, _) = parse_footer(
        object,
        &bytes[bytes.len() - PACK_FOOTER_LEN..],
        bytes.len() as u64,
    )?;
    parse_trailer(object, &bytes[trailer_offset as usize..], trailer_offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn build(chunks: &[Vec<u8>]) -> (PackId, Vec<u8>, Vec<PackEntry>) {
        let mut b = PackBuilder::new();
        for c in chunks {
            b.add(&SealedChunk::seal(ChunkId::of(c), c, 3));
        }
        b.finish()
    }

    proptest! {
        #[test]
        fn pack_round_trip(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..2000), 0..20)) {
            let (id, bytes, entries) = build(&chunks);
            let parsed = parse_pack("p", &id, &bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&parsed, &entries);
            for (e, c) in parsed.iter().zip(&chunks) {
                let stored = &bytes[e.offset as usize..(e.offset + e.stored_len as u64) as usize];
                let plain = open_blob("p", e, stored).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&plain, c);
            }
        }

        #[test]
        fn damaged_packs_never_panic(flip in 0usize..4096, chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..5)) {
            let (id, mut bytes, _) = build(&chunks);
            let i = flip % bytes.len();
            bytes[i] ^= 1;
            prop_assert!(parse_pack("p", &id, &bytes).is_err());
        }
    }

    #[test]
    fn a_flipped_blob_byte_fails_the_chunk() -> Result<()> {
        let data = vec![7u8; 10_000];
        let (_, bytes, entries) = build(std::slice::from_ref(&data));
        let e = &entries[0];
        let mut stored =
            bytes[e.offset as usize..(e.offset + e.stored_len as u64) as usize].to_vec();
        stored[0] ^= 1;
        assert!(open_blob("p", e, &stored).is_err());
        Ok(())
    }
}
