//! How far WAL replay can get from a backup: which archived segment PostgreSQL reads for each
//! position (following timeline history files the way `XLogFileReadAnyTLI` does) and where the
//! first hole in that sequence is. A hole after a backup's end is silent data loss waiting to
//! happen: PostgreSQL replays up to it, takes it for the end of the archive and promotes. So
//! `verify` reports every hole, `info` shows each backup's reachable window, and `restore`
//! refuses a target beyond one. Pure functions over names; `load` does the listing.

use super::identity::Identity;
use super::lsn::Lsn;
use super::wal::{HistoryEntry, WalFileKind, WalFileName, XLogFileName, parse_history};
use cairn_repo::{Result, Stanza};
use std::collections::{BTreeMap, HashSet};

/// What the archive holds, as far as replay is concerned.
#[derive(Clone, Debug, Default)]
pub struct ArchiveView {
    /// Whole segments present: (timeline, segment number).
    pub segments: HashSet<(u32, u64)>,
    /// Parsed `<tli>.history` files by timeline.
    pub histories: BTreeMap<u32, Vec<HistoryEntry>>,
    pub seg_size: u32,
}

/// A run of missing segments on the replay path.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Gap {
    /// The first missing segment's file name.
    pub first: String,
    /// The last missing segment of the run (equal to `first` for a single segment).
    pub last: String,
    /// Where replay stops: the start of the first missing segment.
    pub stop_lsn: Lsn,
}

/// The replay path from one backup.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Reach {
    /// The timeline replay ends on (`recovery_target_timeline`).
    pub timeline: u32,
    /// The last segment replay can read before the first gap (None: not even the first).
    pub until: Option<String>,
    /// Every hole between the backup's start and the end of the archive, oldest first.
    pub gaps: Vec<Gap>,
}

impl Reach {
    pub fn first_gap(&self) -> Option<&Gap> {
        self.gaps.first()
    }
}

impl ArchiveView {
    /// The newest timeline the archive knows (PostgreSQL's `findNewestTimeLine` looks for history
    /// files; segments count too), or `at_least`.
    pub fn latest_timeline(&self, at_least: u32) -> u32 {
        self.histories
            .keys()
            .copied()
            .chain(self.segments.iter().map(|(t, _)| *t))
            .fold(at_least, u32::max)
    }

    /// Timelines of `target`'s history with the segment each begins at, oldest first.
    fn chain(&self, target: u32) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        let mut begin = 0;
        for e in self
            .histories
            .get(&target)
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            out.push((e.parent, begin));
            begin = e.switchpoint.segment(self.seg_size);
        }
        out.push((target, begin));
        out
    }

    /// Whether `target`'s history passes through `tli` at `lsn` (PostgreSQL refuses to follow
    /// a timeline that branched off before the backup).
    pub fn descends(&self, target: u32, tli: u32, lsn: Lsn) -> bool {
        if target == tli {
            return true;
        }
        let hist = self
            .histories
            .get(&target)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        hist.iter().any(|e| e.parent == tli && lsn <= e.switchpoint)
    }

    /// The replay path from a backup that starts at `start` and is consistent at `stop` (both
    /// on `tli`) towards `target` (None: the newest timeline that descends from the backup).
    pub fn reach(&self, tli: u32, start: Lsn, stop: Lsn, target: Option<u32>) -> Reach {
        let target = target.unwrap_or_else(|| {
            let latest = self.latest_timeline(tli);
            if self.descends(latest, tli, start) {
                latest
            } else {
                tli
            }
        });
        let chain = self.chain(target);
        let tli_of = |s: u64| {
            chain
                .iter()
                .rev()
                .find(|(_, begin)| *begin <= s)
                .map_or(target, |(t, _)| *t)
        };
        let first = start.segment(self.seg_size);
        let end = self
            .segments
            .iter()
            .filter(|(t, s)| *s >= first && tli_of(*s) == *t)
            .map(|(_, s)| *s)
            .max()
            .unwrap_or(first)
            .max(stop.segment(self.seg_size));
        let name = |s: u64| XLogFileName(tli_of(s), s, self.seg_size);
        let mut gaps: Vec<Gap> = Vec::new();
        let mut until = None;
        let mut open: Option<(u64, u64)> = None;
        for s in first..=end {
            if self.segments.contains(&(tli_of(s), s)) {
                if let Some((a, b)) = open.take() {
                    gaps.push(self.gap(a, b, &name));
                }
                if gaps.is_empty() {
                    until = Some(name(s));
                }
            } else {
                open = Some(open.map_or((s, s), |(a, _)| (a, s)));
            }
        }
        if let Some((a, b)) = open {
            gaps.push(self.gap(a, b, &name));
        }
        Reach {
            timeline: target,
            until,
            gaps,
        }
    }

    fn gap(&self, a: u64, b: u64, name: &impl Fn(u64) -> String) -> Gap {
        Gap {
            first: name(a),
            last: name(b),
            stop_lsn: Lsn(a * self.seg_size as u64),
        }
    }
}

/// Read the archive's listing and its history files; files the last `verify` found
/// unreadable (the damage register) are holes: archive-get refuses them.
pub async fn load(stanza: &Stanza, identity: &Identity) -> Result<ArchiveView> {
    let damaged = match stanza.damage().await {
        Ok(d) => d.objects().clone(),
        Err(e) => {
            tracing::warn!("{e}; run `cairn verify` to rewrite the damage register");
            Default::default()
        }
    };
    load_with(stanza, identity, &damaged).await
}

