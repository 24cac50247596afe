//! `info` as text: pgBackRest's layout (`status: ok`, `status: error (no valid backups)`), with
//! what cairn adds (deduplication, what each backup added, how far recovery from it gets).

use super::{StanzaReport, View, human};
use std::fmt::Write;

pub fn text(stanzas: &[StanzaReport], view: &View) -> String {
    let mut out = String::new();
    for s in stanzas {
        let (code, message) = s.status_in(view);
        let status = if code == 0 {
            message
        } else {
            format!("error ({message})")
        };
        let _ = writeln!(out, "stanza: {}", s.name);
        let _ = writeln!(
            out,
            "    status: {status}{}",
            match (&s.stale_lock, s.locked) {
                (_, true) => format!(" (backup/expire running{})", percent(&s.local_backup)),
                (Some(h), false) => format!(
                    " (stale lock left by `{}`, pid {}, which is no longer running; the next backup takes it over)",
                    h.command, h.pid
                ),
                (None, false) => String::new(),
            }
        );
        if s.local_restore.held {
            let _ = writeln!(
                out,
                "    restore running on this host{}",
                percent(&s.local_restore)
            );
        }
        if s.missing {
            let _ = writeln!(out);
            continue;
        }
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
        let dbs = s.dbs();
        for a in s.archive_entries(&dbs) {
            let current = a.db.is_some_and(|d| Some(d) == dbs.last());
            let _ = writeln!(
                out,
                "    db{} {}: wal archive min/max: {}",
                if current { " (current)" } else { "" },
                a.id,
                match a.min_max() {
                    (Some(min), Some(max)) => format!("{min} / {max}"),
                    _ => "none".into(),
                }
            );
            if a.timelines.len() > 1 {
                for (tli, min, max) in &a.timelines {
                    let _ = writeln!(out, "        timeline {tli}: {min} / {max}");
                }
            }
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
        for b in s.catalog.backups.iter().filter(|b| view.shows(b)) {
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
            let annotations = cairn_repo::annotate::annotations(&b.meta);
            if !annotations.is_empty() {
                let _ = writeln!(
                    out,
                    "        annotation(s): {}",
                    annotations
                        .iter()
                        .map(|(k, v)| format!("{k}: {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
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
            if let Some(d) = &s.set_detail {
                let dbs: Vec<String> = d
                    .databases
                    .iter()
                    .map(|(name, oid)| format!("{name} ({oid})"))
                    .collect();
                let _ = writeln!(out, "        database list: {}", dbs.join(", "));
                if !d.links.is_empty() {
                    let _ = writeln!(out, "        symlinks:");
                    for (name, dest) in &d.links {
                        let _ = writeln!(out, "            {name} => {dest}");
                    }
                }
                if !d.tablespaces.is_empty() {
                    let _ = writeln!(out, "        tablespaces:");
                    for (name, dest, oid) in &d.tablespaces {
                        let _ = writeln!(out, "            {name} ({oid}) => {dest}");
                    }
                }
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

/// ` - 45.00% complete`, as pgBackRest shows it, when a status file gives the size.
fn percent(seen: &crate::status_file::Seen) -> String {
    if !seen.held || seen.size == 0 {
        return String::new();
    }
    format!(
        " - {:.2}% complete",
        seen.size_cplt as f64 * 100.0 / seen.size as f64
    )
}
