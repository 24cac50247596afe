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

/// The current format version of every sealed object kind.
pub const FORMAT_VERSION: u16 = 1;

pub const ENVELOPE_HEADER_LEN: usize = 24;
/// The largest decompressed body accepted, so a damaged object cannot exhaust memory.
const MAX_BODY: u64 = 4 << 30;
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

pub fn decode_body<T: DeserializeOwned>(object: &str, bytes: &[u8]) -> Result<T> {
    let (value, used) =
        decode_limited(bytes).map_err(|e| Error::corrupt(object, format!("cannot decode: {e}")))?;
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
    if version > FORMAT_VERSION {
        return Err(Error::NewerFormat {
            object: object.to_string(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let flags = u16::from_le_bytes([bytes[10], bytes[11]]);
    let body = &bytes[ENVELOPE_HEADER_LEN..crc_at];
    if flags & FLAG_ZSTD != 0 {
        use std::io::Read;
        let decoder = zstd::stream::read::Decoder::new(body)
            .map_err(|e| Error::corrupt(object, format!("cannot decompress body: {e}")))?;
        let mut out = Vec::new();
        decoder
            .take(MAX_BODY + 1)
            .read_to_end(&mut out)
            .map_err(|e| Error::corrupt(object, format!("cannot decompress body: {e}")))?;
        if out.len() as u64 > MAX_BODY {
            return Err(Error::corrupt(
                object,
                "decompressed body is larger than 4 GiB",
            ));
        }
        Ok(out)
    } else {
        Ok(body.to_vec())
    }
}

pub fn seal<T: Serialize>(magic: &[u8; 8], value: &T, compress: bool) -> Vec<u8> {
    seal_raw(magic, &encode_body(value), compress)
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

    proptest! {
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
