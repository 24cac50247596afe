//! `info` output. JSON follows the layout of pgBackRest's `info --output=json` (a list of
//! stanzas, each with `backup` oldest first, `archive`, `db`, `status`), with cairn's extra
//! facts under `cairn` keys; text follows pgBackRest's text layout and adds what each backup
//! added to the repository and the stanza's deduplication ratio.

use anyhow::Result;
use cairn_engines::engine::BackupFacts;
use cairn_repo::Stanza;
use cairn_repo::catalog::Catalog;
use serde_json::{Value, json};
use std::fmt::Write;

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
    pub wal_files: usize,
    pub wal_bytes: u64,
    /// Plaintext bytes of the distinct chunks stored (what deduplication leaves).
    pub unique_bytes: u64,
    /// Packs garbage collection has condemned, and their bytes: what expire frees next.
    pub condemned_packs: usize,
    pub condemned_bytes: u64,
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
            wal_files: 0,
            wal_bytes: 0,
            unique_bytes: 0,
            condemned_packs: 0,
            condemned_bytes: 0,
        }
    }

    pub async fn gather(stanza: &Stanza) -> Result<StanzaReport> {
        let catalog = stanza.catalog().await?;
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
            wal_files,
            wal_bytes,
            unique_bytes,
            condemned_packs: condemned.len(),
            condemned_bytes,
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

    /// pgBackRest's status codes where they apply (0 ok, 2 no valid backups); 99 ("other")
    /// when the last verify found problems, so monitoring that alerts on a non-zero code
    /// notices damage that only verify can see.
    fn status(&self) -> (i32, String) {
        if let Some(why) = &self.unreadable {
            return (99, format!("cannot be read: {why}"));
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

pub fn json(stanzas: &[StanzaReport]) -> Value {
    Value::Array(
        stanzas
            .iter()
            .map(|s| {
                let (code, message) = s.status();
                let backups: Vec<Value> = s
                    .catalog
                    .backups
                    .iter()
                    .map(|b| {
                        json!({
                            "label": b.label.as_str(),
                            "type": b.kind.as_str(),
                            "prior": b.parent.as_ref().map(|p| p.as_str()),
                            "reference": if b.references.is_empty() { Value::Null } else {
                                Value::Array(b.references.iter().map(|r| Value::from(r.as_str())).collect())
                            },
                            "timestamp": {"start": b.start, "stop": b.stop},
                            "info": {
                                "size": b.size,
                                "delta": b.delta,
                                "repository": {"size": b.repo_size, "delta": b.repo_delta},
                            },
                            "archive": match (b.meta.get("wal-start"), b.meta.get("wal-stop")) {
                                (Some(a), Some(z)) => json!({"start": a, "stop": z}),
                                _ => Value::Null,
                            },
                            "lsn": match (b.meta.get("start-lsn"), b.meta.get("stop-lsn")) {
                                (Some(a), Some(z)) => json!({"start": a, "stop": z}),
                                _ => Value::Null,
                            },
                            "error": false,
                            "recovery": s.facts.get(b.label.as_str()).map(|f| f.recovery.clone()),
                            "cairn": {
                                "files": b.file_count,
                                "chunks": b.chunk_count,
                                "new-chunks": b.new_chunk_count,
                                "meta": b.meta,
                            },
                        })
                    })
                    .collect();
                json!({
                    "name": s.name,
                    "cipher": "none",
                    "status": {
                        "code": code,
                        "message": message,
                        "lock": {"backup": {"held": s.locked, "stale": s.stale_lock.is_some()}},
                    },
                    "db": match (s.meta.get("system-id"), s.meta.get("version")) {
                        (Some(id), Some(v)) => json!([{
                            "id": 1,
                            "repo-key": 1,
                            "system-id": id.parse::<u64>().unwrap_or(0),
                            "version": v,
                        }]),
                        _ => json!([]),
                    },
                    "archive": s.archives.iter().map(|(id, tli, min, max)| json!({
                        "id": id,
                        "timeline": tli,
                        "database": {"id": 1, "repo-key": 1},
                        "min": min,
                        "max": max,
                    })).collect::<Vec<_>>(),
                    "backup": backups,
                    "cairn": {
                        "engine": s.engine,
                        "repository": {
                            "size": s.pack_bytes + s.wal_bytes,
                            "packs": s.packs,
                            "pack-size": s.pack_bytes,
                            "wal": {"files": s.wal_files, "size": s.wal_bytes},
                            "logical-size": s.logical_total(),
                            "unique-size": s.unique_bytes,
                            "dedup-ratio": s.dedup_ratio(),
                            "compression-ratio": s.compression_ratio(),
                            "condemned": {"packs": s.condemned_packs, "size": s.condemned_bytes},
                        },
                    },
                })
            })
            .collect(),
    )
}

pub fn text(stanzas: &[StanzaReport]) -> String {
    let mut out = String::new();
    for s in stanzas {
        let (_, message) = s.status();
        let _ = writeln!(out, "stanza: {}", s.name);
        let _ = writeln!(
            out,
            "    status: {message}{}",
            match (&s.stale_lock, s.locked) {
                (_, true) => " (backup/expire running)".to_string(),
                (Some(h), false) => format!(
                    " (stale lock left by `{}`, pid {}, which is no longer running; the next backup takes it over)",
                    h.command, h.pid
                ),
                (None, false) => String::new(),
            }
        );
        let _ = writeln!(out, "    engine: {}", s.engine);
        let _ = writeln!(
            out,
            "    repository: {} ({} in {} packs, {} of WAL in {} files)",
            human(s.pack_bytes + s.wal_bytes),
            human(s.pack_bytes),
            s.packs,
            human(s.wal_bytes),
            s.wal_files
        );
        let _ = writeln!(
            out,
            "    backups: {} logical, {} after deduplication (ratio {:.2}x), stored in {} (compression ratio {:.2}x)",
            human(s.logical_total()),
            human(s.unique_bytes),
            s.dedup_ratio(),
            human(s.pack_bytes),
            s.compression_ratio()
        );
        if s.condemned_packs > 0 {
            let _ = writeln!(
                out,
                "    waiting for deletion: {} in {} condemned pack(s) no backup needs (a later expire deletes them)",
                human(s.condemned_bytes),
                s.condemned_packs
            );
        }
        for (id, tli, min, max) in &s.archives {
            let _ = writeln!(
                out,
                "    wal archive min/max ({id}, timeline {tli}): {min} / {max}"
            );
        }
        if let (Some(first), Some((_, tli, _, max))) =
            (s.catalog.backups.first(), s.archives.last())
        {
            let _ = writeln!(
                out,
                "    recovery window: from {} (end of backup {}) to the end of WAL {max} (timeline {tli})",
                cairn_repo::time::display(first.stop),
                first.label
            );
        }
        for b in &s.catalog.backups {
            let _ = writeln!(out);
            let _ = writeln!(out, "    {} backup: {}", b.kind, b.label);
            let _ = writeln!(
                out,
                "        timestamp start/stop: {} / {}",
                cairn_repo::time::display(b.start),
                cairn_repo::time::display(b.stop)
            );
            let _ = writeln!(
                out,
                "        size: {}, read: {}, files: {}",
                human(b.size),
                human(b.delta),
                b.file_count
            );
            let _ = writeln!(
                out,
                "        repository: backup set size: {}, added: {} ({} new chunks of {})",
                human(b.repo_size),
                human(b.repo_delta),
                b.new_chunk_count,
                b.chunk_count
            );
            if let (Some(a), Some(z)) = (b.meta.get("wal-start"), b.meta.get("wal-stop")) {
                let _ = writeln!(out, "        wal start/stop: {a} / {z}");
            }
            if let (Some(a), Some(z)) = (b.meta.get("start-lsn"), b.meta.get("stop-lsn")) {
                let _ = writeln!(out, "        lsn start/stop: {a} / {z}");
            }
            for (name, value) in s.facts.get(b.label.as_str()).map_or(&[][..], |f| &f.lines) {
                let _ = writeln!(out, "        {name}: {value}");
            }
            if let Some(n) = b.meta.get("checksum-page-errors").filter(|n| *n != "0") {
                let list = b
                    .meta
                    .get("checksum-page-error-list")
                    .map(String::as_str)
                    .unwrap_or("");
                let _ = writeln!(out, "        page checksum errors: {n}: {list}");
            }
            if let Some(n) = b.meta.get("files-changed-during-backup") {
                let _ = writeln!(
                    out,
                    "        warning: {n} file(s) changed while they were read (kept as last read; marked changed-during-backup in the manifest)"
                );
            }
            if !b.references.is_empty() {
                let refs: Vec<&str> = b.references.iter().map(|r| r.as_str()).collect();
                let _ = writeln!(out, "        backup reference list: {}", refs.join(", "));
            }
        }
        let _ = writeln!(out);
    }
    out
}
