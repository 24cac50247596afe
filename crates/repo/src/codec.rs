//! The one place bytes are encoded. `docs/format.md` defines every byte; this module and the
//! fixed-layout encoders in `pack` and `index` produce exactly those bytes.
//!
//! Structured objects (repository marker, stanza info, catalog, manifest) are *sealed*: an
//! envelope with a per-kind magic, a format version, flags and a CRC32 around a body. The body
//! is the structure in bincode 2's serde encoding with fixed-width little-endian integers
//! (`u64` lengths, `u32` enum tags, `u8` option tags), which format.md spells out, optionally
//! zstd-compressed. bincode 2 is pinned (=2.0.1): 3.0.0 is an empty release of an unmaintained
//! crate, and because format.md specifies the bytes and golden tests freeze them, the library
//! can be replaced without changing a byte.

use crate::error::{Error, Result};
use serde::{Serialize, de::DeserializeOwned};
use std::io::{self, Write};

/// The current format version of every sealed object kind.
pub const FORMAT_VERSION: u16 = 1;
/// The newest manifest version: 2 when a manifest holds hard links or special files, 3 when
/// it holds paged content (only then, so that such manifests alone are refused by an older
/// cairn, as newer).
pub const MANIFEST_FORMAT_VERSION: u16 = 3;
/// The newest catalog version: 2, a generation written compare-and-swap (format.md,
/// "Catalog").
pub const CATALOG_FORMAT_VERSION: u16 = 2;

pub const ENVELOPE_HEADER_LEN: usize = 24;
/// The largest decompressed body accepted for each kind of sealed object: what a sane object
/// of that kind can be, so a crafted or damaged object cannot make a reader exhaust memory (a
/// 32 KB catalog that inflated to 1 GiB made `info` use 1.5 GiB before refusing it).
/// format.md, "Sealed objects", lists the same limits.
pub fn max_body(magic: &[u8; 8]) -> u64 {
    match magic {
        // A handful of fields each.
        magic::REPO | magic::STANZA | magic::LOCK => 1 << 20,
        // About 1 KiB per backup record: room for some 60,000 backups.
        magic::CATALOG => 64 << 20,
        // 32 bytes per damaged chunk: room for some two million.
        magic::DAMAGE => 64 << 20,
        // 48 bytes per condemned pack: room for over a million.
        magic::CONDEMNED => 64 << 20,
        // A WAL segment is at most 1 GiB (PostgreSQL's largest --wal-segsize).
        magic::WAL => (1 << 30) + (1 << 20),
        // Manifests and index segments grow with the cluster (tens of bytes per chunk).
        _ => 4 << 30,
    }
}
const FLAG_ZSTD: u16 = 1;

/// Magics of the sealed object kinds (8 ASCII bytes each).
pub mod magic {
    pub const REPO: &[u8; 8] = b"CAIRNREP";
    pub const STANZA: &[u8; 8] = b"CAIRNSTZ";
    pub const CATALOG: &[u8; 8] = b"CAIRNCAT";
    pub const MANIFEST: &[u8; 8] = b"CAIRNMAN";
    pub const INDEX: &[u8; 8] = b"CAIRNIDX";
    pub const LOCK: &[u8; 8] = b"CAIRNLCK";
    pub const WAL: &[u8; 8] = b"CAIRNWAL";
    pub const DAMAGE: &[u8; 8] = b"CAIRNDMG";
    pub const CONDEMNED: &[u8; 8] = b"CAIRNGCP";
}

type BaseConfig = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Fixint,
    bincode::config::NoLimit,
>;

fn config() -> BaseConfig {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
}

pub fn encode_body<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding into a Vec cannot fail for the plain data structures used here; if serde ever
    // reported an error it would be a programming error in a Serialize impl.
    bincode::serde::encode_to_vec(value, config())
        .unwrap_or_else(|e| panic!("encoding failed: {e}"))
}

/// Decode with bincode's allocation limit set to the smallest bucket that holds the whole
/// body: a valid body never claims more bytes than it contains, and a damaged length prefix
/// must not make the decoder allocate gigabytes before noticing (found by fuzzing).
fn decode_limited<T: DeserializeOwned>(
    bytes: &[u8],
) -> std::result::Result<(T, usize), bincode::error::DecodeError> {
    macro_rules! with_limit {
        ($($n:expr),*) => {
            $(if bytes.len() <= $n {
                return bincode::serde::decode_from_slice(bytes, config().with_limit::<{ $n }>());
            })*
        };
    }
    with_limit!(1 << 16, 1 << 20, 1 << 24, 1 << 28, 1 << 32);
    bincode::serde::decode_from_slice(bytes, config().with_limit::<{ 1 << 40 }>())
}

