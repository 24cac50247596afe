//! `pg_control` (`global/pg_control`): the fields cairn needs, checked the way PostgreSQL
//! checks them (length, then CRC-32C over the struct up to `crc`). Offsets are those of
//! `ControlFileData` for pg_control version 1300 (PostgreSQL 13 to 16), verified against
//! `pg_controldata` in the tests.

use std::fmt;

/// PostgreSQL writes the struct padded to this size (`PG_CONTROL_FILE_SIZE`).
pub const PG_CONTROL_FILE_SIZE: usize = 8192;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ControlFile {
    pub system_identifier: u64,
    pub pg_control_version: u32,
    pub catalog_version_no: u32,
    pub state: u32,
    pub checkpoint: u64,
    pub redo: u64,
    pub timeline: u32,
    pub blcksz: u32,
    pub relseg_size: u32,
    pub xlog_blcksz: u32,
    pub xlog_seg_size: u32,
    pub data_checksum_version: u32,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ControlError {
    Truncated(usize),
    UnsupportedVersion(u32),
    Crc { expected: u32, actual: u32 },
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::Truncated(n) => {
                write!(f, "control file is {n} bytes, shorter than ControlFileData")
            }
            ControlError::UnsupportedVersion(v) => write!(
                f,
                "pg_control version {v} is not supported (cairn reads version 1300: PostgreSQL 13 to 16)"
            ),
            ControlError::Crc { expected, actual } => {
                write!(
                    f,
                    "invalid CRC in control file: expected 0x{expected:08x}, was 0x{actual:08x}"
                )
            }
        }
    }
}

impl std::error::Error for ControlError {}

/// Where `crc` sits in `ControlFileData` for each supported layout.
const CRC_OFFSET_1300: usize = 288;

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl ControlFile {
    pub fn parse(b: &[u8]) -> Result<ControlFile, ControlError> {
        if b.len() < CRC_OFFSET_1300 + 4 {
            return Err(ControlError::Truncated(b.len()));
        }
        let version = u32_at(b, 8);
        if version != 1300 {
            return Err(ControlError::UnsupportedVersion(version));
        }
        let expected = u32_at(b, CRC_OFFSET_1300);
        let actual = crc32c::crc32c(&b[..CRC_OFFSET_1300]);
        if expected != actual {
            return Err(ControlError::Crc { expected, actual });
        }
        Ok(ControlFile {
            system_identifier: u64_at(b, 0),
            pg_control_version: version,
            catalog_version_no: u32_at(b, 12),
            state: u32_at(b, 16),
            checkpoint: u64_at(b, 32),
            redo: u64_at(b, 40),
            timeline: u32_at(b, 48),
            blcksz: u32_at(b, 216),
            relseg_size: u32_at(b, 220),
            xlog_blcksz: u32_at(b, 224),
            xlog_seg_size: u32_at(b, 228),
            data_checksum_version: u32_at(b, 252),
        })
    }

    pub fn checksums_enabled(&self) -> bool {
        self.data_checksum_version != 0
    }
}