/// `load` for `verify`, which has just read every file again and leaves out what it found
/// unreadable itself: the register's earlier findings do not count (defect of 2026-11-25: a
/// damaged segment put back intact was still reported as a gap until a second verify).
pub async fn load_fresh(stanza: &Stanza, identity: &Identity) -> Result<ArchiveView> {
    load_with(stanza, identity, &Default::default()).await
}

async fn load_with(
    stanza: &Stanza,
    identity: &Identity,
    damaged: &std::collections::BTreeSet<String>,
) -> Result<ArchiveView> {
    let id = identity.archive_id();
    let seg_size = identity.wal_segment_size;
    let mut view = ArchiveView {
        seg_size,
        ..ArchiveView::default()
    };
    for a in stanza.archive_list(&id).await? {
        let Some(w) = WalFileName::parse(&a.name) else {
            continue;
        };
        if !damaged.is_empty()
            && damaged.contains(stanza.archive_key(&id, a.timeline, &a.name)?.as_str())
        {
            continue;
        }
        match w.kind {
            WalFileKind::Segment => {
                if let Some(s) = w.segno(seg_size) {
                    view.segments.insert((w.timeline, s));
                }
            }
            WalFileKind::History => {
                let Some(bytes) = stanza.archive_get(&id, a.timeline, &a.name).await? else {
                    continue;
                };
                let text = String::from_utf8_lossy(&bytes);
                // One bad history file must not stop verify, info and every restore: it is
                // left out here (replay cannot follow that timeline) and verify reports it.
                match parse_history(&text) {
                    Some(hist) => {
                        view.histories.insert(w.timeline, hist);
                    }
                    None => tracing::warn!(
                        "{} in the archive is not a timeline history file; timeline {} is not followed (`cairn verify` reports it)",
                        a.name,
                        w.timeline
                    ),
                }
            }
            _ => {}
        }
    }
    Ok(view)
}

/// A backup's timeline and start/stop positions, from its catalog meta.
pub fn backup_position(meta: &BTreeMap<String, String>) -> Option<(u32, Lsn, Lsn)> {
    let tli = meta.get("timeline")?.parse().ok()?;
    let start = Lsn::parse(meta.get("start-lsn")?)?;
    let stop = Lsn::parse(meta.get("stop-lsn")?)?;
    Some((tli, start, stop))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u32 = 16 << 20;

    fn view(segs: &[(u32, u64)], hist: &[(u32, &str)]) -> ArchiveView {
        ArchiveView {
            segments: segs.iter().copied().collect(),
            histories: hist
                .iter()
                .map(|(t, h)| (*t, parse_history(h).unwrap_or_default()))
                .collect(),
            seg_size: SEG,
        }
    }

    fn lsn(seg: u64) -> Lsn {
        Lsn(seg * SEG as u64 + 0x28)
    }

    #[test]
    fn a_contiguous_archive_has_no_gap() {
        let v = view(&[(1, 2), (1, 3), (1, 4)], &[]);
        let r = v.reach(1, lsn(2), lsn(2), None);
        assert_eq!(r.gaps, vec![]);
        assert_eq!(r.until.as_deref(), Some("000000010000000000000004"));
    }

    #[test]
    fn a_missing_segment_after_the_stop_is_a_gap_that_stops_replay() {
        let v = view(&[(1, 2), (1, 3), (1, 5), (1, 6), (1, 8)], &[]);
        let r = v.reach(1, lsn(2), lsn(3), None);
        assert_eq!(r.until.as_deref(), Some("000000010000000000000003"));
        let firsts: Vec<&str> = r.gaps.iter().map(|g| g.first.as_str()).collect();
        assert_eq!(
            firsts,
            ["000000010000000000000004", "000000010000000000000007"]
        );
        assert_eq!(r.gaps[0].stop_lsn.to_string(), "0/4000000");
        // A backup after the first hole only sees the second.
        let r = v.reach(1, lsn(5), lsn(5), None);
        assert_eq!(r.gaps.len(), 1);
    }

    #[test]
    fn a_missing_segment_before_the_stop_is_a_gap() {
        let v = view(&[(1, 2)], &[]);
        let r = v.reach(1, lsn(2), lsn(3), None);
        assert_eq!(r.gaps[0].first, "000000010000000000000003");
    }

    #[test]
    fn timeline_switches_follow_the_history_file() {
        // Timeline 2 branched from 1 inside segment 4: segment 4 onwards is read from 2.
        let h2 = "1\t0/4000100\tno recovery target specified\n";
        let v = view(&[(1, 2), (1, 3), (1, 4), (2, 4), (2, 5)], &[(2, h2)]);
        let r = v.reach(1, lsn(2), lsn(2), None);
        assert_eq!((r.timeline, r.gaps.len()), (2, 0));
        assert_eq!(r.until.as_deref(), Some("000000020000000000000005"));
        // Without timeline 2's copy of the switch segment there is a hole.
        let v = view(&[(1, 2), (1, 3), (1, 4), (2, 5)], &[(2, h2)]);
        let r = v.reach(1, lsn(2), lsn(2), None);
        assert_eq!(r.gaps[0].first, "000000020000000000000004");
        // Asked to stay on timeline 1, the same archive is complete.
        let r = v.reach(1, lsn(2), lsn(2), Some(1));
        assert_eq!((r.timeline, r.gaps.len()), (1, 0));
    }

    #[test]
    fn a_backup_taken_after_the_branch_point_stays_on_its_timeline() {
        let h2 = "1\t0/3000000\tbranch\n";
        let v = view(&[(1, 5), (1, 6), (2, 3)], &[(2, h2)]);
        let r = v.reach(1, lsn(5), lsn(5), None);
        assert_eq!((r.timeline, r.gaps.len()), (1, 0));
    }
}
