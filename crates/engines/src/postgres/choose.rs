//! Which backup a restore starts from, and whether the archive lets replay from it reach the
//! target. Both are decided before the destination is touched: a target before every backup,
//! a zoneless time whose backup depends on the zone, or a target behind a hole in the archive
//! is refused with what to do instead, rather than left for PostgreSQL to fail on (or, for a
//! hole and the default target, to promote early and lose the transactions after it).

use super::lsn::Lsn;
use super::reach::{ArchiveView, Reach, backup_position};
use super::restore::{Recovery, TargetType};
use super::target;
use cairn_repo::catalog::{BackupRecord, Catalog};
use cairn_repo::time::display;
use cairn_repo::{BackupLabel, Error, Result};

/// `--set`, or for a time target the newest backup that ended before it, for an lsn target
/// the newest that stopped at or before it, otherwise the newest.
///
/// A time without a zone is read by PostgreSQL in the restored cluster's `timezone` setting,
/// which cairn cannot know before the cluster runs. It is accepted when every offset
/// PostgreSQL allows (±15:59:59) leads to the same backup, and refused otherwise.
pub fn choose_backup(
    catalog: &Catalog,
    set: Option<&BackupLabel>,
    recovery: &Recovery,
) -> Result<BackupRecord> {
    if let Some(l) = set {
        return catalog.get(l).cloned().ok_or_else(|| {
            Error::NotFound(format!(
                "backup {l} does not exist; `cairn info` lists the backups"
            ))
        });
    }
    let target = recovery.target.as_deref().unwrap_or_default();
    let newest_before = |t: i64| catalog.backups.iter().rev().find(|b| b.stop < t);
    let found = match recovery.kind {
        TargetType::Time => {
            let time = target::parse_time(target)?;
            let (lo, hi) = time.bounds();
            let (early, late) = (newest_before(lo), newest_before(hi));
            let Some(late) = late else {
                return Err(before_every_backup(catalog, "time", target));
            };
            if early.map(|b| &b.label) != Some(&late.label) {
                return Err(Error::Usage(format!(
                    "--target '{target}' has no time zone: PostgreSQL will read it in the restored cluster's `timezone` setting, and the backup to start from depends on that zone ({} ended within 16 hours of it); add the zone to the target (e.g. '{target}+00' or '{target} UTC') or choose the backup with --set",
                    match early {
                        Some(e) => format!("backups {} and {}", e.label, late.label),
                        None => format!("backup {} is the earliest and", late.label),
                    }
                )));
            }
            Some(late)
        }
        TargetType::Lsn => {
            let t = target::parse_lsn(target)?;
            catalog
                .backups
                .iter()
                .rev()
                .find(|b| stop_lsn(b).is_some_and(|l| l <= t))
        }
        _ => catalog.latest(),
    };
    match found {
        Some(b) => Ok(b.clone()),
        None if recovery.kind == TargetType::Lsn => {
            Err(before_every_backup(catalog, "lsn", target))
        }
        None => Err(Error::NotFound("the stanza has no backup".into())),
    }
}

fn stop_lsn(b: &BackupRecord) -> Option<Lsn> {
    b.meta.get("stop-lsn").and_then(|l| Lsn::parse(l))
}

fn before_every_backup(catalog: &Catalog, kind: &str, target: &str) -> Error {
    let earliest = catalog.backups.iter().min_by_key(|b| b.stop);
    let reach = match (earliest, kind) {
        (Some(b), "lsn") => format!(
            "the earliest LSN a restore can reach is {} (the end of backup {})",
            stop_lsn(b).map_or("?".into(), |l| l.to_string()),
            b.label
        ),
        (Some(b), _) => format!(
            "the earliest time a restore can reach is just after {} (the end of backup {})",
            display(b.stop),
            b.label
        ),
        (None, _) => "the stanza has no backup".into(),
    };
    Error::NotFound(format!(
        "no backup can reach {kind} target '{target}': it precedes the end of every backup; {reach}"
    ))
}

/// When replay was sent along a newer timeline that forked from the backup's, and staying on
/// the backup's own timeline reaches past the hole: how to ask for that.
fn other_timeline_hint(
    view: &ArchiveView,
    reach: &Reach,
    tli: u32,
    start: Lsn,
    stop: Lsn,
    wanted: Option<u32>,
) -> String {
    if wanted.is_some() || reach.timeline == tli {
        return String::new();
    }
    let own = view.reach(tli, start, stop, Some(tli));
    let better = match (own.first_gap(), reach.first_gap()) {
        (None, _) => true,
        (Some(o), Some(r)) => o.stop_lsn > r.stop_lsn,
        (Some(_), None) => false,
    };
    if !better {
        return String::new();
    }
    format!(
        ". The hole is on timeline {}, which forked from the backup's timeline {tli} after the backup; to recover along timeline {tli} instead (to {}), give --target-timeline current",
        reach.timeline,
        own.until.as_deref().unwrap_or("its end")
    )
}