/// What is wrong with a body that does not decode, in words (the decoder's own names, such
/// as `LimitExceeded`, mean nothing to an operator).
fn describe(e: &bincode::error::DecodeError) -> String {
    use bincode::error::DecodeError as D;
    match e {
        D::UnexpectedEnd { .. } => "its body ends before its contents do (truncated)".into(),
        D::LimitExceeded => "its body claims more contents than it holds".into(),
        D::OtherString(s) => format!("its contents are invalid: {s}"),
        D::Utf8 { .. } => "a text field is not valid UTF-8".into(),
        D::UnexpectedVariant { .. } | D::InvalidBooleanValue(_) | D::InvalidCharEncoding(_) => {
            "its contents are not a valid encoding".into()
        }
        other => format!("its contents cannot be decoded ({other})"),
    }
}

pub fn decode_body<T: DeserializeOwned>(object: &str, bytes: &[u8]) -> Result<T> {
    let (value, used) = decode_limited(bytes).map_err(|e| Error::corrupt(object, describe(&e)))?;
    if used != bytes.len() {
        return Err(Error::corrupt(
            object,
            format!(
                "{} trailing bytes after the encoded value",
                bytes.len() - used
            ),
        ));
    }
    Ok(value)
}

/// Wrap `body` in the envelope: magic, version, flags, length, body, CRC32.
pub fn seal_raw(magic: &[u8; 8], body: &[u8], compress: bool) -> Vec<u8> {
    seal_raw_level(magic, body, compress.then_some(3))
}

/// `seal_raw` with the zstd level to use (None: store the body plain).
pub fn seal_raw_level(magic: &[u8; 8], body: &[u8], level: Option<i32>) -> Vec<u8> {
    let (flags, stored) = if let Some(level) = level {
        match zstd::bulk::compress(body, level) {
            Ok(c) => (FLAG_ZSTD, c),
            Err(_) => (0, body.to_vec()),
        }
    } else {
        (0, body.to_vec())
    };
    let mut out = Vec::with_capacity(ENVELOPE_HEADER_LEN + stored.len() + 4);
    out.extend_from_slice(magic);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(stored.len() as u64).to_le_bytes());
    out.extend_from_slice(&stored);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Check the envelope (length, magic, CRC, version) and return the plain body.
pub fn open_raw(object: &str, magic: &[u8; 8], bytes: &[u8]) -> Result<Vec<u8>> {
    open_raw_versioned(object, magic, bytes).map(|(_, body)| body)
}

/// `open_raw`, with the format version the envelope carries.
pub fn open_raw_versioned(object: &str, magic: &[u8; 8], bytes: &[u8]) -> Result<(u16, Vec<u8>)> {
    if bytes.len() < ENVELOPE_HEADER_LEN + 4 {
        return Err(Error::corrupt(
            object,
            format!(
                "truncated: {} bytes, shorter than an empty object",
                bytes.len()
            ),
        ));
    }
    if &bytes[..8] != magic {
        return Err(Error::corrupt(
            object,
            format!(
                "bad magic: expected {:?}, was {:?}",
                String::from_utf8_lossy(magic),
                String::from_utf8_lossy(&bytes[..8])
            ),
        ));
    }
    let body_len = u64::from_le_bytes(le8(&bytes[16..24]));
    let expected_len = (ENVELOPE_HEADER_LEN as u64)
        .saturating_add(body_len)
        .saturating_add(4);
    if expected_len != bytes.len() as u64 {
        return Err(Error::corrupt(
            object,
            format!(
                "length mismatch: header says {expected_len} bytes, object has {}",
                bytes.len()
            ),
        ));
    }
    let crc_at = bytes.len() - 4;
    let stored_crc = u32::from_le_bytes(le4(&bytes[crc_at..]));
    let crc = crc32fast::hash(&bytes[..crc_at]);
    if crc != stored_crc {
        return Err(Error::corrupt(
            object,
            format!("invalid CRC: expected 0x{stored_crc:08x}, was 0x{crc:08x}"),
        ));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    let supported = match magic {
        magic::MANIFEST => MANIFEST_FORMAT_VERSION,
        magic::CATALOG => CATALOG_FORMAT_VERSION,
        _ => FORMAT_VERSION,
    };
    if version > supported {
        return Err(Error::NewerFormat {
            object: object.to_string(),
            found: version,
            supported,
        });
    }
    let flags = u16::from_le_bytes([bytes[10], bytes[11]]);
    let body = &bytes[ENVELOPE_HEADER_LEN..crc_at];
    if flags & FLAG_ZSTD != 0 {
        use std::io::Read;
        let decoder = zstd::stream::read::Decoder::new(body)
            .map_err(|e| Error::corrupt(object, format!("cannot decompress body: {e}")))?;
        let limit = max_body(magic);
        let mut out = Vec::new();
        decoder
            .take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| Error::corrupt(object, format!("cannot decompress body: {e}")))?;
        if out.len() as u64 > limit {
            return Err(Error::corrupt(
                object,
                format!(
                    "decompressed body is larger than {limit} bytes, the most an object of this kind can be"
                ),
            ));
        }
        Ok((version, out))
    } else {
        Ok((version, body.to_vec()))
    }
}

