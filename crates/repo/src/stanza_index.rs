//! A stanza's index as jobs read and write it (format.md, "Index segment"): every segment
//! merged, with the records a job may not use left out, and new segments written under their
//! content name.

use crate::error::{Error, Result};
use crate::ids::PackId;
use crate::index::{Index, Keep, Segment};
use crate::index_cache::{MergedFile, SegmentCache};
use crate::keys;
use crate::lock::Lock;
use crate::repository::Stanza;
use crate::segment_file::SegmentFile;
use crate::storage::{self, Key, ObjectMeta, PutMode, StorageError};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The index a job may use, and what was left out of it.
#[derive(Debug)]
pub struct UsableIndex {
    pub index: Index,
    /// Packs the index names that are not in the repository.
    pub missing_packs: usize,
    /// Records (or whole packs) the damage register names.
    pub damaged_records: usize,
}

/// Segments merged into one at most (each an open file while merged).
pub const MERGE_FAN_IN: usize = 64;

impl Stanza {
    /// The index as restore uses it: every segment, keeping only usable records (see
    /// `usable_index`), so a chunk that was stored again after its first copy was lost or
    /// damaged is found at its new place. Restore reads condemned packs too: a backup listed
    /// while they were condemned may need them, and they stay until a later expire finds them
    /// still dead.
    pub async fn index(&self) -> Result<Index> {
        Ok(self.merged_index(false).await?.index)
    }

    /// Every index segment, whether or not the packs it names are present.
    pub async fn index_all(&self) -> Result<Index> {
        let (cache, files) = self.segment_files().await?;
        Ok(Index::from_files(files, None, cache))
    }

    /// The index as a new backup may use it: only records whose pack is present (one listing
    /// of the packs per job) and that the damage register (format.md, "Damage register") does
    /// not name. A chunk of a lost pack, or one verify found damaged, is stored again rather
    /// than referenced.
    pub async fn usable_index(&self) -> Result<UsableIndex> {
        self.merged_index(true).await
    }

    async fn merged_index(&self, for_backup: bool) -> Result<UsableIndex> {
        // Each present pack with its size: a record whose chunk would lie beyond the end of
        // its pack (a truncated pack) is not usable either (defect of 2026-11-24: a backup
        // after a pack was cut short deduplicated against the missing part and said complete).
        let present: HashMap<PackId, u64> = self
            .store()
            .list(&self.pack_prefix()?)
            .await?
            .into_iter()
            .filter_map(|m| keys::parse_pack(&m.key).map(|p| (p, m.size)))
            .collect();
        let damage = match self.damage().await {
            Ok(d) => d,
            Err(e) => {
                // Advisory: every chunk read is still checked, so an unreadable register costs
                // deduplication against damaged data being noticed, not wrong bytes.
                tracing::warn!(
                    "{e}; chunks verify found damaged may be deduplicated against: run `cairn verify` to rewrite the damage register"
                );
                crate::damage::Damage::default()
            }
        };
        let damaged_records = damage.count();
        let damage = damage.lookup();
        // Packs garbage collection has condemned are treated as absent (format.md, "Condemned
        // packs"): a new backup stores their chunks again rather than reuse them.
        let condemned: HashSet<PackId> = if for_backup {
            self.condemned_or_warn().await.into_keys().collect()
        } else {
            Default::default()
        };
        let (cache, files) = self.segment_files().await?;
        let missing: HashSet<PackId> = files
            .iter()
            .flat_map(|f| f.packs().iter())
            .filter(|p| !present.contains_key(p))
            .copied()
            .collect();
        let keep: Keep = Arc::new(move |p, c, loc| {
            present
                .get(p)
                .is_some_and(|size| loc.offset as u64 + loc.stored_len as u64 <= *size)
                && !condemned.contains(p)
                && damage.usable(p, c)
        });
        Ok(UsableIndex {
            index: Index::from_files(files, Some(keep), cache),
            missing_packs: missing.len(),
            damaged_records,
        })
    }

    /// The stanza's index segments as listed: only objects named as segments
    /// (`keys::parse_segment`); anything else under `index/` is not one.
    pub async fn segment_metas(&self) -> Result<Vec<ObjectMeta>> {
        Ok(self
            .store()
            .list(&self.index_prefix()?)
            .await?
            .into_iter()
            .filter(|m| keys::parse_segment(&m.key).is_some())
            .collect())
    }

