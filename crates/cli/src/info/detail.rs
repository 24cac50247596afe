//! What `info --set` shows of one backup beyond its catalog record: the databases it holds,
//! its symlinks and tablespaces (from its manifest), and the files with bad page checksums.

use super::SetDetail;
use anyhow::Result;
use cairn_engines::postgres::backup::{recorded_databases, recorded_tablespaces};
use cairn_repo::Stanza;
use cairn_repo::catalog::BackupRecord;
use cairn_repo::manifest::{EntryKind, LINK_META};

/// The detail of `record`'s backup, reading its manifest.
pub async fn gather(stanza: &Stanza, record: &BackupRecord) -> Result<SetDetail> {
    let manifest = stanza.manifest(&record.label).await?;
    let mut detail = SetDetail {
        databases: databases(record),
        ..SetDetail::default()
    };
    // pgBackRest lists tablespaces by name.
    let names = recorded_tablespaces(&record.meta);
    for e in manifest
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::Symlink || e.meta.contains_key(LINK_META))
    {
        let path = e.display_path();
        // A followed link is recorded as what it points to, its target annotated.
        let target = match e.meta.get(LINK_META) {
            Some(t) => t.clone(),
            None => e
                .link_target
                .as_deref()
                .map(|t| String::from_utf8_lossy(t).into_owned())
                .unwrap_or_default(),
        };
        let tablespace = path
            .strip_prefix("pg_tblspc/")
            .and_then(|oid| oid.parse::<u32>().ok());
        match tablespace {
            Some(oid) => {
                let name = names
                    .iter()
                    .find(|(o, _)| *o == oid)
                    .map_or_else(|| oid.to_string(), |(_, n)| n.clone());
                detail.tablespaces.push((name, target, oid));
            }
            None => detail.links.push((path, target)),
        }
    }
    // `checksum-page-error-list` is `file (block, ...); ...`.
    if let Some(list) = record.meta.get("checksum-page-error-list") {
        detail.error_files = list
            .split("; ")
            .filter_map(|f| f.split(" (").next())
            .filter(|f| !f.is_empty())
            .map(String::from)
            .collect();
    }
    Ok(detail)
}

/// The backup's databases but the templates (none for backups made before they were
/// recorded).
fn databases(record: &BackupRecord) -> Vec<(String, u64)> {
    recorded_databases(&record.meta)
        .into_iter()
        .filter(|(_, name)| name != "template0" && name != "template1")
        .map(|(oid, name)| (name, u64::from(oid)))
        .collect()
}
