//! `verify` for a postgres stanza's WAL archive: every archived file is re-read and its
//! envelope and checksum checked, and every segment each backup needs to become consistent
//! (its `wal-start` to `wal-stop`) must be present and intact. Beyond that, replay from every
//! backup must reach the end of the archive without a hole (`reach`): one line per hole, naming
//! its first missing segment and the backups whose recovery it cuts short.

use super::identity::Identity;
use super::reach;
use super::wal::{WalFileKind, WalFileName, XLogFileName};
use cairn_repo::catalog::Catalog;
use cairn_repo::codec::{self, magic};
use cairn_repo::verify::Problem;
use cairn_repo::{BackupLabel, Result, Stanza};
use std::collections::{BTreeMap, BTreeSet, HashSet};

#[derive(Debug, Default)]
pub struct WalReport {
    pub problems: Vec<Problem>,
    /// Keys of archived files that are present but unreadable.
    pub unreadable: Vec<String>,
    pub files: usize,
    pub bytes: u64,
}

pub async fn verify_wal(
    stanza: &Stanza,
    catalog: &Catalog,
    only: Option<&BackupLabel>,
) -> Result<WalReport> {
    // Each identity of the stanza (before and after a stanza-upgrade) has its own archive id,
    // checked against the backups taken from it.
    let mut report = WalReport::default();
    for identity in Identity::all(&stanza.info.meta)? {
        let mut mine = Catalog::default();
        for b in &catalog.backups {
            if Identity::of_backup(&stanza.info.meta, &b.meta)? == identity {
                mine.backups.push(b.clone());
            }
        }
        let r = verify_wal_of(stanza, identity, &mine, only).await?;
        report.problems.extend(r.problems);
        report.unreadable.extend(r.unreadable);
        report.files += r.files;
        report.bytes += r.bytes;
    }
    Ok(report)
}

async fn verify_wal_of(
    stanza: &Stanza,
    identity: Identity,
    catalog: &Catalog,
    only: Option<&BackupLabel>,
) -> Result<WalReport> {
    let id = identity.archive_id();
    let seg = identity.wal_segment_size;
    let mut report = WalReport::default();
    let mut problems: BTreeMap<String, Problem> = BTreeMap::new();

    // Which backups need which segment (their range start..=stop on their timeline).
    let mut needed: BTreeMap<String, BTreeSet<BackupLabel>> = BTreeMap::new();
    for b in &catalog.backups {
        if only.is_some_and(|l| l != &b.label) {
            continue;
        }
        let (Some(start), Some(stop)) = (b.meta.get("wal-start"), b.meta.get("wal-stop")) else {
            continue;
        };
        let (Some(s), Some(e)) = (WalFileName::parse(start), WalFileName::parse(stop)) else {
            continue;
        };
        let (Some(first), Some(last)) = (s.segno(seg), e.segno(seg)) else {
            continue;
        };
        for segno in first..=last {
            needed
                .entry(XLogFileName(s.timeline, segno, seg))
                .or_default()
                .insert(b.label.clone());
        }
    }

    let mut present = HashSet::new();
    // Segments that are there but cannot be read: replay stops at them as at a missing one
    // (archive-get refuses them), so they are holes for the continuity check below.
    let mut unreadable: Vec<(u32, u64)> = Vec::new();
    for a in stanza.archive_list(&id).await? {
        let key = stanza.archive_key(&id, a.timeline, &a.name)?;
        report.files += 1;
        report.bytes += a.size;
        let result = match stanza.store().get(&key, None).await {
            Ok(bytes) => codec::open_raw(key.as_str(), magic::WAL, &bytes).and_then(|plain| {
                match WalFileName::parse(&a.name) {
                    Some(w) => identity.check_archived(&w, &plain),
                    None => Ok(()),
                }
            }),
            Err(e) => Err(e.into()),
        };
        match result {
            Ok(()) => {
                present.insert(a.name);
            }
            Err(e) => {
                report.unreadable.push(key.to_string());
                if let Some(w) = WalFileName::parse(&a.name)
                    && w.kind == WalFileKind::Segment
                    && let Some(segno) = w.segno(seg)
                {
                    unreadable.push((w.timeline, segno));
                }
                let affects = needed.get(&a.name).cloned().unwrap_or_default();
                problems.insert(
                    key.to_string(),
                    Problem {
                        object: key.to_string(),
                        detail: e.to_string(),
                        affects,
                    },
                );
            }
        }
    }
    for (name, labels) in needed {
        if present.contains(&name) {
            continue;
        }
        let Some(w) = WalFileName::parse(&name) else {
            continue;
        };
        let key = stanza.archive_key(&id, w.timeline, &name)?.to_string();
        problems.entry(key.clone()).or_insert_with(|| Problem {
            object: key,
            detail: "WAL segment needed to make the backup consistent is missing".into(),
            affects: labels,
        });
    }
    // Continuity: replay from each backup must reach the end of the archive without a hole.
    let mut view = reach::load_fresh(stanza, &identity).await?;
    for s in &unreadable {
        view.segments.remove(s);
    }
    for b in &catalog.backups {
        if only.is_some_and(|l| l != &b.label) {
            continue;
        }
        // Its WAL past its end was expired on purpose (--retention-archive): no hole to report.
        if b.meta.contains_key(super::archive::WAL_AFTER_STOP) {
            continue;
        }
        let Some((tli, start, stop)) = reach::backup_position(&b.meta) else {
            continue;
        };
        let r = view.reach(tli, start, stop, None);
        for gap in &r.gaps {
            let Some(w) = WalFileName::parse(&gap.first) else {
                continue;
            };
            let key = stanza.archive_key(&id, w.timeline, &gap.first)?.to_string();
            let p = problems.entry(key.clone()).or_insert_with(|| Problem {
                object: key,
                detail: format!(
                    "WAL archive gap: {}{} missing; replay stops at {} (timeline {}), so no recovery target after it (nor the default, the end of the archive) is reachable from these backups",
                    gap.first,
                    if gap.last != gap.first {
                        format!(" through {}", gap.last)
                    } else {
                        String::new()
                    },
                    gap.stop_lsn,
                    r.timeline
                ),
                affects: Default::default(),
            });
            p.affects.insert(b.label.clone());
        }
    }
    report.problems = problems.into_values().collect();
    Ok(report)
}