/// Where replay from `record` goes for this recovery, and why a restore must not proceed:
/// Some(message) when the target lies beyond a hole in the archive (or cannot be placed
/// before it).
pub fn reach_for(
    view: &ArchiveView,
    record: &BackupRecord,
    recovery: &Recovery,
) -> Result<Option<(Reach, Option<String>)>> {
    let Some((tli, start, stop)) = backup_position(&record.meta) else {
        return Ok(None);
    };
    let wanted = match recovery.timeline.as_deref() {
        Some("current") => Some(tli),
        Some(t) => target::parse_timeline(t)?,
        None => None,
    };
    if let Some(w) = wanted
        && !view.descends(w, tli, start)
    {
        return Err(Error::Usage(format!(
            "--target-timeline {w} does not pass through backup {}'s timeline {tli} at {start}: the archive has no history file saying so; choose another --target-timeline or backup (--set)",
            record.label
        )));
    }
    let reach = view.reach(tli, start, stop, wanted);
    let Some(gap) = reach.first_gap() else {
        return Ok(Some((reach, None)));
    };
    let hole = format!(
        "WAL segment {} is missing from the archive{}, so replay from backup {} stops at {} (timeline {})",
        gap.first,
        if gap.last != gap.first {
            format!(" (through {})", gap.last)
        } else {
            String::new()
        },
        record.label,
        gap.stop_lsn,
        reach.timeline
    );
    let refusal = if gap.stop_lsn <= stop {
        Some(format!(
            "{hole}, before the backup is consistent ({stop}); restore it into the archive or choose another backup with --set"
        ))
    } else {
        match recovery.kind {
            TargetType::Default => Some(format!(
                "{hole}; recovering to the end of the archive would promote there and lose every transaction after it. Put the segment back into the archive (`cairn verify` lists the holes), or restore up to the hole with --type lsn --target {} --target-action promote, or give --ignore-archive-gap to accept the loss{}",
                gap.stop_lsn,
                other_timeline_hint(view, &reach, tli, start, stop, wanted)
            )),
            TargetType::Lsn => {
                let t = target::parse_lsn(recovery.target.as_deref().unwrap_or_default())?;
                (t >= gap.stop_lsn).then(|| {
                    format!("{hole}, before the target {t}; choose a target before {} or give --ignore-archive-gap to restore up to the hole", gap.stop_lsn)
                })
            }
            TargetType::Time | TargetType::Xid | TargetType::Name => Some(format!(
                "{hole}; cairn cannot tell whether the {} target lies before that point. If it does, give --ignore-archive-gap (PostgreSQL then stops with \"recovery ended before configured recovery target was reached\" if it does not); otherwise put the segment back into the archive",
                format!("{:?}", recovery.kind).to_lowercase()
            )),
            TargetType::Immediate
            | TargetType::Standby
            | TargetType::Preserve
            | TargetType::NoSettings => None,
        }
    };
    Ok(Some((reach, refusal)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::wal::parse_history;
    use std::collections::BTreeMap;

    const SEG: u32 = 16 << 20;

    fn record(tli: u32, start: u64, stop: u64) -> Result<BackupRecord> {
        let lsn = |seg: u64| Lsn(seg * SEG as u64 + 0x28).to_string();
        Ok(BackupRecord {
            label: BackupLabel::parse("20261124-000000F")?,
            kind: cairn_repo::BackupType::Full,
            parent: None,
            references: Vec::new(),
            start: 0,
            stop: 0,
            size: 0,
            delta: 0,
            repo_size: 0,
            repo_delta: 0,
            file_count: 0,
            chunk_count: 0,
            new_chunk_count: 0,
            meta: BTreeMap::from([
                ("timeline".to_string(), tli.to_string()),
                ("start-lsn".to_string(), lsn(start)),
                ("stop-lsn".to_string(), lsn(stop)),
            ]),
        })
    }

    /// Defect: a backup on timeline 1, taken before a copy forked timeline 2 from it, was
    /// refused as a WAL hole (timeline 2's first segment not archived yet) without saying that
    /// staying on timeline 1 reaches the end of its WAL.
    #[test]
    fn defect_a_pre_fork_backup_was_refused_as_a_hole_without_the_timeline_hint() -> Result<()> {
        let view = ArchiveView {
            // Timeline 2's first segment (the one it forked in) never reached the archive.
            segments: [(1, 2), (1, 3), (1, 4), (1, 5), (1, 6), (2, 5), (2, 6)]
                .into_iter()
                .collect(),
            histories: BTreeMap::from([(
                2,
                parse_history("1\t0/4000100\tafter a PITR\n").unwrap_or_default(),
            )]),
            seg_size: SEG,
        };
        let recovery = Recovery {
            kind: TargetType::Default,
            target: None,
            action: None,
            timeline: None,
            restore_command: String::new(),
            archive_off: false,
            exclusive: false,
            options: Vec::new(),
        };
        let rec = record(1, 2, 2)?;
        let (reach, refusal) = reach_for(&view, &rec, &recovery)?
            .ok_or("no position")
            .map_err(|e| Error::Invalid(e.into()))?;
        assert_eq!(reach.timeline, 2, "{reach:?}");
        let why = refusal.unwrap_or_else(|| format!("no refusal: {reach:?}"));
        assert!(why.contains("--target-timeline current"), "{why}");
        // Given, it is not refused.
        let current = Recovery {
            timeline: Some("current".into()),
            ..recovery
        };
        let (_, refusal) = reach_for(&view, &rec, &current)?
            .ok_or("no position")
            .map_err(|e| Error::Invalid(e.into()))?;
        assert_eq!(refusal, None);
        Ok(())
    }
}
