//! Which backups a retention policy expires: pgBackRest's rules and names
//! (`--retention-full`, `--retention-full-type count|time`, `--retention-diff`, and an ad hoc
//! `--set`). Pure: the catalog in, the labels to expire out, so the rules are tested on their
//! own. Expiring a backup always expires every backup that depends on it.

use crate::catalog::{BackupRecord, Catalog};
use crate::error::{Error, Result};
use crate::ids::{BackupLabel, BackupType};
use std::collections::BTreeSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FullType {
    /// Keep the newest N full backups.
    Count,
    /// Keep the full backups needed to restore to any time in the last N days: every full
    /// that stopped within them, and the newest one that stopped before.
    Time,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub full: Option<u32>,
    pub full_type: FullType,
    pub diff: Option<u32>,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        self.full.is_none() && self.diff.is_none()
    }
}

/// A backup to expire, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expired {
    pub label: BackupLabel,
    pub reason: String,
}

/// `label` and every backup that depends on it (whose restore needs its manifest).
pub fn with_dependents(catalog: &Catalog, label: &BackupLabel) -> Vec<BackupLabel> {
    catalog
        .backups
        .iter()
        .filter(|b| &b.label == label || b.references.contains(label))
        .map(|b| b.label.clone())
        .collect()
}

fn fulls(catalog: &Catalog) -> Vec<&BackupRecord> {
    catalog
        .backups
        .iter()
        .filter(|b| b.kind == BackupType::Full)
        .collect()
}

/// The backups `policy` expires from `catalog` at time `now` (Unix seconds), oldest first.
pub fn select(catalog: &Catalog, policy: &Policy, now: i64) -> Vec<Expired> {
    let mut out: Vec<Expired> = Vec::new();
    let add = |root: &BackupLabel, why: String, out: &mut Vec<Expired>| {
        for label in with_dependents(catalog, root) {
            if !out.iter().any(|e| e.label == label) {
                let reason = if &label == root {
                    why.clone()
                } else {
                    format!("depends on {root}")
                };
                out.push(Expired { label, reason });
            }
        }
    };
    let fulls = fulls(catalog);
    match (policy.full, policy.full_type) {
        (Some(n), FullType::Count) if n > 0 && fulls.len() > n as usize => {
            for f in &fulls[..fulls.len() - n as usize] {
                add(
                    &f.label,
                    format!("retention-full={n} keeps the {n} newest full backup(s)"),
                    &mut out,
                );
            }
        }
        (Some(days), FullType::Time) if days > 0 => {
            let horizon = now - i64::from(days) * 86_400;
            // The newest full that stopped before the horizon covers the window's start:
            // every backup older than it goes; it and everything newer stay.
            if let Some(keep) = fulls.iter().rev().find(|f| f.stop < horizon) {
                for f in fulls.iter().take_while(|f| f.label != keep.label) {
                    add(
                        &f.label,
                        format!(
                            "retention-full={days} days: {} is older and covers the window",
                            keep.label
                        ),
                        &mut out,
                    );
                }
            }
        }
        _ => {}
    }
    if let Some(n) = policy.diff.filter(|n| *n > 0) {
        // Full backups count as differential ones here (pgBackRest's rule), but only
        // differential backups are expired by it.
        let diffs: Vec<&BackupRecord> = catalog
            .backups
            .iter()
            .filter(|b| matches!(b.kind, BackupType::Full | BackupType::Diff))
            .collect();
        if diffs.len() > n as usize {
            for d in &diffs[..diffs.len() - n as usize] {
                if d.kind == BackupType::Diff {
                    add(&d.label, format!("retention-diff={n}"), &mut out);
                }
            }
        }
    }
    // Oldest first, as the catalog lists them.
    out.sort_by_key(|e| catalog.backups.iter().position(|b| b.label == e.label));
    out
}

/// The backups `expire --set LABEL` removes: it and its dependents. The newest full backup
/// cannot go while it is the only one: the stanza would have nothing to restore.
pub fn select_set(catalog: &Catalog, label: &BackupLabel) -> Result<Vec<Expired>> {
    let rec = catalog.get(label).ok_or_else(|| {
        Error::NotFound(format!(
            "backup {label} does not exist; `cairn info` lists the backups"
        ))
    })?;
    let fulls = fulls(catalog);
    if rec.kind == BackupType::Full && fulls.len() == 1 {
        return Err(Error::Usage(format!(
            "full backup {label} cannot be expired until another full backup has been taken: it is the only one, and every other backup depends on it"
        )));
    }
    let mut out: Vec<Expired> = with_dependents(catalog, label)
        .into_iter()
        .map(|l| Expired {
            reason: if &l == label {
                "expire --set".to_string()
            } else {
                format!("depends on {label}")
            },
            label: l,
        })
        .collect();
    out.sort_by_key(|e| catalog.backups.iter().position(|b| b.label == e.label));
    Ok(out)
}

