//! A backup job: `begin` takes the stanza lock and decides type, parent and label; `copy`
//! reads what changed through the pipeline; `commit` writes index segment, manifest and
//! catalog record, in that order, so a backup interrupted anywhere is simply not listed.
//! Engines sit around it: the PostgreSQL engine starts the database's backup between
//! `begin` and `copy` and adds `backup_label` before `commit`.

use crate::catalog::BackupRecord;
use crate::chunker::ChunkPolicy;
use crate::error::{Error, Result};
use crate::ids::{BackupLabel, BackupType, ChunkId, PackId};
use crate::index::{Index, Location, Segment};
use crate::lock::Lock;
use crate::manifest::{Content, EntryKind, FileEntry, Manifest};
use crate::pack::PackEntry;
use crate::pages::PageProbe;
use crate::pipeline::{
    self, Opener, Outcome, PagePlan, PipelineConfig, Progress, ReadItem, VanishPolicy,
};
use crate::repository::Stanza;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// Default pack size: tens of MiB, so a PUT carries enough to amortise its cost.
pub const DEFAULT_PACK_TARGET: usize = 32 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct BackupOptions {
    pub kind: BackupType,
    pub process_max: usize,
    pub compress_level: i32,
    pub pack_target: usize,
    pub vanish: VanishPolicy,
    /// Read every file, even those whose size and mtime match the parent.
    pub delta: bool,
    pub command: String,
    /// `--annotation KEY=VALUE`: recorded as `annotation.<KEY>` meta entries.
    pub annotations: BTreeMap<String, String>,
}

/// One thing the engine wants in the backup.
pub struct SourceEntry {
    /// Path, kind, mode, owner, mtime, size as found; `content` is filled in by the job.
    pub entry: FileEntry,
    pub policy: ChunkPolicy,
    /// Where the bytes come from, as a noun phrase for messages (`source file /data/x`).
    pub origin: String,
    /// How to read a regular file's bytes; None for directories and symlinks.
    pub open: Option<Opener>,
    /// How to notice that the file changed while it was read, and read it again.
    pub watch: Option<pipeline::Watch>,
}

/// `FileEntry::meta` key set (to `true`) on a file that kept changing while it was read: its
/// bytes may mix old and new contents (see docs/format.md).
pub const CHANGED_DURING_BACKUP: &str = "changed-during-backup";

impl std::fmt::Debug for SourceEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SourceEntry({})", self.origin)
    }
}

#[derive(Debug)]
pub struct BackupJob {
    stanza: Stanza,
    lock: Option<Lock>,
    pub label: BackupLabel,
    pub kind: BackupType,
    pub start: i64,
    parent: Option<BackupRecord>,
    /// The parent backup's resolved entries by path.
    parent_files: HashMap<Vec<u8>, FileEntry>,
    index: Arc<Index>,
    opts: BackupOptions,
    entries: Vec<FileEntry>,
    packs: Vec<(crate::ids::PackId, Vec<PackEntry>)>,
    delta_bytes: u64,
    probe: Option<Arc<dyn PageProbe>>,
}

impl BackupJob {
    pub async fn begin(stanza: &Stanza, mut opts: BackupOptions) -> Result<BackupJob> {
        let lock = stanza.lock(&opts.command).await?;
        crate::failpoint::hit("backup-after-lock");
        match Self::prepare(stanza, &mut opts).await {
            Ok((label, start, parent, parent_files, index)) => Ok(BackupJob {
                stanza: stanza.clone(),
                lock: Some(lock),
                kind: opts.kind,
                label,
                start,
                parent,
                parent_files,
                index: Arc::new(index),
                opts,
                entries: Vec::new(),
                packs: Vec::new(),
                delta_bytes: 0,
                probe: None,
            }),
            Err(e) => {
                let _ = lock.release().await;
                Err(e)
            }
        }
    }

