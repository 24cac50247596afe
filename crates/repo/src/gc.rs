//! Garbage collection of packs (format.md, "Condemned packs and the deletion protocol"): a
//! pack that no listed backup needs is condemned first and deleted by a later run, once the
//! margin written with its condemnation has passed and it is still dead. Runs under the
//! stanza lock (`expire` holds it).

use crate::catalog::Catalog;
use crate::codec::{self, magic};
use crate::error::{Error, Result};
use crate::external_sort::{IdSorter, SortedIds};
use crate::ids::{ChunkId, PackId};
use crate::index::Location;
use crate::index_cache::SegmentCache;
use crate::keys;
use crate::repository::Stanza;
use crate::segment_file::{Merged, SegmentFile};
use crate::storage::{Key, PutMode, StorageError};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

/// How long before its deletion a backup refuses to rely on a condemned pack it reuses.
pub const REUSE_SLACK: i64 = 600;

/// Above this many index segments (one per backup), a collection merges them all into one
/// (or a few), so that opening the index does not cost one read per backup ever taken.
pub const MAX_SEGMENTS: usize = 16;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CondemnedList {
    pub packs: Vec<CondemnedPack>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CondemnedPack {
    pub pack: PackId,
    pub since: i64,
    pub delete_after: i64,
}

impl CondemnedList {
    pub fn encode(&self) -> Vec<u8> {
        codec::seal(magic::CONDEMNED, self, true)
    }

    pub fn decode(object: &str, bytes: &[u8]) -> Result<CondemnedList> {
        codec::open(object, magic::CONDEMNED, bytes)
    }

    fn by_pack(&self) -> BTreeMap<PackId, CondemnedPack> {
        self.packs.iter().map(|c| (c.pack, *c)).collect()
    }
}

/// What a collection found and did.
#[derive(Debug, Default)]
pub struct GcReport {
    pub live_packs: usize,
    /// Packs condemned by this run.
    pub condemned: usize,
    /// Packs that stay condemned, waiting for their margin.
    pub waiting: usize,
    pub deleted_packs: usize,
    pub deleted_bytes: u64,
    /// Bytes of every condemned pack still present (what later runs will free).
    pub waiting_bytes: u64,
    pub merged_segments: usize,
    /// Packs whose chunks could not be learned (no intact segment names them and their
    /// trailer cannot be read): kept, for verify and stanza-repair to deal with.
    pub unknown_packs: usize,
    /// Packs mostly garbage whose needed chunks were copied into new packs (then condemned).
    pub repacked: usize,
    /// Stored bytes copied by repacking, and the new packs they went into.
    pub repacked_bytes: u64,
    pub new_packs: usize,
}

/// How a collection runs.
#[derive(Clone, Copy, Debug)]
pub struct GcOptions {
    /// Seconds a condemned pack waits before it is deleted.
    pub margin: i64,
    /// A pack at least this many percent garbage (stored bytes no kept backup needs) is
    /// rewritten; 100 turns repacking off.
    pub repack_garbage_pct: u8,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            margin: 3600,
            repack_garbage_pct: DEFAULT_REPACK_GARBAGE_PCT,
        }
    }
}

/// A pack is rewritten only when that frees at least this many stored bytes.
pub const MIN_REPACK_GAIN: u64 = 1 << 20;

/// The default of `--repack-threshold`: packs at least 80% garbage are rewritten.
pub const DEFAULT_REPACK_GARBAGE_PCT: u8 = 80;

impl Stanza {
    pub fn condemned_key(&self) -> Result<Key> {
        keys::condemned(self.name())
    }

