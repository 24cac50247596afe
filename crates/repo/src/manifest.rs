//! Backup manifests. A full manifest lists every entry with its chunks; a diff or incr
//! manifest lists every entry too (so deletions are plain absence) but gives unchanged files
//! `Content::Inherit`, meaning "same bytes as this path in the parent backup". `resolve`
//! walks the chain and turns a manifest into one complete file map for restore.

use crate::catalog::BackupRecord;
use crate::codec::{self, magic};
use crate::error::{Error, Result};
use crate::ids::ChunkId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// Manifest version 2: another name of the file at `link_target` (a `File` entry of the
    /// same manifest, the first path of its group).
    HardLink,
    /// Manifest version 2: a named pipe.
    Fifo,
    /// Manifest version 2: device files with their device numbers.
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
}

impl EntryKind {
    /// Whether a manifest holding this kind needs manifest format version 2.
    pub fn needs_v2(self) -> bool {
        !matches!(self, EntryKind::File | EntryKind::Dir | EntryKind::Symlink)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub len: u32,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Content {
    /// Directories and symlinks.
    None,
    /// The file's bytes, in order.
    Chunks(Vec<ChunkRef>),
    /// The same bytes as the same path in the parent backup.
    Inherit,
    /// Manifest version 3: a file of pages in units of 128 pages (`crate::pages`).
    Pages {
        page_size: u32,
        units: Vec<crate::pages::Unit>,
    },
}

impl Content {
    /// Every chunk the content needs, in file order (a unit's base before its delta).
    pub fn chunks(&self) -> Box<dyn Iterator<Item = &ChunkRef> + '_> {
        match self {
            Content::Chunks(c) => Box::new(c.iter()),
            Content::Pages { units, .. } => Box::new(units.iter().flat_map(|u| u.chunks())),
            Content::None | Content::Inherit => Box::new(std::iter::empty()),
        }
    }

    /// Where each chunk lands in the file, in file order: (offset, chunk, how it is laid
    /// down). Nothing for `None` and `Inherit`.
    pub fn placements(&self) -> Vec<(u64, ChunkRef, crate::pages::Shape)> {
        match self {
            Content::Chunks(chunks) => {
                let mut offset = 0u64;
                chunks
                    .iter()
                    .map(|c| {
                        let at = offset;
                        offset += c.len as u64;
                        (at, *c, crate::pages::Shape::Whole)
                    })
                    .collect()
            }
            Content::Pages { page_size, units } => crate::pages::placements(*page_size, units),
            Content::None | Content::Inherit => Vec::new(),
        }
    }

    /// Why this content cannot be a file of `size` bytes (its chunks do not add up to it, or
    /// its units are damaged), as words that follow the file's name; None when it can.
    pub fn misfit(&self, size: u64) -> Option<String> {
        match self {
            Content::Pages { page_size, units } => {
                crate::pages::check_units(*page_size, units, size)
                    .err()
                    .map(|why| format!("is damaged: {why}"))
            }
            Content::Chunks(chunks) => {
                let total: u64 = chunks.iter().map(|c| c.len as u64).sum();
                (total != size)
                    .then(|| format!("has {total} bytes of chunks for a {size}-byte file"))
            }
            Content::None | Content::Inherit => None,
        }
    }

    /// Whether this is a file's stored content (not `None` or `Inherit`).
    pub fn is_data(&self) -> bool {
        matches!(self, Content::Chunks(_) | Content::Pages { .. })
    }
}

/// The annotation (`FileEntry::meta` key) of a `Dir` or `File` entry that was a symlink in the
/// source, followed: its value is the link's target (format.md, "Followed links").
pub const LINK_META: &str = "link";

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative path, `/`-separated, as raw bytes (file names need not be UTF-8).
    pub path: Vec<u8>,
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub size: u64,
    pub link_target: Option<Vec<u8>>,
    pub content: Content,
    /// Engine annotations (e.g. bad page lists), empty for most files.
    pub meta: BTreeMap<String, String>,
}

impl FileEntry {
    pub fn display_path(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// The catalog record for this backup, so the catalog can be rebuilt from manifests.
    pub record: BackupRecord,
    /// Sorted by path, unique.
    pub entries: Vec<FileEntry>,
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing into a Vec cannot fail.
        self.write_sealed(&mut out)
            .unwrap_or_else(|e| panic!("encoding failed: {e}"));
        out
    }

    /// Version 3 when an entry has paged content, else 2 when one needs version 2 (hard
    /// links, FIFOs, devices), else 1: manifests stay readable by an older cairn unless they
    /// need what it cannot read.
    pub fn format_version(&self) -> u16 {
        if self
            .entries
            .iter()
            .any(|e| matches!(e.content, Content::Pages { .. }))
        {
            3
        } else if self.entries.iter().any(|e| e.kind.needs_v2()) {
            2
        } else {
            codec::FORMAT_VERSION
        }
    }

