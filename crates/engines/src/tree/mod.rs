//! Reading and writing directory trees: `scan` turns a source tree into manifest entries,
//! `write` lays resolved entries down into a destination with exact modes, owners, mtimes and
//! links, never writing outside it. Shared by the `files` engine and the PostgreSQL engine's
//! data directory.

mod links;
mod meta;
mod scan;
mod special;
mod write;

pub use scan::{entry_for, scan};
pub use write::TreeWriter;

use cairn_repo::chunker::ChunkPolicy;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Decides, per relative path, whether to skip it and how to chunk it.
pub trait TreePolicy: Sync {
    fn skip(&self, _rel: &[u8], _is_dir: bool) -> bool {
        false
    }
    fn chunking(&self, rel: &[u8]) -> ChunkPolicy;
    /// Whether a symlink at `rel` is followed: recorded as a symlink and its target's contents
    /// backed up beneath it (PostgreSQL tablespaces).
    fn follow(&self, _rel: &[u8]) -> bool {
        false
    }
    /// Whether a symlink at `rel`, when its target exists outside the tree and is a directory
    /// or a regular file, is recorded as that directory or file, annotated with the target
    /// (`LINK_META`), instead of as a link. Not asked beneath a followed link.
    fn inline_link(&self, _rel: &[u8]) -> bool {
        false
    }
    /// Why a link `inline_link` accepts, to `target` (canonical), is kept as a link after all
    /// (its target holds the repository, say), or None.
    fn keep_link_to(&self, _target: &Path) -> Option<String> {
        None
    }
    /// Whether the tree is kept exactly as it was: files that change while read are read
    /// again (and marked when they keep changing); hard links, FIFOs and devices are kept.
    /// Not for a live database, whose files change all the time and WAL replay repairs.
    fn exact(&self) -> bool {
        false
    }
}

fn join(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(OsStr::from_bytes(rel))
    }
}
