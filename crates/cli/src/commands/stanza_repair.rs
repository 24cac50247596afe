//! `stanza-repair`: recreate a lost repository marker and rebuild the stanza's catalog from
//! its backup manifests (after a catalog was deleted or damaged, or to list a backup whose
//! catalog update was interrupted).

use crate::settings::Settings;
use anyhow::Result;
use cairn_repo::Repository;
use std::process::ExitCode;

pub(crate) async fn stanza_repair(s: &Settings) -> Result<ExitCode> {
    let name = s.stanza_name()?;
    let (repo, marker) = Repository::open_repairing_marker(s.store(false).await?).await?;
    if marker {
        tracing::warn!(
            "{} had lost its repository marker; it was written again",
            repo.location()
        );
    }
    let stanza = repo.stanza(&name).await?;
    let report = cairn_repo::repair::rebuild_catalog(&stanza).await?;
    for (label, why) in &report.skipped {
        println!("left out: backup {label}: {why}");
    }
    let before: Option<std::collections::BTreeSet<_>> =
        report.before.as_ref().map(|b| b.iter().collect());
    for label in &report.listed {
        let note = match &before {
            Some(b) if !b.contains(label) => " (added)",
            None => " (recovered)",
            _ => "",
        };
        println!("listed: backup {label}{note}");
    }
    if let Some(b) = &report.before {
        for label in b.iter().filter(|l| !report.listed.contains(l)) {
            println!("removed: backup {label} (see 'left out' above)");
        }
    }
    println!(
        "stanza-repair: the catalog of stanza '{}' lists {} backup(s); run `cairn verify` to re-read their data",
        stanza.name(),
        report.listed.len()
    );
    Ok(ExitCode::SUCCESS)
}
