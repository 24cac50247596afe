//! The `files` engine: a directory tree (an LVM snapshot mount, a dump directory), backed up
//! with content-defined chunks and restored exactly: contents, empty directories, symlinks,
//! modes, owners (when restoring as root) and mtimes. `engine` is its part of the command line.

pub mod engine;

use crate::tree::{self, TreePolicy, TreeWriter};
use cairn_repo::backup::SourceEntry;
use cairn_repo::chunker::{ChunkPolicy, DEFAULT_CDC};
use cairn_repo::index::Index;
use cairn_repo::manifest::FileEntry;
use cairn_repo::pipeline::Progress;
use cairn_repo::restore;
use cairn_repo::{Result, Stanza};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug)]
struct Cdc;

impl TreePolicy for Cdc {
    fn chunking(&self, _rel: &[u8]) -> ChunkPolicy {
        DEFAULT_CDC
    }
    fn exact(&self) -> bool {
        true
    }
}

/// Everything under `source`.
pub fn sources(source: &Path) -> Result<Vec<SourceEntry>> {
    tree::scan(source, &Cdc)
}

/// Lay `entries` (resolved) down under `dest`, which must be absent or empty.
pub async fn restore(
    stanza: &Stanza,
    index: &Index,
    entries: &[FileEntry],
    dest: &Path,
    process_max: usize,
    progress: Arc<dyn Progress>,
) -> Result<()> {
    let (writer, placements) = TreeWriter::prepare(dest, entries)?;
    let writer = Arc::new(writer);
    restore::fetch_positioned(
        stanza,
        index,
        placements,
        process_max,
        writer.clone(),
        progress,
    )
    .await?;
    writer.finish(entries)
}
