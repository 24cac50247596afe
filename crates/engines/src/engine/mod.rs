//! What every engine does for the command line, behind one object-safe trait, and the registry
//! of engines a stanza can be created with. The binary looks an engine up by the name recorded
//! in the stanza and calls the trait; it never asks which engine it holds. So a new engine is
//! its own folder plus one line in `ENGINES` (and clap flags, if it has options of its own).
//!
//! The async methods use `async-trait`: the binary holds engines as `&'static dyn Engine`, and
//! an `async fn` in a trait is not dyn-compatible. `async-trait` writes the boxed future
//! (`Pin<Box<dyn Future + Send>>`) each method would otherwise spell out by hand, and the
//! repository crate already uses it for its storage trait.

pub mod job;
mod request;

pub use request::{
    BackupFacts, BackupOutcome, BackupRequest, Counted, Options, ProgressFactory, RestoreRequest,
    VerifyExtras,
};

use crate::{files, postgres, stream};
use async_trait::async_trait;
use cairn_repo::catalog::Catalog;
use cairn_repo::manifest::FileEntry;
use cairn_repo::{BackupLabel, Error, Result, Stanza};
use std::collections::BTreeMap;
use std::path::Path;

/// Every engine, in the order `stanza-create --engine` lists them.
static ENGINES: &[&dyn Engine] = &[
    &postgres::engine::Postgres,
    &files::engine::Files,
    &stream::engine::Stream,
];

/// The engines a stanza can be created with.
pub fn engines() -> &'static [&'static dyn Engine] {
    ENGINES
}

/// The engine named `name` (a stanza's recorded engine, or `--engine`).
pub fn engine(name: &str) -> Result<&'static dyn Engine> {
    ENGINES
        .iter()
        .copied()
        .find(|e| e.name() == name)
        .ok_or_else(|| {
            Error::Usage(format!(
                "unknown engine '{name}': use {}",
                one_of(ENGINES.iter().map(|e| e.name()))
            ))
        })
}

/// The engine `stanza-create` uses without `--engine`: the first registered.
pub fn default_engine() -> &'static dyn Engine {
    ENGINES[0]
}

/// Refuse, for a stanza of `engine`, the options of every other engine (see
/// `Engine::refuse_foreign`), in registry order.
pub fn refuse_foreign_options(
    engine: &dyn Engine,
    command: Command,
    opts: &dyn Options,
) -> Result<()> {
    for other in ENGINES.iter().filter(|e| e.name() != engine.name()) {
        other.refuse_foreign(command, opts)?;
    }
    Ok(())
}

/// `a, b or c`, for messages that list what may be given.
pub fn one_of<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => last.to_string(),
        None => String::new(),
    }
}

/// The command an engine's options are checked for (see `Engine::refuse_foreign`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Command {
    Backup,
    Restore,
}

/// One kind of data a stanza holds: how to identify its source, back it up, restore it, and
/// what `verify` and `info` say beyond the repository's own checks.
#[async_trait]
pub trait Engine: Send + Sync + std::fmt::Debug {
    /// The name recorded in the stanza's info ("postgres", "files", "stream"). These are
    /// repository bytes: an engine's name never changes.
    fn name(&self) -> &'static str;

    /// What `stanza-create` records about the source (postgres: the cluster's identity from
    /// pg_control), checked by later backups and archive pushes.
    fn identity(&self, _opts: &dyn Options) -> Result<BTreeMap<String, String>> {
        Ok(BTreeMap::new())
    }

    /// `stanza-upgrade`: the stanza meta that replaces the stanza's now that its source (from
    /// `opts`) has a new identity, or None when it already is the stanza's. Only an engine
    /// whose source can change identity in place (postgres, after pg_upgrade) has one.
    async fn upgrade_identity(
        &self,
        _stanza: &Stanza,
        _opts: &dyn Options,
    ) -> Result<Option<BTreeMap<String, String>>> {
        Err(Error::Usage(format!(
            "stanza-upgrade is for postgres stanzas (after pg_upgrade): a {} stanza has no database identity to change",
            self.name()
        )))
    }

    /// Called for every engine but the stanza's: refuse this engine's own options when they
    /// were given for a stanza of another engine (a silently ignored option is a setting not
    /// applied). Runs before the stanza is locked or anything is read.
    fn refuse_foreign(&self, _command: Command, _opts: &dyn Options) -> Result<()> {
        Ok(())
    }

