//! What `info --set` shows of one backup beyond its catalog record: the databases it holds,
//! its symlinks and tablespaces (from its manifest), and the files with bad page checksums.

use super::SetDetail;
use anyhow::Result;
use cairn_repo::Stanza;
use cairn_repo::catalog::BackupRecord;
use cairn_repo::manifest::EntryKind;

/// The detail of `record`'s backup, reading its manifest.
pub async fn gather(stanza: &Stanza, record: &BackupRecord) -> Result<SetDetail> {
    let manifest = stanza.manifest(&record.label).await?;
    let mut detail = SetDetail {
        databases: databases(record),
        ..SetDetail::default()
    };
    // pgBackRest lists tablespaces by name: `tablespaces` is `oid=name,...`.
    let names: Vec<(u32, &str)> = record
        .meta
        .get("tablespaces")
        .map(|t| {
            t.split(',')
                .filter_map(|p| p.split_once('='))
                .filter_map(|(oid, name)| Some((oid.parse().ok()?, name)))
                .collect()
        })
        .unwrap_or_default();
    for e in manifest
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::Symlink)
    {
        let path = e.display_path();
        let target = e
            .link_target
            .as_deref()
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .unwrap_or_default();
        let tablespace = path
            .strip_prefix("pg_tblspc/")
            .and_then(|oid| oid.parse::<u32>().ok());
        match tablespace {
            Some(oid) => {
                let name = names
                    .iter()
                    .find(|(o, _)| *o == oid)
                    .map_or_else(|| oid.to_string(), |(_, n)| n.to_string());
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

/// The backup's databases but the templates, from `databases` (a JSON list of `[oid,
/// name]` the postgres engine records at backup time; older backups have none).
fn databases(record: &BackupRecord) -> Vec<(String, u64)> {
    let Some(list) = record.meta.get("databases") else {
        return Vec::new();
    };
    let parsed: Vec<(u64, String)> = serde_json::from_str(list).unwrap_or_default();
    parsed
        .into_iter()
        .filter(|(_, name)| name != "template0" && name != "template1")
        .map(|(oid, name)| (name, oid))
        .collect()
}
