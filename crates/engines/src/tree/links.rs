//! Symlinks a tree restore creates with contents behind them: PostgreSQL's tablespace links,
//! and the directories and files restored as links (`--link-all`, `--link-map`). Each target
//! must be new or empty, unless `--delta` finds the destination's own link already pointing
//! there (the copy being refreshed owns it): a restore into another directory would otherwise
//! overwrite whatever lives at the target, such as the source cluster's own files.

use super::join;
use super::meta::remove_path;
use super::write::TreeWriter;
use cairn_repo::manifest::{EntryKind, FileEntry};
use cairn_repo::{Error, Result};
use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

impl TreeWriter {
    /// Create, before anything beneath them, the symlinks whose contents are in the backup
    /// (a tablespace link with entries beneath it; a `Dir` entry mapped in `link_map`),
    /// pointing at their mapped or recorded target directory (checked by `check_targets`).
    pub(super) fn create_followed_links(
        &mut self,
        entries: &[FileEntry],
        link_map: &BTreeMap<Vec<u8>, PathBuf>,
        checked: &mut HashSet<Vec<u8>>,
    ) -> Result<()> {
        for (e, target) in dir_links(entries, link_map) {
            let mapped_dir = e.kind == EntryKind::Dir;
            let link = join(&self.root, &e.path);
            fs::create_dir_all(&target)
                .map_err(|err| Error::io(format!("cannot create {}", target.display()), err))?;
            self.parents(&e.path, checked)?;
            if fs::symlink_metadata(&link).is_ok() {
                remove_path(&link)?;
            }
            std::os::unix::fs::symlink(&target, &link).map_err(|err| {
                Error::io(format!("cannot create symlink {}", link.display()), err)
            })?;
            self.links.insert(e.path.clone());
            if mapped_dir {
                self.mapped.insert(e.path.clone(), target);
            }
        }
        Ok(())
    }

    /// Where the bytes of `e`, a `File` entry restored as a link to `target`, go: `target`
    /// itself (checked by `check_targets`). Its directory is created.
    pub(super) fn file_link_target(&mut self, e: &FileEntry, target: &Path) -> Result<PathBuf> {
        if let Some(dir) = target.parent() {
            fs::create_dir_all(dir)
                .map_err(|err| Error::io(format!("cannot create {}", dir.display()), err))?;
        }
        self.mapped.insert(e.path.clone(), target.to_path_buf());
        Ok(target.to_path_buf())
    }

    /// After the file's bytes are at `target`: the symlink to it at the entry's path.
    pub(super) fn link_to_file(&self, e: &FileEntry, target: &Path) -> Result<()> {
        let link = join(&self.root, &e.path);
        if fs::read_link(&link).is_ok_and(|t| t == target) {
            return Ok(());
        }
        if fs::symlink_metadata(&link).is_ok() {
            remove_path(&link)?;
        }
        std::os::unix::fs::symlink(target, &link)
            .map_err(|err| Error::io(format!("cannot create symlink {}", link.display()), err))
    }
}

/// Check every link target of `entries` (see `TreeWriter::create_followed_links` and
/// `file_link_target`) before anything is removed or written: a restore refused for a target
/// leaves the destination as it was (defect of 2026-11-25: a refused `--delta --link-all` had
/// already removed what the backup does not list, pg_wal's segments among them).
pub(super) fn check_targets(
    root: &Path,
    entries: &[FileEntry],
    delta: bool,
    link_map: &BTreeMap<Vec<u8>, PathBuf>,
) -> Result<()> {
    for (e, target) in dir_links(entries, link_map) {
        check_dir_target(e, &target, &join(root, &e.path), delta)?;
    }
    for e in entries.iter().filter(|e| e.kind == EntryKind::File) {
        if let Some(target) = link_map.get(&e.path) {
            check_file_target(e, target, &join(root, &e.path), delta)?;
        }
    }
    Ok(())
}

