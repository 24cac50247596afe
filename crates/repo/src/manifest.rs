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
}

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
        codec::seal(magic::MANIFEST, self, true)
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

    /// Every chunk this manifest itself names (not the inherited ones).
    pub fn own_chunks(&self) -> impl Iterator<Item = &ChunkRef> {
        self.entries.iter().flat_map(|e| match &e.content {
            Content::Chunks(c) => c.as_slice(),
            _ => &[],
        })
    }
}

/// Resolve `chain` (oldest first: full, then each child) into the complete entries of the
/// last manifest, with every `Inherit` replaced by the chunks it stands for.
pub fn resolve(chain: &[Manifest]) -> Result<Vec<FileEntry>> {
    let Some((first, rest)) = chain.split_first() else {
        return Ok(Vec::new());
    };
    let label = &first.record.label;
    if first.entries.iter().any(|e| e.content == Content::Inherit) {
        return Err(Error::corrupt(
            format!("manifest of {label}"),
            "the first backup of a chain inherits content from nothing",
        ));
    }
    let mut current = first.entries.clone();
    for m in rest {
        let parent: BTreeMap<&[u8], &FileEntry> =
            current.iter().map(|e| (e.path.as_slice(), e)).collect();
        let mut next = Vec::with_capacity(m.entries.len());
        for e in &m.entries {
            let mut e = e.clone();
            if e.content == Content::Inherit {
                match parent.get(e.path.as_slice()) {
                    Some(p) if matches!(p.content, Content::Chunks(_)) => {
                        e.content = p.content.clone()
                    }
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
        current = next;
    }
    Ok(current)
}
