//! Build a synthetic repository for the scale benchmark (`bench/scale.sh`): one stream stanza
//! `main` with `--backups` full backups holding `--chunks` distinct 32-byte chunks between
//! them (each backup its own share), in real packs with real trailers, one index segment and
//! one manifest per backup, and the catalog. Every object is what cairn itself writes, so
//! `cairn info`, `backup`, `expire` and `restore` run on it unchanged.
//!
//! cargo run --release -p cairn-repo --example synth_repo -- DIR CHUNKS BACKUPS

use cairn_repo::catalog::{BackupRecord, Catalog};
use cairn_repo::ids::{BackupLabel, BackupType, ChunkId, StanzaName};
use cairn_repo::index::Segment;
use cairn_repo::manifest::{ChunkRef, Content, EntryKind, FileEntry, Manifest};
use cairn_repo::pack::{PackBuilder, SealedChunk};
use cairn_repo::repository::{Repository, StanzaInfo};
use cairn_repo::storage::local::LocalStorage;
use cairn_repo::storage::{PutMode, Storage};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Chunks per pack (about 7 MiB of blobs and trailer).
const PACK_CHUNKS: usize = 120_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(chunks), Some(backups)) = (args.get(1), args.get(2), args.get(3)) else {
        return Err("usage: synth_repo DIR CHUNKS BACKUPS".into());
    };
    let (chunks, backups): (u64, u64) = (chunks.parse()?, backups.parse()?);
    std::fs::create_dir_all(dir)?;
    let store: Arc<dyn Storage> = Arc::new(LocalStorage::new(dir)?);
    let repo = Repository::open_or_init(store.clone()).await?;
    let stanza = repo
        .create_stanza(StanzaInfo {
            name: StanzaName::parse("main")?,
            engine: "stream".into(),
            created: 1_700_000_000,
            meta: BTreeMap::new(),
        })
        .await?;
    let per_backup = chunks.div_ceil(backups.max(1));
    let mut catalog = Catalog::default();
    let mut next = 0u64;
    for b in 0..backups {
        let start = 1_700_000_000 + b as i64 * 60;
        let label = BackupLabel::new(
            &cairn_repo::time::label_stamp(start),
            BackupType::Full,
            None,
        )?;
        let n = per_backup.min(chunks - next.min(chunks));
        let mut refs = Vec::with_capacity(n as usize);
        let mut seg = Segment::default();
        let mut pack = PackBuilder::new();
        let mut in_pack: Vec<ChunkId> = Vec::new();
        let flush = |pack: PackBuilder, ids: &mut Vec<ChunkId>, seg: &mut Segment| {
            let (id, bytes, entries) = pack.finish();
            seg.add_pack(id, entries);
            ids.clear();
            (id, bytes)
        };
        let mut written = Vec::new();
        for _ in 0..n {
            let mut plain = [0u8; 32];
            plain[..8].copy_from_slice(&next.to_le_bytes());
            plain[8..16].copy_from_slice(&(next.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes());
            next += 1;
            let id = ChunkId::of(&plain);
            pack.add(&SealedChunk::seal(id, &plain, 1));
            in_pack.push(id);
            refs.push(ChunkRef { id, len: 32 });
            if in_pack.len() == PACK_CHUNKS {
                let full = std::mem::take(&mut pack);
                written.push(flush(full, &mut in_pack, &mut seg));
            }
        }
        if !in_pack.is_empty() {
            let last = std::mem::take(&mut pack);
            written.push(flush(last, &mut in_pack, &mut seg));
        }
        for (id, bytes) in written {
            store
                .put(&stanza.pack_key(&id)?, bytes.into(), PutMode::Create)
                .await?;
        }
        seg.entries.sort_by_key(|e| e.0);
        stanza.put_index_segment(Arc::new(seg)).await?;
        let size = n * 32;
        let record = BackupRecord {
            label: label.clone(),
            kind: BackupType::Full,
            parent: None,
            references: vec![],
            start,
            stop: start + 30,
            size,
            delta: size,
            repo_size: size,
            repo_delta: size,
            file_count: 1,
            chunk_count: n,
            new_chunk_count: n,
            meta: BTreeMap::from([
                ("stanza".to_string(), "main".to_string()),
                ("engine".to_string(), "stream".to_string()),
            ]),
        };
        let root = FileEntry {
            path: vec![],
            kind: EntryKind::Dir,
            mode: 0o700,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            size: 0,
            link_target: None,
            content: Content::None,
            meta: BTreeMap::new(),
        };
        let stream = FileEntry {
            path: b"stream".to_vec(),
            kind: EntryKind::File,
            mode: 0o600,
            size,
            content: Content::Chunks(refs),
            ..root.clone()
        };
        stanza
            .put_manifest(Arc::new(Manifest {
                record: record.clone(),
                entries: vec![root, stream],
            }))
            .await?;
        catalog.backups.push(record);
        if b % 100 == 99 {
            eprintln!("{} backups, {next} chunks", b + 1);
        }
    }
    stanza.save_catalog(&catalog).await?;
    // As a repository looks after its backups merged segments all along (format.md, "Index
    // segment", compaction).
    let merged = stanza.compact_index(None).await?;
    eprintln!("{backups} backups, {next} chunks in {dir}; {merged} index segments merged away");
    Ok(())
}
