//! Golden files freeze format v1: every kind of object is encoded from a fixed value and
//! compared byte for byte with `tests/golden/*`, and each frozen object must still decode to
//! that value. zstd-compressed parts are compared before compression (`*.body`), because
//! zstd's output may differ between library versions while the format stays the same. A failure means the on-disk format changed: that needs a format version bump
//! and an upgrade path (docs/format.md), not new golden files. To regenerate after a deliberate,
//! versioned change: `CAIRN_REGENERATE_GOLDEN=1 cargo test -p cairn-repo --test golden`.

use cairn_repo::catalog::{BackupRecord, Catalog};
use cairn_repo::codec::{self, magic};
use cairn_repo::ids::{BackupLabel, BackupType, ChunkId, PackId, StanzaName};
use cairn_repo::index::{Location, Segment};
use cairn_repo::manifest::{ChunkRef, Content, EntryKind, FileEntry, Manifest};
use cairn_repo::pack::{self, PackBuilder, SealedChunk};
use cairn_repo::repository::{RepoInfo, StanzaInfo};
use std::collections::BTreeMap;
use std::path::PathBuf;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn golden(name: &str, bytes: &[u8]) -> TestResult {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("CAIRN_REGENERATE_GOLDEN").is_some() {
        std::fs::write(&path, bytes)?;
    }
    let frozen = std::fs::read(&path).map_err(|e| {
        format!("{}: {e}; regenerate with CAIRN_REGENERATE_GOLDEN=1 cargo test -p cairn-repo --test golden", path.display())
    })?;
    assert!(
        frozen == bytes,
        "{name}: encoding differs from the frozen v1 bytes; the format changed (see this file's doc comment)"
    );
    Ok(())
}

fn record() -> Result<BackupRecord, Box<dyn std::error::Error>> {
    let full = BackupLabel::parse("20261123-101500F")?;
    Ok(BackupRecord {
        label: BackupLabel::parse("20261123-101500F_20261124-101500I")?,
        kind: BackupType::Incr,
        parent: Some(full.clone()),
        references: vec![full],
        start: 1_795_515_300,
        stop: 1_795_515_360,
        size: 123_456_789,
        delta: 4096,
        repo_size: 23_456_789,
        repo_delta: 1234,
        file_count: 3,
        chunk_count: 130,
        new_chunk_count: 1,
        meta: BTreeMap::from([("source".to_string(), "/srv/data".to_string())]),
    })
}

fn manifest() -> Result<Manifest, Box<dyn std::error::Error>> {
    let file = |path: &[u8], content| FileEntry {
        path: path.to_vec(),
        kind: EntryKind::File,
        mode: 0o640,
        uid: 26,
        gid: 26,
        mtime_ns: 1_795_515_000_123_456_789,
        size: 10,
        link_target: None,
        content,
        meta: BTreeMap::new(),
    };
    Ok(Manifest {
        record: record()?,
        entries: vec![
            FileEntry {
                kind: EntryKind::Dir,
                mode: 0o700,
                size: 0,
                content: Content::None,
                ..file(b"", Content::None)
            },
            file(
                b"a",
                Content::Chunks(vec![ChunkRef {
                    id: ChunkId::of(b"0123456789"),
                    len: 10,
                }]),
            ),
            file(b"b", Content::Inherit),
            FileEntry {
                kind: EntryKind::Symlink,
                mode: 0o777,
                size: 0,
                link_target: Some(b"a".to_vec()),
                meta: BTreeMap::from([("k".to_string(), "v".to_string())]),
                ..file(b"c", Content::None)
            },
        ],
    })
}

#[test]
fn manifest_v1() -> TestResult {
    let m = manifest()?;
    golden("manifest-v1.body", &codec::encode_body(&m))?;
    if std::env::var_os("CAIRN_REGENERATE_GOLDEN").is_some() {
        golden("manifest-v1.bin", &m.encode())?;
    }
    let frozen = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/manifest-v1.bin"),
    )?;
    assert_eq!(Manifest::decode("golden", &frozen)?, m);
    Ok(())
}

#[test]
fn catalog_v1() -> TestResult {
    let c = Catalog {
        backups: vec![record()?],
    };
    golden("catalog-v1.body", &codec::encode_body(&c))?;
    if std::env::var_os("CAIRN_REGENERATE_GOLDEN").is_some() {
        golden("catalog-v1.bin", &c.encode())?;
    }
    let frozen = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/catalog-v1.bin"),
    )?;
    assert_eq!(Catalog::decode("golden", &frozen)?, c);
    Ok(())
}

#[test]
fn stanza_and_repo_info_v1() -> TestResult {
    let s = StanzaInfo {
        name: StanzaName::parse("main")?,
        engine: "files".into(),
        created: 1_795_515_300,
        meta: BTreeMap::new(),
    };
    golden("stanza-v1.bin", &codec::seal(magic::STANZA, &s, false))?;
    let r = RepoInfo {
        created: 1_795_515_300,
        id: "0123456789abcdef".into(),
    };
    golden("repo-v1.bin", &codec::seal(magic::REPO, &r, false))?;
    Ok(())
}

#[test]
fn index_segment_v1() -> TestResult {
    let mut entries: Vec<_> = [b"x".as_slice(), b"y", b"z"]
        .iter()
        .enumerate()
        .map(|(i, d)| {
            (
                ChunkId::of(d),
                Location {
                    pack: 0,
                    offset: 16 + i as u32,
                    stored_len: 1,
                    raw_len: 1,
                },
            )
        })
        .collect();
    entries.sort_by_key(|e| e.0);
    let seg = Segment {
        packs: vec![PackId::of(b"pack")],
        entries,
    };
    let bytes = seg.encode();
    golden("index-v1.bin", &bytes)?;
    assert_eq!(Segment::decode("golden", &bytes)?, seg);
    Ok(())
}

#[test]
fn pack_v1() -> TestResult {
    let mut b = PackBuilder::new();
    // Chunks too small to shrink are stored plain, so these bytes do not depend on zstd.
    for data in [b"x".to_vec(), b"plain text".to_vec(), vec![]] {
        b.add(&SealedChunk::seal(ChunkId::of(&data), &data, 3));
    }
    let (id, bytes, entries) = b.finish();
    golden("pack-v1.bin", &bytes)?;
    assert_eq!(pack::parse_pack("golden", &id, &bytes)?, entries);
    Ok(())
}
