//! What in a data directory is backed up, and how: PostgreSQL's documented exclusions for base
//! backups ("Backing Up the Data Directory" and `basebackup.c`'s exclude lists), and which
//! files are relation files. Pure path logic, no I/O.

/// Directories whose contents are skipped (the directory itself is kept, empty).
pub const EXCLUDED_DIR_CONTENTS: [&str; 8] = [
    "pg_wal",
    "pg_dynshmem",
    "pg_notify",
    "pg_replslot",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
];

/// Files skipped wherever they are in the tree's top level.
pub const EXCLUDED_FILES: [&str; 8] = [
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "recovery.signal",
    "standby.signal",
    "postgresql.auto.conf.tmp",
];

/// A relation file name: `<relfilenode>[_<fork>][.<segment>]`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RelFile<'a> {
    pub relfilenode: &'a str,
    pub fork: Option<&'a str>,
    pub segment: u32,
    pub temp: bool,
}

pub fn parse_rel_file(name: &str) -> Option<RelFile<'_>> {
    let (temp, rest) = match name.strip_prefix('t') {
        // Temporary relations: t<backend id>_<relfilenode>...
        Some(r) => {
            let (backend, rest) = r.split_once('_')?;
            if backend.is_empty() || !backend.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (true, rest)
        }
        None => (false, name),
    };
    let (base, segment) = match rest.split_once('.') {
        Some((b, s)) if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) => {
            (b, s.parse().ok()?)
        }
        Some(_) => return None,
        None => (rest, 0),
    };
    let (node, fork) = match base.split_once('_') {
        Some((n, f)) if matches!(f, "fsm" | "vm" | "init") => (n, Some(f)),
        Some(_) => return None,
        None => (base, None),
    };
    if node.is_empty() || !node.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(RelFile {
        relfilenode: node,
        fork,
        segment,
        temp,
    })
}

/// Whether `rel` (a path relative to the data directory, `/`-separated) lies in a database or
/// tablespace directory, where relation files live.
pub fn in_relation_dir(rel: &str) -> bool {
    let parts: Vec<&str> = rel.split('/').collect();
    match parts.as_slice() {
        ["base", _db, _file] => true,
        ["global", _file] => true,
        // pg_tblspc/<oid>/PG_<version>_<catversion>/<db>/<file>
        ["pg_tblspc", _oid, _ver, _db, _file] => true,
        _ => false,
    }
}

/// Why a path is left out, or None when it is backed up.
pub fn excluded(rel: &str, is_dir: bool) -> Option<&'static str> {
    let parts: Vec<&str> = rel.split('/').collect();
    let name = parts.last().copied().unwrap_or("");
    if parts.len() == 1 && !is_dir && EXCLUDED_FILES.contains(&name) {
        return Some("excluded file");
    }
    if parts.len() >= 2 && EXCLUDED_DIR_CONTENTS.contains(&parts[0]) {
        // pg_wal/archive_status is recreated empty, like the rest of pg_wal's contents.
        return Some("contents of an excluded directory");
    }
    if name.starts_with("pgsql_tmp") {
        return Some("temporary file");
    }
    if name == "pg_internal.init" {
        return Some("relation cache file, rebuilt at startup");
    }
    if !is_dir && in_relation_dir(rel) && parse_rel_file(name).is_some_and(|r| r.temp) {
        return Some("temporary relation");
    }
    None
}

/// Given the names in one database directory, the relfilenodes that are unlogged (they have
/// an init fork): their other forks are skipped, the init fork is kept.
pub fn unlogged_relfilenodes<'a>(
    names: impl IntoIterator<Item = &'a str>,
) -> std::collections::HashSet<String> {
    names
        .into_iter()
        .filter_map(parse_rel_file)
        .filter(|r| r.fork == Some("init"))
        .map(|r| r.relfilenode.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relation_file_names() {
        let r = parse_rel_file("16384.2").unwrap_or_else(|| panic!("parse"));
        assert_eq!(
            (r.relfilenode, r.fork, r.segment, r.temp),
            ("16384", None, 2, false)
        );
        let r = parse_rel_file("16384_vm").unwrap_or_else(|| panic!("parse"));
        assert_eq!(r.fork, Some("vm"));
        let r = parse_rel_file("t3_16390_fsm.1").unwrap_or_else(|| panic!("parse"));
        assert!(r.temp && r.segment == 1 && r.fork == Some("fsm"));
        for bad in [
            "PG_VERSION",
            "16384_xx",
            "pg_filenode.map",
            "t_1",
            "12.",
            "abc",
        ] {
            assert_eq!(parse_rel_file(bad), None, "{bad}");
        }
    }

    #[test]
    fn documented_exclusions() {
        assert!(excluded("postmaster.pid", false).is_some());
        assert!(excluded("pg_wal/000000010000000000000001", false).is_some());
        assert!(excluded("pg_wal/archive_status", true).is_some());
        assert!(
            excluded("pg_wal", true).is_none(),
            "the directory itself is kept"
        );
        assert!(excluded("pg_replslot/slot/state", false).is_some());
        assert!(excluded("base/pgsql_tmp", true).is_some());
        assert!(excluded("base/5/t3_16390", false).is_some());
        assert!(excluded("global/pg_internal.init", false).is_some());
        assert!(excluded("base/5/16384", false).is_none());
        assert!(excluded("base/5/PG_VERSION", false).is_none());
        assert!(excluded("postgresql.auto.conf", false).is_none());
        assert!(excluded("pg_xact/0000", false).is_none());
    }

    #[test]
    fn unlogged_relations_are_found_by_their_init_fork() {
        let u = unlogged_relfilenodes(["16384", "16384_init", "16390", "16390_fsm"]);
        assert!(u.contains("16384") && !u.contains("16390"));
    }
}