    /// Back up the source: everything between the generic options and the listed backup.
    async fn backup(&self, stanza: &Stanza, req: BackupRequest<'_>) -> Result<BackupOutcome>;

    /// Choose the backup (`req.set` or the engine's own choice) and lay it down.
    async fn restore(&self, stanza: &Stanza, req: RestoreRequest<'_>) -> Result<()>;

    /// Directories of a backup whose symlinks a restore follows, so entries beneath such a
    /// link are legitimate (postgres: tablespace links in `pg_tblspc`); anywhere else, a path
    /// beneath a symlink is damage (`manifest::check_paths`).
    fn links_restored_through(&self) -> &'static [&'static [u8]] {
        &[]
    }

    /// The engine's log archive, when it has one (postgres: WAL, for archive-push,
    /// archive-get and check).
    fn log_archive(&self) -> Option<&dyn LogArchive> {
        None
    }

    /// Refuse `stanza-delete` while the source still writes into the stanza (postgres: the
    /// cluster at pg-path is running). `--force` skips this.
    fn refuse_delete(&self, _opts: &dyn Options) -> Result<()> {
        Ok(())
    }

    /// Refuse a backup's resolved entries that this engine could not restore (stream: one
    /// entry, the stream). Restore applies it through its own reading of the entries; verify
    /// calls it on every backup, so the two agree.
    fn check_entries(&self, _entries: &[FileEntry]) -> Result<()> {
        Ok(())
    }

    /// What `verify` checks beyond the repository's objects (postgres: the WAL archive).
    async fn verify_extras(
        &self,
        _stanza: &Stanza,
        _only: Option<&BackupLabel>,
    ) -> Result<Option<VerifyExtras>> {
        Ok(None)
    }

    /// What `info` shows per backup beyond the catalog, by label (postgres: how far WAL replay
    /// from each backup gets). An extra: it never fails `info`.
    async fn info_facts(
        &self,
        _stanza: &Stanza,
        _catalog: &Catalog,
    ) -> BTreeMap<String, BackupFacts> {
        BTreeMap::new()
    }
}

/// A log archive filled between backups by the database itself (PostgreSQL's archive_command
/// and restore_command call these).
/// Asynchronous archiving's settings (`--archive-async`).
#[derive(Clone, Debug)]
pub struct Spool {
    /// `--spool-path`.
    pub path: std::path::PathBuf,
    /// `--archive-push-queue-max` (push) or `--archive-get-queue-max` (get), bytes.
    pub queue_max: Option<u64>,
    /// How long a call waits for the worker (`--archive-timeout`).
    pub timeout: std::time::Duration,
    pub process_max: usize,
}

/// Default `--archive-get-queue-max`: 128 MiB, as pgBackRest.
pub const DEFAULT_GET_QUEUE_MAX: u64 = 128 << 20;

#[async_trait]
pub trait LogArchive: Send + Sync {
    /// Store the log file at `path` (archive-push); durable in the repository when it returns.
    async fn push(
        &self,
        stanza: &Stanza,
        path: &Path,
        compress_level: i32,
        opts: &dyn Options,
    ) -> Result<()>;

    /// Fetch the log file `name` into `dest` (archive-get); false when the archive lacks it.
    async fn get(&self, stanza: &Stanza, name: &str, dest: &Path) -> Result<bool>;

    /// archive-push with `--archive-async`: return once the worker has made `path` durable
    /// (or, past `--archive-push-queue-max` with the repository unreachable, dropped it),
    /// calling `start_worker` when no worker runs. Engines without it say so.
    async fn push_async(
        &self,
        stanza: &Stanza,
        path: &Path,
        opts: &dyn Options,
        spool: &Spool,
        start_worker: &(dyn Fn() -> Result<()> + Send + Sync),
    ) -> Result<()>;

    /// The push worker: store every log file the database has queued, in parallel.
    async fn push_queued(
        &self,
        stanza: &Stanza,
        path: &Path,
        compress_level: i32,
        spool: &Spool,
    ) -> Result<()>;

    /// archive-get with `--archive-async`: from the spool when prefetched, else fetched; then
    /// `start_worker` prefetches what follows.
    async fn get_async(
        &self,
        stanza: &Stanza,
        name: &str,
        dest: &Path,
        spool: &Spool,
        start_worker: &(dyn Fn() -> Result<()> + Send + Sync),
    ) -> Result<bool>;

    /// The prefetch worker: fetch the log files after `name` into the spool.
    async fn prefetch(&self, stanza: &Stanza, name: &str, spool: &Spool) -> Result<()>;

    /// Prove the database delivers its log to the archive (check); returns the line to print.
    async fn check(&self, stanza: &Stanza, opts: &dyn Options) -> Result<String>;

    /// What `expire` removes from the log archive (see `cairn_repo::expire::LogPruner`).
    fn pruner(&self) -> &dyn cairn_repo::expire::LogPruner;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_repository_bytes_and_unknown_names_list_the_registry() {
        let names: Vec<&str> = engines().iter().map(|e| e.name()).collect();
        assert_eq!(names, ["postgres", "files", "stream"]);
        assert!(engine("files").is_ok_and(|e| e.name() == "files"));
        let err = engine("mysql").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("unknown engine 'mysql': use postgres, files or stream")
        );
    }
}
