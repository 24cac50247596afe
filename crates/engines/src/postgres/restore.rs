//! Restoring a cluster: lay the files down (pg_control last, so an interrupted restore never
//! looks like a complete data directory), then write the recovery settings (`recovery`).

use super::recovery::KeptRecoveryFiles;
pub use super::recovery::{Recovery, TargetType, write_recovery};
use crate::tree::TreeWriter;
use cairn_repo::catalog::BackupRecord;
use cairn_repo::index::Index;
use cairn_repo::manifest::FileEntry;
use cairn_repo::pipeline::{NoProgress, Progress};
use cairn_repo::restore;
use cairn_repo::{Error, Result, Stanza};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// Refuse a destination in use by a running server.
pub fn check_destination(dest: &Path) -> Result<()> {
    if dest.join("postmaster.pid").exists() {
        return Err(Error::Usage(format!(
            "{} has a postmaster.pid: a PostgreSQL server may be running there; stop it (and remove a stale postmaster.pid) before restoring",
            dest.display()
        )));
    }
    Ok(())
}

/// `--delta` removes whatever the backup does not list, so it goes only where a data
/// directory is (or was being restored): an empty or new directory, one with `PG_VERSION`,
/// or one with `global` and `base` directories (a restore that was interrupted before
/// `PG_VERSION` was written). pgBackRest asks the same (`PG_VERSION` or its manifest).
pub fn check_delta_destination(dest: &Path) -> Result<()> {
    let empty = match std::fs::read_dir(dest) {
        Ok(mut rd) => rd.next().is_none(),
        Err(_) => true,
    };
    let is_dir = |p: &str| std::fs::symlink_metadata(dest.join(p)).is_ok_and(|m| m.is_dir());
    if empty || dest.join("PG_VERSION").is_file() || (is_dir("global") && is_dir("base")) {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "{} is not a PostgreSQL data directory (no PG_VERSION, no global and base directories), and --delta would delete everything in it that the backup does not list; check --dest, or restore into an empty or new directory without --delta",
        dest.display()
    )))
}

/// Where and how to restore.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    pub dest: PathBuf,
    /// Reuse what `dest` already holds, fetching only chunks that differ.
    pub delta: bool,
    pub process_max: usize,
    pub recovery: Recovery,
    /// `--tablespace-map NAME=PATH`: tablespace (name or oid) -> where to restore it.
    pub tablespace_map: Vec<(String, PathBuf)>,
    /// `--link-all`, `--link-map`: which followed links come back as links.
    pub links: super::links::LinkOptions,
}