    /// Every index segment as a file of the local cache (format.md, "The local index cache"),
    /// fetched when not there yet; cached segments the repository no longer lists go.
    pub async fn segment_files(&self) -> Result<(Arc<SegmentCache>, Vec<SegmentFile>)> {
        use futures_util::{StreamExt, TryStreamExt};
        let cache = SegmentCache::open(&self.store().location(), self.name().as_str());
        let mut attempts = 0;
        loop {
            let metas = self.segment_metas().await?;
            cache.prune(&metas.iter().map(|m| m.key.name().to_string()).collect());
            let cache2 = &cache;
            let fetched: Result<Vec<Option<SegmentFile>>> = futures_util::stream::iter(metas)
                .map(|meta| async move {
                    self.unless_damaged(cache2.segment(self.store(), &meta).await)
                })
                .buffered(4)
                .try_collect()
                .await;
            match fetched {
                Ok(files) => return Ok((cache, files.into_iter().flatten().collect())),
                // A segment merged away between the listing and its fetch: what replaced it
                // was written first, so a new listing has it.
                Err(Error::Storage(StorageError::NotFound { .. })) if attempts < 3 => attempts += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// A segment read, or None when it is damaged: one damaged segment must not stop every
    /// backup and restore; its chunks count as absent (a backup stores them again) until
    /// stanza-repair indexes its packs again from their trailers.
    fn unless_damaged<T>(&self, read: Result<T>) -> Result<Option<T>> {
        match read {
            Ok(seg) => Ok(Some(seg)),
            Err(e @ Error::Corrupt { .. }) => {
                tracing::warn!(
                    "{e}; its chunks are treated as absent: run `cairn --stanza={} stanza-repair` to index their packs again",
                    self.name()
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Write an index segment, named by the hash of its bytes: encoded once to learn the name
    /// and again as it is uploaded, never whole in memory.
    /// Write an index segment under its content name (create-only); returns its key.
    pub async fn put_index_segment(&self, seg: Arc<Segment>) -> Result<Key> {
        let named = Arc::clone(&seg);
        let name = tokio::task::spawn_blocking(move || named.stream_name())
            .await
            .map_err(|e| Error::Invalid(format!("naming an index segment failed: {e}")))?
            .map_err(|e| Error::Invalid(format!("naming an index segment failed: {e}")))?;
        let k = keys::index_segment(self.name(), &name)?;
        let again = Arc::clone(&seg);
        let body = storage::pieces_from_writer(&k, move |w| seg.write_sealed(w));
        match self.store().put_stream(&k, body, PutMode::Create).await {
            Ok(()) => Ok(k),
            // Same name, so these are the bytes that belong there; the segment in place may
            // be damaged (then its records were skipped, and this write restores them).
            Err(StorageError::AlreadyExists { .. }) => {
                let body = storage::pieces_from_writer(&k, move |w| again.write_sealed(w));
                self.store()
                    .put_stream(&k, body, PutMode::Overwrite)
                    .await?;
                Ok(k)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Upload a segment file written by `SegmentCache::merge` (and its further layers) under
    /// their content names; returns their keys.
    pub async fn put_merged_segment(&self, merged: &MergedFile) -> Result<Vec<Key>> {
        let k = keys::index_segment(self.name(), &merged.name)?;
        let path = merged.path.clone();
        let body = storage::pieces_from_writer(&k, move |w| {
            std::io::copy(&mut std::fs::File::open(&path)?, w).map(|_| ())
        });
        match self.store().put_stream(&k, body, PutMode::Create).await {
            // The same name holds the same bytes (or damaged ones, which this replaces).
            Ok(()) => {}
            Err(StorageError::AlreadyExists { .. }) => {
                let path = merged.path.clone();
                let body = storage::pieces_from_writer(&k, move |w| {
                    std::io::copy(&mut std::fs::File::open(&path)?, w).map(|_| ())
                });
                self.store()
                    .put_stream(&k, body, PutMode::Overwrite)
                    .await?;
            }
            Err(e) => return Err(e.into()),
        }
        let mut written = vec![k];
        for layer in &merged.extra {
            written.push(self.put_index_segment(Arc::new(layer.clone())).await?);
        }
        Ok(written)
    }

    /// Keep the number of index segments small as backups add one each (format.md, "Index
    /// segment", compaction): segments fall in levels by size (level *n* holds from 1024·4^*n*
    /// records, level 0 anything smaller), and four segments of one level are merged into one
    /// of the next. A lookup probes every segment, so their number is what bounds its cost:
    /// at most three per level, about a dozen levels for 10^10 records; each record is
    /// rewritten once per level it climbs. Runs under the stanza lock (a backup's, after it is
    /// listed); the merged segment is written before the ones it replaces are deleted, so a
    /// reader sees every record at every moment. Returns how many segments it merged away.
    pub async fn compact_index(&self, lock: Option<&Lock>) -> Result<usize> {
        let mut merged_away = 0;
        loop {
            let metas = self.segment_metas().await?;
            let level = |m: &ObjectMeta| {
                let records = (m.size.saturating_sub(44) / 48).max(1024) / 1024;
                records.ilog2() / 2
            };
            let mut by_level: std::collections::BTreeMap<u32, Vec<&ObjectMeta>> =
                Default::default();
            for m in &metas {
                by_level.entry(level(m)).or_default().push(m);
            }
            let Some((_, mut group)) = by_level.into_iter().find(|(_, g)| g.len() >= 4) else {
                break;
            };
            // At most MERGE_FAN_IN at once (one open file each); the rest in the next round.
            group.truncate(MERGE_FAN_IN);
            let cache = SegmentCache::open(&self.store().location(), self.name().as_str());
            let mut inputs = Vec::new();
            for m in &group {
                match cache.segment(self.store(), m).await {
                    Ok(f) => inputs.push(f),
                    // A damaged segment stays for stanza-repair and verify; merge the others.
                    Err(Error::Corrupt { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            if inputs.len() < 2 {
                break;
            }
            let refs: Vec<&SegmentFile> = inputs.iter().collect();
            let Some(out) = cache.merge(&refs, &|_| true)? else {
                break;
            };
            let written = self.put_merged_segment(&out).await?;
            if let Some(lock) = lock {
                lock.confirm().await?;
            }
            let before = merged_away;
            for f in &inputs {
                let k = Key::new(f.name())?;
                if !written.contains(&k) {
                    self.store().delete(&k).await?;
                    merged_away += 1;
                }
            }
            if merged_away == before {
                break;
            }
        }
        Ok(merged_away)
    }
}
