//! `verify`: re-read every object of a stanza and check it, then check that every backup the
//! catalog lists can find every chunk it needs in an intact pack. Damage is reported per object
//! with the backups it affects; unreferenced objects left by an interrupted backup are counted
//! but are not damage.

use crate::catalog::Catalog;
use crate::damage::Damage;
use crate::error::Result;
use crate::ids::{BackupLabel, ChunkId, PackId};
use crate::index::{Index, Segment};
use crate::manifest::{self, Content};
use crate::pack;
use crate::repository::Stanza;
use crate::restore;
use crate::storage::Leftover;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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
        let p = self.0.entry(object.to_string()).or_insert_with(|| Problem {
            object: object.to_string(),
            detail: detail.into(),
            affects: BTreeSet::new(),
        });
        p.affects.extend(affects.cloned());
    }
}

/// What reading one pack found: its trailer entries, the chunks that are intact, and what is
/// wrong, if anything.
struct PackState {
    trailer: HashMap<ChunkId, pack::PackEntry>,
    good: HashSet<ChunkId>,
    damage: Option<String>,
    /// The pack could not be fetched (a storage error, not its bytes): its damage is not
    /// recorded in the damage register, since the next read may well succeed.
    unreadable: bool,
    /// The bytes of a pack whose trailer cannot be read, kept until its chunks have been
    /// checked where the index places them (`salvage`).
    salvage: Option<bytes::Bytes>,
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
    check_catalogs(stanza, &catalog, &mut problems).await?;

    report.leftovers = store
        .leftovers(&stanza.prefix()?)
        .await
        .map_err(|e| e.to_string());

