//! `archive-get`: PostgreSQL's restore_command.

use super::{postgres_stanza, wal_name};
use crate::settings::Settings;
use anyhow::{Context, Result};
use std::path::Path;
use std::process::ExitCode;

pub(crate) async fn archive_get(s: &Settings, name: &str, dest: &Path) -> Result<ExitCode> {
    let name = wal_name(name)?;
    let (stanza, identity) = postgres_stanza(s).await?;
    let Some(data) = stanza
        .archive_get(&identity.archive_id(), name.timeline, &name.name)
        .await?
    else {
        tracing::info!("unable to find {} in the archive", name.name);
        return Ok(ExitCode::from(1));
    };
    write_atomically(dest, &data).with_context(|| format!("cannot write {}", dest.display()))?;
    tracing::info!("found {} in the archive", name.name);
    Ok(ExitCode::SUCCESS)
}

/// Write to a temporary file beside `dest`, fsync, rename: PostgreSQL never sees half a file.
pub(crate) fn write_atomically(dest: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.cairn-tmp",
        dest.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dest)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
