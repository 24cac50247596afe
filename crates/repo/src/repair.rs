//! `stanza-repair`: rebuild the catalog from the manifests, and the repository marker if it
//! was lost. Each manifest carries its own catalog record, so the manifests are the truth the
//! catalog summarises (pgBackRest rebuilds `backup.info` from its manifests the same way).
//!
//! A manifest is listed again only when it can be restored as far as cheap checks can tell:
//! it decodes, it is stored under its own label and stanza, every backup it references was
//! itself kept, and every chunk it names is in the index in a pack that is present. `verify`
//! afterwards re-reads the data itself.

use crate::catalog::Catalog;
use crate::error::Result;
use crate::ids::BackupLabel;
use crate::manifest::Content;
use crate::repository::Stanza;
use std::collections::BTreeSet;

#[derive(Debug, Default)]
pub struct RepairReport {
    /// The backups the rebuilt catalog lists, oldest first.
    pub listed: Vec<BackupLabel>,
    /// Manifests left out, with the reason.
    pub skipped: Vec<(BackupLabel, String)>,
    /// The backups the catalog listed before, when it was readable.
    pub before: Option<Vec<BackupLabel>>,
}

/// Rebuild the stanza's catalog (and its copy) from its manifests, under the stanza lock.
pub async fn rebuild_catalog(stanza: &Stanza) -> Result<RepairReport> {
    let lock = stanza.lock("stanza-repair").await?;
    let result = rebuild(stanza).await;
    lock.release().await?;
    result
}

async fn rebuild(stanza: &Stanza) -> Result<RepairReport> {
    let mut report = RepairReport {
        before: stanza
            .catalog()
            .await
            .ok()
            .map(|c| c.backups.into_iter().map(|b| b.label).collect()),
        ..RepairReport::default()
    };
    let (index, _) = stanza.index_of_present_packs().await?;
    let mut records = Vec::new();
    let mut kept: BTreeSet<BackupLabel> = BTreeSet::new();
    // Labels sort a chain's full before its diffs and incrs, so parents are judged first.
    for label in stanza.manifest_labels().await? {
        let m = match stanza.manifest(&label).await {
            Ok(m) => m,
            Err(e) => {
                report.skipped.push((label, e.to_string()));
                continue;
            }
        };
        if let Some(r) = m.record.references.iter().find(|r| !kept.contains(*r)) {
            report.skipped.push((
                label,
                format!("it depends on backup {r}, which is missing or was left out"),
            ));
            continue;
        }
        let lost = m.entries.iter().find_map(|e| match &e.content {
            Content::Chunks(c) => c
                .iter()
                .find(|c| !index.contains(&c.id))
                .map(|c| (e.display_path(), c.id)),
            _ => None,
        });
        if let Some((path, id)) = lost {
            report.skipped.push((
                label,
                format!("chunk {id} of '{path}' is in no present pack"),
            ));
            continue;
        }
        kept.insert(label);
        records.push(m.record);
    }
    records.sort_by(|a, b| (a.start, &a.label).cmp(&(b.start, &b.label)));
    report.listed = records.iter().map(|r| r.label.clone()).collect();
    stanza.save_catalog(&Catalog { backups: records }).await?;
    Ok(report)
}
