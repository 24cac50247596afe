//! `info`: backups, sizes and archive ranges, as text or pgBackRest-shaped JSON; `--type`
//! shows one type of backup, `--set` one backup with its databases, links and tablespaces.

use crate::exit::usage;
use crate::info::{self, View};
use crate::settings::Settings;
use anyhow::Result;
use cairn_repo::Repository;
use std::process::ExitCode;

pub(crate) async fn info_cmd(
    s: &Settings,
    output: Option<String>,
    set: Option<String>,
    kind: Option<String>,
) -> Result<ExitCode> {
    let output = s
        .string(&output, "output")?
        .unwrap_or_else(|| "text".into());
    if output != "text" && output != "json" {
        return Err(usage(format!("--output '{output}': use text or json")));
    }
    if let Some(k) = &kind
        && !["full", "diff", "incr"].contains(&k.as_str())
    {
        return Err(usage(format!("--type '{k}': use full, diff or incr")));
    }
    if set.is_some() && s.stanza.is_none() {
        return Err(usage(
            "--set needs --stanza: a backup label belongs to one stanza",
        ));
    }
    let view = View { kind, set };
    // A repository that is not there (a directory that does not exist, or one that is not a
    // cairn repository) is what pgBackRest calls a missing stanza path: a monitor gets an
    // answer it can judge (status 1, or no stanzas), exit 0, and the reason on stderr.
    let missing_repo = |why: String| -> Result<ExitCode> {
        tracing::warn!("{why}");
        let stanzas = match &s.stanza {
            Some(name) => vec![info::StanzaReport::missing(name)],
            None => Vec::new(),
        };
        print_reports(&output, &stanzas, &view)?;
        Ok(ExitCode::SUCCESS)
    };
    let local_missing = s
        .repo
        .as_deref()
        .filter(|r| !r.starts_with("s3://"))
        .map(std::path::Path::new)
        .filter(|p| p.is_absolute() && !p.exists());
    if let Some(p) = local_missing {
        return missing_repo(format!(
            "the repository {} does not exist; check --repo",
            p.display()
        ));
    }
    let repo = match Repository::open(s.store(false).await?).await {
        Ok(r) => r,
        Err(e) if e.is_not_found() => return missing_repo(e.to_string()),
        Err(e) => return Err(e.into()),
    };
    let names = match &s.stanza {
        Some(_) => vec![s.stanza_name()?],
        None => repo.stanzas().await?,
    };
    let mut stanzas = Vec::new();
    let mut failed = Vec::new();
    for name in names {
        // A stanza asked for by name that the repository does not hold is a status (1), as
        // pgBackRest reports it: a monitor gets JSON it can judge, and the exit code is 0.
        if s.stanza.is_some() && !repo.holds_stanza(&name).await? {
            // A typo gets its answer on stderr too; stdout stays what a monitor parses.
            tracing::warn!(
                "stanza '{name}' does not exist in {}; check --stanza (the repository holds: {})",
                repo.store().location(),
                list_or_none(&repo.stanzas().await?)
            );
            stanzas.push(info::StanzaReport::missing(name.as_str()));
            continue;
        }
        let report = match repo.stanza(&name).await {
            Ok(stanza) => info::StanzaReport::gather(&stanza, &view).await,
            Err(e) => Err(e.into()),
        };
        match report {
            Ok(mut r) => {
                r.local_backup = crate::status_file::read(&s.lock_path, name.as_str(), "backup");
                r.local_restore = crate::status_file::read(&s.lock_path, name.as_str(), "restore");
                stanzas.push(r)
            }
            // One stanza asked for by name: its error is the answer.
            Err(e) if s.stanza.is_some() => return Err(e),
            // Listing the repository: a damaged stanza does not hide the others.
            Err(e) => {
                let why = format!("{e:#}");
                failed.push(name.to_string());
                stanzas.push(info::StanzaReport::unreadable(name.as_str(), why));
            }
        }
    }
    print_reports(&output, &stanzas, &view)?;
    if !failed.is_empty() {
        return Err(anyhow::Error::new(cairn_repo::Error::Invalid(format!(
            "stanza(s) {} could not be read (listed above with why); give --stanza for the one error",
            failed.join(", ")
        ))));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_reports(output: &str, stanzas: &[info::StanzaReport], view: &View) -> Result<()> {
    if output == "json" {
        say!(
            "{}",
            serde_json::to_string_pretty(&info::json(stanzas, view))?
        );
    } else if stanzas.is_empty() {
        say!("No stanzas exist in the repository.");
    } else {
        say_raw!("{}", info::text(stanzas, view));
    }
    Ok(())
}

fn list_or_none(names: &[cairn_repo::StanzaName]) -> String {
    if names.is_empty() {
        "no stanza".into()
    } else {
        names
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}
