//! `info` output. JSON follows the layout of pgBackRest's `info --output=json` (a list of
//! stanzas, each with `backup` oldest first, `archive`, `db`, `status`), with cairn's extra
//! facts under `cairn` keys; text follows pgBackRest's text layout and adds what each backup
//! added to the repository and the stanza's deduplication ratio.

use anyhow::Result;
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
}

impl StanzaReport {
    pub async fn gather(stanza: &Stanza) -> Result<StanzaReport> {
        let catalog = stanza.catalog().await?;
        let packs = stanza.store().list(&stanza.pack_prefix()?).await?;
        let locked = stanza.store().head(&stanza.lock_key()?).await.is_ok();
        Ok(StanzaReport {
            name: stanza.name().to_string(),
            engine: stanza.info.engine.clone(),
            packs: packs.len(),
            pack_bytes: packs.iter().map(|p| p.size).sum(),
            catalog,
            locked,
        })
    }

    fn logical_total(&self) -> u64 {
        self.catalog.backups.iter().map(|b| b.size).sum()
    }

    fn dedup_ratio(&self) -> f64 {
        if self.pack_bytes == 0 {
            0.0
        } else {
            self.logical_total() as f64 / self.pack_bytes as f64
        }
    }

    fn status(&self) -> (i32, &'static str) {
        if self.catalog.backups.is_empty() {
            (2, "no valid backups")
        } else {
            (0, "ok")
        }
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
                            "archive": Value::Null,
                            "lsn": Value::Null,
                            "error": false,
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
                        "lock": {"backup": {"held": s.locked}},
                    },
                    "db": [],
                    "archive": [],
                    "backup": backups,
                    "cairn": {
                        "engine": s.engine,
                        "repository": {
                            "packs": s.packs,
                            "size": s.pack_bytes,
                            "logical-size": s.logical_total(),
                            "dedup-ratio": (s.dedup_ratio() * 100.0).round() / 100.0,
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
            if s.locked {
                " (backup/expire running)"
            } else {
                ""
            }
        );
        let _ = writeln!(out, "    engine: {}", s.engine);
        let _ = writeln!(
            out,
            "    repository: {} in {} packs, {} of backups, dedup ratio {:.2}x",
            human(s.pack_bytes),
            s.packs,
            human(s.logical_total()),
            s.dedup_ratio()
        );
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
            if !b.references.is_empty() {
                let refs: Vec<&str> = b.references.iter().map(|r| r.as_str()).collect();
                let _ = writeln!(out, "        backup reference list: {}", refs.join(", "));
            }
        }
        let _ = writeln!(out);
    }
    out
}
