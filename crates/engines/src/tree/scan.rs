//! Scanning a source tree into the entries of a backup.

use super::TreePolicy;
use cairn_repo::backup::SourceEntry;
use cairn_repo::manifest::{Content, EntryKind, FileEntry, LINK_META};
use cairn_repo::pipeline::Watch;
use cairn_repo::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

fn mtime_ns(m: &fs::Metadata) -> i64 {
    m.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(m.mtime_nsec())
}

/// A manifest entry for `path` (relative `rel`) from its metadata.
pub fn entry_for(rel: &[u8], m: &fs::Metadata, link_target: Option<Vec<u8>>) -> Option<FileEntry> {
    let ft = m.file_type();
    let kind = if ft.is_file() {
        EntryKind::File
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else {
        return None; // sockets, fifos, devices: see `special_entry`
    };
    Some(entry_of(rel, m, kind, link_target))
}

/// The manifest entry for `rel` of `kind`, with the mode, owner and mtime of `m`.
fn entry_of(
    rel: &[u8],
    m: &fs::Metadata,
    kind: EntryKind,
    link_target: Option<Vec<u8>>,
) -> FileEntry {
    FileEntry {
        path: rel.to_vec(),
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime_ns: mtime_ns(m),
        size: if kind == EntryKind::File { m.len() } else { 0 },
        link_target,
        content: Content::None,
        meta: BTreeMap::new(),
    }
}

/// Scan `root` recursively. Entries are relative to root; the root itself is the entry `.`
/// only implicitly (its mode is recorded as the entry with an empty path).
pub fn scan(root: &Path, policy: &dyn TreePolicy) -> Result<Vec<SourceEntry>> {
    let meta = fs::symlink_metadata(root).map_err(|e| {
        Error::io(
            format!(
                "cannot read source directory {}; check --source",
                root.display()
            ),
            e,
        )
    })?;
    if !meta.is_dir() {
        return Err(Error::Usage(format!(
            "source {} is not a directory; give --source a directory",
            root.display()
        )));
    }
    let mut out = Vec::new();
    if let Some(e) = entry_for(b"", &meta, None) {
        out.push(SourceEntry {
            entry: e,
            policy: policy.chunking(b""),
            origin: format!("source directory {}", root.display()),
            open: None,
            watch: None,
        });
    }
    let exact = policy.exact();
    // Files with more than one name, by (device, inode): the indexes of their entries in `out`.
    let mut inodes: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
    let root_real = fs::canonicalize(root).ok();
    // (directory, its relative path, whether it is a followed link or beneath one)
    let mut stack = vec![(root.to_path_buf(), Vec::<u8>::new(), false)];
    while let Some((dir, rel, beneath_link)) = stack.pop() {
        let rd = fs::read_dir(&dir).map_err(|e| {
            let via = if beneath_link {
                format!(
                    " ({} in the data directory, through a symlink that backup follows)",
                    root.join(OsStr::from_bytes(&rel)).display()
                )
            } else {
                String::new()
            };
            Error::io(
                format!("cannot list source directory {}{via}", dir.display()),
                e,
            )
        })?;
        for item in rd {
            let item = item.map_err(|e| {
                Error::io(format!("cannot list source directory {}", dir.display()), e)
            })?;
            let path = item.path();
            let mut r = rel.clone();
            if !r.is_empty() {
                r.push(b'/');
            }
            r.extend_from_slice(item.file_name().as_bytes());
            let m = fs::symlink_metadata(&path)
                .map_err(|e| Error::io(format!("cannot read source file {}", path.display()), e))?;
            if policy.skip(&r, m.is_dir()) {
                continue;
            }
            let link = if m.file_type().is_symlink() {
                let t = fs::read_link(&path)
                    .map_err(|e| Error::io(format!("cannot read symlink {}", path.display()), e))?;
                Some(t.as_os_str().as_bytes().to_vec())
            } else {
                None
            };
            let inlined = match &link {
                Some(text) if !beneath_link && policy.inline_link(&r) => {
                    inline_target(&path, text, root_real.as_deref(), policy)
                }
                _ => None,
            };
            let special = if exact { special_entry(&r, &m) } else { None };
            let found = match &inlined {
                Some((target, tm)) => entry_for(&r, tm, None).map(|mut e| {
                    e.meta.insert(LINK_META.into(), target.clone());
                    e
                }),
                None => entry_for(&r, &m, link).or(special),
            };
            let m = inlined.as_ref().map_or(m, |(_, tm)| tm.clone());
            let Some(entry) = found else {
                if exact && m.file_type().is_socket() {
                    tracing::warn!(
                        "skipping socket {} (sockets cannot be backed up)",
                        path.display()
                    );
                } else {
                    tracing::debug!(
                        "skipping {} (not a file, directory or symlink)",
                        path.display()
                    );
                }
                continue;
            };
            if exact && entry.kind == EntryKind::File && m.nlink() > 1 {
                inodes
                    .entry((m.dev(), m.ino()))
                    .or_default()
                    .push(out.len());
            }
            let follow = entry.kind == EntryKind::Symlink
                && policy.follow(&r)
                && fs::metadata(&path).is_ok_and(|m| m.is_dir());
            if entry.kind == EntryKind::Dir || follow {
                let link_here = follow || inlined.is_some();
                stack.push((path.clone(), r.clone(), beneath_link || link_here));
            }
            let open: Option<cairn_repo::pipeline::Opener> = if entry.kind == EntryKind::File {
                let p = path.clone();
                Some(Box::new(move || open_file(&p)))
            } else {
                None
            };
            let watch = (entry.kind == EntryKind::File && policy.exact()).then(|| watch(&path));
            out.push(SourceEntry {
                policy: policy.chunking(&r),
                entry,
                origin: format!("source file {}", path.display()),
                open,
                watch,
            });
        }
    }
    link_groups(&mut out, inodes);
    Ok(out)
}

/// For a symlink at `path` (whose `readlink` is `text`) that a policy inlines: the target to
/// record and the target's metadata, when the target exists, is a directory or a regular
/// file, and lies outside the tree rooted at `root_real` (a link within the tree stays a link,
/// or its contents would be stored twice). The recorded target is `text` when it is an
/// absolute path without `.`/`..`, else the canonical path (format.md, "Followed links").
fn inline_target(
    path: &Path,
    text: &[u8],
    root_real: Option<&Path>,
    policy: &dyn TreePolicy,
) -> Option<(String, fs::Metadata)> {
    let real = match fs::canonicalize(path) {
        Ok(real) => real,
        Err(e) => {
            tracing::warn!(
                "symlink {} points at {}, which {}: backed up as the link only",
                path.display(),
                String::from_utf8_lossy(text),
                if e.raw_os_error() == Some(libc::ELOOP) {
                    "leads into a loop of symlinks"
                } else {
                    "does not exist"
                }
            );
            return None;
        }
    };
    if root_real.is_some_and(|r| real.starts_with(r)) {
        return None;
    }
    // A link to a directory that holds the tree (`/`, the data directory's parent) would back
    // the tree up again inside itself, with whatever lies beside it.
    if root_real.is_some_and(|r| r.starts_with(&real)) {
        tracing::warn!(
            "symlink {} points at {}, which holds the directory being backed up: backed up as the link only",
            path.display(),
            real.display()
        );
        return None;
    }
    let tm = fs::metadata(path).ok()?;
    if !tm.is_dir() && !tm.is_file() {
        return None;
    }
    if let Some(why) = policy.keep_link_to(&real) {
        tracing::warn!(
            "symlink {} points at {}, which {why}: backed up as the link only",
            path.display(),
            real.display()
        );
        return None;
    }
    let plain =
        text.first() == Some(&b'/') && !text.split(|b| *b == b'/').any(|s| s == b"." || s == b"..");
    let target = if plain {
        std::str::from_utf8(text).ok()?.to_string()
    } else {
        real.to_str()?.to_string()
    };
    Some((target, tm))
}

/// Every name of a multiply-linked file but the first (in path order, the order a restore
/// creates them in) becomes a hard link to the first, read and stored once.
fn link_groups(out: &mut [SourceEntry], inodes: HashMap<(u64, u64), Vec<usize>>) {
    for (_, group) in inodes {
        let Some(&first) = group
            .iter()
            .min_by(|a, b| out[**a].entry.path.cmp(&out[**b].entry.path))
        else {
            continue;
        };
        let target = out[first].entry.path.clone();
        for &i in group.iter().filter(|i| **i != first) {
            let s = &mut out[i];
            s.entry.kind = EntryKind::HardLink;
            s.entry.link_target = Some(target.clone());
            s.entry.size = 0;
            s.open = None;
            s.watch = None;
        }
    }
}

/// The entry of a FIFO or device file (kept by exact trees), None for anything else.
fn special_entry(rel: &[u8], m: &fs::Metadata) -> Option<FileEntry> {
    let ft = m.file_type();
    let rdev = m.rdev() as libc::dev_t;
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let kind = if ft.is_fifo() {
        EntryKind::Fifo
    } else if ft.is_char_device() {
        EntryKind::CharDevice { major, minor }
    } else if ft.is_block_device() {
        EntryKind::BlockDevice { major, minor }
    } else {
        return None;
    };
    Some(entry_of(rel, m, kind, None))
}

fn open_file(p: &Path) -> io::Result<Box<dyn io::Read + Send>> {
    File::open(p).map(|f| Box::new(f) as Box<dyn io::Read + Send>)
}

/// Size, mtime and ctime before and after reading tell whether a file changed while it was
/// read (a write within the filesystem's timestamp granularity of the first stamp can go
/// unseen, as for every tool that relies on timestamps: rsync, tar, git).
fn watch(path: &Path) -> Watch {
    let (p, q) = (path.to_path_buf(), path.to_path_buf());
    Watch {
        stamp: Box::new(move || {
            let m = fs::symlink_metadata(&p)?;
            Ok((
                m.len(),
                mtime_ns(&m),
                m.ctime()
                    .saturating_mul(1_000_000_000)
                    .saturating_add(m.ctime_nsec()),
            ))
        }),
        reopen: Box::new(move || open_file(&q)),
    }
}