    #[allow(clippy::type_complexity)]
    async fn prepare(
        stanza: &Stanza,
        opts: &mut BackupOptions,
    ) -> Result<(
        BackupLabel,
        i64,
        Option<BackupRecord>,
        HashMap<Vec<u8>, FileEntry>,
        Index,
    )> {
        let catalog = stanza.catalog_for_write().await?.catalog;
        let parent = match opts.kind {
            BackupType::Full => None,
            BackupType::Diff => catalog.latest_full().cloned(),
            BackupType::Incr => catalog.latest().cloned(),
        };
        if parent.is_none() && opts.kind != BackupType::Full {
            tracing::warn!(
                "no prior backup exists, {} backup has been changed to full",
                opts.kind
            );
            opts.kind = BackupType::Full;
        }
        let mut start = crate::time::now_unix();
        if let Some(last) = catalog.latest() {
            // Labels sort in time order and must be unique: never reuse a second.
            start = start.max(last.start + 1);
        }
        let full = parent.as_ref().map(|p| p.label.full());
        // Nor a label whose manifest a backup interrupted before its catalog update left
        // behind (a full disk): the manifest is create-only, and the new backup would fail.
        let taken: std::collections::HashSet<BackupLabel> =
            stanza.manifest_labels().await?.into_iter().collect();
        let label = loop {
            let stamp = crate::time::label_stamp(start);
            let label = BackupLabel::new(&stamp, opts.kind, full.as_ref())?;
            if !taken.contains(&label) {
                break label;
            }
            start += 1;
        };
        let mut parent_files = HashMap::new();
        if let Some(p) = &parent {
            // A damaged parent chain fails this backup, but a full backup needs no parent.
            let hint = |e: Error| match e {
                Error::Corrupt { object, detail } => Error::Corrupt {
                    object,
                    detail: format!(
                        "{detail}; this {} backup is based on {}: take `--type full` to start a new chain without it",
                        opts.kind, p.label
                    ),
                },
                other => other,
            };
            for e in stanza.resolved(&catalog, &p.label).await.map_err(hint)? {
                parent_files.insert(e.path.clone(), e);
            }
        }
        let usable = stanza.usable_index().await?;
        let missing = usable.missing_packs;
        if missing > 0 {
            tracing::warn!(
                "{missing} pack(s) named by the index of stanza '{}' are missing: their chunks will be stored again, and backups that need them cannot be restored; run `cairn verify` to see which",
                stanza.name()
            );
        }
        if usable.damaged_records > 0 {
            tracing::warn!(
                "the last verify of stanza '{}' found {} damaged chunk(s) or pack(s): this backup stores that data again where it still has it",
                stanza.name(),
                usable.damaged_records
            );
        }
        let index = usable.index;
        Ok((label, start, parent, parent_files, index))
    }

    /// The backup this one is based on (None for a full).
    pub fn parent(&self) -> Option<&BackupRecord> {
        self.parent.as_ref()
    }

    /// How paged files (`ChunkPolicy::Pages { probe: true, .. }`) tell which pages may have
    /// changed since the parent: the engine knows, for the parent it was given.
    pub fn set_page_probe(&mut self, probe: Arc<dyn PageProbe>) {
        self.probe = Some(probe);
    }

    /// Whether `e` can be taken from the parent without reading it.
    fn unchanged(&self, e: &FileEntry) -> bool {
        let (Some(parent), false) = (&self.parent, self.opts.delta) else {
            return false;
        };
        // A file modified within a second of the parent's start may have changed again after
        // the parent read it, with the same mtime on a coarse clock: read it again.
        let trust_before_ns = (parent.start - 1) as i128 * 1_000_000_000;
        self.parent_files.get(&e.path).is_some_and(|p| {
            p.kind == EntryKind::File
                && p.size == e.size
                && p.mtime_ns == e.mtime_ns
                && (e.mtime_ns as i128) < trust_before_ns
                // Never inherit chunks whose pack is gone: read the file again instead.
                && p.content.is_data()
                && p.content.chunks().all(|c| self.index.contains(&c.id))
        })
    }

