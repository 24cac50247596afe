//! Which pages of a relation file may have changed since the parent backup started: those
//! whose LSN (`pd_lsn`, the page header's first 8 bytes) is greater than the parent's start
//! LSN, or 0. An incremental backup stores those (and keeps the parent's copy of the rest)
//! without hashing a page it does not store.
//!
//! Why this is sound, given that a restore replays WAL from this backup's own start LSN (its
//! checkpoint's redo point, from `backup_label`) to at least its stop LSN:
//!
//! - Every change to a main-fork page is WAL-logged, and the page's LSN is set to the end of
//!   the record that changed it, before the page can reach the disk. So a page whose LSN is at
//!   or below the parent's start LSN S has had no logged change since S; the parent read it
//!   after S (it started copying once `pg_backup_start` returned), so it stored this content.
//!   Inductively this holds for what the parent kept from its own parent.
//! - A change that is not WAL-logged leaves the LSN alone: hint bits. With data checksums or
//!   `wal_log_hints`, the first hint-bit change after a checkpoint writes a full-page image and
//!   so sets the LSN; without them a hint bit is only a cached fact that PostgreSQL derives
//!   again from the commit log, so the parent's copy is as good as the current one.
//! - A page torn by a concurrent write in either backup is one being written after that
//!   backup's start (the start's checkpoint flushed every page dirtied before it), so replay
//!   from that backup's start rewrites it from a full-page image.
//! - A page past the parent's copy of the file, and a page with LSN 0 (a page extended but not
//!   yet initialised, which may sit where the file was truncated and grew again), are always
//!   stored. Files copied at the file system level (`CREATE DATABASE ... STRATEGY
//!   FILE_COPY`, `ALTER DATABASE SET TABLESPACE`) keep their source's old LSNs, but replaying
//!   the record that created them copies them again, and a new file has no parent unit.
//! - The comparison means something only on the same history: the engine uses a probe only
//!   when the parent backup is of the same system identifier and timeline and stopped at or
//!   before this backup's start (a cluster restored to an earlier point reuses LSNs on a new
//!   timeline; a rewound one too). Otherwise, and for the free space map and visibility map
//!   forks (whose pages can change without a new LSN: a visibility map bit cleared by a heap
//!   update), each unit is stored whole and deduplicated by its name.
//!
//! pgBackRest's block incremental hashes every block instead; WAL-G and pg_probackup use the
//! LSN as here.

use super::lsn::Lsn;
use cairn_repo::pages::PageProbe;

/// The LSN in a page header.
pub fn page_lsn(p: &[u8]) -> Lsn {
    let hi = u32::from_le_bytes([p[0], p[1], p[2], p[3]]) as u64;
    let lo = u32::from_le_bytes([p[4], p[5], p[6], p[7]]) as u64;
    Lsn((hi << 32) | lo)
}

/// Pages changed since `since` (the parent backup's start LSN), as argued above.
#[derive(Debug)]
pub struct LsnProbe {
    pub since: Lsn,
}

impl PageProbe for LsnProbe {
    fn may_have_changed(&self, page: &[u8]) -> bool {
        if page.len() < 8 {
            return true;
        }
        let lsn = page_lsn(page);
        lsn == Lsn(0) || lsn > self.since
    }
}

/// The probe for a backup whose parent has these facts (`BackupRecord.meta` of a postgres
/// backup), or why there is none.
pub fn for_parent(
    parent: &std::collections::BTreeMap<String, String>,
    system_id: u64,
    timeline: u32,
    start: Lsn,
) -> Result<LsnProbe, String> {
    let get = |k: &str| parent.get(k).map(String::as_str).unwrap_or("");
    if get("system-id") != system_id.to_string() {
        return Err(format!(
            "the parent backup is of database system {}",
            get("system-id")
        ));
    }
    if get("timeline") != timeline.to_string() {
        return Err(format!(
            "the parent backup is of timeline {}, this one of {timeline}",
            get("timeline")
        ));
    }
    let (Some(since), Some(stop)) = (Lsn::parse(get("start-lsn")), Lsn::parse(get("stop-lsn")))
    else {
        return Err("the parent backup does not record its start and stop LSN".into());
    };
    if stop > start {
        return Err(format!(
            "the parent backup stopped at {stop}, after this backup's start {start}"
        ));
    }
    Ok(LsnProbe { since })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn page(lsn: u64) -> Vec<u8> {
        let mut p = vec![0u8; 8192];
        p[0..4].copy_from_slice(&((lsn >> 32) as u32).to_le_bytes());
        p[4..8].copy_from_slice(&(lsn as u32).to_le_bytes());
        p[100] = 1;
        p
    }

    #[test]
    fn pages_after_the_parents_start_or_never_logged_may_have_changed() {
        let probe = LsnProbe {
            since: Lsn(0x1_0000_0100),
        };
        assert!(!probe.may_have_changed(&page(0x1_0000_0100)));
        assert!(!probe.may_have_changed(&page(0x0_ffff_ffff)));
        assert!(probe.may_have_changed(&page(0x1_0000_0101)));
        assert!(probe.may_have_changed(&page(0x2_0000_0000)));
        assert!(probe.may_have_changed(&page(0)));
    }

    #[test]
    fn a_parent_of_another_history_gives_no_probe() {
        let meta = |sys: &str, tli: &str, start: &str, stop: &str| {
            BTreeMap::from([
                ("system-id".to_string(), sys.to_string()),
                ("timeline".to_string(), tli.to_string()),
                ("start-lsn".to_string(), start.to_string()),
                ("stop-lsn".to_string(), stop.to_string()),
            ])
        };
        let start = Lsn(0x3_0000_0000);
        assert!(for_parent(&meta("7", "1", "1/0", "2/0"), 7, 1, start).is_ok());
        assert!(for_parent(&meta("8", "1", "1/0", "2/0"), 7, 1, start).is_err());
        assert!(for_parent(&meta("7", "2", "1/0", "2/0"), 7, 1, start).is_err());
        assert!(for_parent(&meta("7", "1", "1/0", "4/0"), 7, 1, start).is_err());
        assert!(for_parent(&meta("7", "1", "", "2/0"), 7, 1, start).is_err());
    }
}
