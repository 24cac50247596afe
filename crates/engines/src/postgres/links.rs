//! Restoring the data directory's followed links (format.md, "Followed links"): by default as
//! a directory or file at the link's place, as pgBackRest does; with `--link-all` as the links
//! they were, to their recorded targets; with `--link-map PATH=TARGET` the named path as a link
//! to TARGET (also a path that was not a link, as pgBackRest 2.59 allows).

use cairn_repo::manifest::{EntryKind, FileEntry, LINK_META};
use cairn_repo::{Error, Result};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// Path in the data directory -> the target of a link restored there.
pub type LinkTargets = BTreeMap<Vec<u8>, PathBuf>;

/// `--link-all` and `--link-map`.
#[derive(Clone, Debug, Default)]
pub struct LinkOptions {
    pub all: bool,
    /// (path relative to the data directory, target), as given.
    pub map: Vec<(String, PathBuf)>,
}

/// The entries to restore and, by path, the targets of the ones restored as links (to merge
/// with the tablespace links `tablespaces`, which must not overlap them).
pub fn plan<'a>(
    entries: &'a [FileEntry],
    opts: &LinkOptions,
    dest: &Path,
    tablespaces: &BTreeMap<Vec<u8>, PathBuf>,
) -> Result<(Cow<'a, [FileEntry]>, LinkTargets)> {
    let mut entries = wal_link_as_directory(entries);
    let mut map = LinkTargets::new();
    let mut repointed = Vec::new();
    for (name, target) in &opts.map {
        let path = name.trim_end_matches('/');
        let flag = format!("--link-map {name}={}", target.display());
        if path.is_empty() {
            return Err(Error::Usage(format!(
                "{flag}: give the path of a directory or file of the data directory, relative to it (pg_wal, say)"
            )));
        }
        let Some(i) = find(&entries, path.as_bytes()) else {
            return Err(Error::Usage(format!(
                "{flag}: the backup has no path '{path}'; name a directory or file of the data directory, relative to it (pg_wal, say)"
            )));
        };
        let (kind, annotated) = (entries[i].kind, entries[i].meta.contains_key(LINK_META));
        if path == "pg_tblspc" || path.starts_with("pg_tblspc/") {
            return Err(Error::Usage(format!(
                "{flag}: '{path}' is a tablespace's; use --tablespace-map to restore a tablespace elsewhere"
            )));
        }
        check_target(&flag, target, dest)?;
        if map.contains_key(path.as_bytes()) {
            return Err(Error::Usage(format!(
                "--link-map names '{path}' twice; give one target for it"
            )));
        }
        match kind {
            EntryKind::Dir | EntryKind::File if annotated => {}
            EntryKind::Dir | EntryKind::File => {
                tracing::info!(
                    "link '{path}' to '{}' (a plain {} in the backup, restored as a link)",
                    target.display(),
                    if kind == EntryKind::Dir {
                        "directory"
                    } else {
                        "file"
                    }
                );
            }
            EntryKind::Symlink => {
                // A link the backup holds no contents for: only its target changes.
                let owned = entries.to_mut();
                owned[i].link_target = Some(target.as_os_str().as_encoded_bytes().to_vec());
                tracing::info!(
                    "map link '{path}' to '{}' (the backup holds no contents for it: only the link is restored)",
                    target.display()
                );
                repointed.push(path.as_bytes().to_vec());
                continue;
            }
            _ => {
                return Err(Error::Usage(format!(
                    "{flag}: '{path}' is neither a directory nor a file in the backup"
                )));
            }
        }
        map.insert(path.as_bytes().to_vec(), target.clone());
    }
    for e in entries.iter() {
        let Some(recorded) = e.meta.get(LINK_META) else {
            continue;
        };
        let what = if e.kind == EntryKind::Dir {
            "directory"
        } else {
            "file"
        };
        if let Some(target) = map.get(&e.path) {
            tracing::info!(
                "map {what} link '{}' to '{}'",
                e.display_path(),
                target.display()
            );
        } else if opts.all {
            let target = PathBuf::from(recorded);
            check_target(
                &format!(
                    "--link-all: the {what} link '{}' (to {recorded})",
                    e.display_path()
                ),
                &target,
                dest,
            )?;
            tracing::info!("restore {what} link '{}' to '{recorded}'", e.display_path());
            map.insert(e.path.clone(), target);
        } else if e.kind == EntryKind::Dir {
            tracing::warn!(
                "contents of directory link '{}' (to {recorded}) will be restored in a directory at the same location (--link-all or --link-map {}=<dir> restores the link)",
                e.display_path(),
                e.display_path()
            );
        } else {
            tracing::warn!(
                "file link '{}' (to {recorded}) will be restored as a file at the same location (--link-all or --link-map {}=<file> restores the link)",
                e.display_path(),
                e.display_path()
            );
        }
    }
    for e in entries.iter().filter(|e| {
        e.kind == EntryKind::Symlink
            && !e.path.starts_with(b"pg_tblspc/")
            && !repointed.contains(&e.path)
    }) {
        tracing::warn!(
            "{} is restored as a symlink to {}, as it was in the backed-up cluster (the backup holds no contents for it): the restored copy shares that target with the source",
            e.display_path(),
            String::from_utf8_lossy(e.link_target.as_deref().unwrap_or_default())
        );
    }
    check_overlaps(&entries, &map, tablespaces)?;
    Ok((entries, map))
}

