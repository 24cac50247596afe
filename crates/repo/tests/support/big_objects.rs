//! A manifest and an index segment larger than `codec::SEAL_KEEP`, written through a
//! repository on `store` (so encoded as they are uploaded, in two passes) and read back whole.

use cairn_repo::catalog::BackupRecord;
use cairn_repo::codec::SEAL_KEEP;
use cairn_repo::ids::{BackupLabel, BackupType, ChunkId, PackId, StanzaName};
use cairn_repo::index::{Location, Segment};
use cairn_repo::manifest::{ChunkRef, Content, EntryKind, FileEntry, Manifest};
use cairn_repo::repository::{Repository, StanzaInfo};
use cairn_repo::storage::Storage;
use std::collections::BTreeMap;
use std::sync::Arc;

pub async fn big_manifest_and_segment_round_trip(
    store: Arc<dyn Storage>,
) -> Result<(), Box<dyn std::error::Error>> {
    let repo = Repository::open_or_init(Arc::clone(&store)).await?;
    let stanza = repo
        .create_stanza(StanzaInfo {
            name: StanzaName::parse("big")?,
            engine: "files".into(),
            created: 1_795_515_300,
            meta: BTreeMap::new(),
        })
        .await?;
    let label = BackupLabel::parse("20261123-101500F")?;
    // Chunk ids are hashes, so they do not compress: 600k entries seal to about 30 MB.
    let n = 600_000u32;
    let manifest = Manifest {
        record: BackupRecord {
            label: label.clone(),
            kind: BackupType::Full,
            parent: None,
            references: vec![],
            start: 1_795_515_300,
            stop: 1_795_515_360,
            size: n as u64 * 4096,
            delta: 0,
            repo_size: 0,
            repo_delta: 0,
            file_count: n as u64,
            chunk_count: n as u64,
            new_chunk_count: n as u64,
            meta: BTreeMap::new(),
        },
        entries: (0..n)
            .map(|i| FileEntry {
                path: format!("base/{:08}", i).into_bytes(),
                kind: EntryKind::File,
                mode: 0o600,
                uid: 26,
                gid: 26,
                mtime_ns: 1_795_515_000_000_000_000 + i as i64,
                size: 4096,
                link_target: None,
                content: Content::Chunks(vec![ChunkRef {
                    id: ChunkId::of(&i.to_le_bytes()),
                    len: 4096,
                }]),
                meta: BTreeMap::new(),
            })
            .collect(),
    };
    let expected = manifest.clone();
    let sealed_len = expected.encode().len();
    assert!(
        sealed_len > SEAL_KEEP,
        "the test manifest must take the two-pass path: {sealed_len} bytes"
    );
    stanza.put_manifest(Arc::new(manifest)).await?;
    let back = stanza.manifest(&label).await?;
    assert!(back == expected, "the streamed manifest reads back equal");

    // 400k records of 48 bytes: about 19 MB.
    let pack = PackId::of(b"pack");
    let mut seg = Segment {
        packs: vec![pack],
        entries: (0..400_000u32)
            .map(|i| {
                (
                    ChunkId::of(&i.to_be_bytes()),
                    Location {
                        pack: 0,
                        offset: i,
                        stored_len: 100 + i % 7,
                        raw_len: 200,
                    },
                )
            })
            .collect(),
    };
    seg.entries.sort_by_key(|e| e.0);
    let encoded = seg.encode();
    assert!(encoded.len() > SEAL_KEEP);
    assert_eq!(seg.stream_name()?, Segment::name(&encoded));
    stanza.put_index_segment(Arc::new(seg)).await?;
    let listed = store
        .list(&cairn_repo::storage::Key::new("stanza/big/index")?)
        .await?;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].key.as_str().ends_with(&Segment::name(&encoded)));
    assert_eq!(listed[0].size, encoded.len() as u64);
    // The pack is imaginary: read the index whole, not filtered by present packs.
    let index = stanza.index_all().await?;
    assert_eq!(index.len(), 400_000);
    let (p, loc) = index
        .get(&ChunkId::of(&12_345u32.to_be_bytes()))
        .ok_or("a chunk of the streamed segment is missing from the index")?;
    assert_eq!(
        (p, loc.offset, loc.stored_len),
        (pack, 12_345, 100 + 12_345 % 7)
    );
    Ok(())
}
