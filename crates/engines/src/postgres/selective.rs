//! Selective restore (`--db-include`, `--db-exclude`), as pgBackRest does it: the relation
//! files of the databases left out come back as sparse, zero-filled files of their recorded
//! size (their `PG_VERSION` as it was), so the cluster starts and the unwanted databases can
//! be dropped. System databases (`postgres`, `template0`, `template1`, and any database with
//! an oid below 16384) are always restored unless excluded by name.

use cairn_repo::manifest::{Content, EntryKind, FileEntry};
use cairn_repo::{Error, Result};
use std::collections::BTreeSet;
use std::path::Path;

/// PostgreSQL's `FirstNormalObjectId`: oids below it belong to initdb's databases.
const FIRST_NORMAL_OID: u32 = 16384;

/// The database a file belongs to: `base/<oid>/...` or `pg_tblspc/<ts>/<version dir>/<oid>/...`.
fn database_of(path: &[u8]) -> Option<u32> {
    let parts: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
    let oid = match parts.as_slice() {
        [b"base", oid, _, ..] => oid,
        [b"pg_tblspc", _, _, oid, _, ..] => oid,
        _ => return None,
    };
    std::str::from_utf8(oid).ok()?.parse().ok()
}

fn is_system(oid: u32, name: Option<&str>) -> bool {
    oid < FIRST_NORMAL_OID || matches!(name, Some("postgres" | "template0" | "template1"))
}

