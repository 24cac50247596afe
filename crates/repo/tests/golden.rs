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

/// Version 2: a generation (format.md, "Catalog"). Read back with its generation; version 1
/// reads back with none.
#[test]
fn catalog_v2() -> TestResult {
    let c = Catalog {
        backups: vec![record()?],
    };
    if std::env::var_os("CAIRN_REGENERATE_GOLDEN").is_some() {
        golden("catalog-v2.bin", &c.encode_generation(7))?;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let frozen = std::fs::read(dir.join("catalog-v2.bin"))?;
    assert_eq!(&frozen[8..10], &[2, 0], "the envelope carries version 2");
    assert_eq!(
        Catalog::decode_versioned("golden", &frozen)?,
        (c.clone(), Some(7))
    );
    let v1 = std::fs::read(dir.join("catalog-v1.bin"))?;
    assert_eq!(Catalog::decode_versioned("golden", &v1)?, (c, None));
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

/// Manifest version 2 (hard links, FIFOs, devices; written only by manifests that hold them):
/// frozen like v1, and its envelope says version 2, which a cairn that knows only version 1
/// refuses as newer instead of misreading the new entry kinds.
#[test]
fn item9_manifest_v2_with_hard_links_and_special_files() -> TestResult {
    let mut m = manifest()?;
    let base = m.entries[1].clone();
    let special = |path: &[u8], kind| FileEntry {
        path: path.to_vec(),
        kind,
        size: 0,
        link_target: None,
        content: Content::None,
        ..base.clone()
    };
    m.entries.push(FileEntry {
        link_target: Some(b"a".to_vec()),
        ..special(b"d", EntryKind::HardLink)
    });
    m.entries.push(special(b"e", EntryKind::Fifo));
    m.entries
        .push(special(b"f", EntryKind::CharDevice { major: 1, minor: 3 }));
    m.entries
        .push(special(b"g", EntryKind::BlockDevice { major: 8, minor: 1 }));
    golden("manifest-v2.body", &codec::encode_body(&m))?;
    if std::env::var_os("CAIRN_REGENERATE_GOLDEN").is_some() {
        golden("manifest-v2.bin", &m.encode())?;
    }
    let frozen = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/manifest-v2.bin"),
    )?;
    assert_eq!(u16::from_le_bytes([frozen[8], frozen[9]]), 2);
    assert_eq!(Manifest::decode("golden", &frozen)?, m);
    // A manifest without the new kinds is still written as version 1.
    let v1 = manifest()?.encode();
    assert_eq!(u16::from_le_bytes([v1[8], v1[9]]), 1);
    // A version newer than this cairn knows is refused as newer, not misread.
    let mut newer = frozen.clone();
    newer[8] = 4;
    let crc_at = newer.len() - 4;
    let crc = crc32fast_hash(&newer[..crc_at]);
    newer[crc_at..].copy_from_slice(&crc.to_le_bytes());
    let err = Manifest::decode("golden", &newer)
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("newer")),
        "{err:?}"
    );
    Ok(())
}

/// Manifest version 3 (paged content, written only by manifests that hold it): frozen like
/// v1 and v2, with a unit of each kind (base alone, base cut short, base and delta).
#[test]
fn manifest_v3_with_paged_content() -> TestResult {
    use cairn_repo::pages::{Delta, PageSet, Unit};
    let mut m = manifest()?;
    let cref = |seed: &[u8], len: u32| ChunkRef {
        id: ChunkId::of(seed),
        len,
    };
    let mut pages = PageSet::default();
    pages.insert(1);
    pages.insert(70);
    let units = vec![
        Unit {
            len: 128 * 8192,
            base: cref(b"base0", 128 * 8192),
            delta: None,
        },
        Unit {
            len: 128 * 8192,
            base: cref(b"base1", 128 * 8192),
            delta: Some(Delta {
                pages,
                chunk: cref(b"delta1", 2 * 8192),
            }),
        },
        Unit {
            len: 3 * 8192,
            base: cref(b"base2", 5 * 8192),
            delta: None,
        },
    ];
    let size = units.iter().map(|u| u.len as u64).sum();
    let base = m.entries[1].clone();
    m.entries.push(FileEntry {
        path: b"rel".to_vec(),
        size,
        content: Content::Pages {
            page_size: 8192,
            units,
        },
        ..base
    });
    golden("manifest-v3.body", &codec::encode_body(&m))?;
    if std::env::var_os("CAIRN_REGENERATE_GOLDEN").is_some() {
        golden("manifest-v3.bin", &m.encode())?;
    }
    let frozen = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/manifest-v3.bin"),
    )?;
    assert_eq!(u16::from_le_bytes([frozen[8], frozen[9]]), 3);
    let decoded = Manifest::decode("golden", &frozen)?;
    assert_eq!(decoded, m);
    cairn_repo::manifest::check_sizes(&decoded.entries, &decoded.record.label)?;
    // The older versions still decode, and are still written as such.
    for (name, version) in [("manifest-v1.bin", 1), ("manifest-v2.bin", 2)] {
        let old = std::fs::read(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/golden")
                .join(name),
        )?;
        let m = Manifest::decode("golden", &old)?;
        assert_eq!(m.format_version(), version, "{name}");
    }
    Ok(())
}