/// The catalog without `expired`.
pub fn remaining(catalog: &Catalog, expired: &[Expired]) -> Catalog {
    let gone: BTreeSet<&BackupLabel> = expired.iter().map(|e| &e.label).collect();
    Catalog {
        backups: catalog
            .backups
            .iter()
            .filter(|b| !gone.contains(&b.label))
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A catalog from a string of backup kinds, one per day: `F` full, `D` diff, `I` incr.
    fn catalog(kinds: &str) -> Catalog {
        let mut backups: Vec<BackupRecord> = Vec::new();
        let mut full: Option<BackupLabel> = None;
        for (i, k) in kinds.chars().enumerate() {
            let start = 1_700_000_000 + i as i64 * 86_400;
            let stamp = crate::time::label_stamp(start);
            let kind = match k {
                'F' => BackupType::Full,
                'D' => BackupType::Diff,
                _ => BackupType::Incr,
            };
            let parent = match kind {
                BackupType::Full => None,
                BackupType::Diff => full.clone(),
                BackupType::Incr => backups.last().map(|b| b.label.clone()),
            };
            let label =
                BackupLabel::new(&stamp, kind, full.as_ref()).unwrap_or_else(|e| panic!("{e}"));
            let references = match &parent {
                None => vec![],
                Some(p) => {
                    let mut r = backups
                        .iter()
                        .find(|b| &b.label == p)
                        .map(|b| b.references.clone())
                        .unwrap_or_default();
                    r.push(p.clone());
                    r
                }
            };
            if kind == BackupType::Full {
                full = Some(label.clone());
            }
            backups.push(BackupRecord {
                label,
                kind,
                parent,
                references,
                start,
                stop: start + 600,
                size: 0,
                delta: 0,
                repo_size: 0,
                repo_delta: 0,
                file_count: 0,
                chunk_count: 0,
                new_chunk_count: 0,
                meta: Default::default(),
            });
        }
        Catalog { backups }
    }

    fn kinds_of(c: &Catalog, e: &[Expired]) -> String {
        let rest = remaining(c, e);
        rest.backups
            .iter()
            .map(|b| match b.kind {
                BackupType::Full => 'F',
                BackupType::Diff => 'D',
                BackupType::Incr => 'I',
            })
            .collect()
    }

    fn count(full: u32) -> Policy {
        Policy {
            full: Some(full),
            full_type: FullType::Count,
            diff: None,
        }
    }

    #[test]
    fn full_count_expires_the_oldest_fulls_with_their_dependents() {
        let c = catalog("FIDIFIIFD");
        let e = select(&c, &count(2), 0);
        assert_eq!(kinds_of(&c, &e), "FIIFD");
        assert_eq!(e.len(), 4);
        assert!(e[1].reason.contains("depends on"), "{e:?}");
        // Enough fulls: nothing goes.
        assert!(select(&c, &count(3), 0).is_empty());
    }

    #[test]
    fn diff_retention_counts_fulls_but_expires_only_diffs() {
        // pgBackRest's example: F1 D1 D2 F2 with retention-diff=2 keeps F1, D2, F2.
        let c = catalog("FDDF");
        let e = select(
            &c,
            &Policy {
                full: None,
                full_type: FullType::Count,
                diff: Some(2),
            },
            0,
        );
        assert_eq!(kinds_of(&c, &e), "FDF");
        assert_eq!(e.len(), 1);
        // A diff's incrementals go with it.
        let c = catalog("FDIIDI");
        let e = select(
            &c,
            &Policy {
                full: None,
                full_type: FullType::Count,
                diff: Some(1),
            },
            0,
        );
        assert_eq!(kinds_of(&c, &e), "FDI");
    }

    #[test]
    fn time_retention_keeps_the_full_that_covers_the_window() {
        // Fulls on days 0, 3, 6, 9; now is day 10; keep 5 days: the window starts on day 5,
        // so the full of day 3 covers it and stays; the full of day 0 goes.
        let c = catalog("FIIFIIFIIF");
        let now = 1_700_000_000 + 10 * 86_400;
        let p = Policy {
            full: Some(5),
            full_type: FullType::Time,
            diff: None,
        };
        let e = select(&c, &p, now);
        assert_eq!(kinds_of(&c, &e), "FIIFIIF");
        // Nothing older than the window: nothing goes.
        assert!(select(&c, &p, 1_700_000_000).is_empty());
    }

    #[test]
    fn expire_set_takes_dependents_and_never_the_only_full() {
        let c = catalog("FIDI");
        let d = c.backups[2].label.clone();
        let e = select_set(&c, &d).unwrap_or_default();
        assert_eq!(kinds_of(&c, &e), "FI");
        let f = c.backups[0].label.clone();
        assert!(matches!(select_set(&c, &f), Err(Error::Usage(_))));
        let c = catalog("FIF");
        let f = c.backups[0].label.clone();
        assert_eq!(select_set(&c, &f).map(|e| e.len()).ok(), Some(2));
    }

    proptest! {
        /// Whatever the history and the policy: what expires is closed under dependency
        /// (no kept backup references an expired one), and a stanza with a full backup keeps
        /// one, including the newest.
        #[test]
        fn retention_keeps_restorable_chains(
            kinds in "F[FDI]{0,30}",
            full in 0u32..5,
            diff in 0u32..5,
            time in any::<bool>(),
            days in 0i64..40,
        ) {
            let c = catalog(&kinds);
            let p = Policy {
                full: (full > 0).then_some(full),
                full_type: if time { FullType::Time } else { FullType::Count },
                diff: (diff > 0).then_some(diff),
            };
            let now = 1_700_000_000 + days * 86_400;
            let e = select(&c, &p, now);
            let rest = remaining(&c, &e);
            for b in &rest.backups {
                for r in &b.references {
                    prop_assert!(rest.get(r).is_some(), "{} kept without {}", b.label, r);
                }
            }
            let newest_full = c.latest_full().map(|b| b.label.clone());
            prop_assert_eq!(rest.latest_full().map(|b| b.label.clone()), newest_full);
            prop_assert_eq!(rest.latest().map(|b| b.label.clone()), c.latest().map(|b| b.label.clone()));
        }
    }
}
