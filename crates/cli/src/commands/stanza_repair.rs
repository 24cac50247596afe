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
            "{} had lost its repository marker, or it was damaged; it was written again",
            repo.location()
        );
    }
    let stanza = repo.stanza(&name).await?;
    let report = cairn_repo::repair::rebuild_catalog(&stanza).await?;
    if report.reindexed_packs > 0 {
        say!(
            "indexed again: {} pack(s) that no index segment named ({} chunk(s)), from their own trailers",
            report.reindexed_packs,
            report.reindexed_chunks
        );
    }
    for seg in &report.removed_segments {
        say!("removed: damaged index segment {seg} (its packs are indexed again)");
    }
    for (pack, why) in &report.unreadable_packs {
        tracing::warn!("cannot index {pack} again: {why}");
    }
    for (label, why) in &report.skipped {
        say!("left out: backup {label}: {why}");
    }
    for (label, why) in &report.kept_damaged {
        say!(
            "damaged: backup {label} stays listed: {why}; the next backup stores the data again if the source still has it"
        );
    }
    let before: Option<std::collections::BTreeSet<_>> =
        report.before.as_ref().map(|b| b.iter().collect());
    for label in &report.listed {
        let note = match &before {
            Some(b) if !b.contains(label) => " (added)",
            None => " (recovered)",
            _ => "",
        };
        say!("listed: backup {label}{note}");
    }
    let mut removed = 0;
    if let Some(b) = &report.before {
        for label in b.iter().filter(|l| !report.listed.contains(l)) {
            if report.skipped.iter().any(|(s, _)| s == label) {
                say!("removed: backup {label} (see 'left out' above)");
            } else {
                say!("removed: backup {label}: its manifest is missing");
            }
            removed += 1;
        }
    }
    say!(
        "stanza-repair: the catalog of stanza '{}' lists {} backup(s); run `cairn verify` to re-read their data",
        stanza.name(),
        report.listed.len()
    );
    // Backups left out are still in the repository (their manifests are not deleted), but
    // restore cannot reach them: that deserves more than an exit 0.
    if !report.skipped.is_empty()
        || !report.unreadable_packs.is_empty()
        || !report.kept_damaged.is_empty()
        || removed > 0
    {
        tracing::warn!(
            "stanza-repair completed with warnings: {} backup manifest(s) left out ({removed} of them listed before), {} listed but damaged, {} pack(s) unreadable; `cairn verify` lists the damage",
            report.skipped.len(),
            report.kept_damaged.len(),
            report.unreadable_packs.len()
        );
        return Ok(ExitCode::from(crate::exit::WARNINGS));
    }
    Ok(ExitCode::SUCCESS)
}
