//! The stanza's database identities as pgBackRest numbers them (its "db history": id 1 for the
//! first cluster the stanza met, one more after each upgrade), and its WAL archive summarised
//! per identity, as pgBackRest's `archive` list gives it (`15-1`, with min and max across
//! timelines).

use super::StanzaReport;
use std::collections::BTreeMap;

/// One database identity: the cluster a backup or a WAL segment came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Db {
    /// pgBackRest's history id, from 1.
    pub id: u32,
    pub system_id: u64,
    pub version: String,
}

impl Db {
    /// pgBackRest's archive id: `<version>-<history id>` (`15-1`).
    pub fn archive_id(&self) -> String {
        format!("{}-{}", self.version, self.id)
    }

    /// cairn's own archive id, under which the repository holds this identity's WAL:
    /// `<version>-<system id>`.
    pub fn repository_archive_id(&self) -> String {
        format!("{}-{}", self.version, self.system_id)
    }
}

/// One entry of the `archive` list.
#[derive(Debug)]
pub struct ArchiveEntry<'a> {
    /// The identity the WAL belongs to (None: an archive id no identity explains).
    pub db: Option<&'a Db>,
    /// The id shown: pgBackRest's for a known identity, else the repository's.
    pub id: String,
    pub repository_id: String,
    /// Per timeline: (timeline, first, last) whole segment.
    pub timelines: Vec<(u32, String, String)>,
}

impl ArchiveEntry<'_> {
    /// The first and last whole segment across timelines (segment names sort by timeline,
    /// then position); None when the archive holds none.
    pub fn min_max(&self) -> (Option<&str>, Option<&str>) {
        let min = self.timelines.iter().map(|t| t.1.as_str()).min();
        let max = self.timelines.iter().map(|t| t.2.as_str()).max();
        (min, max)
    }
}

impl StanzaReport {
    /// The identities in the order the stanza met them: those its `stanza-upgrade`s recorded
    /// (`db-history`, so that ids stay put when old backups expire), those of its backups,
    /// oldest first, then its current one (the stanza's own), then any that only WAL in the
    /// archive names.
    pub fn dbs(&self) -> Vec<Db> {
        let ids: Vec<&str> = self.archives.iter().map(|(id, ..)| id.as_str()).collect();
        dbs_of(&self.meta, &self.catalog.backups, &ids)
    }

    /// The history id of the identity a backup was made from.
    pub fn db_of(dbs: &[Db], meta: &BTreeMap<String, String>) -> Option<u32> {
        let sys = meta.get("system-id")?.parse::<u64>().ok()?;
        let version = meta.get("version")?;
        dbs.iter()
            .find(|d| d.system_id == sys && &d.version == version)
            .map(|d| d.id)
    }

    /// One entry per identity (with no segments: min and max null, as pgBackRest lists a
    /// stanza without WAL), then one per archive id no identity explains.
    pub fn archive_entries<'a>(&self, dbs: &'a [Db]) -> Vec<ArchiveEntry<'a>> {
        let mut by_id: BTreeMap<&str, Vec<(u32, String, String)>> = BTreeMap::new();
        for (id, tli, min, max) in &self.archives {
            by_id
                .entry(id.as_str())
                .or_default()
                .push((*tli, min.clone(), max.clone()));
        }
        let mut out: Vec<ArchiveEntry<'a>> = dbs
            .iter()
            .map(|db| {
                let repository_id = db.repository_archive_id();
                ArchiveEntry {
                    db: Some(db),
                    id: db.archive_id(),
                    timelines: by_id.remove(repository_id.as_str()).unwrap_or_default(),
                    repository_id,
                }
            })
            .collect();
        out.extend(by_id.into_iter().map(|(id, timelines)| ArchiveEntry {
            db: None,
            id: id.to_string(),
            repository_id: id.to_string(),
            timelines,
        }));
        out
    }
}

/// The stanza's identities with pgBackRest's history ids (`StanzaReport::dbs`), from its
/// `stanza.info` meta, its listed backups and the archive ids its WAL archive holds: what
/// `info` and the `repo-ls` view number alike, so an id means one cluster in both.
pub fn dbs_of(
    meta: &BTreeMap<String, String>,
    backups: &[cairn_repo::catalog::BackupRecord],
    archive_ids: &[&str],
) -> Vec<Db> {
    let mut seen: Vec<(u64, String)> = Vec::new();
    // An unreadable history is left out here: `Identity::history` names it elsewhere.
    let history = cairn_engines::postgres::identity::Identity::history(meta);
    for h in history.unwrap_or_default() {
        let v = h.version.to_string();
        if !seen.iter().any(|(s, ver)| *s == h.system_id && *ver == v) {
            seen.push((h.system_id, v));
        }
    }
    let mut add = |meta: &BTreeMap<String, String>| {
        if let (Some(Ok(sys)), Some(v)) = (
            meta.get("system-id").map(|s| s.parse::<u64>()),
            meta.get("version"),
        ) && !seen.iter().any(|(s, ver)| *s == sys && ver == v)
        {
            seen.push((sys, v.clone()));
        }
    };
    for b in backups {
        add(&b.meta);
    }
    add(meta);
    for id in archive_ids {
        if let Some((v, sys)) = id.split_once('-')
            && let Ok(sys) = sys.parse::<u64>()
            && !seen.iter().any(|(s, ver)| *s == sys && ver == v)
        {
            seen.push((sys, v.to_string()));
        }
    }
    seen.into_iter()
        .zip(1..)
        .map(|((system_id, version), id)| Db {
            id,
            system_id,
            version,
        })
        .collect()
}
