//! Reading a live data directory: the scan (with PostgreSQL's exclusions, unlogged relations
//! reduced to their init forks, tablespaces followed), the chunking policy per file, and a
//! reader that validates page checksums as relation files stream through it.
//!
//! Relation files are paged content (`cairn_repo::pages`): units of 128 pages (1 MiB),
//! compressed, named and indexed whole, of which an incremental backup stores only the pages
//! that may have changed since its parent (`page_probe`). Measured on PostgreSQL 15 relation
//! files after a pgbench run that changed 6.6% of pages, 1 MiB content-defined chunks stored
//! 97% of the bytes again, 8 KiB blocks 6.6% but at 48 bytes of index and 36 of manifest per
//! page (../shared/DESIGN.md); units store the changed pages and cost that per MiB.

use super::layout::{self, in_relation_dir, parse_rel_file};
use super::lsn::Lsn;
use super::page;
use super::page_probe::page_lsn;
use crate::tree::{self, TreePolicy};
use cairn_repo::Result;
use cairn_repo::backup::SourceEntry;
use cairn_repo::chunker::{ChunkPolicy, DEFAULT_CDC};
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// PostgreSQL's page size (BLCKSZ) and relation segment size in blocks (RELSEG_SIZE).
pub const BLCKSZ: u32 = 8192;

/// Bad pages found during a backup: data-directory path -> block numbers.
pub type BadPages = Arc<Mutex<BTreeMap<String, Vec<u32>>>>;

struct PgPolicy {
    unlogged: HashSet<String>,
    /// The repository's directory (canonical), when it is on local disk.
    repo: Option<std::path::PathBuf>,
}

impl TreePolicy for PgPolicy {
    fn skip(&self, rel: &[u8], is_dir: bool) -> bool {
        let Ok(rel) = std::str::from_utf8(rel) else {
            return false;
        };
        if layout::excluded(rel, is_dir).is_some() {
            return true;
        }
        // Unlogged relations: only the init fork is backed up (PostgreSQL resets the rest).
        if !is_dir && in_relation_dir(rel) {
            let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
            if let Some(r) = parse_rel_file(name)
                && r.fork != Some("init")
                && self.unlogged.contains(&format!("{dir}/{}", r.relfilenode))
            {
                return true;
            }
        }
        false
    }

    fn chunking(&self, rel: &[u8]) -> ChunkPolicy {
        let rel = String::from_utf8_lossy(rel);
        let name = rel.rsplit('/').next().unwrap_or("");
        match parse_rel_file(name).filter(|_| in_relation_dir(&rel)) {
            // Only main forks set a page's LSN on every change (see `page_probe`).
            Some(r) => ChunkPolicy::Pages {
                page: BLCKSZ,
                probe: r.fork.is_none(),
            },
            None => DEFAULT_CDC,
        }
    }

    fn inline_link(&self, rel: &[u8]) -> bool {
        // Every link of the data directory but the tablespaces' (pg_wal on its own disk, a
        // configuration file kept in /etc) is backed up as what it points to, as pgBackRest
        // does; `restore` puts back a directory or file, or with --link-all the link.
        !rel.starts_with(b"pg_tblspc/")
    }

    fn keep_link_to(&self, target: &Path) -> Option<String> {
        // Followed, a link to the repository (or to a directory holding it) would back the
        // repository up into itself, growing with every backup.
        let repo = self.repo.as_deref()?;
        (repo.starts_with(target) || target.starts_with(repo)).then(|| {
            format!(
                "is or holds the repository {} (or lies inside it)",
                repo.display()
            )
        })
    }

    fn follow(&self, rel: &[u8]) -> bool {
        // pg_tblspc/<oid> are symlinks to the tablespaces' directories.
        let rel = String::from_utf8_lossy(rel);
        rel.strip_prefix("pg_tblspc/")
            .is_some_and(|oid| !oid.contains('/'))
    }
}

/// Relation directories (relative) and the unlogged relfilenodes in each, as "dir/node".
fn find_unlogged(pg_path: &Path) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut dirs = vec!["global".to_string()];
    for parent in ["base"] {
        if let Ok(rd) = std::fs::read_dir(pg_path.join(parent)) {
            dirs.extend(
                rd.flatten()
                    .map(|e| format!("{parent}/{}", e.file_name().to_string_lossy())),
            );
        }
    }
    if let Ok(rd) = std::fs::read_dir(pg_path.join("pg_tblspc")) {
        for ts in rd.flatten() {
            let ts_rel = format!("pg_tblspc/{}", ts.file_name().to_string_lossy());
            for ver in std::fs::read_dir(pg_path.join(&ts_rel))
                .into_iter()
                .flatten()
                .flatten()
            {
                let ver_rel = format!("{ts_rel}/{}", ver.file_name().to_string_lossy());
                for db in std::fs::read_dir(pg_path.join(&ver_rel))
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    dirs.push(format!("{ver_rel}/{}", db.file_name().to_string_lossy()));
                }
            }
        }
    }
    for dir in dirs {
        let Ok(rd) = std::fs::read_dir(pg_path.join(&dir)) else {
            continue;
        };
        let names: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        for node in layout::unlogged_relfilenodes(names.iter().map(String::as_str)) {
            out.insert(format!("{dir}/{node}"));
        }
    }
    out
}

