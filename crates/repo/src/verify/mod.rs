//! `verify`: re-read every object of a stanza and check it, then check that every backup the
//! catalog lists can find every chunk it needs in an intact pack. Damage is reported per object
//! with the backups it affects; unreferenced objects left by an interrupted backup are counted
//! but are not damage.

mod catalogs;
mod join;
mod packs;

use crate::catalog::Catalog;
use crate::damage::Damage;
use crate::error::Result;
use crate::ids::{BackupLabel, PackId};
use crate::index::{Index, Keep};
use crate::index_cache::SegmentCache;
use crate::manifest;
use crate::repository::Stanza;
use crate::restore;
use crate::storage::Leftover;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub object: String,
    pub detail: String,
    pub affects: BTreeSet<BackupLabel>,
}

#[derive(Debug)]
pub struct VerifyReport {
    pub problems: Vec<Problem>,
    pub packs: usize,
    pub chunks: usize,
    pub bytes: u64,
    pub backups: usize,
    pub unreferenced_packs: usize,
    /// Manifests the catalog does not list (see `verify`).
    pub unlisted: Vec<BackupLabel>,
    /// Damaged packs every chunk of which has an intact copy elsewhere: no backup needs them.
    pub superseded_packs: usize,
    pub damage: Damage,
    pub register: Register,
    /// What interrupted writes left in the stanza (`Storage::leftovers`): not damage, but
    /// space; `Err` says why the store could not list them.
    pub leftovers: std::result::Result<Vec<Leftover>, String>,
}

/// Whether verify could record what it found in the damage register.
#[derive(Debug, Default)]
pub enum Register {
    #[default]
    NotRun,
    Saved {
        changed: bool,
    },
    NotSaved(String),
}

impl Default for VerifyReport {
    fn default() -> Self {
        VerifyReport {
            problems: Vec::new(),
            packs: 0,
            chunks: 0,
            bytes: 0,
            backups: 0,
            unreferenced_packs: 0,
            unlisted: Vec::new(),
            superseded_packs: 0,
            damage: Damage::default(),
            register: Register::default(),
            leftovers: Ok(Vec::new()),
        }
    }
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(Default)]
struct Problems(BTreeMap<String, Problem>);

impl Problems {
    fn add(&mut self, object: &str, detail: impl Into<String>, affects: Option<&BackupLabel>) {
        // Errors end by sending the reader to verify; this is verify.
        let detail: String = detail.into();
        let detail = detail.replace("; run `cairn verify` to see what it affects", "");
        let p = self.0.entry(object.to_string()).or_insert_with(|| Problem {
            object: object.to_string(),
            detail,
            affects: BTreeSet::new(),
        });
        p.affects.extend(affects.cloned());
    }
}