    /// The sealed manifest, written to `w` without building its encoding in memory (a
    /// manifest of a large cluster runs to hundreds of megabytes).
    pub fn write_sealed(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        codec::seal_to_version(w, magic::MANIFEST, self.format_version(), true, &|w| {
            codec::encode_body_to(w, self)
        })
    }

    pub fn decode(object: &str, bytes: &[u8]) -> Result<Manifest> {
        let m: Manifest = codec::open(object, magic::MANIFEST, bytes)?;
        if m.entries.windows(2).any(|w| w[0].path >= w[1].path) {
            return Err(Error::corrupt(
                object,
                "manifest entries are not sorted and unique",
            ));
        }
        Ok(m)
    }
}

impl Manifest {
    /// `check_paths` over this manifest's own entries.
    pub fn check_paths(&self, allow_links_under: &[&[u8]]) -> Result<()> {
        check_paths(
            &format!("manifest of {}", self.record.label),
            &self.entries,
            allow_links_under,
        )
    }
}

/// Refuse entries that could steer a restore outside its destination (see `docs/format.md`,
/// "Paths"): every path relative, no empty, `.` or `..` segment, no NUL; nothing beneath a
/// symlink, except beneath a link directly inside one of `allow_links_under` (PostgreSQL's
/// `pg_tblspc/<oid>`), whose target must then be an absolute path without `.`/`..`. Pure, so
/// restore and verify apply the same rule. `entries` must be sorted by path.
pub fn check_paths(object: &str, entries: &[FileEntry], allow_links_under: &[&[u8]]) -> Result<()> {
    let bad = |e: &FileEntry, why: &str| {
        Err(Error::corrupt(
            object,
            format!("unsafe path '{}' in the backup: {why}", e.display_path()),
        ))
    };
    // Symlinks seen so far, and whether contents beneath them are allowed. Sorted order puts
    // every ancestor before its descendants, so one pass sees a link before what is under it.
    let mut links: std::collections::HashMap<&[u8], bool> = std::collections::HashMap::new();
    let mut files: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
    for e in entries {
        let p = e.path.as_slice();
        if p.is_empty() {
            if e.kind != EntryKind::Dir {
                return bad(e, "the root is not a directory");
            }
            continue;
        }
        if p.contains(&0) {
            return bad(e, "it contains a NUL byte");
        }
        if p[0] == b'/' {
            return bad(e, "it is absolute");
        }
        if p.split(|b| *b == b'/')
            .any(|s| s.is_empty() || s == b"." || s == b"..")
        {
            return bad(e, "it has an empty, '.' or '..' segment");
        }
        let mut allowed_link_above = false;
        for (i, _) in p.iter().enumerate().filter(|(_, b)| **b == b'/') {
            match links.get(&p[..i]) {
                Some(false) => return bad(e, "it is beneath a symlink"),
                Some(true) => allowed_link_above = true,
                None => {}
            }
        }
        if e.kind == EntryKind::HardLink {
            // The group's first path, sorted before it: already seen, and a regular file.
            let target = e.link_target.as_deref().unwrap_or_default();
            if !files.contains(target) {
                return bad(
                    e,
                    "it is a hard link to something that is not an earlier file",
                );
            }
        }
        if e.kind == EntryKind::File {
            files.insert(p);
        }
        if e.kind == EntryKind::Symlink {
            let parent = p
                .iter()
                .rposition(|b| *b == b'/')
                .map_or(&p[..0], |i| &p[..i]);
            let allowed = !allowed_link_above
                && allow_links_under.contains(&parent)
                && e.link_target.as_deref().is_some_and(|t| {
                    t.first() == Some(&b'/')
                        && !t.contains(&0)
                        && !t.split(|b| *b == b'/').any(|s| s == b"." || s == b"..")
                });
            links.insert(p, allowed);
        }
    }
    Ok(())
}

/// Resolve `chain` (oldest first: full, then each child) into the complete entries of the
/// last manifest, with every `Inherit` replaced by the chunks it stands for. Every file's
/// chunks must add up to its size: restore and verify both resolve, so they agree on that.
pub fn resolve(chain: &[Manifest]) -> Result<Vec<FileEntry>> {
    let Some((first, rest)) = chain.split_first() else {
        return Ok(Vec::new());
    };
    let mut current = resolve_first(first.clone())?;
    for m in rest {
        current = resolve_next(current, m.clone())?;
    }
    let last = chain
        .last()
        .map_or(&first.record.label, |m| &m.record.label);
    check_sizes(&current, last)?;
    Ok(current)
}

/// The entries of the first manifest of a chain (a full backup: nothing to inherit).
pub fn resolve_first(first: Manifest) -> Result<Vec<FileEntry>> {
    if first.entries.iter().any(|e| e.content == Content::Inherit) {
        return Err(Error::corrupt(
            format!("manifest of {}", first.record.label),
            "the first backup of a chain inherits content from nothing",
        ));
    }
    Ok(first.entries)
}