/// The index of the entry at `path` (entries are sorted by path).
fn find(entries: &[FileEntry], path: &[u8]) -> Option<usize> {
    entries
        .binary_search_by(|e| e.path.as_slice().cmp(path))
        .ok()
}

/// A link target must be an absolute path without `.`/`..`, outside the data directory.
fn check_target(what: &str, target: &Path, dest: &Path) -> Result<()> {
    let raw = target.as_os_str().as_encoded_bytes();
    if !target.is_absolute()
        || raw.split(|b| *b == b'/').any(|s| s == b"." || s == b"..")
        || target
            .components()
            .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(Error::Usage(format!(
            "{what}: the target must be an absolute path without '.' or '..'"
        )));
    }
    if let Some(link) = super::restore::dangling_link_in(target) {
        return Err(Error::Usage(format!(
            "{what}: the target's path goes through {}, a symlink to something that does not exist (yet), so where it lands cannot be checked; give a path without it",
            link.display()
        )));
    }
    let (t, d) = (
        super::restore::resolved(target),
        super::restore::resolved(dest),
    );
    if t.starts_with(&d) || d.starts_with(&t) {
        return Err(Error::Usage(format!(
            "{what}: the target {} is inside the data directory {} (or the other way round); give a path outside it",
            t.display(),
            d.display()
        )));
    }
    Ok(())
}

/// No two link or tablespace targets may be the same or one inside another directory target:
/// their contents would be written over each other.
fn check_overlaps(
    entries: &[FileEntry],
    map: &LinkTargets,
    tablespaces: &BTreeMap<Vec<u8>, PathBuf>,
) -> Result<()> {
    let mut all: Vec<(String, PathBuf, bool)> = Vec::new();
    for (path, target) in map {
        let is_dir = find(entries, path).is_some_and(|i| entries[i].kind == EntryKind::Dir);
        let name = String::from_utf8_lossy(path).into_owned();
        all.push((name, super::restore::resolved(target), is_dir));
    }
    for e in entries
        .iter()
        .filter(|e| e.kind == EntryKind::Symlink && e.path.starts_with(b"pg_tblspc/"))
    {
        let target = match tablespaces.get(&e.path) {
            Some(t) => t.clone(),
            None => PathBuf::from(
                String::from_utf8_lossy(e.link_target.as_deref().unwrap_or_default()).into_owned(),
            ),
        };
        all.push((e.display_path(), super::restore::resolved(&target), true));
    }
    for (i, (a, ta, a_dir)) in all.iter().enumerate() {
        for (b, tb, b_dir) in &all[i + 1..] {
            if ta == tb || (*a_dir && tb.starts_with(ta)) || (*b_dir && ta.starts_with(tb)) {
                return Err(Error::Usage(format!(
                    "'{a}' would be restored to {} and '{b}' to {}, which overlap; give each its own place with --link-map (or --tablespace-map)",
                    ta.display(),
                    tb.display()
                )));
            }
        }
    }
    Ok(())
}

