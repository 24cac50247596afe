//! `info`: backups, sizes and archive ranges, as text or pgBackRest-shaped JSON.

use crate::exit::usage;
use crate::info;
use crate::settings::Settings;
use anyhow::Result;
use cairn_repo::Repository;
use std::process::ExitCode;

pub(crate) async fn info_cmd(s: &Settings, output: Option<String>) -> Result<ExitCode> {
    let output = s
        .string(&output, "output")?
        .unwrap_or_else(|| "text".into());
    if output != "text" && output != "json" {
        return Err(usage(format!("--output '{output}': use text or json")));
    }
    let repo = Repository::open(s.store(false).await?).await?;
    let names = match &s.stanza {
        Some(_) => vec![s.stanza_name()?],
        None => repo.stanzas().await?,
    };
    let mut stanzas = Vec::new();
    let mut failed = Vec::new();
    for name in names {
        let report = match repo.stanza(&name).await {
            Ok(stanza) => info::StanzaReport::gather(&stanza).await,
            Err(e) => Err(e.into()),
        };
        match report {
            Ok(r) => stanzas.push(r),
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
    if output == "json" {
        say!("{}", serde_json::to_string_pretty(&info::json(&stanzas))?);
    } else {
        say_raw!("{}", info::text(&stanzas));
    }
    if !failed.is_empty() {
        return Err(anyhow::Error::new(cairn_repo::Error::Invalid(format!(
            "stanza(s) {} could not be read (listed above with why); give --stanza for the one error",
            failed.join(", ")
        ))));
    }
    Ok(ExitCode::SUCCESS)
}
