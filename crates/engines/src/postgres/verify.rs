//! `verify` for a postgres stanza's WAL archive: every archived file is re-read and its
//! envelope and checksum checked, and every segment each backup needs to become consistent
//! (its `wal-start` to `wal-stop`) must be present and intact.

use super::identity::Identity;
use super::wal::{WalFileName, XLogFileName};
use cairn_repo::catalog::Catalog;
use cairn_repo::codec::{self, magic};
use cairn_repo::verify::Problem;
use cairn_repo::{BackupLabel, Result, Stanza};
use std::collections::{BTreeMap, BTreeSet, HashSet};

#[derive(Debug, Default)]
pub struct WalReport {
    pub problems: Vec<Problem>,
    pub files: usize,
    pub bytes: u64,
}

pub async fn verify_wal(
    stanza: &Stanza,
    catalog: &Catalog,
    only: Option<&BackupLabel>,
) -> Result<WalReport> {
    let identity = Identity::from_meta(&stanza.info.meta)?;
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
    for a in stanza.archive_list(&id).await? {
        let key = stanza.archive_key(&id, a.timeline, &a.name)?;
        report.files += 1;
        report.bytes += a.size;
        let result = match stanza.store().get(&key, None).await {
            Ok(bytes) => codec::open_raw(key.as_str(), magic::WAL, &bytes).map(|_| ()),
            Err(e) => Err(e.into()),
        };
        match result {
            Ok(()) => {
                present.insert(a.name);
            }
            Err(e) => {
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
    report.problems = problems.into_values().collect();
    Ok(report)
}