/// A `pg_wal` (or `pg_xlog`) link recorded without contents (backups before followed links,
/// format.md) stands for the directory it pointed to, recreated empty: restored as a
/// directory by default, or as the link like any followed directory link.
fn wal_link_as_directory(entries: &[FileEntry]) -> Cow<'_, [FileEntry]> {
    let is_wal_link = |e: &FileEntry| {
        e.kind == EntryKind::Symlink && (e.path == b"pg_wal" || e.path == b"pg_xlog")
    };
    if !entries.iter().any(is_wal_link) {
        return Cow::Borrowed(entries);
    }
    let mut owned = entries.to_vec();
    for e in owned.iter_mut().filter(|e| is_wal_link(e)) {
        let target = e.link_target.take().unwrap_or_default();
        e.kind = EntryKind::Dir;
        e.mode = 0o700;
        e.size = 0;
        e.meta.insert(
            LINK_META.into(),
            String::from_utf8_lossy(&target).into_owned(),
        );
    }
    Cow::Owned(owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_repo::manifest::Content;

    fn entry(path: &str, kind: EntryKind, target: Option<&str>, link: Option<&str>) -> FileEntry {
        FileEntry {
            path: path.as_bytes().to_vec(),
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            size: 0,
            link_target: target.map(|t| t.as_bytes().to_vec()),
            content: Content::None,
            meta: link
                .map(|l| [(LINK_META.to_string(), l.to_string())].into())
                .unwrap_or_default(),
        }
    }

    fn opts(all: bool, map: &[(&str, &str)]) -> LinkOptions {
        LinkOptions {
            all,
            map: map
                .iter()
                .map(|(a, b)| (a.to_string(), PathBuf::from(b)))
                .collect(),
        }
    }

    #[test]
    fn an_old_pg_wal_link_is_a_directory_by_default_and_a_link_with_link_all() -> Result<()> {
        let entries = vec![
            entry("", EntryKind::Dir, None, None),
            entry("pg_wal", EntryKind::Symlink, Some("/mnt/wal"), None),
        ];
        let dest = Path::new("/nonexistent/dest");
        let (out, map) = plan(&entries, &opts(false, &[]), dest, &BTreeMap::new())?;
        assert_eq!(out[1].kind, EntryKind::Dir);
        assert_eq!(out[1].link_target, None);
        assert!(map.is_empty());
        let (_, map) = plan(&entries, &opts(true, &[]), dest, &BTreeMap::new())?;
        assert_eq!(map.get(&b"pg_wal"[..]), Some(&PathBuf::from("/mnt/wal")));
        Ok(())
    }

    /// Someone who can write to the repository records a link target that climbs out of
    /// wherever it is resolved: --link-all refuses it instead of writing there.
    #[test]
    fn a_crafted_relative_or_dotted_link_target_is_refused_under_link_all() {
        for bad in ["../../etc", "/etc/../root", "relative"] {
            let entries = vec![
                entry("", EntryKind::Dir, None, None),
                entry("conf", EntryKind::Dir, None, Some(bad)),
            ];
            let r = plan(
                &entries,
                &opts(true, &[]),
                Path::new("/nonexistent/dest"),
                &BTreeMap::new(),
            );
            assert!(r.is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn a_link_target_overlapping_a_tablespace_is_refused() {
        let entries = vec![
            entry("", EntryKind::Dir, None, None),
            entry("pg_tblspc/16400", EntryKind::Symlink, Some("/srv/ts"), None),
            entry("pg_wal", EntryKind::Dir, None, Some("/srv/ts/wal")),
        ];
        let r = plan(
            &entries,
            &opts(true, &[]),
            Path::new("/nonexistent/dest"),
            &BTreeMap::new(),
        );
        assert!(r.is_err_and(|e| e.to_string().contains("overlap")));
    }
}