/// The entries of `m` with what they inherit taken from `current` (its parent's, resolved),
/// consuming both: a chain is resolved one manifest at a time, so its memory is that of two
/// manifests, not of the whole chain.
pub fn resolve_next(current: Vec<FileEntry>, m: Manifest) -> Result<Vec<FileEntry>> {
    let mut parent: BTreeMap<Vec<u8>, Content> =
        current.into_iter().map(|e| (e.path, e.content)).collect();
    let mut next = Vec::with_capacity(m.entries.len());
    for mut e in m.entries {
        if e.content == Content::Inherit {
            match parent.remove(e.path.as_slice()) {
                Some(c) if c.is_data() => e.content = c,
                _ => {
                    return Err(Error::corrupt(
                        format!("manifest of {}", m.record.label),
                        format!(
                            "'{}' inherits from the parent backup, which has no such file",
                            e.display_path()
                        ),
                    ));
                }
            }
        }
        next.push(e);
    }
    Ok(next)
}

/// Every resolved file's chunks add up to its size.
pub fn check_sizes(entries: &[FileEntry], last: &crate::ids::BackupLabel) -> Result<()> {
    for e in entries {
        if let Some(why) = e.content.misfit(e.size) {
            return Err(Error::corrupt(
                format!("manifest of {last}"),
                format!("'{}' {why}", e.display_path()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{BackupLabel, BackupType};
    use proptest::prelude::*;

    fn record(label: &str) -> BackupRecord {
        BackupRecord {
            label: BackupLabel::parse(label).unwrap_or_else(|e| panic!("{e}")),
            kind: BackupType::Full,
            parent: None,
            references: vec![],
            start: 0,
            stop: 0,
            size: 0,
            delta: 0,
            repo_size: 0,
            repo_delta: 0,
            file_count: 0,
            chunk_count: 0,
            new_chunk_count: 0,
            meta: BTreeMap::new(),
        }
    }

    fn arb_entry() -> impl Strategy<Value = FileEntry> {
        (
            proptest::collection::vec(any::<u8>(), 0..40),
            0u8..3,
            any::<u32>(),
            any::<i64>(),
            any::<u64>(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            proptest::collection::vec((any::<[u8; 32]>(), any::<u32>()), 0..5),
            0u8..3,
        )
            .prop_map(|(path, k, mode, mtime_ns, size, link_target, chunks, c)| {
                FileEntry {
                    path,
                    kind: [EntryKind::File, EntryKind::Dir, EntryKind::Symlink][k as usize],
                    mode,
                    uid: mode / 3,
                    gid: mode / 5,
                    mtime_ns,
                    size,
                    link_target,
                    content: match c {
                        0 => Content::None,
                        1 => Content::Inherit,
                        _ => Content::Chunks(
                            chunks
                                .into_iter()
                                .map(|(id, len)| ChunkRef {
                                    id: ChunkId(id),
                                    len,
                                })
                                .collect(),
                        ),
                    },
                    meta: BTreeMap::new(),
                }
            })
    }

    proptest! {
        #[test]
        fn manifest_round_trip(mut entries in proptest::collection::vec(arb_entry(), 0..30), size: u64, start: i64) {
            entries.sort_by(|a, b| a.path.cmp(&b.path));
            entries.dedup_by(|b, a| a.path == b.path);
            let mut rec = record("20261123-101500F");
            rec.size = size;
            rec.start = start;
            let m = Manifest { record: rec, entries };
            prop_assert_eq!(Manifest::decode("m", &m.encode()).ok(), Some(m));
        }

        #[test]
        fn catalog_round_trip(n in 0usize..10, repo_size: u64) {
            let backups = (0..n)
                .map(|i| {
                    let mut r = record(&format!("20261123-1015{:02}F", i));
                    r.repo_size = repo_size;
                    r
                })
                .collect();
            let c = crate::catalog::Catalog { backups };
            prop_assert_eq!(crate::catalog::Catalog::decode("c", &c.encode()).ok(), Some(c));
        }
    }

    #[test]
    fn resolve_assembles_a_chain() {
        let chunk = |b: u8| {
            Content::Chunks(vec![ChunkRef {
                id: ChunkId::of(&[b]),
                len: 1,
            }])
        };
        let entry = |p: &str, content| FileEntry {
            path: p.as_bytes().to_vec(),
            kind: EntryKind::File,
            mode: 0o600,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            size: 1,
            link_target: None,
            content,
            meta: BTreeMap::new(),
        };
        let full = Manifest {
            record: record("20261123-101500F"),
            entries: vec![entry("a", chunk(1)), entry("b", chunk(2))],
        };
        let incr = Manifest {
            record: record("20261123-101500F"),
            entries: vec![entry("a", Content::Inherit), entry("c", chunk(3))],
        };
        let r = resolve(&[full.clone(), incr]).unwrap_or_default();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].content, chunk(1));
        assert_eq!(r[1].content, chunk(3));
        let bad = Manifest {
            record: record("20261123-101500F"),
            entries: vec![entry("zzz", Content::Inherit)],
        };
        assert!(
            resolve(&[full, bad]).is_err(),
            "inheriting a path the parent lacks is damage"
        );
    }
}
