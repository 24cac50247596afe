//! `verify`: re-read every object and report what is damaged or missing.

use super::{engine_of, open_stanza};
use crate::exit::{Damaged, usage};
use crate::info;
use crate::settings::Settings;
use anyhow::Result;
use cairn_repo::{BackupLabel, verify};
use std::process::ExitCode;

pub(crate) async fn verify_cmd(s: &Settings, set: Option<String>) -> Result<ExitCode> {
    let stanza = open_stanza(s).await?;
    let only = match s.string(&set, "set")? {
        Some(l) => Some(BackupLabel::parse(&l).map_err(|e| usage(e.to_string()))?),
        None => None,
    };
    if let Some(l) = &only
        && stanza.catalog().await?.get(l).is_none()
    {
        return Err(cairn_repo::Error::NotFound(format!(
            "backup {l} does not exist in stanza '{}'",
            stanza.name()
        ))
        .into());
    }
    let mut report = verify::verify(&stanza, s.process_max, only.as_ref()).await?;
    let mut note = String::new();
    if let Some(extras) = engine_of(&stanza)?
        .verify_extras(&stanza, only.as_ref())
        .await?
    {
        for c in &extras.counted {
            note.push_str(&format!(
                ", {} {} ({})",
                c.count,
                c.what,
                info::human(c.bytes)
            ));
        }
        report.problems.extend(extras.problems);
    }
    for p in &report.problems {
        let affects: Vec<String> = p.affects.iter().map(|l| l.to_string()).collect();
        let affects = if affects.is_empty() {
            "no listed backup".to_string()
        } else {
            affects.join(", ")
        };
        println!("damaged: {}: {} (affects: {affects})", p.object, p.detail);
    }
    println!(
        "verify: {} backup(s), {} pack(s), {} chunk(s), {} read{note}; {} problem(s); {} unreferenced pack(s) and {} unlisted manifest(s) left by interrupted backups",
        report.backups,
        report.packs,
        report.chunks,
        info::human(report.bytes),
        report.problems.len(),
        report.unreferenced_packs,
        report.unlisted_manifests
    );
    if report.ok() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(Damaged(report.problems.len()).into())
    }
}