    /// Read and store `sources`. May be called more than once (the PostgreSQL engine adds the
    /// backup label after stopping the backup).
    pub async fn copy(
        &mut self,
        sources: Vec<SourceEntry>,
        progress: Arc<dyn Progress>,
    ) -> Result<()> {
        let mut items = Vec::new();
        let mut slots = Vec::new(); // entry index for each item
        let mut total = 0u64;
        for mut s in sources {
            match (s.entry.kind, s.open.take()) {
                (EntryKind::File, Some(open)) if !self.unchanged(&s.entry) => {
                    total += s.entry.size;
                    slots.push(self.entries.len());
                    let pages = match s.policy {
                        ChunkPolicy::Pages { page, probe } => Some(PagePlan {
                            page_size: page,
                            prior: match self.parent_files.get(&s.entry.path).map(|p| &p.content) {
                                Some(Content::Pages { page_size, units }) if *page_size == page => {
                                    units.clone()
                                }
                                _ => Vec::new(),
                            },
                            probe: self.probe.clone().filter(|_| probe),
                        }),
                        _ => None,
                    };
                    items.push(ReadItem {
                        policy: s.policy,
                        origin: s.origin,
                        open,
                        watch: s.watch.take(),
                        pages,
                    });
                    s.entry.content = Content::Chunks(Vec::new());
                }
                (EntryKind::File, _) => s.entry.content = Content::Inherit,
                _ => s.entry.content = Content::None,
            }
            self.entries.push(s.entry);
        }
        progress.set_total(total);
        let cfg = PipelineConfig {
            process_max: self.opts.process_max,
            compress_level: self.opts.compress_level,
            pack_target: self.opts.pack_target,
            vanish: self.opts.vanish,
        };
        let (store, stanza, index) = (
            self.stanza.store().clone(),
            self.stanza.clone(),
            self.index.clone(),
        );
        let rt = tokio::runtime::Handle::current();
        let progress2 = progress.clone();
        let out = tokio::task::spawn_blocking(move || {
            pipeline::run(
                &rt,
                store,
                &|id| stanza.pack_key(id),
                &index,
                items,
                cfg,
                progress2.as_ref(),
            )
        })
        .await
        .map_err(|e| Error::Invalid(format!("backup pipeline failed: {e}")))??;
        progress.finish();
        let mut vanished = HashSet::new();
        for (slot, outcome) in slots.into_iter().zip(out.outcomes) {
            match outcome {
                Outcome::Read {
                    content,
                    size,
                    changed,
                } => {
                    let e = &mut self.entries[slot];
                    e.size = size;
                    e.content = content;
                    if changed {
                        e.meta.insert(CHANGED_DURING_BACKUP.into(), "true".into());
                    }
                }
                Outcome::Vanished => {
                    vanished.insert(slot);
                }
            }
        }
        if !vanished.is_empty() {
            let mut i = 0;
            self.entries.retain(|_| {
                i += 1;
                !vanished.contains(&(i - 1))
            });
        }
        self.delta_bytes += out.bytes_read;
        self.packs.extend(out.packs);
        Ok(())
    }

    pub fn stanza(&self) -> &Stanza {
        &self.stanza
    }

    pub fn entries(&self) -> &[FileEntry] {
        &self.entries
    }

    /// Write index segment, manifest, catalog record (in that order), then unlock.
    pub async fn commit(mut self, meta: BTreeMap<String, String>) -> Result<BackupRecord> {
        let result = self.commit_inner(meta).await;
        if let Some(lock) = self.lock.take() {
            lock.release().await?;
        }
        result
    }

