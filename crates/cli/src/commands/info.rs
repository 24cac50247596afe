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
    for name in names {
        let stanza = repo.stanza(&name).await?;
        stanzas.push(info::StanzaReport::gather(&stanza).await?);
    }
    if output == "json" {
        println!("{}", serde_json::to_string_pretty(&info::json(&stanzas))?);
    } else {
        print!("{}", info::text(&stanzas));
    }
    Ok(ExitCode::SUCCESS)
}
