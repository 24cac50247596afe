//! What the binary hands an engine and what it gets back. Engine options reach an engine as
//! keys (the long flag names, which are also the config file's keys) through `Options`, which
//! the binary implements with its flag > `CAIRN_*` environment > config file resolution: an
//! engine reads its own keys and knows nothing of clap. What every engine needs (backup type,
//! --process-max, progress) comes typed.

use cairn_repo::backup::{BackupOptions, DEFAULT_PACK_TARGET};
use cairn_repo::catalog::{BackupRecord, Catalog};
use cairn_repo::pipeline::{Progress, VanishPolicy};
use cairn_repo::verify::Problem;
use cairn_repo::{BackupLabel, BackupType, Result};
use std::path::PathBuf;
use std::sync::Arc;

/// Engine options by key, resolved flag > `CAIRN_*` environment > config file (except where
/// the binary documents a flag as command-line only).
pub trait Options: Send + Sync {
    fn string(&self, key: &str) -> Result<Option<String>>;
    fn path(&self, key: &str) -> Result<Option<PathBuf>>;
    fn integer(&self, key: &str) -> Result<Option<i64>>;
    /// A switch: true when given anywhere.
    fn flag(&self, key: &str) -> Result<bool>;
    /// A switch whose default is the engine's: Some(true) when given, Some(false) when
    /// negated (`--no-start-fast`, `start-fast=n`), None when not set anywhere.
    fn switch(&self, key: &str) -> Result<Option<bool>>;
    /// A repeatable option, or the words after `--` (key "command").
    fn list(&self, key: &str) -> Result<Vec<String>>;
    /// The words that run this cairn again against the same repository and stanza (what a
    /// restored cluster's restore_command calls), without the command.
    fn invocation(&self) -> Result<Vec<String>>;
}

/// Makes the progress reporter for a step ("backup", "restore"). A factory rather than a
/// reporter, because the reporter times the transfer from its creation, which each engine
/// places just before its copy.
pub type ProgressFactory = dyn Fn(&'static str) -> Arc<dyn Progress> + Send + Sync;

/// A backup as asked for, before the engine adds its own part.
pub struct BackupRequest<'a> {
    pub kind: BackupType,
    /// Read every file instead of trusting size and mtime.
    pub delta: bool,
    pub process_max: usize,
    pub compress_level: i32,
    pub options: &'a dyn Options,
    pub progress: &'a ProgressFactory,
    /// `--annotation KEY=VALUE`, for the backup's record.
    pub annotations: std::collections::BTreeMap<String, String>,
}

impl BackupRequest<'_> {
    /// The repository's job options, with the engine's answer to a file vanishing mid-backup.
    pub fn job_options(&self, vanish: VanishPolicy) -> BackupOptions {
        BackupOptions {
            kind: self.kind,
            process_max: self.process_max,
            compress_level: self.compress_level,
            pack_target: DEFAULT_PACK_TARGET,
            vanish,
            delta: self.delta,
            command: "backup".into(),
            annotations: self.annotations.clone(),
        }
    }
}

impl std::fmt::Debug for BackupRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupRequest")
            .field("kind", &self.kind)
            .field("delta", &self.delta)
            .field("process_max", &self.process_max)
            .finish_non_exhaustive()
    }
}

/// A listed backup and what the binary logs after its summary line.
#[derive(Debug)]
pub struct BackupOutcome {
    pub record: BackupRecord,
    /// Logged as warnings after the summary.
    pub warnings: Vec<String>,
    /// Listed, but something in it deserves a look: exit code 6.
    pub completed_with_warnings: bool,
}

/// A restore as asked for. `set` and `dest` are the generic options; the engine decides what
/// their absence means (the newest backup; pg-path for postgres).
pub struct RestoreRequest<'a> {
    /// The stanza's catalog, known to list at least one backup.
    pub catalog: &'a Catalog,
    pub set: Option<BackupLabel>,
    pub dest: Option<PathBuf>,
    pub process_max: usize,
    pub options: &'a dyn Options,
    pub progress: Arc<dyn Progress>,
}

impl std::fmt::Debug for RestoreRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreRequest")
            .field("set", &self.set)
            .field("dest", &self.dest)
            .field("process_max", &self.process_max)
            .finish_non_exhaustive()
    }
}

/// What `verify` found beyond the repository's objects.
#[derive(Debug, Default)]
pub struct VerifyExtras {
    pub problems: Vec<Problem>,
    /// What was read, for the summary line ("12 WAL file(s) (192.0MB)").
    pub counted: Vec<Counted>,
    /// Keys of objects found present but unreadable, for the damage register (postgres:
    /// archived WAL files, which replay then treats as holes).
    pub unreadable: Vec<String>,
}

/// `count` objects of kind `what` (plural form, "WAL file(s)") totalling `bytes`.
#[derive(Debug)]
pub struct Counted {
    pub count: usize,
    pub what: &'static str,
    pub bytes: u64,
}

/// What `info` adds about one backup.
#[derive(Debug)]
pub struct BackupFacts {
    /// The backup's `recovery` in JSON output: how far a restore from it can go.
    pub recovery: serde_json::Value,
    /// Lines of the text output, as (name, value).
    pub lines: Vec<(String, String)>,
}