    async fn commit_inner(&mut self, mut meta: BTreeMap<String, String>) -> Result<BackupRecord> {
        crate::annotate::apply(&mut meta, &self.opts.annotations);
        meta.insert(
            crate::repository::MANIFEST_STANZA_KEY.to_string(),
            self.stanza.name().to_string(),
        );
        meta.insert(
            crate::repository::RECORD_ENGINE_KEY.to_string(),
            self.stanza.info.engine.clone(),
        );
        self.entries.sort_by(|a, b| a.path.cmp(&b.path));
        if let Some(w) = self.entries.windows(2).find(|w| w[0].path == w[1].path) {
            return Err(Error::Invalid(format!(
                "the backup lists '{}' twice",
                w[0].display_path()
            )));
        }
        // 1. index segment for the new chunks (packs are already durable).
        let mut seg = Segment::default();
        let mut new_stored: HashMap<ChunkId, u64> = HashMap::new();
        for (ord, (pack, entries)) in self.packs.iter().enumerate() {
            seg.packs.push(*pack);
            for e in entries {
                new_stored.insert(e.id, e.stored_len as u64);
                seg.entries.push((
                    e.id,
                    Location {
                        pack: ord as u32,
                        offset: e.offset as u32,
                        stored_len: e.stored_len,
                        raw_len: e.raw_len,
                    },
                ));
            }
        }
        seg.entries.sort_by_key(|a| a.0);
        seg.entries.dedup_by(|b, a| a.0 == b.0);
        if !seg.entries.is_empty() {
            self.stanza.put_index_segment(Arc::new(seg)).await?;
        }

        // 2. manifest, with sizes computed over the resolved backup.
        let mut size = 0u64;
        let mut all_chunks = HashSet::new();
        let mut chunk_count = 0u64;
        let mut file_count = 0u64;
        for e in &self.entries {
            if e.kind != EntryKind::File {
                continue;
            }
            file_count += 1;
            size += e.size;
            let content = match &e.content {
                Content::Inherit => self.parent_files.get(&e.path).map(|p| &p.content),
                other => Some(other),
            };
            for c in content.into_iter().flat_map(|c| c.chunks()) {
                chunk_count += 1;
                all_chunks.insert(c.id);
            }
        }
        let stored = |id: &ChunkId| {
            new_stored
                .get(id)
                .copied()
                .or_else(|| self.index.get(id).map(|(_, l)| l.stored_len as u64))
                .unwrap_or(0)
        };
        // Every pack this backup names: those it wrote, and those it reuses.
        let mut named: HashSet<PackId> = self.packs.iter().map(|(id, _)| *id).collect();
        for id in all_chunks.iter().filter(|id| !new_stored.contains_key(*id)) {
            if let Some((pack, _)) = self.index.get(id) {
                named.insert(pack);
            }
        }
        // One of them may be condemned: reused after an expire condemned it while this backup
        // ran (only when the stanza lock failed to keep them apart), or written again under
        // the name of a condemned pack (the same chunks make the same pack). Listing the
        // backup is safe while the pack's deletion is far enough ahead, once it is no longer
        // condemned (format.md, "Condemned packs").
        let condemned = self.stanza.condemned_or_warn().await;
        let hit: Vec<PackId> = named
            .iter()
            .filter(|p| condemned.contains_key(p))
            .copied()
            .collect();
        // A reused pack was not condemned when this backup read the index (backups never
        // reuse condemned packs), so its condemnation is an expire that ran meanwhile; one
        // this backup wrote has just been written again, whatever its list entry says.
        let soon = crate::time::now_unix() + crate::gc::REUSE_SLACK;
        let written: HashSet<PackId> = self.packs.iter().map(|(id, _)| *id).collect();
        if let Some(p) = hit.iter().find(|p| {
            !written.contains(p) && condemned.get(p).is_some_and(|c| c.delete_after <= soon)
        }) {
            return Err(Error::Invalid(format!(
                "pack {p}, which this backup reuses, is about to be deleted by an expire that ran while this backup did (the stanza lock did not keep them apart); the backup is not listed: run it again"
            )));
        }
        if !hit.is_empty() {
            if let Some(lock) = &self.lock {
                lock.confirm().await?;
            }
            self.stanza.uncondemn(&hit).await?;
        }
        // Packs this backup wrote again under a name the damage register lists hold intact
        // bytes now: their records are usable again.
        let rewritten: Vec<PackId> = self.packs.iter().map(|(id, _)| *id).collect();
        self.stanza.forget_damaged_packs(&rewritten).await?;
        let repo_size = all_chunks.iter().map(stored).sum();
        let repo_delta = new_stored.values().sum();
        let mut references = Vec::new();
        if let Some(p) = &self.parent {
            references.extend(p.references.iter().cloned());
            references.push(p.label.clone());
        }
        let record = BackupRecord {
            label: self.label.clone(),
            kind: self.kind,
            parent: self.parent.as_ref().map(|p| p.label.clone()),
            references,
            start: self.start,
            stop: crate::time::now_unix().max(self.start),
            size,
            delta: self.delta_bytes,
            repo_size,
            repo_delta,
            file_count,
            chunk_count,
            new_chunk_count: new_stored.len() as u64,
            meta,
        };
        let manifest = Manifest {
            record: record.clone(),
            entries: std::mem::take(&mut self.entries),
        };
        if let Some(lock) = &self.lock {
            lock.confirm().await?;
        }
        self.stanza.put_manifest(Arc::new(manifest)).await?;

        // 3. catalog: from here on the backup exists.
        if let Some(lock) = &self.lock {
            lock.confirm().await?;
        }
        self.list_in_catalog(&record).await?;
        // The backup exists; keeping the index compact is housekeeping that the next backup
        // does again if this one cannot.
        if let Err(e) = self.stanza.compact_index(self.lock.as_ref()).await {
            tracing::warn!("merging index segments failed: {e}; the next backup tries again");
        }
        Ok(record)
    }