/// Verify the stanza (`only`: check just that backup's chunks; every object is still read).
/// `links_under`: the directories whose symlinks a restore follows (the engine's, see
/// `manifest::check_paths`).
pub async fn verify(
    stanza: &Stanza,
    process_max: usize,
    only: Option<&BackupLabel>,
    links_under: &[&[u8]],
    engine_check: &(dyn Fn(&[manifest::FileEntry]) -> Result<()> + Sync),
) -> Result<VerifyReport> {
    let store = stanza.store().clone();
    let mut problems = Problems::default();
    let mut report = VerifyReport::default();

    let (catalog, catalog_lost) = match stanza.catalog().await {
        Ok(c) => (c, false),
        Err(e) => {
            problems.add(&stanza.catalog_key()?.to_string(), e.to_string(), None);
            (Catalog::default(), true)
        }
    };
    catalogs::check_catalogs(stanza, &catalog, &mut problems).await?;

    report.leftovers = store
        .leftovers(&stanza.prefix()?)
        .await
        .map_err(|e| e.to_string());

    // Index segments, each read again from the repository and checked against its name.
    let cache = SegmentCache::open(&store.location(), stanza.name().as_str());
    let mut files = Vec::new();
    let mut damaged_segments = Vec::new();
    for meta in stanza.segment_metas().await? {
        match cache.segment_fresh(&store, &meta).await {
            Ok(f) => files.push(f),
            Err(e) => {
                let key = meta.key.to_string();
                problems.add(
                    &key,
                    format!(
                        "{e}; `cairn --stanza={} stanza-repair` indexes its packs again from their trailers",
                        stanza.name()
                    ),
                    None,
                );
                damaged_segments.push(key);
            }
        }
    }

    // Packs: read each whole and check header, name, trailer and every chunk; then the index
    // against the trailers. What is unusable in packs that are present goes into the damage
    // register: chunks whose blob fails its checks, records that disagree with their pack's
    // trailer, packs whose trailer cannot be read and whose chunks the index places in them
    // fail too.
    let mut damage = Damage::default();
    let (mut infos, mut trailers) =
        packs::read_packs(stanza, process_max, &mut report, &mut problems).await?;
    packs::salvage(
        stanza,
        &files,
        &mut infos,
        &mut damage,
        &mut report,
        &mut trailers,
    )
    .await?;
    let trailers = trailers
        .finish()
        .map_err(packs::io("sorting the packs' trailers"))?;
    let mut bad_records = join::check_records(&files, trailers, &infos, &mut damage)?;
    packs::settle_bad_entries(stanza, &files, &mut infos, &mut damage).await?;
    // A record that disagrees with its pack's trailer may be right, the trailer wrong: the
    // chunk is checked where the record places it (a ranged read). Intact there, the record
    // stays usable and the trailer is what is reported (defect of 2026-11-24: verify put an
    // intact chunk in the damage register and so made it unrestorable).
    let mut bad_trailers: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut intact = Vec::new();
    for (chunk, b) in &bad_records.by_chunk {
        if packs::intact_at(stanza, &b.pack, chunk, &b.loc).await? {
            intact.push(*chunk);
            bad_trailers
                .entry(stanza.pack_key(&b.pack)?.to_string())
                .or_default()
                .push(chunk.to_string());
        } else {
            damage.chunk(b.pack, *chunk);
        }
    }
    for chunk in intact {
        bad_records.by_chunk.remove(&chunk);
    }
    for (pack, chunks) in &bad_trailers {
        problems.add(
            pack,
            format!(
                "its trailer disagrees with the index about {} chunk(s) (first {}) that are intact where the index places them: the trailer is damaged; the chunks stay usable, and `stanza-repair` cannot index this pack from its trailer",
                chunks.len(),
                chunks[0]
            ),
            None,
        );
    }

    // A chunk is usable when some record places it, as its trailer says, in a present pack
    // where it is intact: a copy stored again after damage was found serves every backup.
    let index = Index::from_files(files, None, cache);
    let readable: HashSet<PackId> = infos
        .iter()
        .filter(|(_, i)| !i.unreadable)
        .map(|(p, _)| *p)
        .collect();
    let damaged = damage.lookup();
    let keep: Keep = Arc::new(move |p, c, _| readable.contains(p) && damaged.usable(p, c));
    let usable = index.with_keep(Some(keep));
    for (id, b) in &bad_records.by_chunk {
        if usable.get(id).is_none() {
            problems.add(&b.segment, b.detail.clone(), None);
        }
    }
    if bad_records.more > 0 {
        problems.add(
            stanza.index_prefix()?.as_str(),
            format!(
                "{} more index record(s) disagree with their pack's trailer",
                bad_records.more
            ),
            None,
        );
    }
    // Damage to a pack is reported unless every chunk it should hold has an intact copy
    // elsewhere (then no backup needs its bytes; they are counted instead).
    for info in infos.values() {
        let Some(d) = &info.damage else { continue };
        let lacking = if info.unreadable || (info.trailer_lost && !info.salvaged_all) {
            None // nothing (or not everything) is known about its chunks
        } else {
            // Every chunk intact but the name wrong (no chunk lacking): a pack stored under
            // another's name.
            Some(&info.bad)
        };
        match lacking {
            Some(chunks)
                if !chunks.is_empty() && chunks.iter().all(|c| usable.get(c).is_some()) =>
            {
                report.superseded_packs += 1;
            }
            _ => problems.add(&info.key, d.clone(), None),
        }
    }
    let referenced_packs: HashSet<PackId> = index.packs().into_iter().collect();
    report.unreferenced_packs = infos
        .keys()
        .filter(|p| !referenced_packs.contains(p))
        .count();

    // Backups: every chunk of every listed backup must be in an intact pack.
    let listed: HashSet<String> = catalog
        .backups
        .iter()
        .map(|b| b.label.to_string())
        .collect();
    // A manifest the catalog does not list is, by the commit order (format.md), not a backup:
    // one whose catalog update was interrupted (a crash, a full disk), one running now, or one
    // stanza-repair left out. They are listed, not counted as damage, unless the catalog itself
    // is lost: then every manifest is a backup the repository can no longer reach.
    for label in stanza.manifest_labels().await? {
        if !listed.contains(label.as_str()) {
            if catalog_lost {
                problems.add(
                    &stanza.manifest_key(&label)?.to_string(),
                    format!(
                        "backup {label} has a manifest but the catalog is lost; run `cairn --stanza={} stanza-repair` to rebuild the catalog from the manifests",
                        stanza.name()
                    ),
                    None,
                );
            }
            report.unlisted.push(label);
        }
    }
    // Unlisted manifests are not backups, unless nothing vouches that the newest catalog
    // generation is the newest written (format.md, "Catalog"): then one may be a lost record.
    let lost = if catalog_lost || report.unlisted.is_empty() {
        Vec::new()
    } else {
        stanza.possibly_lost_records(&catalog).await?
    };
    if !lost.is_empty() {
        let labels: Vec<String> = lost.iter().map(|l| l.to_string()).collect();
        problems.add(
            stanza.catalog_key()?.as_str(),
            format!(
                "the catalog's copy does not hold its newest generation and the manifest(s) of {} are not listed: a newer generation may be lost; `cairn --stanza={} stanza-repair` lists the complete ones again",
                labels.join(", "),
                stanza.name()
            ),
            None,
        );
    }
    crate::failpoint::act("verify-before-backups", || {
        std::thread::sleep(std::time::Duration::from_secs(3))
    });
    for rec in &catalog.backups {
        if only.is_some_and(|l| l != &rec.label) {
            continue;
        }
        report.backups += 1;
        let label = &rec.label;
        let entries = match stanza.resolved(&catalog, label).await {
            Ok(e) => e,
            // Expired while verify ran (verify takes no lock): not damage (defect of
            // 2026-11-24, reported beside a backup and expire loop).
            Err(_) if stanza.catalog().await.is_ok_and(|c| c.get(label).is_none()) => {
                report.backups -= 1;
                continue;
            }
            Err(e) => {
                let object = match &e {
                    crate::Error::Corrupt { object, .. } => object.clone(),
                    _ => stanza.manifest_key(label)?.to_string(),
                };
                problems.add(&object, e.to_string(), Some(label));
                continue;
            }
        };
        // Paths that would steer a restore outside its destination are damage too; only the
        // links the engine restores through (postgres: `pg_tblspc/<oid>`) may have contents.
        let object = stanza.manifest_key(label)?.to_string();
        if let Err(e) = manifest::check_paths(&object, &entries, links_under) {
            problems.add(&object, e.to_string(), Some(label));
        }
        if let Err(e) = engine_check(&entries) {
            problems.add(&object, e.to_string(), Some(label));
        }
        // Every reference is looked up (a chunk named twice costs a second lookup of a
        // block just read, not a set of every chunk of the backup).
        for e in &entries {
            for c in e.content.chunks() {
                if let Some((_, loc)) = usable.get(&c.id) {
                    if let Err(why) = restore::check_len(c, &loc) {
                        problems.add(&object, why, Some(label));
                    }
                    continue;
                }
                if let Some(b) = bad_records.by_chunk.get(&c.id) {
                    problems.add(&b.segment, b.detail.clone(), Some(label));
                    continue;
                }
                match index.get(&c.id) {
                    None => {
                        let object = damaged_segments
                            .first()
                            .cloned()
                            .unwrap_or_else(|| format!("chunk {}", c.id));
                        problems.add(
                            &object,
                            format!(
                                "chunk {} (of {}) is in no intact index segment",
                                c.id,
                                e.display_path()
                            ),
                            Some(label),
                        );
                    }
                    Some((pack, _)) => match infos.get(&pack) {
                        None => {
                            let key = stanza.pack_key(&pack)?.to_string();
                            problems.add(&key, "pack is missing", Some(label));
                        }
                        Some(info) => {
                            let d = info.damage.clone().unwrap_or_else(|| {
                                format!(
                                    "chunk {} does not match the pack's trailer where the index places it",
                                    c.id
                                )
                            });
                            problems.add(&info.key, d, Some(label));
                        }
                    },
                }
            }
        }
    }
    report.problems = problems.0.into_values().collect();
    report.damage = damage;
    Ok(report)
}

/// Record what `report` found in the damage register, once the caller has added its own
/// problems (an engine's WAL checks), so the next backup stores unusable chunks again and
/// `info` can say the stanza is damaged. `partial` (verify --set) checked one backup's
/// chunks: it records every unusable record (all packs were read) but only raises the
/// problem count. verify needs only read access: a repository it cannot write to still gets
/// its report, and this says so.
pub async fn record(stanza: &Stanza, report: &mut VerifyReport, partial: bool) {
    let mut problems = report.problems.len() as u64;
    if partial {
        let before = stanza
            .damage_register()
            .await
            .ok()
            .flatten()
            .map_or(0, |r| r.problems);
        problems = problems.max(before);
    }
    report.register = match stanza.save_damage(&report.damage, problems).await {
        Ok(changed) => Register::Saved { changed },
        Err(e) => Register::NotSaved(e.to_string()),
    };
}