/// The zstd level of compressed sealed objects.
const SEAL_LEVEL: i32 = 3;
/// A sealed object whose stored body is at most this long is encoded once, kept in memory;
/// a longer one is encoded twice (once to learn the length the header holds, once to write
/// it) so it never has to be in memory whole.
pub const SEAL_KEEP: usize = 16 * 1024 * 1024;

/// Write a sealed object to `w` without holding its encoding in memory: `body` writes the
/// plain body (and must write the same bytes each time it is called). The envelope is the
/// one `seal_raw` makes; a compressed body is a zstd stream.
pub fn seal_to(
    w: &mut dyn Write,
    magic: &[u8; 8],
    compress: bool,
    body: &dyn Fn(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    seal_to_version(w, magic, FORMAT_VERSION, compress, body)
}

/// `seal_to` with the format version to write in the header.
pub fn seal_to_version(
    w: &mut dyn Write,
    magic: &[u8; 8],
    version: u16,
    compress: bool,
    body: &dyn Fn(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let stored = |sink: &mut dyn Write| -> io::Result<()> {
        if compress {
            let mut enc = zstd::stream::write::Encoder::new(sink, SEAL_LEVEL)?;
            {
                let mut buf = io::BufWriter::with_capacity(128 * 1024, &mut enc);
                body(&mut buf)?;
                buf.flush()?;
            }
            enc.finish()?;
            Ok(())
        } else {
            let mut buf = io::BufWriter::with_capacity(128 * 1024, sink);
            body(&mut buf)?;
            buf.flush()
        }
    };
    let mut first = Spill {
        kept: Some(Vec::new()),
        count: 0,
    };
    stored(&mut first)?;
    let len = first.count;
    let mut out = Crc {
        inner: w,
        hasher: crc32fast::Hasher::new(),
    };
    out.write_all(magic)?;
    out.write_all(&version.to_le_bytes())?;
    out.write_all(&(if compress { FLAG_ZSTD } else { 0 }).to_le_bytes())?;
    out.write_all(&0u32.to_le_bytes())?;
    out.write_all(&len.to_le_bytes())?;
    if let Some(kept) = first.kept {
        out.write_all(&kept)?;
    } else {
        let mut second = Counted {
            inner: &mut out,
            count: 0,
        };
        stored(&mut second)?;
        if second.count != len {
            return Err(io::Error::other(format!(
                "the body encoded to {} bytes, then to {len}: the encoder is not deterministic",
                second.count
            )));
        }
    }
    let crc = out.hasher.finalize();
    out.inner.write_all(&crc.to_le_bytes())
}

/// Counts what is written, keeping the bytes while there are at most `SEAL_KEEP` of them.
struct Spill {
    kept: Option<Vec<u8>>,
    count: u64,
}

impl Write for Spill {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.count += data.len() as u64;
        if self.count > SEAL_KEEP as u64 {
            self.kept = None;
        } else if let Some(k) = &mut self.kept {
            k.extend_from_slice(data);
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Counted<'a> {
    inner: &'a mut dyn Write,
    count: u64,
}

impl Write for Counted<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct Crc<'a> {
    inner: &'a mut dyn Write,
    hasher: crc32fast::Hasher,
}

impl Write for Crc<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hasher.update(&data[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Encode `value` as a body into `w` (the streaming form of `encode_body`).
pub fn encode_body_to<T: Serialize>(w: &mut dyn Write, value: &T) -> io::Result<()> {
    let mut w = w;
    bincode::serde::encode_into_std_write(value, &mut w, config())
        .map(|_| ())
        .map_err(|e| match e {
            bincode::error::EncodeError::Io { inner, .. } => inner,
            other => io::Error::other(format!("encoding failed: {other}")),
        })
}

/// Seal `value` into a Vec (for objects known to be small; large ones go through `seal_to`
/// straight to storage).
pub fn seal<T: Serialize>(magic: &[u8; 8], value: &T, compress: bool) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail, and encoding the plain structures used here cannot
    // either; an error would be a programming error in a Serialize impl.
    seal_to(&mut out, magic, compress, &|w| encode_body_to(w, value))
        .unwrap_or_else(|e| panic!("encoding failed: {e}"));
    out
}

pub fn open<T: DeserializeOwned>(object: &str, magic: &[u8; 8], bytes: &[u8]) -> Result<T> {
    decode_body(object, &open_raw(object, magic, bytes)?)
}

/// The first 8 bytes as an array; callers have checked the length.
pub fn le8(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    a
}

pub fn le4(b: &[u8]) -> [u8; 4] {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_flipped_byte_is_detected() {
        let sealed = seal(magic::CATALOG, &("hello".to_string(), 42u64), false);
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x40;
            assert!(
                open::<(String, u64)>("t", magic::CATALOG, &bad).is_err(),
                "flip at byte {i} not detected"
            );
        }
    }

    #[test]
    fn newer_version_is_a_clear_error() {
        let mut sealed = seal_raw(magic::CATALOG, b"x", false);
        sealed[8] = 9;
        let n = sealed.len() - 4;
        let crc = crc32fast::hash(&sealed[..n]);
        sealed[n..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            open_raw("t", magic::CATALOG, &sealed),
            Err(Error::NewerFormat { found: 9, .. })
        ));
    }

    /// Found by fuzzing: a length prefix claiming ~2^59 bytes made the decoder allocate first.
    #[test]
    fn a_huge_length_prefix_is_an_error_not_an_allocation() {
        let mut body = Vec::new();
        body.extend_from_slice(&0x0a80_8080_8080_8075u64.to_le_bytes());
        body.extend_from_slice(b"short");
        assert!(decode_body::<String>("t", &body).is_err());
        assert!(decode_body::<Vec<u8>>("t", &body).is_err());
    }

    /// A body over `SEAL_KEEP` takes the two-pass path; the result opens like any other.
    #[test]
    fn large_bodies_are_sealed_in_two_passes_and_open() {
        let body: Vec<u8> = (0..SEAL_KEEP as u64 + 3_000_000)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for compress in [false, true] {
            let mut sealed = Vec::new();
            let r = seal_to(&mut sealed, magic::MANIFEST, compress, &|w| {
                w.write_all(&body)
            });
            assert!(r.is_ok(), "{r:?}");
            assert!(open_raw("t", magic::MANIFEST, &sealed).ok() == Some(body.clone()));
        }
    }

    #[test]
    fn a_body_that_changes_between_passes_is_an_error() {
        let calls = std::cell::Cell::new(0u64);
        let r = seal_to(&mut io::sink(), magic::MANIFEST, false, &|w| {
            calls.set(calls.get() + 1);
            w.write_all(&vec![7u8; SEAL_KEEP + calls.get() as usize])
        });
        assert!(
            matches!(&r, Err(e) if e.to_string().contains("not deterministic")),
            "{r:?}"
        );
    }

    proptest! {
        #[test]
        fn seal_to_matches_seal_raw_uncompressed(body in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let mut streamed = Vec::new();
            prop_assert!(seal_to(&mut streamed, magic::CATALOG, false, &|w| w.write_all(&body)).is_ok());
            prop_assert_eq!(streamed, seal_raw(magic::CATALOG, &body, false));
        }

        #[test]
        fn seal_open_round_trip(body in proptest::collection::vec(any::<u8>(), 0..4096), compress: bool) {
            let sealed = seal_raw(magic::MANIFEST, &body, compress);
            prop_assert_eq!(open_raw("t", magic::MANIFEST, &sealed).ok(), Some(body));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = open_raw("t", magic::MANIFEST, &bytes);
        }
    }
}
