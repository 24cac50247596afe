//! A cluster's identity (system identifier, major version, WAL segment size), read from a data
//! directory for `stanza-create` and stored in the stanza's meta; every archived segment and
//! every backup is checked against it.

use super::control::ControlFile;
use super::wal::{LongPageHeader, WalFileKind, WalFileName};
use cairn_repo::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// The stanza meta entry listing the identities before the current one (`stanza-upgrade`).
pub const HISTORY_KEY: &str = "db-history";

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

    /// The identities the stanza had before its current one (`stanza-upgrade`), oldest
    /// first, from the meta entry `db-history` (format.md, "Stanza identity of a postgres
    /// stanza"); none when it is absent.
    pub fn history(meta: &BTreeMap<String, String>) -> Result<Vec<Identity>> {
        let Some(list) = meta.get(HISTORY_KEY) else {
            return Ok(Vec::new());
        };
        list.split(',')
            .map(|entry| {
                let mut f = entry.split(':').map(|x| x.parse::<u64>().ok());
                match (f.next().flatten(), f.next().flatten(), f.next().flatten(), f.next()) {
                    (Some(v), Some(s), Some(w), None) if v <= u32::MAX as u64 && w <= u32::MAX as u64 => {
                        Ok(Identity {
                            system_id: s,
                            version: v as u32,
                            wal_segment_size: w as u32,
                        })
                    }
                    _ => Err(Error::corrupt(
                        "stanza.info",
                        format!("'{HISTORY_KEY}' entry '{entry}' is not <version>:<system id>:<wal segment size>"),
                    )),
                }
            })
            .collect()
    }

    /// Every identity the stanza has had, oldest first, the current one last.
    pub fn all(meta: &BTreeMap<String, String>) -> Result<Vec<Identity>> {
        let mut all = Self::history(meta)?;
        all.push(Self::from_meta(meta)?);
        Ok(all)
    }

    /// The identity a backup was taken from: its record's `system-id` and `version` among the
    /// stanza's identities; the current one for a record that does not say (or names an
    /// identity the stanza does not list, with the current segment size).
    pub fn of_backup(
        stanza_meta: &BTreeMap<String, String>,
        record_meta: &BTreeMap<String, String>,
    ) -> Result<Identity> {
        let all = Self::all(stanza_meta)?;
        let current = *all
            .last()
            .ok_or_else(|| Error::corrupt("stanza.info", "no identity"))?;
        let field = |k: &str| record_meta.get(k).and_then(|v| v.parse::<u64>().ok());
        let (Some(system_id), Some(version)) = (field("system-id"), field("version")) else {
            return Ok(current);
        };
        Ok(all
            .iter()
            .rev()
            .find(|i| i.system_id == system_id && u64::from(i.version) == version)
            .copied()
            .unwrap_or(Identity {
                system_id,
                version: version as u32,
                ..current
            }))
    }

    /// The meta of the identity `self` replacing `old` (`stanza-upgrade`): `self`'s fields,
    /// with `old` appended to the history. A version older than the current one, or a system
    /// the stanza had before, is refused: pg_upgrade only goes forward.
    pub fn upgrade_from(
        self,
        old_meta: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>> {
        let old = Self::from_meta(old_meta)?;
        let mut history = Self::history(old_meta)?;
        if self.version < old.version {
            return Err(Error::Usage(format!(
                "the cluster at --pg-path is PostgreSQL {}, older than the stanza's {}: stanza-upgrade follows pg_upgrade, which only goes to a newer (or the same) major version; check --pg-path",
                self.version, old.version
            )));
        }
        if history.iter().any(|h| h.system_id == self.system_id) {
            return Err(Error::Usage(format!(
                "database system {} was this stanza's before an earlier stanza-upgrade; cairn does not go back to an earlier identity: check --pg-path, or create a new stanza",
                self.system_id
            )));
        }
        history.push(old);
        Ok(self.with_history(&history))
    }

    /// This identity's meta with `history` (oldest first) as `db-history`, none when empty.
    pub fn with_history(self, history: &[Identity]) -> BTreeMap<String, String> {
        let mut meta = self.to_meta();
        if !history.is_empty() {
            meta.insert(
                HISTORY_KEY.to_string(),
                history
                    .iter()
                    .map(|h| format!("{}:{}:{}", h.version, h.system_id, h.wal_segment_size))
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        meta
    }

    /// The identity whose WAL a `restore_command` asks for: PostgreSQL runs it in the data
    /// directory of the recovering cluster, whose `global/pg_control` names its system. After
    /// a `stanza-upgrade`, a restored backup of the earlier cluster recovers from the earlier
    /// identity's WAL (whose file names the new cluster's may repeat). The current identity
    /// when the stanza has no history or the working directory does not say.
    pub fn recovering(meta: &BTreeMap<String, String>) -> Result<Identity> {
        let all = Self::all(meta)?;
        let current = *all
            .last()
            .ok_or_else(|| Error::corrupt("stanza.info", "no identity"))?;
        if all.len() == 1 {
            return Ok(current);
        }
        let Some(control) = std::fs::read("global/pg_control")
            .ok()
            .and_then(|b| ControlFile::parse(&b).ok())
        else {
            return Ok(current);
        };
        Ok(all
            .iter()
            .rev()
            .find(|i| i.system_id == control.system_identifier)
            .copied()
            .unwrap_or(current))
    }

    /// Whether `meta` names this identity (its history aside).
    pub fn is(&self, meta: &BTreeMap<String, String>) -> bool {
        Self::from_meta(meta).is_ok_and(|i| i == *self)
    }

    /// The archive id under which this cluster's WAL lives: `<version>-<system id>`.
    pub fn archive_id(&self) -> String {
        format!("{}-{}", self.version, self.system_id)
    }

    /// Check a file read back from this identity's archive the way `check_wal` checked it on
    /// the way in: an object whose bytes are not what its name says (renamed or copied over in
    /// the repository) is damage, never served as that file (PostgreSQL would take a segment
    /// from the wrong position as the end of WAL and promote early).
    pub fn check_archived(&self, name: &WalFileName, data: &[u8]) -> Result<()> {
        match self.mismatch(name, data) {
            None => Ok(()),
            Some(m) => Err(Error::corrupt(
                format!("archived {} of {}", name.name, self.archive_id()),
                format!("its bytes are not that file: {}", m.what),
            )),
        }
    }

    /// Check a file about to be archived: its name, and for segments the page header's system
    /// id, version, timeline and position; for history and backup history files their text.
    /// Nothing is stored when this fails.
    pub fn check_wal(&self, name: &WalFileName, data: &[u8]) -> Result<()> {
        match self.mismatch(name, data) {
            None => Ok(()),
            Some(m) => Err(Error::Invalid(format!(
                "{} {}{}",
                name.name, m.what, m.advice
            ))),
        }
    }

    /// What is wrong with `data` as the file `name` of this identity (format.md, "What
    /// `archive-push` checks before storing"), in words that suit a file on its way in and one
    /// read back, with the advice for the first.
    fn mismatch(&self, name: &WalFileName, data: &[u8]) -> Option<Mismatch> {
        let m = |what: String, advice: &'static str| Some(Mismatch { what, advice });
        match name.kind {
            WalFileKind::History => {
                return history_problem(name, data).map(|why| Mismatch {
                    what: format!("is not a timeline history file: {why}"),
                    advice: "; archive_command was given the wrong file",
                });
            }
            WalFileKind::BackupLabel => {
                return backup_history_problem(name, data).map(|why| Mismatch {
                    what: format!("is not a backup history file: {why}"),
                    advice: "; archive_command was given the wrong file",
                });
            }
            WalFileKind::Segment | WalFileKind::Partial => {}
        }
        let header = match LongPageHeader::parse(data) {
            Ok(h) => h,
            Err(e) => return m(format!("is not a WAL segment: {e}"), ""),
        };
        if header.system_identifier != self.system_id {
            return m(
                format!(
                    "belongs to database system {}, not this stanza's {}",
                    header.system_identifier, self.system_id
                ),
                ": archive_command points at the wrong stanza or repository (or, after pg_upgrade, run `cairn stanza-upgrade`)",
            );
        }
        if header.version() != Some(self.version) {
            return m(
                format!(
                    "was written by PostgreSQL {}, not this stanza's {}",
                    header.version().map_or("?".to_string(), |v| v.to_string()),
                    self.version
                ),
                " (after pg_upgrade, run `cairn stanza-upgrade`)",
            );
        }
        if header.seg_size != self.wal_segment_size || data.len() != header.seg_size as usize {
            return m(
                format!(
                    "is {} bytes with a {}-byte segment size in its header; the cluster's WAL segment size is {}",
                    data.len(),
                    header.seg_size,
                    self.wal_segment_size
                ),
                "",
            );
        }
        // Pages copied from a parent timeline at a switch keep the parent's; none is newer.
        if header.timeline > name.timeline {
            return m(
                format!(
                    "holds WAL of timeline {}, after the timeline {} its name says",
                    header.timeline, name.timeline
                ),
                "",
            );
        }
        let expected = name
            .segno(self.wal_segment_size)
            .map(|s| s * self.wal_segment_size as u64);
        if expected != Some(header.pageaddr) {
            return m(
                format!(
                    "holds WAL from {}, not from the position its name says",
                    super::lsn::Lsn(header.pageaddr)
                ),
                "",
            );
        }
        None
    }
}

/// What `Identity::mismatch` found, and the advice for a file on its way into the archive.
struct Mismatch {
    what: String,
    advice: &'static str,
}

/// Why `data` is not the backup history file `name` (`<segment>.<offset>.backup`), which
/// PostgreSQL writes as text whose first line is `START WAL LOCATION: <lsn> (file <segment>)`.
fn backup_history_problem(name: &WalFileName, data: &[u8]) -> Option<String> {
    let Ok(text) = std::str::from_utf8(data) else {
        return Some("it is not text".into());
    };
    let first = text.lines().next().unwrap_or("");
    let segment = name.name.get(..24).unwrap_or("");
    if !first.starts_with("START WAL LOCATION: ") || !first.ends_with(&format!("(file {segment})"))
    {
        return Some(format!(
            "its first line is not 'START WAL LOCATION: <lsn> (file {segment})'"
        ));
    }
    None
}

/// A timeline history file as PostgreSQL writes it: one line per ancestor timeline, each
/// older than the file's own, switch points in order. A file the archive holds is create-only,
/// so one that is not this is refused before it can misdirect every later restore.
fn history_problem(name: &WalFileName, data: &[u8]) -> Option<String> {
    let Ok(text) = std::str::from_utf8(data) else {
        return Some("it is not text".into());
    };
    let Some(entries) = super::wal::parse_history(text) else {
        return Some("its lines are not '<parent timeline> <switch LSN> <reason>'".into());
    };
    if entries.is_empty() {
        return Some("it names no parent timeline".into());
    }
    let ordered = entries
        .windows(2)
        .all(|w| w[0].parent < w[1].parent && w[0].switchpoint <= w[1].switchpoint);
    if !ordered || entries.iter().any(|e| e.parent >= name.timeline) {
        return Some(format!(
            "its timelines are not ancestors of timeline {} in order",
            name.timeline
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(system_id: u64, version: u32) -> Identity {
        Identity {
            system_id,
            version,
            wal_segment_size: 16 << 20,
        }
    }

    #[test]
    fn upgrades_keep_a_history_and_backups_find_their_identity() -> Result<()> {
        let first = id(7001, 15).to_meta();
        let second = id(7002, 15).upgrade_from(&first)?;
        let third = id(7003, 16).upgrade_from(&second)?;
        assert_eq!(
            third.get(HISTORY_KEY).map(String::as_str),
            Some("15:7001:16777216,15:7002:16777216")
        );
        assert_eq!(
            Identity::all(&third)?,
            vec![id(7001, 15), id(7002, 15), id(7003, 16)]
        );
        let record = BTreeMap::from([
            ("system-id".to_string(), "7002".to_string()),
            ("version".to_string(), "15".to_string()),
        ]);
        assert_eq!(Identity::of_backup(&third, &record)?, id(7002, 15));
        assert_eq!(Identity::of_backup(&third, &BTreeMap::new())?, id(7003, 16));
        // Backwards, or back to an earlier system: refused.
        assert!(id(7004, 14).upgrade_from(&third).is_err());
        assert!(id(7001, 16).upgrade_from(&third).is_err());
        assert!(id(7003, 16).is(&third));
        let mut bad = third.clone();
        bad.insert(HISTORY_KEY.into(), "15:x:1".into());
        assert!(Identity::history(&bad).is_err());
        Ok(())
    }

    /// A segment's first page: long header of PostgreSQL 15 (magic 0xD110), padded to 16 MiB.
    fn segment(tli: u32, pageaddr: u64, sysid: u64) -> Vec<u8> {
        let mut b = vec![0u8; 16 << 20];
        b[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        b[2..4].copy_from_slice(&0x0002u16.to_le_bytes());
        b[4..8].copy_from_slice(&tli.to_le_bytes());
        b[8..16].copy_from_slice(&pageaddr.to_le_bytes());
        b[24..32].copy_from_slice(&sysid.to_le_bytes());
        b[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
        b[36..40].copy_from_slice(&8192u32.to_le_bytes());
        b
    }

    /// Defect (adversarial pass, 2026-11-25): a later timeline's segment copied over an
    /// earlier timeline's (same position, same system) was served under its name; a copied
    /// `.backup` object too. The header's timeline may be lower than the name's (pages copied
    /// from the parent at a switch), never higher.
    #[test]
    fn defect_a_segment_of_a_later_timeline_or_a_bogus_backup_file_passed_as_another() {
        let me = id(7001, 15);
        let name = |n: &str| WalFileName::parse(n).expect("name");
        let at_a = 0x0A * (16u64 << 20);
        let seg1 = name("00000001000000000000000A");
        let seg2 = name("00000002000000000000000A");
        assert!(me.check_archived(&seg1, &segment(1, at_a, 7001)).is_ok());
        assert!(me.check_archived(&seg2, &segment(1, at_a, 7001)).is_ok());
        assert!(me.check_archived(&seg1, &segment(2, at_a, 7001)).is_err());
        assert!(me.check_archived(&seg1, &segment(1, at_a, 7002)).is_err());
        assert!(
            me.check_wal(&seg1, &segment(1, at_a + (16 << 20), 7001))
                .is_err()
        );
        let backup = name("00000001000000000000000A.00000028.backup");
        let text = b"START WAL LOCATION: 0/A000028 (file 00000001000000000000000A)\nSTOP WAL LOCATION: 0/A000100 (file 00000001000000000000000A)\n";
        assert!(me.check_archived(&backup, text).is_ok());
        assert!(me.check_archived(&backup, &segment(1, at_a, 7001)).is_err());
        let other = b"START WAL LOCATION: 0/B000028 (file 00000001000000000000000B)\n";
        assert!(me.check_wal(&backup, other).is_err());
    }
}
