//! `info --output json`: pgBackRest 2.59's layout field for field (its reference output is
//! `shared/reference/pgbackrest-info.json`; tests compare the structure), cairn's extra facts
//! under `cairn` keys and extra fields pgBackRest's readers ignore.

use super::{StanzaReport, View};
use serde_json::{Value, json};

/// pgBackRest's info format number whose layout this output follows (`backup[].backrest`).
pub const BACKREST_FORMAT: u32 = 5;

pub fn json(stanzas: &[StanzaReport], view: &View) -> Value {
    Value::Array(stanzas.iter().map(|s| stanza(s, view)).collect())
}

fn stanza(s: &StanzaReport, view: &View) -> Value {
    let (code, message) = s.status_in(view);
    let dbs = s.dbs();
    let backups: Vec<Value> = s
        .catalog
        .backups
        .iter()
        .filter(|b| view.shows(b))
        .map(|b| {
            let errors: u64 = b
                .meta
                .get("checksum-page-errors")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let mut v = json!({
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
                "backrest": {"format": BACKREST_FORMAT, "version": env!("CARGO_PKG_VERSION")},
                "database": {
                    "id": StanzaReport::db_of(&dbs, &b.meta).unwrap_or(1),
                    "repo-key": 1,
                },
                "error": errors > 0,
                "recovery": s.facts.get(b.label.as_str()).map(|f| f.recovery.clone()),
                "cairn": {
                    "files": b.file_count,
                    "chunks": b.chunk_count,
                    "new-chunks": b.new_chunk_count,
                    "meta": b.meta,
                },
            });
            // As pgBackRest: present only on an annotated backup.
            let annotations = cairn_repo::annotate::annotations(&b.meta);
            if !annotations.is_empty()
                && let Some(o) = v.as_object_mut()
            {
                o.insert("annotation".into(), json!(annotations));
            }
            if let Some(d) = &s.set_detail
                && let Some(o) = v.as_object_mut()
            {
                o.insert(
                    "database-ref".into(),
                    d.databases
                        .iter()
                        .map(|(name, oid)| json!({"name": name, "oid": oid}))
                        .collect(),
                );
                o.insert(
                    "link".into(),
                    list_or_null(
                        d.links
                            .iter()
                            .map(|(name, dest)| json!({"name": name, "destination": dest})),
                    ),
                );
                o.insert(
                    "tablespace".into(),
                    list_or_null(d.tablespaces.iter().map(
                        |(name, dest, oid)| json!({"name": name, "destination": dest, "oid": oid}),
                    )),
                );
                if !d.error_files.is_empty() {
                    o.insert("error-list".into(), json!(d.error_files));
                }
            }
            v
        })
        .collect();
    json!({
        "name": s.name,
        "cipher": "none",
        "status": {
            "code": code,
            "message": message,
            "lock": {
                "backup": lock_json(json!({"held": s.locked, "stale": s.stale_lock.is_some()}), s.locked, &s.local_backup),
                "restore": lock_json(json!({"held": s.local_restore.held}), s.local_restore.held, &s.local_restore),
            },
        },
        "repo": [{
            "key": 1,
            "cipher": "none",
            "status": {"code": code, "message": message},
        }],
        "db": dbs.iter().map(|d| json!({
            "id": d.id,
            "repo-key": 1,
            "system-id": d.system_id,
            "version": d.version,
        })).collect::<Vec<_>>(),
        "archive": s.archive_entries(&dbs).iter().map(|a| {
            let (min, max) = a.min_max();
            json!({
                "id": a.id,
                "database": {"id": a.db.map_or(1, |d| d.id), "repo-key": 1},
                "min": min,
                "max": max,
                "cairn": {
                    "archive-id": a.repository_id,
                    "timelines": a.timelines.iter().map(|(tli, min, max)| json!({
                        "timeline": tli, "min": min, "max": max,
                    })).collect::<Vec<_>>(),
                },
            })
        }).collect::<Vec<_>>(),
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
}

fn list_or_null(items: impl Iterator<Item = Value>) -> Value {
    let v: Vec<Value> = items.collect();
    if v.is_empty() {
        Value::Null
    } else {
        Value::Array(v)
    }
}

/// A lock's object: `size` and `size-cplt` added, as pgBackRest adds them, while it is held
/// and this host's status file knows the size.
fn lock_json(mut v: Value, held: bool, seen: &crate::status_file::Seen) -> Value {
    if held
        && seen.held
        && seen.size > 0
        && let Some(o) = v.as_object_mut()
    {
        o.insert("size".into(), json!(seen.size));
        o.insert("size-cplt".into(), json!(seen.size_cplt));
    }
    v
}