    /// Append `record` to the catalog as its next generation (format.md, "Catalog"). When
    /// another process wrote a generation first, read it again and append again: its record
    /// stays, and so does this one. The backups this one needs must still be listed (an
    /// expire that removed them in between would leave this one unrestorable).
    async fn list_in_catalog(&self, record: &BackupRecord) -> Result<()> {
        let mut attempts = 0;
        loop {
            let at = self
                .stanza
                .catalog_for_write_by(Some(&record.label))
                .await?;
            let mut catalog = at.catalog;
            if let Some(listed) = catalog.get(&record.label) {
                // Its manifest was created create-only, so a listed record with this label is
                // this backup's: a generation it wrote that looked lost was built on after all.
                if attempts > 0 && listed == record {
                    return Ok(());
                }
                return Err(Error::Invalid(format!(
                    "backup {} is already listed in the catalog of stanza '{}'; another process took a backup with the same label",
                    record.label,
                    self.stanza.name()
                )));
            }
            if let Some(gone) = record.references.iter().find(|r| catalog.get(r).is_none()) {
                return Err(Error::Invalid(format!(
                    "backup {} needs backup {gone}, which another process removed from the catalog of stanza '{}' while this backup ran; it is not listed: take the backup again",
                    record.label,
                    self.stanza.name()
                )));
            }
            catalog.backups.push(record.clone());
            match self.stanza.commit_catalog(&catalog, at.generation).await {
                Ok(_) => return Ok(()),
                Err(Error::Conflict(why)) if attempts < 20 => {
                    tracing::warn!("{why}; appending this backup's record to the new catalog");
                    attempts += 1;
                    if let Some(lock) = &self.lock {
                        lock.confirm().await?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Give up: release the lock. What was written stays unreferenced until expire.
    pub async fn abort(mut self) -> Result<()> {
        if let Some(lock) = self.lock.take() {
            lock.release().await?;
        }
        Ok(())
    }
}
