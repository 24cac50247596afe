//! Garbage collection of packs (format.md, "Condemned packs and the deletion protocol"): a
//! pack that no listed backup needs is condemned first and deleted by a later run, once the
//! margin written with its condemnation has passed and it is still dead. Runs under the
//! stanza lock (`expire` holds it).

use crate::catalog::Catalog;
use crate::codec::{self, magic};
use crate::error::{Error, Result};
use crate::ids::{ChunkId, PackId};
use crate::index::Segment;
use crate::keys;
use crate::manifest::Content;
use crate::repository::Stanza;
use crate::storage::{Key, PutMode, StorageError};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

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
}

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
/// inherits its files). A manifest that cannot be read stops the collection: deleting on
/// incomplete knowledge could delete what it needs.
async fn live_chunks(stanza: &Stanza, catalog: &Catalog) -> Result<HashSet<ChunkId>> {
    let mut live = HashSet::new();
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
            if let Content::Chunks(chunks) = &e.content {
                live.extend(chunks.iter().map(|c| c.id));
            }
        }
    }
    Ok(live)
}

/// Collect the stanza's garbage against `catalog` (the backups that stay) at time `now`:
/// condemn dead packs (not before `now + margin` deleted), delete those whose time has come.
/// With `dry_run`, only report.
pub async fn collect(
    stanza: &Stanza,
    catalog: &Catalog,
    margin: i64,
    now: i64,
    dry_run: bool,
) -> Result<GcReport> {
    let store = stanza.store();
    let mut report = GcReport::default();
    let live = live_chunks(stanza, catalog).await?;

    // Every segment, intact: a damaged one hides which packs hold what.
    let mut segments: Vec<(Key, Segment)> = Vec::new();
    for meta in store.list(&stanza.index_prefix()?).await? {
        let b = store.get(&meta.key, None).await?;
        let seg = Segment::decode(meta.key.as_str(), &b).map_err(|e| {
            Error::Invalid(format!(
                "garbage collection stopped before deleting anything: {e}; run `cairn --stanza={} stanza-repair` first",
                stanza.name()
            ))
        })?;
        segments.push((meta.key, seg));
    }
    let mut pack_live: HashMap<PackId, bool> = HashMap::new();
    for (_, seg) in &segments {
        for (id, loc) in &seg.entries {
            if let Some(p) = seg.packs.get(loc.pack as usize) {
                *pack_live.entry(*p).or_default() |= live.contains(id);
            }
        }
    }
    let present: Vec<(PackId, u64)> = store
        .list(&stanza.pack_prefix()?)
        .await?
        .into_iter()
        .filter_map(|m| keys::parse_pack(&m.key).map(|id| (id, m.size)))
        .collect();
    let mut dead: Vec<(PackId, u64)> = Vec::new();
    for (id, size) in &present {
        let is_live = match pack_live.get(id) {
            Some(l) => *l,
            // No segment names it (an interrupted backup's, or one still being written):
            // its trailer says what it holds.
            None => match crate::repair::pack_chunks(stanza, id, *size).await {
                Ok(chunks) => chunks.iter().any(|c| live.contains(c)),
                Err(_) => {
                    report.unknown_packs += 1;
                    true
                }
            },
        };
        if is_live {
            report.live_packs += 1;
        } else {
            dead.push((*id, *size));
        }
    }

    let before = stanza.condemned_or_warn().await;
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
    let many = segments.len() > MAX_SEGMENTS;
    let touched: Vec<&Key> = segments
        .iter()
        .filter(|(_, s)| many || s.packs.iter().any(|p| gone.contains(p)))
        .map(|(k, _)| k)
        .collect();
    if !touched.is_empty() {
        let sources: Vec<&Segment> = segments
            .iter()
            .filter(|(k, _)| touched.contains(&k))
            .map(|(_, s)| s)
            .collect();
        let mut written = Vec::new();
        for seg in Segment::merged(&sources, |p, _| !gone.contains(p)) {
            written.push(stanza.put_index_segment(Arc::new(seg)).await?);
        }
        crate::failpoint::hit("gc-after-new-segments");
        for k in touched {
            if !written.contains(k) {
                store.delete(k).await?;
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
