//! WAL file names and page headers. Names keep PostgreSQL's functions' names
//! (`XLogFileName`, `IsXLogFileName`...) so they can be checked against `xlog_internal.h`.

use std::fmt;

/// `XLOG_PAGE_MAGIC` of each supported major version.
pub const PAGE_MAGICS: [(u16, u32); 6] = [
    (0xD101, 12),
    (0xD106, 13),
    (0xD10D, 14),
    (0xD110, 15),
    (0xD113, 16),
    (0xD116, 17),
];

/// `XLP_LONG_HEADER`: the first page of a segment has the long header.
pub const XLP_LONG_HEADER: u16 = 0x0002;
/// `SizeOfXLogLongPHD`.
pub const LONG_HEADER_LEN: usize = 40;

pub fn version_of_magic(magic: u16) -> Option<u32> {
    PAGE_MAGICS
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, v)| *v)
}

/// `XLogSegmentsPerXLogId`.
pub fn segments_per_xlog_id(seg_size: u32) -> u64 {
    0x1_0000_0000 / seg_size as u64
}

/// `XLogFileName`: `TTTTTTTTXXXXXXXXYYYYYYYY`.
#[allow(non_snake_case)]
pub fn XLogFileName(tli: u32, segno: u64, seg_size: u32) -> String {
    let per = segments_per_xlog_id(seg_size);
    format!("{tli:08X}{:08X}{:08X}", segno / per, segno % per)
}

fn is_upper_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// What an archived file is, by its name.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WalFileKind {
    /// `000000010000000000000003`
    Segment,
    /// `000000010000000000000003.partial`
    Partial,
    /// `00000002.history`
    History,
    /// `000000010000000000000003.00000028.backup`
    BackupLabel,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct WalFileName {
    pub name: String,
    pub kind: WalFileKind,
    pub timeline: u32,
    /// For segments and partials: (log, seg) halves of the segment number.
    pub log_seg: Option<(u32, u32)>,
}

impl WalFileName {
    /// `IsXLogFileName`, `IsPartialXLogFileName`, `IsTLHistoryFileName`,
    /// `IsBackupHistoryFileName`.
    pub fn parse(name: &str) -> Option<WalFileName> {
        let seg = |s: &str| s.len() == 24 && is_upper_hex(s);
        let tli = u32::from_str_radix(name.get(..8)?, 16).ok()?;
        let log_seg = |s: &str| -> Option<(u32, u32)> {
            Some((
                u32::from_str_radix(&s[8..16], 16).ok()?,
                u32::from_str_radix(&s[16..24], 16).ok()?,
            ))
        };
        let (kind, ls) = if seg(name) {
            (WalFileKind::Segment, log_seg(name))
        } else if let Some(base) = name.strip_suffix(".partial").filter(|b| seg(b)) {
            (WalFileKind::Partial, log_seg(base))
        } else if name.len() == 16 && name.ends_with(".history") && is_upper_hex(&name[..8]) {
            (WalFileKind::History, None)
        } else if name.len() == 40
            && name.ends_with(".backup")
            && seg(&name[..24])
            && name.as_bytes()[24] == b'.'
            && is_upper_hex(&name[25..33])
        {
            (WalFileKind::BackupLabel, log_seg(&name[..24]))
        } else {
            return None;
        };
        Some(WalFileName {
            name: name.to_string(),
            kind,
            timeline: tli,
            log_seg: ls,
        })
    }

    /// The segment number, given the cluster's segment size.
    pub fn segno(&self, seg_size: u32) -> Option<u64> {
        self.log_seg
            .map(|(log, seg)| log as u64 * segments_per_xlog_id(seg_size) + seg as u64)
    }
}

/// `XLogLongPageHeaderData`, the header of a segment's first page.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LongPageHeader {
    pub magic: u16,
    pub info: u16,
    pub timeline: u32,
    pub pageaddr: u64,
    pub system_identifier: u64,
    pub seg_size: u32,
    pub xlog_blcksz: u32,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub enum WalError {
    Truncated(usize),
    UnknownMagic(u16),
    NotLongHeader(u16),
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalError::Truncated(n) => write!(f, "{n} bytes is too short for a WAL segment header"),
            WalError::UnknownMagic(m) => write!(
                f,
                "WAL page magic 0x{m:04X} is not a known PostgreSQL version's"
            ),
            WalError::NotLongHeader(i) => write!(
                f,
                "first WAL page has info 0x{i:04X}, without XLP_LONG_HEADER"
            ),
        }
    }
}

