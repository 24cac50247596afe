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
    /// pointing at their mapped or recorded target directory.
    pub(super) fn create_followed_links(
        &mut self,
        entries: &[FileEntry],
        delta: bool,
        link_map: &BTreeMap<Vec<u8>, PathBuf>,
        checked: &mut HashSet<Vec<u8>>,
    ) -> Result<()> {
        for (i, e) in entries.iter().enumerate() {
            let mapped_dir = e.kind == EntryKind::Dir && link_map.contains_key(&e.path);
            if e.kind != EntryKind::Symlink && !mapped_dir {
                continue;
            }
            let mut prefix = e.path.clone();
            prefix.push(b'/');
            if !mapped_dir && !entries[i + 1..].iter().any(|c| c.path.starts_with(&prefix)) {
                continue;
            }
            let target = match link_map.get(&e.path) {
                Some(p) => p.clone(),
                None => PathBuf::from(OsStr::from_bytes(
                    e.link_target.as_deref().unwrap_or_default(),
                )),
            };
            let link = join(&self.root, &e.path);
            let owned = delta && fs::read_link(&link).is_ok_and(|t| t == target);
            if !owned && fs::read_dir(&target).is_ok_and(|mut rd| rd.next().is_some()) {
                let hint = if e.kind == EntryKind::Symlink {
                    "restore it elsewhere with --tablespace-map"
                } else {
                    "restore the link elsewhere with --link-map, or leave out --link-all to restore a directory in its place"
                };
                return Err(Error::Usage(format!(
                    "{} (the target of {}) is not empty{}; empty it, or {hint}",
                    target.display(),
                    e.display_path(),
                    not_owned(delta, &link),
                )));
            }
            if fs::symlink_metadata(&target).is_ok_and(|m| !m.is_dir()) {
                return Err(Error::Usage(format!(
                    "{} (the target of {}) exists and is not a directory; remove it or choose another target",
                    target.display(),
                    e.display_path()
                )));
            }
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
    /// itself, which must not exist unless `--delta` finds the destination's link already
    /// pointing there. Its directory is created.
    pub(super) fn file_link_target(
        &mut self,
        e: &FileEntry,
        target: &Path,
        delta: bool,
    ) -> Result<PathBuf> {
        let link = join(&self.root, &e.path);
        let owned = delta && fs::read_link(&link).is_ok_and(|t| t == target);
        match fs::symlink_metadata(target) {
            Ok(m) if owned && m.is_file() => {}
            Ok(_) => {
                return Err(Error::Usage(format!(
                    "{} (the target of {}) already exists{}; remove it, or restore the link elsewhere with --link-map",
                    target.display(),
                    e.display_path(),
                    not_owned(delta, &link),
                )));
            }
            Err(_) => {}
        }
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