    /// The condemned packs (empty when none is recorded).
    pub async fn condemned(&self) -> Result<BTreeMap<PackId, CondemnedPack>> {
        let k = self.condemned_key()?;
        match self.store().get(&k, None).await {
            Ok(b) => Ok(CondemnedList::decode(k.as_str(), &b)?.by_pack()),
            Err(StorageError::NotFound { .. }) => Ok(BTreeMap::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// The condemned packs, or none with a warning when the list cannot be read. Safe for
    /// both sides: a deleting expire writes the list before it deletes, and one that finds
    /// it unreadable starts it again with fresh margins.
    pub async fn condemned_or_warn(&self) -> BTreeMap<PackId, CondemnedPack> {
        match self.condemned().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(
                    "{e}; taking no pack as condemned (the next expire writes the list again, with fresh margins)"
                );
                BTreeMap::new()
            }
        }
    }

    /// Take `packs` off the condemned list (a backup about to list itself names them).
    pub async fn uncondemn(&self, packs: &[PackId]) -> Result<()> {
        let mut list = self.condemned_or_warn().await;
        let before = list.len();
        for p in packs {
            list.remove(p);
        }
        if list.len() != before {
            self.save_condemned(&list).await?;
        }
        Ok(())
    }

    async fn save_condemned(&self, packs: &BTreeMap<PackId, CondemnedPack>) -> Result<()> {
        let k = self.condemned_key()?;
        if packs.is_empty() {
            return match self.store().delete(&k).await {
                Ok(()) | Err(StorageError::NotFound { .. }) => Ok(()),
                Err(e) => Err(e.into()),
            };
        }
        let list = CondemnedList {
            packs: packs.values().copied().collect(),
        };
        self.store()
            .put(&k, Bytes::from(list.encode()), PutMode::Overwrite)
            .await?;
        Ok(())
    }
}

/// Every chunk named by the manifest of a listed backup or of a backup one depends on (its
/// whole chain: a listed backup's parent may be unlisted after a repair, and the child still
/// inherits its files), as a sorted stream of distinct ids built in bounded memory. A
/// manifest that cannot be read stops the collection: deleting on incomplete knowledge could
/// delete what it needs.
async fn live_chunks(stanza: &Stanza, catalog: &Catalog) -> Result<SortedIds> {
    let mut live = IdSorter::new(crate::external_sort::RUN_IDS);
    let labels: std::collections::BTreeSet<&crate::ids::BackupLabel> = catalog
        .backups
        .iter()
        .flat_map(|b| b.references.iter().chain(std::iter::once(&b.label)))
        .collect();
    for label in labels {
        let m = stanza.manifest(label).await.map_err(|e| {
            Error::Invalid(format!(
                "garbage collection stopped before deleting anything: {e} (run `cairn verify`; until the manifest of {label} can be read, nothing it may need is deleted)"
            ))
        })?;
        for e in &m.entries {
            for c in e.content.chunks() {
                live.push(c.id)
                    .map_err(io("sorting the chunks kept backups need"))?;
            }
        }
    }
    live.finish()
        .map_err(io("sorting the chunks kept backups need"))
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |source| Error::Io {
        what: what.to_string(),
        source,
    }
}

/// What the mark phase found.
#[derive(Debug, Default)]
struct Marked {
    /// Packs holding the copy of some live chunk that restores use.
    live: HashSet<PackId>,
    /// Stored bytes of those copies, per pack.
    live_bytes: HashMap<PackId, u64>,
    /// Stored bytes of every chunk the index places in each pack.
    all_bytes: HashMap<PackId, u64>,
    /// Live chunks whose copy is in a pack of `copy_from`: what a repack copies.
    to_copy: Vec<(ChunkId, PackId, Location)>,
}

/// Which packs a kept backup needs: the index's records and the live ids walked side by side
/// in chunk id order (both sorted), so neither is ever held whole. Of the copies of a live
/// chunk (a chunk stored twice, or copied by a repack), one is needed: the first, by pack id,
/// in a present pack outside `avoid` (condemned packs and repack candidates), or else the
/// first present one. Chunks no present indexed pack holds are needed from every pack that
/// `unindexed` (chunks of packs no segment names, from their trailers) says holds them.
fn mark(
    files: &[SegmentFile],
    mut live: SortedIds,
    unindexed: &HashMap<ChunkId, Vec<PackId>>,
    present: &HashSet<PackId>,
    avoid: &HashSet<PackId>,
    copy_from: &HashSet<PackId>,
    damaged: &crate::damage::DamageLookup,
) -> Result<Marked> {
    let mut out = Marked::default();
    let refs: Vec<&SegmentFile> = files.iter().collect();
    let mut next_live = live
        .next()
        .transpose()
        .map_err(io("reading live chunk ids"))?;
    let orphan = |id: &ChunkId, out: &mut Marked| {
        for p in unindexed.get(id).into_iter().flatten() {
            out.live.insert(*p);
        }
    };
    let mut records = Merged::new(&refs)
        .map_err(io("reading the index cache"))?
        .peekable();
    while let Some(r) = records.next() {
        let (id, pack, loc) = r.map_err(io("reading the index cache"))?;
        let mut group = vec![(pack, loc)];
        while let Some(Ok((next, _, _))) = records.peek()
            && *next == id
        {
            if let Some(Ok((_, p, l))) = records.next()
                && group
                    .last()
                    .is_none_or(|(gp, gl)| (*gp, gl.offset) != (p, l.offset))
            {
                group.push((p, l));
            }
        }
        for (p, l) in &group {
            *out.all_bytes.entry(*p).or_default() += l.stored_len as u64;
        }
        while let Some(l) = next_live.filter(|l| *l < id) {
            orphan(&l, &mut out);
            next_live = live
                .next()
                .transpose()
                .map_err(io("reading live chunk ids"))?;
        }
        if next_live != Some(id) {
            continue;
        }
        // This live id is placed by the index: it is not an orphan.
        next_live = live
            .next()
            .transpose()
            .map_err(io("reading live chunk ids"))?;
        // A copy the damage register names is the last resort: verify found it unusable
        // (or its record lying about its pack), so the pack holding a good copy must stay
        // (defect of 2026-11-24: a crafted segment placing a pack's chunks in another made
        // expire delete the real pack even after verify had reported the lie).
        let usable = |p: &PackId| present.contains(p) && damaged.usable(p, &id);
        let chosen = group
            .iter()
            .find(|(p, _)| usable(p) && !avoid.contains(p))
            .or_else(|| group.iter().find(|(p, _)| usable(p)))
            .or_else(|| group.iter().find(|(p, _)| present.contains(p)));
        match chosen {
            Some((p, l)) => {
                if !usable(p) {
                    // Only unusable copies indexed: a pack no segment names may hold a good
                    // one (its records replaced by a lying segment).
                    orphan(&id, &mut out);
                }
                out.live.insert(*p);
                *out.live_bytes.entry(*p).or_default() += l.stored_len as u64;
                if copy_from.contains(p) {
                    out.to_copy.push((id, *p, *l));
                }
            }
            None => orphan(&id, &mut out),
        }
    }
    while let Some(l) = next_live {
        orphan(&l, &mut out);
        next_live = live
            .next()
            .transpose()
            .map_err(io("reading live chunk ids"))?;
    }
    Ok(out)
}

/// Collect the stanza's garbage against `catalog` (the backups that stay) at time `now`:
/// rewrite packs that are mostly garbage, condemn dead packs (not deleted before `now +
/// margin`), delete those whose time has come. With `dry_run`, only report.
pub async fn collect(
    stanza: &Stanza,
    catalog: &Catalog,
    opts: GcOptions,
    now: i64,
    dry_run: bool,
) -> Result<GcReport> {
    let margin = opts.margin;
    let store = stanza.store();
    let mut report = GcReport::default();

    // Every segment, intact: a damaged one hides which packs hold what.
    let cache = SegmentCache::open(&store.location(), stanza.name().as_str());
    // Only objects named as segments (a stray `index/README` stopped garbage collection
    // until stanza-repair: defect of 2026-11-24).
    let metas = stanza.segment_metas().await?;
    let mut files: Vec<SegmentFile> = Vec::new();
    for meta in &metas {
        let f = cache.segment(store, meta).await.map_err(|e| {
            Error::Invalid(format!(
                "garbage collection stopped before deleting anything: {e}; run `cairn --stanza={} stanza-repair` first",
                stanza.name()
            ))
        })?;
        files.push(f);
    }
    let indexed: HashSet<PackId> = files
        .iter()
        .flat_map(|f| f.packs().iter().copied())
        .collect();
    let present: Vec<(PackId, u64)> = store
        .list(&stanza.pack_prefix()?)
        .await?
        .into_iter()
        .filter_map(|m| keys::parse_pack(&m.key).map(|id| (id, m.size)))
        .collect();
    let present_set: HashSet<PackId> = present.iter().map(|p| p.0).collect();
    // Packs no segment names (an interrupted backup's, or one still being written): their
    // trailers say what they hold. One whose trailer cannot be read is kept.
    let mut unindexed: HashMap<ChunkId, Vec<PackId>> = HashMap::new();
    let mut unknown: HashSet<PackId> = HashSet::new();
    for (id, size) in &present {
        if indexed.contains(id) {
            continue;
        }
        match crate::repair::pack_chunks(stanza, id, *size).await {
            Ok(chunks) => {
                for c in chunks {
                    unindexed.entry(c).or_default().push(*id);
                }
            }
            Err(_) => {
                unknown.insert(*id);
            }
        }
    }
    report.unknown_packs = unknown.len();
    let damaged = match stanza.damage().await {
        Ok(d) => d.lookup(),
        Err(e) => {
            tracing::warn!("{e}; choosing the copies to keep without it");
            crate::damage::Damage::default().lookup()
        }
    };
    let before = stanza.condemned_or_warn().await;
    let condemned_before: HashSet<PackId> = before.keys().copied().collect();
    let live = live_chunks(stanza, catalog).await?;
    let none = HashSet::new();
    let mut marked = mark(
        &files,
        live.again().map_err(io("reading live chunk ids"))?,
        &unindexed,
        &present_set,
        &condemned_before,
        &none,
        &damaged,
    )?;
    // Packs mostly garbage: their needed chunks are copied, then they go like dead ones.
    let keep_pct = 100u64.saturating_sub(opts.repack_garbage_pct as u64);
    // Packs this run writes (a repack's): needed whatever the listing above made of them.
    let mut written: HashSet<PackId> = HashSet::new();
    let mut candidates: HashSet<PackId> = if opts.repack_garbage_pct >= 100 {
        HashSet::new()
    } else {
        present
            .iter()
            .filter(|(id, _)| {
                // By the bytes of the chunks it holds (not its size: a tiny pack is mostly
                // header and trailer), and only where enough would be freed to be worth it.
                let all = marked.all_bytes.get(id).copied().unwrap_or(0);
                let live = marked.live_bytes.get(id).copied().unwrap_or(0);
                marked.live.contains(id)
                    && !condemned_before.contains(id)
                    && indexed.contains(id)
                    && live * 100 <= all * keep_pct
                    && all - live >= MIN_REPACK_GAIN
            })
            .map(|(id, _)| *id)
            .collect()
    };
    if !candidates.is_empty() {
        let avoid: HashSet<PackId> = condemned_before.union(&candidates).copied().collect();
        marked = mark(
            &files,
            live.again().map_err(io("reading live chunk ids"))?,
            &unindexed,
            &present_set,
            &avoid,
            &candidates,
            &damaged,
        )?;
        report.repacked = candidates.len();
        report.repacked_bytes = marked.to_copy.iter().map(|c| c.2.stored_len as u64).sum();
        if !dry_run && !marked.to_copy.is_empty() {
            match crate::repack::copy_chunks(
                stanza,
                std::mem::take(&mut marked.to_copy),
                &candidates,
            )
            .await
            {
                Ok(copied) => {
                    report.new_packs = copied.new_packs;
                    written.extend(copied.written);
                }
                Err(e) => {
                    // Kept whole this time: the packs the copy did not replace stay needed
                    // (this mark chose them where no other copy exists).
                    tracing::warn!("repacking skipped: {e}");
                    candidates.clear();
                    report.repacked = 0;
                    report.repacked_bytes = 0;
                }
            }
        }
        crate::failpoint::hit("gc-after-repack");
    }
    // The packs a repack just wrote hold needed copies: counted here, never dead below (one
    // may be in the listing already, left unindexed by an interrupted run: defect of
    // 2026-11-24, deleted at once with --gc-margin 0 although just indexed).
    report.live_packs += report.new_packs;
    let mut dead: Vec<(PackId, u64)> = Vec::new();
    for (id, size) in present.iter().filter(|(id, _)| !written.contains(id)) {
        // A candidate's needed chunks are in new packs now; a pack whose chunks could not be
        // learned is kept, for verify and stanza-repair.
        let needed = (marked.live.contains(id) && !candidates.contains(id)) || unknown.contains(id);
        tracing::debug!(
            "pack {id}: needed {needed} (chosen copy of a live chunk: {}, repacked: {}, trailer unreadable: {})",
            marked.live.contains(id),
            candidates.contains(id),
            unknown.contains(id)
        );
        if needed {
            report.live_packs += 1;
        } else {
            dead.push((*id, *size));
        }
    }

    let mut condemned: BTreeMap<PackId, CondemnedPack> = BTreeMap::new();
    let mut due: Vec<(PackId, u64)> = Vec::new();
    for (id, size) in &dead {
        let c = before.get(id).copied().unwrap_or_else(|| {
            report.condemned += 1;
            CondemnedPack {
                pack: *id,
                since: now,
                delete_after: now + margin,
            }
        });
        condemned.insert(*id, c);
        if c.delete_after <= now {
            due.push((*id, *size));
        } else {
            report.waiting += 1;
            report.waiting_bytes += size;
        }
    }
    if dry_run {
        report.deleted_packs = due.len();
        report.deleted_bytes = due.iter().map(|(_, s)| s).sum();
        return Ok(report);
    }
    // 1. The condemnations, durable before anything is deleted.
    stanza.save_condemned(&condemned).await?;
    crate::failpoint::hit("gc-after-condemn");
    // 2. One segment with every record of the packs that stay, then the segments it replaces:
    //    those naming a pack that goes, or all of them when there are many.
    let gone: HashSet<PackId> = due.iter().map(|(id, _)| *id).collect();
    let many = files.len() > MAX_SEGMENTS;
    let touched: Vec<&SegmentFile> = files
        .iter()
        .filter(|f| many || f.packs().iter().any(|p| gone.contains(p)))
        .collect();
    let groups: Vec<&[&SegmentFile]> = touched.chunks(crate::stanza_index::MERGE_FAN_IN).collect();
    for (i, group) in groups.iter().enumerate() {
        let mut written = Vec::new();
        if let Some(out) = cache.merge(group, &|p| !gone.contains(p))? {
            written = stanza.put_merged_segment(&out).await?;
        }
        if i == 0 {
            crate::failpoint::hit("gc-after-new-segments");
        }
        for f in group.iter() {
            let k = Key::new(f.name())?;
            if !written.contains(&k) {
                store.delete(&k).await?;
                report.merged_segments += 1;
            }
        }
    }
    if due.is_empty() {
        return Ok(report);
    }
    crate::failpoint::hit("gc-after-old-segments");
    // 3. The packs.
    let keys: Vec<Key> = due
        .iter()
        .map(|(id, _)| stanza.pack_key(id))
        .collect::<Result<_>>()?;
    if let Some((first, rest)) = keys.split_first() {
        store.delete(first).await?;
        crate::failpoint::hit("gc-mid-packs");
        store.delete_many(rest).await?;
    }
    report.deleted_packs = due.len();
    report.deleted_bytes = due.iter().map(|(_, s)| s).sum();
    crate::failpoint::hit("gc-after-packs");
    // 4. The list, without them.
    for id in &gone {
        condemned.remove(id);
    }
    stanza.save_condemned(&condemned).await?;
    Ok(report)
}
