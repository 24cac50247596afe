//! Identifier newtypes. Nothing in the repository passes bare bytes or strings around for
//! these: a `ChunkId` can only be made from a hash, a `BackupLabel` only from a valid label.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

macro_rules! hash_id {
    ($name:ident, $what:literal) => {
        #[doc = concat!("BLAKE3-256 naming a ", $what, ".")]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            pub fn of(data: &[u8]) -> Self {
                $name(*blake3::hash(data).as_bytes())
            }
            pub fn parse(s: &str) -> Result<Self> {
                parse_hex32(s).map($name).ok_or_else(|| {
                    Error::Invalid(format!(
                        "'{s}' is not a {}: expected 64 hexadecimal digits",
                        $what
                    ))
                })
            }
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(f, &self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "("))?;
                write_hex(f, &self.0[..8])?;
                write!(f, "..)")
            }
        }
    };
}

hash_id!(ChunkId, "chunk id");
hash_id!(PackId, "pack id");

/// The conversions a validated string identifier needs: serde decodes it through `parse`
/// (`try_from = "String"`), so a crafted repository cannot smuggle in an invalid one, and
/// `Display` prints it as it is.
macro_rules! checked_string_id {
    ($name:ident) => {
        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(s: String) -> Result<Self> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(s: $name) -> String {
                s.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// A stanza name: what `--stanza` names. Letters, digits, `-`, `_` and `.`, not starting
/// with `.`, so it is always a single safe path segment.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StanzaName(String);

checked_string_id!(StanzaName);

impl StanzaName {
    pub fn parse(s: &str) -> Result<Self> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if ok {
            Ok(StanzaName(s.to_string()))
        } else {
            Err(Error::Invalid(format!(
                "invalid stanza name '{s}': use 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'"
            )))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum BackupType {
    Full,
    Diff,
    Incr,
}

impl BackupType {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "full" => Ok(BackupType::Full),
            "diff" => Ok(BackupType::Diff),
            "incr" => Ok(BackupType::Incr),
            _ => Err(Error::Invalid(format!(
                "unknown backup type '{s}': use full, diff or incr"
            ))),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            BackupType::Full => "full",
            BackupType::Diff => "diff",
            BackupType::Incr => "incr",
        }
    }
    fn suffix(self) -> char {
        match self {
            BackupType::Full => 'F',
            BackupType::Diff => 'D',
            BackupType::Incr => 'I',
        }
    }
}

impl fmt::Display for BackupType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A backup label as pgBackRest spells it: `20261123-101500F` for a full backup,
/// `20261123-101500F_20261124-101500D` (or `I`) for a diff (incr) on that full.
/// Decoding checks the label like `parse` does: a label read from a repository is validated
/// before anything slices it or builds a key from it (a crafted catalog label `x` made
/// `backup` panic).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BackupLabel(String);

checked_string_id!(BackupLabel);

fn is_stamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 15
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'-'
        && b[9..].iter().all(u8::is_ascii_digit)
}

impl BackupLabel {
    /// `stamp` is `YYYYMMDD-HHMMSS` (UTC); `full` is the label of the full backup the new
    /// one depends on (None for a full backup).
    pub fn new(stamp: &str, kind: BackupType, full: Option<&BackupLabel>) -> Result<Self> {
        let own = format!("{stamp}{}", kind.suffix());
        let s = match (kind, full) {
            (BackupType::Full, _) => own,
            (_, Some(f)) => format!("{}_{own}", f.0),
            (_, None) => {
                return Err(Error::Invalid(format!(
                    "a {kind} backup needs a full backup to depend on"
                )));
            }
        };
        Self::parse(&s)
    }

    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::Invalid(format!(
                "'{s}' is not a backup label: expected YYYYMMDD-HHMMSSF or YYYYMMDD-HHMMSSF_YYYYMMDD-HHMMSS(D|I); `cairn info` lists them"
            ))
        };
        let (full, rest) = match s.split_once('_') {
            Some((f, r)) => (f, Some(r)),
            None => (s, None),
        };
        // `get`, not slicing: a crafted label whose 15th byte is inside a multi-byte character
        // made slicing panic (found by the sealed_objects fuzz target).
        if !(full.len() == 16 && full.get(..15).is_some_and(is_stamp) && full.ends_with('F')) {
            return Err(bad());
        }
        if let Some(r) = rest
            && !(r.len() == 16
                && r.get(..15).is_some_and(is_stamp)
                && (r.ends_with('D') || r.ends_with('I')))
        {
            return Err(bad());
        }
        Ok(BackupLabel(s.to_string()))
    }

    pub fn kind(&self) -> BackupType {
        match self.0.as_bytes().last() {
            Some(b'D') => BackupType::Diff,
            Some(b'I') => BackupType::Incr,
            _ => BackupType::Full,
        }
    }

    /// The full backup this label belongs to (itself for a full).
    pub fn full(&self) -> BackupLabel {
        // Every label is checked on construction and on decoding, so it starts with 16 ASCII
        // characters; `get` keeps this total anyway.
        BackupLabel(self.0.get(..16).unwrap_or(&self.0).to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_pgbackrest() -> Result<()> {
        let f = BackupLabel::new("20261123-101500", BackupType::Full, None)?;
        assert_eq!(f.as_str(), "20261123-101500F");
        let d = BackupLabel::new("20261124-101500", BackupType::Diff, Some(&f))?;
        assert_eq!(d.as_str(), "20261123-101500F_20261124-101500D");
        assert_eq!(d.kind(), BackupType::Diff);
        assert_eq!(d.full(), f);
        assert!(BackupLabel::parse("20261123-101500X").is_err());
        assert!(BackupLabel::parse("../../etc").is_err());
        assert!(BackupLabel::parse("20261123-101500F_20261124-101500F").is_err());
        Ok(())
    }

    #[test]
    fn a_label_with_a_multibyte_character_at_byte_15_is_an_error_not_a_panic() {
        // 14 ASCII bytes and a 2-byte character: 16 bytes, byte 15 inside the character.
        assert!(BackupLabel::parse("20261123-10150é").is_err());
        assert!(BackupLabel::parse("20261123-101500F_20261124-10150é").is_err());
    }

    #[test]
    fn hex_ids_round_trip() -> Result<()> {
        let id = ChunkId::of(b"hello");
        assert_eq!(ChunkId::parse(&id.to_string())?, id);
        assert!(ChunkId::parse("zz").is_err());
        Ok(())
    }

    #[test]
    fn stanza_names_are_single_segments() {
        assert!(StanzaName::parse("main").is_ok());
        assert!(StanzaName::parse("..").is_err());
        assert!(StanzaName::parse("a/b").is_err());
        assert!(StanzaName::parse("").is_err());
    }
}