/// Resolve `--tablespace-map` entries against the backup's tablespaces into symlink
/// path -> directory.
fn link_map(
    record_meta: &std::collections::BTreeMap<String, String>,
    map: &[(String, PathBuf)],
    dest: &Path,
) -> Result<std::collections::BTreeMap<Vec<u8>, PathBuf>> {
    let known = super::backup::recorded_tablespaces(record_meta);
    let mut out = std::collections::BTreeMap::new();
    for (name, path) in map {
        let Some((oid, _)) = known
            .iter()
            .find(|(o, n)| o.to_string() == *name || n == name)
        else {
            let names: Vec<String> = known.iter().map(|(o, n)| format!("{n} ({o})")).collect();
            return Err(Error::Usage(format!(
                "--tablespace-map names '{name}', which is not a tablespace of this backup (it has: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )));
        };
        if !path.is_absolute() {
            return Err(Error::Usage(format!(
                "--tablespace-map {name}={}: the path must be absolute",
                path.display()
            )));
        }
        // The link written into pg_tblspc must name the directory plainly (format.md: no `.`
        // or `..`), and the overlap checks below must see where it really is.
        if path
            .components()
            .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
        {
            return Err(Error::Usage(format!(
                "--tablespace-map {name}={}: give the path without '.' or '..'",
                path.display()
            )));
        }
        if let Some(link) = dangling_link_in(path) {
            return Err(Error::Usage(format!(
                "--tablespace-map {name}={}: the path goes through {}, a symlink to something that does not exist (yet), so where it lands cannot be checked; give a path without it",
                path.display(),
                link.display()
            )));
        }
        let path = &resolved(path);
        let dest = &resolved(dest);
        let overlaps = |a: &Path, b: &Path| a.starts_with(b) || b.starts_with(a);
        if overlaps(path, dest) {
            return Err(Error::Usage(format!(
                "--tablespace-map {name}={}: the tablespace would be restored inside the data directory {} (or the other way round); give a directory outside it",
                path.display(),
                dest.display()
            )));
        }
        let link = format!("pg_tblspc/{oid}").into_bytes();
        if out.contains_key(&link) {
            return Err(Error::Usage(format!(
                "--tablespace-map names tablespace '{name}' twice; give one directory for each"
            )));
        }
        if let Some(other) = out.values().find(|p: &&PathBuf| overlaps(path, p)) {
            return Err(Error::Usage(format!(
                "--tablespace-map {name}={}: it overlaps {}, where another tablespace goes; give each its own directory",
                path.display(),
                other.display()
            )));
        }
        out.insert(link, path.clone());
    }
    Ok(out)
}

/// The first dangling symlink on `path` (itself or an ancestor), if any: a target reached
/// through one cannot be checked against the destination, which it may yet become (a link
/// to a `--dest` that does not exist yet).
pub(super) fn dangling_link_in(path: &Path) -> Option<PathBuf> {
    path.ancestors().find_map(|p| {
        (std::fs::symlink_metadata(p).is_ok_and(|m| m.is_symlink())
            && std::fs::metadata(p).is_err())
        .then(|| p.to_path_buf())
    })
}

/// `path` with its longest existing ancestor's symlinks resolved: where a directory created
/// there will really be.
pub fn resolved(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut cur = path;
    loop {
        if let Ok(real) = std::fs::canonicalize(cur) {
            return rest.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                cur = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// PostgreSQL recreates tablespace links from `tablespace_map` at recovery start: make it
/// name the directories the tablespaces were restored to.
fn rewrite_tablespace_map(
    dest: &Path,
    links: &std::collections::BTreeMap<Vec<u8>, PathBuf>,
) -> Result<()> {
    let path = dest.join("tablespace_map");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let mut out = String::new();
    for line in text.lines() {
        let oid = line.split(' ').next().unwrap_or("");
        match links.get(format!("pg_tblspc/{oid}").as_bytes()) {
            Some(p) => out.push_str(&format!("{oid} {}\n", p.display())),
            None => out.push_str(&format!("{line}\n")),
        }
    }
    crate::durable::write_durably(&path, out.as_bytes())
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
}

pub async fn restore(
    stanza: &Stanza,
    index: &Index,
    record: &BackupRecord,
    entries: &[FileEntry],
    opts: &RestoreOptions,
    progress: Arc<dyn Progress>,
) -> Result<()> {
    let tablespaces = link_map(&record.meta, &opts.tablespace_map, &opts.dest)?;
    let (entries, mut links) = super::links::plan(entries, &opts.links, &opts.dest, &tablespaces)?;
    let entries = &*entries;
    links.extend(tablespaces.clone());
    let (dest, delta, process_max, recovery) = (
        opts.dest.as_path(),
        opts.delta,
        opts.process_max,
        &opts.recovery,
    );
    check_destination(dest)?;
    if delta {
        check_delta_destination(dest)?;
    }
    let kept = match recovery.kind {
        TargetType::Preserve => Some(KeptRecoveryFiles::read(dest)?),
        _ => None,
    };
    let (writer, placements) = TreeWriter::prepare_with(
        dest,
        entries,
        delta,
        &links,
        super::engine::TABLESPACE_LINKS,
    )?;
    let writer = Arc::new(writer);
    let control = dest.join("global/pg_control");
    let (last, rest): (Vec<_>, Vec<_>) = placements
        .into_iter()
        .partition(|p| writer.describe_path(p.target) == Some(control.as_path()));
    restore::fetch_positioned(stanza, index, rest, process_max, writer.clone(), progress).await?;
    restore::fetch_positioned(stanza, index, last, 1, writer.clone(), Arc::new(NoProgress)).await?;
    writer.finish(entries)?;
    rewrite_tablespace_map(dest, &tablespaces)?;
    if let Some(kept) = kept {
        kept.put_back()?;
    }
    write_recovery(dest, recovery)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> std::collections::BTreeMap<String, String> {
        [("tablespaces".to_string(), "16400=ts1,16401=ts2".to_string())].into()
    }

    fn map(pairs: &[(&str, &str)]) -> Vec<(String, PathBuf)> {
        pairs
            .iter()
            .map(|(n, p)| (n.to_string(), PathBuf::from(p)))
            .collect()
    }

    /// Defect: `--tablespace-map ts1=<inside --dest>` and a tablespace given twice were
    /// accepted: the restore wrote a tablespace into the data directory it was restoring, or
    /// silently took the last of two directories.
    #[test]
    fn tablespace_map_into_dest_twice_or_overlapping_is_refused() {
        let dest = Path::new("/restore/pgdata");
        let refused = |pairs: &[(&str, &str)], why: &str| match link_map(&meta(), &map(pairs), dest)
        {
            Err(Error::Usage(m)) => assert!(m.contains(why), "{pairs:?}: {m}"),
            other => panic!("{pairs:?} was not refused: {other:?}"),
        };
        refused(
            &[("ts1", "/restore/pgdata/ts1")],
            "inside the data directory",
        );
        refused(&[("ts1", "/restore")], "inside the data directory");
        refused(&[("ts1", "/t/a"), ("16400", "/t/b")], "twice");
        refused(&[("ts1", "/t/a"), ("ts2", "/t/a/b")], "overlaps");
        refused(&[("ts1", "/t/a"), ("ts2", "/t/a")], "overlaps");
        refused(&[("ts3", "/t/a")], "not a tablespace");
        refused(&[("ts1", "t/a")], "absolute");
        refused(&[("ts1", "/restore/x/../pgdata/sub")], "'..'");
        let ok = link_map(&meta(), &map(&[("ts1", "/t/a"), ("ts2", "/t/ab")]), dest);
        assert_eq!(ok.map(|m| m.len()).ok(), Some(2));
    }

    /// Defect: `--tablespace-map ts1=<a symlink to the data directory>/sub` passed the
    /// "inside the data directory" check and restored the tablespace into PGDATA.
    #[test]
    fn tablespace_map_through_a_symlink_into_dest_is_refused() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let dest = dir.path().join("pgdata");
        std::fs::create_dir(&dest).map_err(|e| Error::io("mkdir", e))?;
        let link = dir.path().join("lnk");
        std::os::unix::fs::symlink(&dest, &link).map_err(|e| Error::io("symlink", e))?;
        let target = link.join("sub").display().to_string();
        match link_map(&meta(), &map(&[("ts1", &target)]), &dest) {
            Err(Error::Usage(m)) => assert!(m.contains("inside the data directory"), "{m}"),
            other => panic!("not refused: {other:?}"),
        }
        Ok(())
    }
}