/// The entries restored as symlinks to a directory holding their contents, with that
/// directory: tablespace links with entries beneath them, and `Dir` entries in `link_map`.
fn dir_links<'a>(
    entries: &'a [FileEntry],
    link_map: &'a BTreeMap<Vec<u8>, PathBuf>,
) -> impl Iterator<Item = (&'a FileEntry, PathBuf)> + 'a {
    entries.iter().enumerate().filter_map(move |(i, e)| {
        let mapped_dir = e.kind == EntryKind::Dir && link_map.contains_key(&e.path);
        if e.kind != EntryKind::Symlink && !mapped_dir {
            return None;
        }
        let mut prefix = e.path.clone();
        prefix.push(b'/');
        if !mapped_dir && !entries[i + 1..].iter().any(|c| c.path.starts_with(&prefix)) {
            return None;
        }
        Some(match link_map.get(&e.path) {
            Some(p) => (e, p.clone()),
            None => (
                e,
                PathBuf::from(OsStr::from_bytes(
                    e.link_target.as_deref().unwrap_or_default(),
                )),
            ),
        })
    })
}

/// Whether `--delta` finds the destination's `link` already pointing at `target` (also
/// through a relative link, or a target that is itself a link).
pub(super) fn owned(delta: bool, link: &Path, target: &Path) -> bool {
    if !delta || !fs::symlink_metadata(link).is_ok_and(|m| m.is_symlink()) {
        return false;
    }
    fs::read_link(link).is_ok_and(|t| t == target)
        || matches!((fs::canonicalize(link), fs::canonicalize(target)), (Ok(a), Ok(b)) if a == b)
}

/// Whether this process may write into (and search) the directory `p`, or write the file `p`.
fn may_write(p: &Path, dir: bool) -> bool {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    let mode = if dir {
        libc::W_OK | libc::X_OK
    } else {
        libc::W_OK
    };
    // SAFETY: c is a valid NUL-terminated path; access only reads it.
    unsafe { libc::access(c.as_ptr(), mode) == 0 }
}

/// The closest ancestor of `target` that exists must be a directory (or a link to one) this
/// process may create in, or creating the target fails half way through a restore (after
/// `--delta` removed what the backup does not list).
fn check_ancestors(e: &FileEntry, target: &Path) -> Result<()> {
    let mut cur = target.parent();
    while let Some(p) = cur {
        match fs::symlink_metadata(p) {
            Ok(_) if fs::metadata(p).is_ok_and(|m| m.is_dir()) => {
                return writable(e, target, p, true);
            }
            Ok(_) => {
                return Err(Error::Usage(format!(
                    "{} (the target of {}) cannot be created: {} is not a directory; choose another target",
                    target.display(),
                    e.display_path(),
                    p.display()
                )));
            }
            Err(_) => cur = p.parent(),
        }
    }
    Ok(())
}

fn writable(e: &FileEntry, target: &Path, p: &Path, dir: bool) -> Result<()> {
    if may_write(p, dir) {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "{} (the target of {}) cannot be written: this user may not write {}; fix its permissions or choose another target",
        target.display(),
        e.display_path(),
        p.display()
    )))
}

/// A directory target: new, or an empty directory (or a link to one), unless owned.
fn check_dir_target(e: &FileEntry, target: &Path, link: &Path, delta: bool) -> Result<()> {
    if owned(delta, link, target) {
        return writable(e, target, target, true);
    }
    let hint = if e.kind == EntryKind::Symlink {
        "restore it elsewhere with --tablespace-map"
    } else {
        "restore the link elsewhere with --link-map, or restore a directory in its place (without --link-all or a --link-map for it)"
    };
    if fs::symlink_metadata(target).is_ok() && !fs::metadata(target).is_ok_and(|m| m.is_dir()) {
        return Err(Error::Usage(format!(
            "{} (the target of {}) exists and is not a directory; remove it, or {hint}",
            target.display(),
            e.display_path()
        )));
    }
    if fs::read_dir(target).is_ok_and(|mut rd| rd.next().is_some()) {
        return Err(Error::Usage(format!(
            "{} (the target of {}) is not empty{}; empty it, or {hint}",
            target.display(),
            e.display_path(),
            not_owned(delta, link),
        )));
    }
    if fs::metadata(target).is_ok() {
        return writable(e, target, target, true);
    }
    check_ancestors(e, target)
}

/// A file target: one that does not exist yet, unless owned (then a regular file).
fn check_file_target(e: &FileEntry, target: &Path, link: &Path, delta: bool) -> Result<()> {
    let owned = owned(delta, link, target);
    match fs::symlink_metadata(target) {
        Ok(m) if owned && m.is_file() => writable(e, target, target, false),
        Ok(_) => Err(Error::Usage(format!(
            "{} (the target of {}) already exists{}; remove it, or restore the link elsewhere with --link-map",
            target.display(),
            e.display_path(),
            not_owned(delta, link),
        ))),
        Err(_) if target.as_os_str().as_encoded_bytes().ends_with(b"/") => {
            Err(Error::Usage(format!(
                "{} (the target of the file {}) ends in '/'; give the path of the file",
                target.display(),
                e.display_path()
            )))
        }
        Err(_) => check_ancestors(e, target),
    }
}

fn not_owned(delta: bool, link: &Path) -> String {
    if delta {
        format!(
            " and {} does not already point there, so it may belong to another cluster (the source's own, if restoring on its host)",
            link.display()
        )
    } else {
        String::new()
    }
}
