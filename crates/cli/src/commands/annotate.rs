//! `annotate`: add, change or remove the annotations of a backup (pgBackRest's command of the
//! same name); `info` shows them.

use super::open_stanza;
use crate::exit::usage;
use crate::settings::Settings;
use anyhow::Result;
use cairn_repo::BackupLabel;
use cairn_repo::annotate;
use std::process::ExitCode;

pub(crate) async fn annotate_cmd(
    s: &Settings,
    set: String,
    annotation: Vec<String>,
) -> Result<ExitCode> {
    let label = BackupLabel::parse(&set).map_err(|e| usage(format!("--set: {e}")))?;
    let changes = annotate::parse(&annotation)?;
    let stanza = open_stanza(s).await?;
    let record = annotate::annotate(&stanza, &label, &changes).await?;
    let now = annotate::annotations(&record.meta);
    tracing::info!(
        "backup {label} annotations: {}",
        if now.is_empty() {
            "none".to_string()
        } else {
            now.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    Ok(ExitCode::SUCCESS)
}
