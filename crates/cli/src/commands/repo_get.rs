//! `repo-get FILE`: a file of the repository view (`repo_view`) on standard output, as plain
//! bytes: an archived WAL file decompressed, a backup's file assembled from its chunks by the
//! restore path. Every byte is checked (the WAL object's CRC, each chunk's BLAKE3 name) before
//! it is written, so damage is an error, never wrong bytes.

use super::repo_ls::base_path;
use crate::exit::usage;
use crate::repo_view::{Found, Origin, View, relative_path};
use crate::settings::Settings;
use anyhow::Result;
use cairn_engines::postgres::wal::WalFileName;
use cairn_repo::Repository;
use std::io::Write;
use std::process::ExitCode;

pub(crate) async fn repo_get_cmd(
    s: &Settings,
    file: &str,
    ignore_missing: bool,
    raw: bool,
) -> Result<ExitCode> {
    let ignore_missing = s.flag(ignore_missing, "ignore-missing")?;
    // pgBackRest's --raw skips decryption; nothing in the view is encrypted.
    let _ = s.flag(raw, "raw")?;
    let segs = relative_path(file, &base_path(s)?).map_err(usage)?;
    // As pgBackRest checks: `archive/<stanza>/...` and `backup/<stanza>/...` belong to a
    // stanza, which --stanza, when given, must name.
    if segs.len() > 2
        && let Some(stanza) = &s.stanza
        && segs[1] != *stanza
    {
        return Err(usage(format!(
            "stanza name '{stanza}' given in option doesn't match the given path '{file}' (stanza '{}'); give --stanza={} or leave --stanza out",
            segs[1], segs[1]
        )));
    }
    let repo = Repository::open(s.store(false).await?).await?;
    let node = match (View { repo: &repo }).find(&segs, false).await? {
        Found::File(node) => node,
        Found::Missing if ignore_missing => return Ok(ExitCode::from(1)),
        Found::Missing => {
            return Err(cairn_repo::Error::NotFound(format!(
                "file '{file}' does not exist in the repository; `cairn repo-ls` lists what it holds (--ignore-missing exits 1 without this message)"
            ))
            .into());
        }
        Found::Dir(_) => {
            return Err(usage(format!(
                "'{file}' is a path, not a file; `cairn repo-ls {file}` lists it"
            )));
        }
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
    match node.origin {
        Origin::Wal {
            stanza,
            repository_id,
            identity,
            timeline,
            name,
        } => {
            let bytes = stanza
                .archive_get(&repository_id, timeline, &name)
                .await?
                .ok_or_else(|| {
                    cairn_repo::Error::NotFound(format!(
                        "file '{file}' was removed from the archive while it was read"
                    ))
                })?;
            // As archive-get: bytes that are not the file the name says are damage.
            if let (Some(i), Some(w)) = (identity, WalFileName::parse(&name)) {
                i.check_archived(&w, &bytes)?;
            }
            out.write_all(&bytes)
                .and_then(|()| out.flush())
                .map_err(|e| cairn_repo::Error::io(format!("cannot write {file}"), e))?;
        }
        Origin::Backup {
            stanza,
            manifest,
            entry,
        } => {
            let e = manifest
                .entries
                .get(entry)
                .ok_or_else(|| anyhow::anyhow!("internal: entry {entry} of {file} is gone"))?;
            let index = stanza.index().await?;
            cairn_repo::restore::fetch_file_ordered(
                &stanza,
                &index,
                file,
                &e.content,
                e.size,
                s.process_max,
                &mut out,
            )
            .await?;
        }
        Origin::Nothing => {
            return Err(usage(format!(
                "'{file}' is a link or special file, not a file with content"
            )));
        }
    }
    Ok(ExitCode::SUCCESS)
}
