//! The `stream` engine on the command line: back up standard input or the output of a
//! producer command (after `--`), restore to `--dest` (a file, or `-` for stdout) or into a
//! consumer command (after `--`).

use super::command::{Checked, Consumer, Producer};
use crate::engine::job::{self, GIVE_DEST};
use crate::engine::{BackupOutcome, BackupRequest, Command, Engine, Options, RestoreRequest};
use async_trait::async_trait;
use cairn_repo::manifest::FileEntry;
use cairn_repo::pipeline::VanishPolicy;
use cairn_repo::{Error, Result, Stanza};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;

#[derive(Debug)]
pub struct Stream;

#[async_trait]
impl Engine for Stream {
    fn name(&self) -> &'static str {
        "stream"
    }

    fn refuse_foreign(&self, command: Command, opts: &dyn Options) -> Result<()> {
        let given = !opts.list("command")?.is_empty();
        match command {
            Command::Backup if given => Err(Error::Usage(
                "a command after `--` is for stream stanzas (the producer of the stream)".into(),
            )),
            Command::Restore if given => Err(Error::Usage(
                "a command after `--` is for stream stanzas (the consumer of the restored stream)"
                    .into(),
            )),
            _ => Ok(()),
        }
    }

    fn check_entries(&self, entries: &[FileEntry]) -> Result<()> {
        super::the_stream(entries).map(|_| ())
    }

    async fn backup(&self, stanza: &Stanza, req: BackupRequest<'_>) -> Result<BackupOutcome> {
        let command = req.options.list("command")?;
        let allow_empty = req.options.flag("allow-empty")?;
        if command.is_empty() && std::io::stdin().is_terminal() {
            return Err(Error::Usage(
                "a stream stanza backs up the output of a command: `cairn backup -- pg_dump -Fc -Z0 db` (or pipe it into standard input)".into(),
            ));
        }
        let job = job::begin(stanza, req.job_options(VanishPolicy::Fail)).await?;
        // The producer starts once the stanza is locked, and from the thread that polls this
        // future (the binary's main thread): its parent-death signal is tied to the thread
        // that started it.
        let source = if command.is_empty() {
            super::source(Box::new(Checked::stdin(allow_empty)))
        } else {
            match Producer::start(&command) {
                Ok(p) => {
                    let origin = format!("the output of '{}'", p.name());
                    let r = Checked::producer(p, allow_empty);
                    super::source_from(Box::new(r), origin)
                }
                Err(e) => {
                    let _ = job.abort().await;
                    return Err(e);
                }
            }
        };
        job::finish(job, Ok(vec![source]), req.progress, BTreeMap::new()).await
    }

    async fn restore(&self, stanza: &Stanza, req: RestoreRequest<'_>) -> Result<()> {
        let command = req.options.list("command")?;
        let (label, entries, index) = job::chosen_entries(stanza, req.catalog, req.set).await?;
        if !command.is_empty() {
            if req.dest.is_some() {
                return Err(Error::Usage(
                    "give either --dest or a consumer command after `--`, not both".into(),
                ));
            }
            let consumer = Consumer::start(&command)?;
            let dest = Path::new("-");
            let (process_max, progress) = (req.process_max, req.progress);
            super::restore(
                stanza,
                &index,
                &entries,
                dest,
                Some(consumer),
                process_max,
                progress,
            )
            .await?;
            tracing::info!("restored backup {label} into '{}'", command[0]);
            return Ok(());
        }
        let dest = req.dest.ok_or_else(|| Error::Usage(GIVE_DEST.into()))?;
        let (process_max, progress) = (req.process_max, req.progress);
        super::restore(stanza, &index, &entries, &dest, None, process_max, progress).await?;
        tracing::info!("restored backup {label} to {}", dest.display());
        Ok(())
    }
}
