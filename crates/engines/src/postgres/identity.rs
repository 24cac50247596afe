//! A cluster's identity (system identifier, major version, WAL segment size), read from a data
//! directory for `stanza-create` and stored in the stanza's meta; every archived segment and
//! every backup is checked against it.

use super::control::ControlFile;
use super::wal::{LongPageHeader, WalFileKind, WalFileName};
use cairn_repo::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Identity {
    pub system_id: u64,
    pub version: u32,
    pub wal_segment_size: u32,
}

impl Identity {
    /// Read `PG_VERSION` and `global/pg_control` under `pg_path`.
    pub fn from_data_dir(pg_path: &Path) -> Result<Identity> {
        Ok(Self::read_data_dir(pg_path)?.0)
    }

    /// `from_data_dir`, also returning the parsed control file for callers that need more of
    /// it (checksums, segment sizes), so it is read once.
    pub fn read_data_dir(pg_path: &Path) -> Result<(Identity, ControlFile)> {
        let vpath = pg_path.join("PG_VERSION");
        let version = std::fs::read_to_string(&vpath).map_err(|e| {
            Error::io(
                format!(
                    "cannot read {}; is --pg-path a PostgreSQL data directory?",
                    vpath.display()
                ),
                e,
            )
        })?;
        let version: u32 = version.trim().parse().map_err(|_| {
            Error::Invalid(format!(
                "{} does not hold a PostgreSQL major version",
                vpath.display()
            ))
        })?;
        let cpath = pg_path.join("global/pg_control");
        let bytes = std::fs::read(&cpath)
            .map_err(|e| Error::io(format!("cannot read {}", cpath.display()), e))?;
        let control = ControlFile::parse(&bytes)
            .map_err(|e| Error::corrupt(cpath.display().to_string(), e.to_string()))?;
        Ok((
            Identity {
                system_id: control.system_identifier,
                version,
                wal_segment_size: control.xlog_seg_size,
            },
            control,
        ))
    }

    pub fn to_meta(self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("system-id".to_string(), self.system_id.to_string()),
            ("version".to_string(), self.version.to_string()),
            (
                "wal-segment-size".to_string(),
                self.wal_segment_size.to_string(),
            ),
        ])
    }

    pub fn from_meta(meta: &BTreeMap<String, String>) -> Result<Identity> {
        let field = |k: &str| -> Result<u64> {
            meta.get(k).and_then(|v| v.parse().ok()).ok_or_else(|| {
                Error::corrupt(
                    "stanza.info",
                    format!("postgres stanza without a valid '{k}'"),
                )
            })
        };
        Ok(Identity {
            system_id: field("system-id")?,
            version: field("version")? as u32,
            wal_segment_size: field("wal-segment-size")? as u32,
        })
    }

    /// The archive id under which this cluster's WAL lives: `<version>-<system id>`.
    pub fn archive_id(&self) -> String {
        format!("{}-{}", self.version, self.system_id)
    }

    /// Check a file about to be archived: its name, and for segments the page header's system
    /// id, version and position. Nothing is stored when this fails.
    pub fn check_wal(&self, name: &WalFileName, data: &[u8]) -> Result<()> {
        if name.kind == WalFileKind::History {
            return check_history(name, data);
        }
        if !matches!(name.kind, WalFileKind::Segment | WalFileKind::Partial) {
            return Ok(());
        }
        let header = LongPageHeader::parse(data)
            .map_err(|e| Error::Invalid(format!("{} is not a WAL segment: {e}", name.name)))?;
        if header.system_identifier != self.system_id {
            return Err(Error::Invalid(format!(
                "{} belongs to database system {}, but this stanza archives system {}: archive_command points at the wrong stanza or repository",
                name.name, header.system_identifier, self.system_id
            )));
        }
        if header.version() != Some(self.version) {
            return Err(Error::Invalid(format!(
                "{} was written by PostgreSQL {}, but this stanza archives PostgreSQL {}",
                name.name,
                header.version().map_or("?".to_string(), |v| v.to_string()),
                self.version
            )));
        }
        if header.seg_size != self.wal_segment_size || data.len() != header.seg_size as usize {
            return Err(Error::Invalid(format!(
                "{} is {} bytes with a {}-byte segment size in its header; the cluster's WAL segment size is {}",
                name.name,
                data.len(),
                header.seg_size,
                self.wal_segment_size
            )));
        }
        let expected = name
            .segno(self.wal_segment_size)
            .map(|s| s * self.wal_segment_size as u64);
        if expected != Some(header.pageaddr) {
            return Err(Error::Invalid(format!(
                "{} holds WAL from {}, not from the position its name says",
                name.name,
                super::lsn::Lsn(header.pageaddr)
            )));
        }
        Ok(())
    }
}
/// A timeline history file as PostgreSQL writes it: one line per ancestor timeline, each
/// older than the file's own, switch points in order. A file the archive holds is create-only,
/// so one that is not this is refused before it can misdirect every later restore.
pub fn check_history(name: &WalFileName, data: &[u8]) -> Result<()> {
    let bad = |why: &str| {
        Error::Invalid(format!(
            "{} is not a timeline history file: {why}; archive_command was given the wrong file",
            name.name
        ))
    };
    let text = std::str::from_utf8(data).map_err(|_| bad("it is not text"))?;
    let entries = super::wal::parse_history(text)
        .ok_or_else(|| bad("its lines are not '<parent timeline> <switch LSN> <reason>'"))?;
    if entries.is_empty() {
        return Err(bad("it names no parent timeline"));
    }
    let ordered = entries
        .windows(2)
        .all(|w| w[0].parent < w[1].parent && w[0].switchpoint <= w[1].switchpoint);
    if !ordered || entries.iter().any(|e| e.parent >= name.timeline) {
        return Err(bad(&format!(
            "its timelines are not ancestors of timeline {} in order",
            name.timeline
        )));
    }
    Ok(())
}