impl std::error::Error for WalError {}

impl LongPageHeader {
    pub fn parse(b: &[u8]) -> Result<LongPageHeader, WalError> {
        if b.len() < LONG_HEADER_LEN {
            return Err(WalError::Truncated(b.len()));
        }
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| (u32_at(i) as u64) | ((u32_at(i + 4) as u64) << 32);
        let magic = u16_at(0);
        if version_of_magic(magic).is_none() {
            return Err(WalError::UnknownMagic(magic));
        }
        let info = u16_at(2);
        if info & XLP_LONG_HEADER == 0 {
            return Err(WalError::NotLongHeader(info));
        }
        Ok(LongPageHeader {
            magic,
            info,
            timeline: u32_at(4),
            pageaddr: u64_at(8),
            system_identifier: u64_at(24),
            seg_size: u32_at(32),
            xlog_blcksz: u32_at(36),
        })
    }

    pub fn version(&self) -> Option<u32> {
        version_of_magic(self.magic)
    }
}

/// One line of a timeline history file: `<parent tli>\t<switch lsn>\t<reason>`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct HistoryEntry {
    pub parent: u32,
    pub switchpoint: crate::postgres::lsn::Lsn,
}

/// Parse a `.history` file (`readTimeLineHistory`); comments and blank lines are skipped.
pub fn parse_history(text: &str) -> Option<Vec<HistoryEntry>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.split_whitespace();
        let parent = f.next()?.parse().ok()?;
        let switchpoint = crate::postgres::lsn::Lsn::parse(f.next()?)?;
        out.push(HistoryEntry {
            parent,
            switchpoint,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_round_trip() {
        let seg = 16 << 20;
        assert_eq!(XLogFileName(1, 1, seg), "000000010000000000000001");
        assert_eq!(XLogFileName(2, 0x1FF, seg), "0000000200000001000000FF");
        let n = WalFileName::parse("0000000200000001000000FF").unwrap_or_else(|| panic!("parse"));
        assert_eq!(
            (n.kind, n.timeline, n.segno(seg)),
            (WalFileKind::Segment, 2, Some(0x1FF))
        );
        let kinds = [
            ("000000010000000000000003.partial", WalFileKind::Partial),
            ("00000002.history", WalFileKind::History),
            (
                "000000010000000000000003.00000028.backup",
                WalFileKind::BackupLabel,
            ),
        ];
        for (name, kind) in kinds {
            assert_eq!(
                WalFileName::parse(name).map(|n| n.kind),
                Some(kind),
                "{name}"
            );
        }
        for bad in [
            "",
            "00000001",
            "0000000100000000000000zz",
            "../00000002.history",
            "00000001000000000000000g.partial",
        ] {
            assert_eq!(WalFileName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn history_files_parse() {
        let h = parse_history(
            "1\t0/3000000\tno recovery target specified\n\n2\t0/5000158\tbefore 2026-11-23\n",
        )
        .unwrap_or_default();
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].parent, 2);
        assert_eq!(h[1].switchpoint.to_string(), "0/5000158");
    }

    proptest! {
        #[test]
        fn decoders_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64), s in ".{0,48}") {
            let _ = LongPageHeader::parse(&b);
            let _ = WalFileName::parse(&s);
            let _ = parse_history(&s);
            let _ = crate::postgres::control::ControlFile::parse(&b);
        }

        #[test]
        fn segment_names_parse_back(tli in 1u32.., segno in 0u64..(1u64 << 40)) {
            let seg = 16 << 20;
            let name = XLogFileName(tli, segno, seg);
            let parsed = WalFileName::parse(&name);
            prop_assert_eq!(parsed.as_ref().and_then(|n| n.segno(seg)), Some(segno));
            prop_assert_eq!(parsed.map(|n| n.timeline), Some(tli));
        }
    }
}
