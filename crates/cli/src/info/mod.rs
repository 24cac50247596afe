//! `info` output. JSON follows pgBackRest's `info --output=json` field for field (a list of
//! stanzas, each with `archive` per database identity, `backup` oldest first, `db`, `repo` and
//! `status`), with cairn's extra facts under `cairn` keys; text follows pgBackRest's text
//! layout and adds what each backup added to the repository and the deduplication ratio.

mod detail;
pub(crate) mod history;
mod json;
mod text;

pub use json::json;
pub use text::text;

use cairn_repo::catalog::BackupRecord;

/// What `info` shows: every backup, those of one type (`--type`), or one (`--set`, with the
/// detail read from its manifest).
#[derive(Debug, Default)]
pub struct View {
    pub kind: Option<String>,
    pub set: Option<String>,
}

impl View {
    fn shows(&self, b: &BackupRecord) -> bool {
        self.kind.as_deref().is_none_or(|k| b.kind.as_str() == k)
            && self.set.as_deref().is_none_or(|l| b.label.as_str() == l)
    }
}

/// What `info --set` adds about the one backup (pgBackRest's `database-ref`, `link`,
/// `tablespace` and `error-list`).
#[derive(Debug, Default)]
pub struct SetDetail {
    /// (name, oid) of each database but the templates.
    pub databases: Vec<(String, u64)>,
    /// (path in the data directory, target) of each symlink but tablespaces'.
    pub links: Vec<(String, String)>,
    /// (name, target, oid) of each tablespace.
    pub tablespaces: Vec<(String, String, u32)>,
    /// Files with invalid page checksums.
    pub error_files: Vec<String>,
}

use anyhow::Result;
use cairn_engines::engine::BackupFacts;
use cairn_repo::Stanza;
use cairn_repo::catalog::Catalog;

pub struct StanzaReport {
    pub name: String,
    pub engine: String,
    pub catalog: Catalog,
    pub packs: usize,
    pub pack_bytes: u64,
    pub locked: bool,
    /// A lock left by a process that is no longer running (shown, but not as running).
    pub stale_lock: Option<cairn_repo::lock::LockInfo>,
    /// Per archive id and timeline: (archive id, timeline, first, last) archived segment.
    pub archives: Vec<(String, u32, String, String)>,
    pub meta: std::collections::BTreeMap<String, String>,
    /// What the stanza's engine adds per backup, by label (postgres: how far WAL replay from
    /// it gets).
    pub facts: std::collections::BTreeMap<String, BackupFacts>,
    /// What the last verify found (its damage register), or why it cannot be read.
    pub damage: Result<Option<cairn_repo::damage::DamageRegister>, String>,
    /// Why the stanza could not be read at all (the rest is then empty).
    pub unreadable: Option<String>,
    /// No stanza of that name in the repository (pgBackRest: "missing stanza path").
    pub missing: bool,
    /// With `--set`: that backup's detail (None when it is not in the catalog).
    pub set_detail: Option<SetDetail>,
    pub wal_files: usize,
    pub wal_bytes: u64,
    /// Plaintext bytes of the distinct chunks stored (what deduplication leaves).
    pub unique_bytes: u64,
    /// Packs garbage collection has condemned, and their bytes: what expire frees next.
    pub condemned_packs: usize,
    pub condemned_bytes: u64,
    /// This host's status files of a running backup and restore (`status_file`).
    pub local_backup: crate::status_file::Seen,
    pub local_restore: crate::status_file::Seen,
    /// Why the newest catalog could not be used (the list shown then comes from a copy or an
    /// older generation and may lack the newest backup).
    pub catalog_problem: Option<String>,
}

impl StanzaReport {
    /// A stanza that could not be read, listed among the others with why.
    pub fn unreadable(name: &str, why: String) -> StanzaReport {
        StanzaReport {
            name: name.to_string(),
            engine: "unknown".into(),
            catalog: Catalog::default(),
            packs: 0,
            pack_bytes: 0,
            locked: false,
            stale_lock: None,
            archives: Vec::new(),
            meta: Default::default(),
            facts: Default::default(),
            damage: Ok(None),
            unreadable: Some(why),
            missing: false,
            set_detail: None,
            wal_files: 0,
            wal_bytes: 0,
            unique_bytes: 0,
            condemned_packs: 0,
            condemned_bytes: 0,
            local_backup: Default::default(),
            local_restore: Default::default(),
            catalog_problem: None,
        }
    }

    /// A stanza asked for by name that the repository does not hold: reported with
    /// pgBackRest's status 1, so a monitor reads JSON it can judge.
    pub fn missing(name: &str) -> StanzaReport {
        StanzaReport {
            missing: true,
            unreadable: None,
            ..StanzaReport::unreadable(name, String::new())
        }
    }

    pub async fn gather(stanza: &Stanza, view: &View) -> Result<StanzaReport> {
        let mut report = Self::gather_all(stanza).await?;
        if let Some(set) = &view.set
            && let Some(b) = report
                .catalog
                .backups
                .iter()
                .find(|b| b.label.as_str() == set)
        {
            report.set_detail = Some(detail::gather(stanza, b).await?);
        }
        Ok(report)
    }

