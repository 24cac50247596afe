//! The metadata a full backup of a 1 TiB PostgreSQL cluster costs with paged content: a
//! synthetic manifest of 1,024 relation segments of 1 GiB (1,048,576 units of 1 MiB, each with
//! its own base chunk) and the index segment of those chunks in 32 MiB packs, encoded exactly
//! as cairn writes them (the manifest sealed and zstd-compressed as `put_manifest` writes it).
//! Random chunk names, so compression gains nothing on them. Prints sizes in MiB.
//!
//! cargo run --release -p cairn-repo --example metadata_per_tib [TIB=1]

use cairn_repo::catalog::BackupRecord;
use cairn_repo::ids::{BackupLabel, BackupType, ChunkId, PackId};
use cairn_repo::index::{Location, Segment};
use cairn_repo::manifest::{ChunkRef, Content, EntryKind, FileEntry, Manifest};
use cairn_repo::pages::{UNIT_PAGES, Unit};
use std::collections::BTreeMap;

const PAGE: u32 = 8192;
const UNIT: u32 = PAGE * UNIT_PAGES;
const SEGMENT: u64 = 1 << 30;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tib: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1);
    let files = tib * 1024;
    let units_per_file = (SEGMENT / UNIT as u64) as u32;
    let mut n = 0u64;
    let mut next_id = || {
        n += 1;
        ChunkId::of(&n.to_le_bytes())
    };
    let mut entries = Vec::new();
    let mut seg = Segment::default();
    let units_per_pack = 32;
    for f in 0..files {
        let units: Vec<Unit> = (0..units_per_file)
            .map(|_| Unit {
                len: UNIT,
                base: ChunkRef {
                    id: next_id(),
                    len: UNIT,
                },
                delta: None,
            })
            .collect();
        for u in &units {
            let k = seg.entries.len() as u32;
            if k.is_multiple_of(units_per_pack) {
                seg.packs.push(PackId::of(&k.to_le_bytes()));
            }
            seg.entries.push((
                u.base.id,
                Location {
                    pack: k / units_per_pack,
                    offset: (k % units_per_pack) * (UNIT / 3),
                    stored_len: UNIT / 3,
                    raw_len: UNIT,
                },
            ));
        }
        entries.push(FileEntry {
            path: format!(
                "base/16384/{}{}",
                100_000 + f / 1024,
                segment_suffix(f % 1024)
            )
            .into_bytes(),
            kind: EntryKind::File,
            mode: 0o600,
            uid: 100,
            gid: 100,
            mtime_ns: 1_795_515_300_000_000_000,
            size: SEGMENT,
            link_target: None,
            content: Content::Pages {
                page_size: PAGE,
                units,
            },
            meta: BTreeMap::new(),
        });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    seg.entries.sort_by_key(|e| e.0);
    let record = BackupRecord {
        label: BackupLabel::parse("20261124-101500F")?,
        kind: BackupType::Full,
        parent: None,
        references: vec![],
        start: 0,
        stop: 0,
        size: files * SEGMENT,
        delta: files * SEGMENT,
        repo_size: 0,
        repo_delta: 0,
        file_count: files,
        chunk_count: seg.entries.len() as u64,
        new_chunk_count: seg.entries.len() as u64,
        meta: BTreeMap::new(),
    };
    let manifest = Manifest { record, entries };
    let mut sealed = Vec::new();
    manifest.write_sealed(&mut sealed)?;
    let index = seg.encode();
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    println!(
        "cluster {tib} TiB: {} units; manifest {:.1} MiB, index segment {:.1} MiB, together {:.1} MiB per TiB",
        seg.entries.len(),
        mib(sealed.len()),
        mib(index.len()),
        mib(sealed.len() + index.len()) / tib as f64
    );
    Ok(())
}

fn segment_suffix(k: u64) -> String {
    if k == 0 {
        String::new()
    } else {
        format!(".{k}")
    }
}
