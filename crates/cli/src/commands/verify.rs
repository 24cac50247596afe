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
    let engine = engine_of(&stanza)?;
    let links = engine.links_restored_through();
    let check = |e: &[cairn_repo::manifest::FileEntry]| engine.check_entries(e);
    let mut report = verify::verify(&stanza, s.process_max, only.as_ref(), links, &check).await?;
    let mut note = String::new();
    if let Some(extras) = engine.verify_extras(&stanza, only.as_ref()).await? {
        for c in &extras.counted {
            note.push_str(&format!(
                ", {} {} ({})",
                c.count,
                c.what,
                info::human(c.bytes)
            ));
        }
        report.problems.extend(extras.problems);
        for key in extras.unreadable {
            report.damage.object(key);
        }
    }
    verify::record(&stanza, &mut report, only.is_some()).await;
    for p in &report.problems {
        let affects: Vec<String> = p.affects.iter().map(|l| l.to_string()).collect();
        let affects = if affects.is_empty() {
            "no listed backup".to_string()
        } else {
            affects.join(", ")
        };
        say!("damaged: {}: {} (affects: {affects})", p.object, p.detail);
    }
    say!(
        "verify: {} backup(s), {} pack(s), {} chunk(s), {} read{note}; {} problem(s); {} pack(s) no index segment names (left by interrupted backups, or named only by a damaged segment: `stanza-repair` indexes those again)",
        report.backups,
        report.packs,
        report.chunks,
        info::human(report.bytes),
        report.problems.len(),
        report.unreferenced_packs,
    );
    if !report.unlisted.is_empty()
        && report
            .problems
            .iter()
            .all(|p| !p.detail.contains("but the catalog is lost"))
    {
        let labels: Vec<&str> = report.unlisted.iter().map(|l| l.as_str()).collect();
        say!(
            "verify: {} manifest(s) that the catalog does not list, so not backups: {} (a backup interrupted before it was listed, one running now, or one stanza-repair left out; `cairn --stanza={} stanza-repair` lists those that are complete)",
            labels.len(),
            labels.join(", "),
            stanza.name()
        );
    }
    match &report.leftovers {
        Ok(left) if !left.is_empty() => {
            let bytes: u64 = left.iter().filter_map(|l| l.size).sum();
            let oldest = left.iter().map(|l| l.age).max().unwrap_or_default();
            say!(
                "verify: {} leftover(s) of interrupted writes ({} known, the oldest {} old): temporary files or unfinished uploads; not part of any backup",
                left.len(),
                info::human(bytes),
                humantime_secs(oldest.as_secs())
            );
        }
        Ok(_) => {}
        Err(e) => say!("verify: cannot list leftovers of interrupted writes: {e}"),
    }
    let condemned = stanza.condemned_or_warn().await;
    if !condemned.is_empty() {
        say!(
            "verify: {} pack(s) condemned by expire, which no listed backup needs, wait for deletion by a later expire",
            condemned.len()
        );
    }
    if report.superseded_packs > 0 {
        say!(
            "verify: {} damaged pack(s) are no longer needed: every chunk in them that is damaged was stored again intact",
            report.superseded_packs
        );
    }
    match &report.register {
        verify::Register::Saved { changed: true } if !report.damage.is_empty() => {
            let (packs, objects) = (report.damage.pack_count(), report.damage.objects().len());
            if packs > 0 {
                say!(
                    "verify: recorded {packs} damaged chunk(s) or pack(s) in the damage register: the next backup stores that data again where the source still has it"
                );
            }
            if objects > 0 {
                say!(
                    "verify: recorded {objects} damaged archived WAL file(s) in the damage register: archive-get refuses them (exit 126) and restores needing them are refused; put an intact copy back and run verify again"
                );
            }
        }
        verify::Register::Saved { changed: true } if report.problems.is_empty() => {
            say!("verify: the damage register is cleared: no damage remains")
        }
        verify::Register::NotSaved(e) => tracing::warn!(
            "could not record the damage found in the damage register ({e}); until a verify can, new backups may deduplicate against damaged chunks"
        ),
        _ => {}
    }
    if report.ok() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(Damaged(report.problems.len()).into())
    }
}

/// `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
fn humantime_secs(s: u64) -> String {
    let (d, h, m) = (s / 86_400, s / 3600 % 24, s / 60 % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {}s", s % 60),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}