    // Packs: read each whole and check header, name, trailer and every chunk.
    let pack_objects = store.list(&stanza.pack_prefix()?).await?;
    let limit = Arc::new(tokio::sync::Semaphore::new(process_max.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for meta in pack_objects {
        let permit = limit
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| crate::Error::Invalid("verify limiter closed".into()))?;
        let store = store.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let key = meta.key.to_string();
            let damaged = |d: String| PackState {
                trailer: HashMap::new(),
                good: HashSet::new(),
                damage: Some(d),
                unreadable: false,
                salvage: None,
            };
            let Some(id) = crate::keys::parse_pack(&meta.key) else {
                return (key, None, damaged("not named by a pack id".into()), 0);
            };
            let bytes = match store.get(&meta.key, None).await {
                Ok(b) => b,
                Err(e) => {
                    let mut state = damaged(e.to_string());
                    state.unreadable = true;
                    return (key, Some(id), state, 0);
                }
            };
            let len = bytes.len() as u64;
            let k2 = key.clone();
            let state = tokio::task::spawn_blocking(move || {
                let mut state = check_pack(&k2, &id, &bytes);
                if state.damage.is_some() && state.trailer.is_empty() {
                    state.salvage = Some(bytes);
                }
                state
            })
            .await
            .unwrap_or_else(|e| damaged(format!("check failed: {e}")));
            (key, Some(id), state, len)
        });
    }
    let mut packs: HashMap<PackId, (String, PackState)> = HashMap::new();
    while let Some(done) = tasks.join_next().await {
        let (key, id, state, len) =
            done.map_err(|e| crate::Error::Invalid(format!("verify task failed: {e}")))?;
        report.packs += 1;
        report.bytes += len;
        report.chunks += state.good.len();
        match id {
            Some(id) => {
                packs.insert(id, (key, state));
            }
            None => {
                if let Some(d) = &state.damage {
                    problems.add(&key, d.clone(), None);
                }
            }
        }
    }
    // What is unusable in packs that are present: chunks whose blob fails its checks, and
    // (below, once the index is read) packs whose trailer cannot be read. The damage register
    // records it.
    let mut damage = Damage::default();
    for (id, (_, state)) in &packs {
        if state.damage.is_none() || state.unreadable {
            continue;
        }
        for chunk in state.trailer.keys().filter(|c| !state.good.contains(*c)) {
            damage.chunk(*id, *chunk);
        }
    }

    // Index segments, each record checked against its pack's trailer: a record whose offset
    // or lengths disagree would pass every other check and then fail the restore.
    let mut segments = Vec::new();
    let mut damaged_segments = Vec::new();
    let mut bad_records: HashMap<ChunkId, (String, String)> = HashMap::new();
    for meta in store.list(&stanza.index_prefix()?).await? {
        let key = meta.key.to_string();
        match store
            .get(&meta.key, None)
            .await
            .map_err(crate::Error::from)
            .and_then(|b| Segment::decode(&key, &b))
        {
            Ok(seg) => {
                for (pack, id, detail) in check_segment(&seg, &packs) {
                    if let Some(pack) = pack {
                        damage.chunk(pack, id);
                    }
                    bad_records.insert(id, (key.clone(), detail));
                }
                segments.push(seg)
            }
            Err(e) => {
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
    salvage(&segments, &mut packs, &mut damage, &mut report);
    // A chunk is usable when some record places it, as its trailer says, in a present pack
    // where it is intact: a copy stored again after damage was found serves every backup.
    let whole_damaged: HashMap<PackId, Vec<ChunkId>> = damaged_pack_records(&segments, &damage);
    let usable = Index::from_segments_where(segments.iter().cloned(), |p, c| {
        damage.usable(p, c) && packs.get(p).is_some_and(|(_, s)| s.good.contains(c))
    });
    for (seg_key, (id, detail)) in bad_records.iter().map(|(id, (k, d))| (k, (id, d))) {
        if !usable.contains(id) {
            problems.add(seg_key, detail.clone(), None);
        }
    }
    // Damage to a pack is reported unless every chunk it should hold has an intact copy
    // elsewhere (then no backup needs its bytes; they are counted instead).
    for (id, (key, state)) in &packs {
        let Some(d) = &state.damage else { continue };
        let lacking: Option<Vec<&ChunkId>> = if state.unreadable {
            None // could not be read at all: nothing is known about its chunks
        } else if state.trailer.is_empty() {
            Some(
                whole_damaged
                    .get(id)
                    .map(|c| c.iter().collect())
                    .unwrap_or_default(),
            )
        } else {
            let bad: Vec<&ChunkId> = state
                .trailer
                .keys()
                .filter(|c| !state.good.contains(*c))
                .collect();
            // Every chunk intact but the name wrong: a pack stored under another's name.
            (!bad.is_empty()).then_some(bad)
        };
        match lacking {
            Some(chunks) if !chunks.is_empty() && chunks.iter().all(|c| usable.contains(c)) => {
                report.superseded_packs += 1;
            }
            _ => problems.add(key, d.clone(), None),
        }
    }
    let index = Index::from_segments(segments);
    let referenced_packs: HashSet<PackId> = index.packs().iter().copied().collect();
    report.unreferenced_packs = packs
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
    if !catalog_lost && !report.unlisted.is_empty() && !stanza.catalog_copy_in_sync().await? {
        let labels: Vec<String> = report.unlisted.iter().map(|l| l.to_string()).collect();
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
    for rec in &catalog.backups {
        if only.is_some_and(|l| l != &rec.label) {
            continue;
        }
        report.backups += 1;
        let label = &rec.label;
        let entries = match stanza.resolved(&catalog, label).await {
            Ok(e) => e,
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
        let mut checked = HashSet::new();
        for e in &entries {
            let Content::Chunks(chunks) = &e.content else {
                continue;
            };
            for c in chunks {
                if !checked.insert(c.id) {
                    continue;
                }
                if let Some((_, loc)) = usable.get(&c.id) {
                    if let Err(why) = restore::check_len(c, &loc) {
                        problems.add(&object, why, Some(label));
                    }
                    continue;
                }
                if let Some((segment, detail)) = bad_records.get(&c.id) {
                    problems.add(segment, detail.clone(), Some(label));
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
                    Some((pack, loc)) => match packs.get(&pack) {
                        None => {
                            let key = stanza.pack_key(&pack)?.to_string();
                            problems.add(&key, "pack is missing", Some(label));
                        }
                        Some((key, state)) if !state.good.contains(&c.id) => {
                            let d = state
                                .damage
                                .clone()
                                .unwrap_or_else(|| format!("chunk {} is damaged", c.id));
                            problems.add(key, d, Some(label));
                        }
                        Some(_) => {
                            if let Err(why) = restore::check_len(c, &loc) {
                                problems.add(&object, why, Some(label));
                            }
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

/// For each pack whose trailer cannot be read, the chunks the index places in it.
fn damaged_pack_records(segments: &[Segment], damage: &Damage) -> HashMap<PackId, Vec<ChunkId>> {
    let mut out: HashMap<PackId, Vec<ChunkId>> = HashMap::new();
    for seg in segments {
        for (id, loc) in &seg.entries {
            if let Some(p) = seg.packs.get(loc.pack as usize)
                && !damage.usable(p, id)
            {
                out.entry(*p).or_default().push(*id);
            }
        }
    }
    out
}

/// A pack whose trailer cannot be read still holds chunks that restore reaches through the
/// index: check each where the index places it (length, decompression, BLAKE3), so that a
/// damaged trailer alone does not make intact chunks unusable. A pack none of whose chunks
/// pass is unusable whole.
fn salvage(
    segments: &[Segment],
    packs: &mut HashMap<PackId, (String, PackState)>,
    damage: &mut Damage,
    report: &mut VerifyReport,
) {
    let mut failed: HashMap<PackId, Vec<ChunkId>> = HashMap::new();
    for seg in segments {
        for (id, loc) in &seg.entries {
            let Some(pack) = seg.packs.get(loc.pack as usize) else {
                continue;
            };
            let Some((key, state)) = packs.get_mut(pack) else {
                continue;
            };
            let Some(bytes) = &state.salvage else {
                continue;
            };
            let (start, end) = (loc.offset as u64, loc.offset as u64 + loc.stored_len as u64);
            let intact = bytes
                .get(start as usize..end as usize)
                .is_some_and(|stored| restore::open_chunk(key, id, loc, stored).is_ok());
            if intact {
                if state.good.insert(*id) {
                    report.chunks += 1;
                }
            } else {
                failed.entry(*pack).or_default().push(*id);
            }
        }
    }
    for (id, (_, state)) in packs.iter_mut() {
        if state.salvage.take().is_none() {
            continue;
        }
        if state.good.is_empty() {
            damage.whole_pack(*id);
        } else {
            let checked = state.good.len();
            for chunk in failed.remove(id).unwrap_or_default() {
                damage.chunk(*id, chunk);
            }
            if let Some(d) = &mut state.damage {
                d.push_str(&format!(
                    " ({checked} chunk(s) the index places in it are intact and stay usable)"
                ));
            }
        }
    }
}

/// Every record of `seg` against the trailer of the pack it names (packs that could not be
/// read are reported on their own): (chunk, what disagrees).
fn check_segment(
    seg: &Segment,
    packs: &HashMap<PackId, (String, PackState)>,
) -> Vec<(Option<PackId>, ChunkId, String)> {
    let mut bad = Vec::new();
    for (id, loc) in &seg.entries {
        let Some(pack_id) = seg.packs.get(loc.pack as usize) else {
            bad.push((None, *id, format!("the record of chunk {id} names no pack")));
            continue;
        };
        let pack = Some(*pack_id);
        let Some((pack_key, state)) = packs.get(pack_id) else {
            continue;
        };
        if state.damage.is_some() && state.trailer.is_empty() {
            continue;
        }
        match state.trailer.get(id) {
            None => bad.push((
                pack,
                *id,
                format!(
                    "the index places chunk {id} in {pack_key}, whose trailer does not list it"
                ),
            )),
            Some(e)
                if e.offset != loc.offset as u64
                    || e.stored_len != loc.stored_len
                    || e.raw_len != loc.raw_len =>
            {
                bad.push((
                    pack,
                    *id,
                    format!(
                        "the index places chunk {id} at offset {} ({} stored, {} plain bytes) of {pack_key}, but the pack's trailer says offset {} ({} stored, {} plain bytes)",
                        loc.offset, loc.stored_len, loc.raw_len, e.offset, e.stored_len, e.raw_len
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    bad
}

/// Check a pack: trailer first, then every chunk on its own (CRC, decompression, BLAKE3), so
/// one damaged chunk does not condemn its neighbours; then the pack's own name.
fn check_pack(object: &str, id: &PackId, bytes: &[u8]) -> PackState {
    let mut state = PackState {
        trailer: HashMap::new(),
        good: HashSet::new(),
        damage: None,
        unreadable: false,
        salvage: None,
    };
    let n = bytes.len();
    let entries = (|| {
        if n < pack::PACK_HEADER_LEN + pack::PACK_FOOTER_LEN || &bytes[..8] != pack::PACK_MAGIC {
            return Err(crate::Error::corrupt(
                object,
                "not a pack: bad magic or truncated",
            ));
        }
        let (at, _) = pack::parse_footer(object, &bytes[n - pack::PACK_FOOTER_LEN..], n as u64)?;
        pack::parse_trailer(object, &bytes[at as usize..], at)
    })();
    let entries = match entries {
        Ok(e) => e,
        Err(e) => {
            state.damage = Some(e.to_string());
            return state;
        }
    };
    state.trailer = entries.iter().map(|e| (e.id, *e)).collect();
    let mut bad = Vec::new();
    for e in &entries {
        let stored = &bytes[e.offset as usize..(e.offset + e.stored_len as u64) as usize];
        match pack::open_blob(object, e, stored) {
            Ok(_) => {
                state.good.insert(e.id);
            }
            Err(err) => bad.push(err.to_string()),
        }
    }
    if let Some(first) = bad.first() {
        state.damage = Some(format!("{} damaged chunk(s), first: {first}", bad.len()));
    } else if PackId::of(bytes) != *id {
        state.damage = Some(format!(
            "{object} is damaged: content hash does not match its name"
        ));
    }
    state
}

/// Each catalog object on its own (format.md, "Catalog"): commands fall back to an older
/// generation (or version 1's copy) quietly enough that losing one would otherwise go
/// unnoticed until the other goes too.
async fn check_catalogs(stanza: &Stanza, catalog: &Catalog, problems: &mut Problems) -> Result<()> {
    let repair = format!(
        "`cairn --stanza={} stanza-repair` writes it again",
        stanza.name()
    );
    let gens = stanza.catalog_generations().await?;
    if !gens.is_empty() {
        for (i, (generation, key)) in gens.iter().enumerate() {
            let what = if i == 0 {
                "the newest catalog generation"
            } else {
                "an older catalog generation, kept to fall back to"
            };
            let bytes = match stanza.store().get(key, None).await {
                Ok(b) => b,
                Err(crate::storage::StorageError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            match Catalog::decode_versioned(key.as_str(), &bytes) {
                _ if *generation > crate::catalog::MAX_PLAUSIBLE_GENERATION => problems.add(
                    key.as_str(),
                    format!("{what} has a generation cairn never reaches, so it was not written by cairn and blocks every catalog write; {repair} (it removes it)"),
                    None,
                ),
                Ok((_, Some(g))) if g == *generation => {}
                Ok(_) => problems.add(
                    key.as_str(),
                    format!("{what} holds another generation than its name says; {repair}"),
                    None,
                ),
                Err(e) => problems.add(key.as_str(), format!("{what}: {e}; {repair}"), None),
            }
        }
        let key = stanza.catalog_key()?;
        match stanza.store().get(&key, None).await {
            Ok(b) => match Catalog::decode_versioned(key.as_str(), &b) {
                Ok((_, Some(m))) if m > gens[0].0 => problems.add(
                    key.as_str(),
                    format!(
                        "the catalog's copy is generation {m}, newer than any in {}: the newest generation is missing; {repair}",
                        stanza.catalog_generations_prefix()?
                    ),
                    None,
                ),
                Ok((_, Some(_))) => {}
                Ok((_, None)) => problems.add(
                    key.as_str(),
                    format!("the catalog's copy is a version-1 catalog; {repair}"),
                    None,
                ),
                Err(e) => problems.add(key.as_str(), format!("the catalog's copy: {e}; {repair}"), None),
            },
            Err(crate::storage::StorageError::NotFound { .. }) => problems.add(
                key.as_str(),
                format!("the catalog's copy is missing; {repair}"),
                None,
            ),
            Err(e) => return Err(e.into()),
        }
        return Ok(());
    }
    for (key, what) in [
        (stanza.catalog_key()?, "the catalog"),
        (stanza.catalog_copy_key()?, "the catalog's copy"),
    ] {
        match stanza.read_catalog(&key).await {
            Ok(Some(_)) => {}
            Ok(None) if !catalog.backups.is_empty() => {
                problems.add(key.as_str(), format!("{what} is missing; {repair}"), None)
            }
            Ok(None) => {}
            Err(e) => problems.add(key.as_str(), format!("{e}; {repair}"), None),
        }
    }
    Ok(())
}