    async fn gather_all(stanza: &Stanza) -> Result<StanzaReport> {
        let (catalog, catalog_problem) = stanza.catalog_with_health().await?;
        let packs = stanza.store().list(&stanza.pack_prefix()?).await?;
        use cairn_repo::lock::{Lock, LockState};
        let (locked, stale_lock) =
            match Lock::inspect(stanza.store(), &stanza.lock_prefix()?).await? {
                LockState::Free => (false, None),
                LockState::Stale(h) => (false, Some(h)),
                LockState::Held(_) | LockState::Unreadable => (true, None),
            };
        let mut archives = Vec::new();
        let (mut wal_files, mut wal_bytes) = (0, 0);
        for id in stanza.archive_ids().await? {
            let mut by_tli: std::collections::BTreeMap<u32, (String, String)> = Default::default();
            for a in stanza.archive_list(&id).await? {
                wal_files += 1;
                wal_bytes += a.size;
                // Only whole segments bound the archive (not .history, .backup or .partial).
                if a.name.len() != 24 {
                    continue;
                }
                let e = by_tli
                    .entry(a.timeline)
                    .or_insert_with(|| (a.name.clone(), a.name.clone()));
                if a.name < e.0 {
                    e.0 = a.name.clone();
                }
                if a.name > e.1 {
                    e.1 = a.name;
                }
            }
            archives.extend(
                by_tli
                    .into_iter()
                    .map(|(t, (min, max))| (id.clone(), t, min, max)),
            );
        }
        // An extra: info still reports a stanza whose engine this cairn does not know.
        let facts = match cairn_engines::engine(&stanza.info.engine) {
            Ok(engine) => engine.info_facts(stanza, &catalog).await,
            Err(_) => Default::default(),
        };
        let damage = stanza.damage_register().await.map_err(|e| e.to_string());
        let unique_bytes = stanza.index_all().await?.raw_bytes()?;
        let condemned = stanza.condemned_or_warn().await;
        let condemned_bytes = packs
            .iter()
            .filter(|p| {
                cairn_repo::keys::parse_pack(&p.key).is_some_and(|id| condemned.contains_key(&id))
            })
            .map(|p| p.size)
            .sum();
        Ok(StanzaReport {
            damage,
            facts,
            unreadable: None,
            missing: false,
            set_detail: None,
            wal_files,
            wal_bytes,
            unique_bytes,
            condemned_packs: condemned.len(),
            condemned_bytes,
            local_backup: Default::default(),
            local_restore: Default::default(),
            catalog_problem,
            name: stanza.name().to_string(),
            engine: stanza.info.engine.clone(),
            packs: packs.len(),
            pack_bytes: packs.iter().map(|p| p.size).sum(),
            catalog,
            locked,
            stale_lock,
            archives,
            meta: stanza.info.meta.clone(),
        })
    }

    fn logical_total(&self) -> u64 {
        self.catalog.backups.iter().map(|b| b.size).sum()
    }

    /// Logical bytes of every backup over the plaintext bytes of the distinct chunks.
    fn dedup_ratio(&self) -> f64 {
        ratio(self.logical_total(), self.unique_bytes)
    }

    /// Plaintext bytes of the distinct chunks over the bytes of the packs holding them.
    fn compression_ratio(&self) -> f64 {
        ratio(self.unique_bytes, self.pack_bytes)
    }

    /// pgBackRest's status codes where they apply (0 ok, 1 missing stanza path, 2 no valid
    /// backups, 6 requested backup not found for `--set`); 99 ("other") when the last verify
    /// found problems, so monitoring that alerts on a non-zero code notices damage that only
    /// verify can see.
    fn status_in(&self, view: &View) -> (i32, String) {
        if self.missing {
            return (1, "missing stanza path".into());
        }
        if let Some(why) = &self.unreadable {
            return (99, format!("cannot be read: {why}"));
        }
        if let Some(set) = &view.set
            && !self.catalog.backups.iter().any(|b| b.label.as_str() == set)
        {
            return (6, "requested backup not found".into());
        }
        match &self.damage {
            Ok(Some(r)) if r.problems > 0 => {
                return (
                    99,
                    format!(
                        "damaged: the verify of {} found {} problem(s); run `cairn verify` for the list",
                        cairn_repo::time::display(r.written),
                        r.problems
                    ),
                );
            }
            Err(e) => {
                return (
                    99,
                    format!("damage register unreadable ({e}); run `cairn verify`"),
                );
            }
            _ => {}
        }
        if let Some(why) = &self.catalog_problem {
            return (
                99,
                format!(
                    "catalog damaged ({why}); the backups listed may lack the newest: run `cairn stanza-repair`"
                ),
            );
        }
        if self.catalog.backups.is_empty() {
            (2, "no valid backups".into())
        } else {
            (0, "ok".into())
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        ((a as f64 / b as f64) * 100.0).round() / 100.0
    }
}

/// Sizes as pgBackRest prints them: 22.1MB, 8.3KB, 366B.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KB", "MB", "GB", "TB", "PB"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1}{}", UNITS[unit])
}