/// The oids of the databases whose files come back zeroed. `databases` are the backup's
/// recorded (oid, name) pairs (empty for a backup older than that record: databases are then
/// named by oid); a name or oid that is not in the backup is an error, as is including a
/// system database (always included) or a database also excluded.
pub fn zeroed_databases(
    databases: &[(u32, String)],
    entries: &[FileEntry],
    include: &[String],
    exclude: &[String],
) -> Result<BTreeSet<u32>> {
    let mut present: BTreeSet<u32> = entries
        .iter()
        .filter(|e| e.kind == EntryKind::File && e.path.ends_with(b"/PG_VERSION"))
        .filter_map(|e| database_of(&e.path))
        .collect();
    if present.is_empty() {
        return Err(Error::Invalid(
            "the backup holds no database directories to select from; is it a PostgreSQL cluster's?".into(),
        ));
    }
    present.extend(databases.iter().map(|(oid, _)| *oid));
    let name_of = |oid: u32| {
        databases
            .iter()
            .find(|(o, _)| *o == oid)
            .map(|(_, n)| n.as_str())
    };
    let find = |given: &str, what: &str| -> Result<u32> {
        let by_name = databases.iter().find(|(_, n)| n == given).map(|(o, _)| *o);
        match by_name.or_else(|| given.parse().ok().filter(|o| present.contains(o))) {
            Some(oid) => Ok(oid),
            None => Err(Error::Usage(format!(
                "database to {what} '{given}' does not exist in the backup{}",
                if databases.is_empty() {
                    " (the backup predates cairn recording database names: give the database's oid, the name of its directory under base/)".to_string()
                } else {
                    format!(
                        "; it has {}",
                        databases
                            .iter()
                            .map(|(_, n)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ))),
        }
    };
    let excluded: BTreeSet<u32> = exclude
        .iter()
        .map(|d| find(d, "exclude"))
        .collect::<Result<_>>()?;
    let mut included = BTreeSet::new();
    for d in include {
        let oid = find(d, "include")?;
        if is_system(oid, name_of(oid)) {
            return Err(Error::Usage(format!(
                "--db-include '{d}': system databases (template0, template1, postgres) are always restored; name only the others"
            )));
        }
        if excluded.contains(&oid) {
            return Err(Error::Usage(format!(
                "database to include '{d}' is also given to --db-exclude"
            )));
        }
        included.insert(oid);
    }
    if include.is_empty() {
        return Ok(excluded);
    }
    Ok(present
        .into_iter()
        .filter(|oid| {
            !included.contains(oid) && (!is_system(*oid, name_of(*oid)) || excluded.contains(oid))
        })
        .collect())
}

/// `entries` with the files of the `zeroed` databases emptied of content (their size kept,
/// so they restore as sparse zero-filled files), `PG_VERSION` excepted. With `--delta`, the
/// destination's copies of those files are removed first: the writer would otherwise keep
/// their old bytes under the new size.
pub fn zero_databases(
    mut entries: Vec<FileEntry>,
    zeroed: &BTreeSet<u32>,
    dest: &Path,
    delta: bool,
) -> Result<Vec<FileEntry>> {
    for e in entries.iter_mut().filter(|e| {
        e.kind == EntryKind::File
            && !e.path.ends_with(b"/PG_VERSION")
            && database_of(&e.path).is_some_and(|oid| zeroed.contains(&oid))
    }) {
        e.content = Content::Chunks(Vec::new());
        if delta {
            let path = dest.join(String::from_utf8_lossy(&e.path).as_ref());
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    return Err(Error::io(
                        format!("cannot remove {} to zero it", path.display()),
                        err,
                    ));
                }
            }
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> FileEntry {
        FileEntry {
            path: path.as_bytes().to_vec(),
            kind: EntryKind::File,
            mode: 0o600,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            size: 8192,
            link_target: None,
            content: Content::Inherit,
            meta: Default::default(),
        }
    }

    #[test]
    fn include_zeroes_every_other_user_database_and_keeps_system_ones() -> Result<()> {
        let entries: Vec<FileEntry> = [
            "base/1/PG_VERSION",
            "base/5/PG_VERSION",
            "base/16384/PG_VERSION",
            "base/16385/PG_VERSION",
            "pg_tblspc/16390/PG_15_202209061/16386/PG_VERSION",
            "base/16385/1259",
        ]
        .into_iter()
        .map(file)
        .collect();
        let dbs: Vec<(u32, String)> = vec![
            (1, "template1".into()),
            (4, "template0".into()),
            (5, "postgres".into()),
            (16384, "db1".into()),
            (16385, "db2".into()),
            (16386, "db3".into()),
        ];
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let zeroed = zeroed_databases(&dbs, &entries, &s(&["db2"]), &[])?;
        assert_eq!(zeroed, BTreeSet::from([16384, 16386]));
        let zeroed = zeroed_databases(&dbs, &entries, &[], &s(&["db1", "16386"]))?;
        assert_eq!(zeroed, BTreeSet::from([16384, 16386]));
        let zeroed = zeroed_databases(&dbs, &entries, &s(&["db2"]), &s(&["postgres"]))?;
        assert_eq!(zeroed, BTreeSet::from([5, 16384, 16386]));
        for (inc, exc) in [
            (s(&["nope"]), vec![]),
            (s(&["postgres"]), vec![]),
            (s(&["db1"]), s(&["db1"])),
            (vec![], s(&["99999"])),
        ] {
            assert!(
                zeroed_databases(&dbs, &entries, &inc, &exc).is_err(),
                "{inc:?} {exc:?}"
            );
        }
        let out = zero_databases(
            entries,
            &BTreeSet::from([16385]),
            Path::new("/nonexistent"),
            false,
        )?;
        let emptied: Vec<String> = out
            .iter()
            .filter(|e| e.size == 8192 && matches!(&e.content, Content::Chunks(c) if c.is_empty()))
            .map(FileEntry::display_path)
            .collect();
        assert_eq!(
            emptied,
            ["base/16385/1259"],
            "PG_VERSION and other databases kept"
        );
        assert_eq!(database_of(b"base/16385/1259"), Some(16385));
        assert_eq!(database_of(b"base/16385"), None);
        assert_eq!(
            database_of(b"pg_tblspc/16390/PG_15_202209061/16386/2619"),
            Some(16386)
        );
        Ok(())
    }
}