/// CRC-32/ISO-HDLC, bitwise (the tests do not depend on crc32fast).
fn crc32fast_hash(b: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &x in b {
        crc ^= x as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn damage_register_v1() -> TestResult {
    use cairn_repo::damage::{DamageRegister, DamagedPack};
    let r = DamageRegister {
        written: 1_700_000_000,
        problems: 2,
        packs: vec![
            DamagedPack {
                pack: PackId([0x11; 32]),
                whole: false,
                chunks: vec![ChunkId([0x22; 32]), ChunkId([0x33; 32])],
            },
            DamagedPack {
                pack: PackId([0x44; 32]),
                whole: true,
                chunks: vec![],
            },
        ],
        objects: vec!["stanza/s/archive/15-1/00000001/000000010000000000000003".into()],
    };
    golden("damage-v1.body", &codec::encode_body(&r))?;
    if std::env::var_os("CAIRN_REGENERATE_GOLDEN").is_some() {
        golden("damage-v1.bin", &r.encode())?;
    }
    let frozen = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/damage-v1.bin"),
    )?;
    assert_eq!(DamageRegister::decode("golden", &frozen)?, r);
    Ok(())
}

#[test]
fn condemned_v1() -> TestResult {
    use cairn_repo::gc::{CondemnedList, CondemnedPack};
    let l = CondemnedList {
        packs: vec![
            CondemnedPack {
                pack: PackId([0x55; 32]),
                since: 1_700_000_000,
                delete_after: 1_700_003_600,
            },
            CondemnedPack {
                pack: PackId([0x66; 32]),
                since: 1_700_000_100,
                delete_after: 1_700_000_100,
            },
        ],
    };
    golden("condemned-v1.body", &codec::encode_body(&l))?;
    if std::env::var_os("CAIRN_REGENERATE_GOLDEN").is_some() {
        golden("condemned-v1.bin", &l.encode())?;
    }
    let frozen = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/condemned-v1.bin"),
    )?;
    assert_eq!(CondemnedList::decode("golden", &frozen)?, l);
    Ok(())
}

#[test]
fn lock_and_stop_mark_v1() -> TestResult {
    use cairn_repo::lock::LockInfo;
    let held = LockInfo {
        host: "db1".into(),
        pid: 4242,
        command: "backup".into(),
        since: 1_795_515_300,
        lease_until: 1_795_515_600,
    };
    golden("lock-v1.bin", &codec::seal(magic::LOCK, &held, false))?;
    let stop = LockInfo {
        command: "stop".into(),
        lease_until: 0,
        ..held.clone()
    };
    golden("stop-v1.bin", &codec::seal(magic::LOCK, &stop, false))?;
    for (name, want) in [("lock-v1.bin", &held), ("stop-v1.bin", &stop)] {
        let frozen = std::fs::read(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/golden")
                .join(name),
        )?;
        assert_eq!(&codec::open::<LockInfo>(name, magic::LOCK, &frozen)?, want);
    }
    Ok(())
}

#[test]
fn archived_wal_v1() -> TestResult {
    // A timeline history file as archive-push stores it: the body is the file's bytes; the
    // compressed form is compared decoded (zstd's output may change between versions).
    let body = b"1\t0/3000000\tno recovery target specified\n".to_vec();
    golden("wal-v1.body", &body)?;
    if std::env::var_os("CAIRN_REGENERATE_GOLDEN").is_some() {
        golden(
            "wal-v1.bin",
            &codec::seal_raw_level(magic::WAL, &body, Some(3)),
        )?;
        golden(
            "wal-plain-v1.bin",
            &codec::seal_raw_level(magic::WAL, &body, None),
        )?;
    }
    for name in ["wal-v1.bin", "wal-plain-v1.bin"] {
        let frozen = std::fs::read(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/golden")
                .join(name),
        )?;
        assert_eq!(codec::open_raw(name, magic::WAL, &frozen)?, body, "{name}");
    }
    Ok(())
}

#[test]
fn postgres_stanza_identity_with_history_v1() -> TestResult {
    let s = StanzaInfo {
        name: StanzaName::parse("main")?,
        engine: "postgres".into(),
        created: 1_795_515_300,
        meta: BTreeMap::from([
            ("system-id".to_string(), "7711183642240386058".to_string()),
            ("version".to_string(), "15".to_string()),
            ("wal-segment-size".to_string(), "16777216".to_string()),
            (
                "db-history".to_string(),
                "15:7711183642240386001:16777216".to_string(),
            ),
        ]),
    };
    golden(
        "stanza-postgres-v1.bin",
        &codec::seal(magic::STANZA, &s, false),
    )?;
    let frozen = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/stanza-postgres-v1.bin"),
    )?;
    assert_eq!(
        codec::open::<StanzaInfo>("golden", magic::STANZA, &frozen)?,
        s
    );
    Ok(())
}