/// Everything to back up under `pg_path` (`repo`: the repository's directory, whose links are
/// not followed). Relation files are read through a page-checksum validator when `checksums`
/// is on; bad pages are collected in `bad`.
pub fn sources(
    pg_path: &Path,
    repo: Option<std::path::PathBuf>,
    checksums: bool,
    start_lsn: Lsn,
    relseg_size: u32,
    bad: &BadPages,
) -> Result<Vec<SourceEntry>> {
    let policy = PgPolicy {
        unlogged: find_unlogged(pg_path),
        repo,
    };
    let mut entries = tree::scan(pg_path, &policy)?;
    if checksums {
        for s in &mut entries {
            let rel = s.entry.display_path();
            let name = rel.rsplit('/').next().unwrap_or("");
            let Some(r) = parse_rel_file(name).filter(|_| in_relation_dir(&rel)) else {
                continue;
            };
            if s.open.is_none() {
                continue;
            }
            let first_block = r.segment as u64 * relseg_size as u64;
            let path = pg_path.join(&rel);
            let bad = bad.clone();
            s.open = Some(Box::new(move || {
                let file = File::open(&path)?;
                Ok(Box::new(PageChecker {
                    file,
                    rel,
                    offset: 0,
                    first_block,
                    start_lsn,
                    buf: Vec::new(),
                    served: 0,
                    bad,
                }) as Box<dyn Read + Send>)
            }));
        }
    }
    Ok(entries)
}

/// Reads a relation file a unit (128 pages) at a time and checks each page's checksum. A page
/// that fails is read again (it may have been caught mid-write); a page that still fails is
/// recorded as bad unless its LSN is at or after the backup's start, in which case WAL replay
/// rewrites it.
struct PageChecker {
    file: File,
    rel: String,
    offset: u64,
    first_block: u64,
    start_lsn: Lsn,
    buf: Vec<u8>,
    served: usize,
    bad: BadPages,
}

/// Bytes read per call: one unit of paged content.
const READ_SIZE: usize = (BLCKSZ * cairn_repo::pages::UNIT_PAGES) as usize;

fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl PageChecker {
    /// Check the whole pages of `buf`, read at `offset`: a page that fails is read again, and
    /// replaced when the second read passes.
    fn check(&self, buf: &mut [u8], offset: u64) {
        let page = BLCKSZ as usize;
        for (i, p) in buf.chunks_exact_mut(page).enumerate() {
            let at = offset + (i * page) as u64;
            let blkno = (self.first_block + at / BLCKSZ as u64) as u32;
            if page::page_checksum_ok(p, blkno) {
                continue;
            }
            let mut again = vec![0u8; page];
            let reread = read_full_at(&self.file, &mut again, at)
                .map(|k| k == page)
                .unwrap_or(false);
            if reread && page::page_checksum_ok(&again, blkno) {
                p.copy_from_slice(&again);
            } else if page_lsn(p) < self.start_lsn || self.start_lsn == Lsn(0) {
                tracing::warn!("invalid page checksum in {} block {blkno}", self.rel);
                if let Ok(mut bad) = self.bad.lock() {
                    bad.entry(self.rel.clone()).or_default().push(blkno);
                }
            }
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(READ_SIZE, 0);
        let n = read_full_at(&self.file, &mut buf, self.offset)?;
        buf.truncate(n);
        self.check(&mut buf, self.offset);
        self.offset += n as u64;
        self.buf = buf;
        self.served = 0;
        Ok(())
    }
}

impl Read for PageChecker {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.served == self.buf.len() {
            // A caller reading whole units gets them read and checked in its own buffer.
            let direct = out.len().min(READ_SIZE) / BLCKSZ as usize * BLCKSZ as usize;
            if direct > 0 {
                let n = read_full_at(&self.file, &mut out[..direct], self.offset)?;
                self.check(&mut out[..n], self.offset);
                self.offset += n as u64;
                return Ok(n);
            }
            self.fill()?;
            if self.buf.is_empty() {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.served);
        out[..n].copy_from_slice(&self.buf[self.served..self.served + n]);
        self.served += n;
        Ok(n)
    }
}
