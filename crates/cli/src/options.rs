//! The engines' view of the command line: `cairn_engines::Options` over the engine flags of
//! the running command, falling back to the config file as every other option does (flag >
//! `CAIRN_*` environment, which clap folds into the flag > config file). The engines ask by
//! long option name, so they need neither clap nor `Settings`.

use crate::exit::Usage;
use crate::settings::Settings;
use crate::{
    FilesBackupArgs, PgBackupArgs, PgClusterArgs, PgRestoreArgs, StreamBackupArgs,
    StreamRestoreArgs,
};
use cairn_engines::Options;
use cairn_repo::{Error, Result};
use std::path::PathBuf;

/// One engine flag as clap parsed it.
#[derive(Debug)]
pub(crate) enum Given {
    Text(Option<String>),
    Path(Option<PathBuf>),
    Number(Option<i64>),
    /// A switch, also settable in the config file.
    Switch(bool),
    /// A switch that has only ever been read from the command line (`--allow-empty`).
    FlagOnly(bool),
    /// Repeatable, command line only (`--tablespace-map`, the words after `--`).
    List(Vec<String>),
}

pub(crate) type Flags = Vec<(&'static str, Given)>;

pub(crate) struct EngineOptions<'a> {
    settings: &'a Settings,
    given: Flags,
}

impl<'a> EngineOptions<'a> {
    pub(crate) fn new(settings: &'a Settings, given: Flags) -> Self {
        EngineOptions { settings, given }
    }

    fn given(&self, key: &str) -> Option<&Given> {
        self.given.iter().find(|(k, _)| *k == key).map(|(_, g)| g)
    }
}

/// The cli's errors as the engines' (exit codes unchanged: usage stays 2, the rest 3).
fn engine_error(e: anyhow::Error) -> Error {
    match e.downcast_ref::<Usage>() {
        Some(Usage(msg)) => Error::Usage(msg.clone()),
        None => Error::Invalid(format!("{e:#}")),
    }
}

impl Options for EngineOptions<'_> {
    fn string(&self, key: &str) -> Result<Option<String>> {
        match self.given(key) {
            Some(Given::Text(Some(v))) => Ok(Some(v.clone())),
            Some(Given::Number(Some(n))) => Ok(Some(n.to_string())),
            _ => self.settings.file.string(key).map_err(engine_error),
        }
    }

    fn path(&self, key: &str) -> Result<Option<PathBuf>> {
        match self.given(key) {
            Some(Given::Path(Some(p))) => Ok(Some(p.clone())),
            Some(Given::Text(Some(v))) => Ok(Some(PathBuf::from(v))),
            _ => Ok(self.string(key)?.map(PathBuf::from)),
        }
    }

    fn integer(&self, key: &str) -> Result<Option<i64>> {
        match self.given(key) {
            Some(Given::Number(Some(n))) => Ok(Some(*n)),
            _ => self.settings.file.integer(key).map_err(engine_error),
        }
    }

    fn flag(&self, key: &str) -> Result<bool> {
        match self.given(key) {
            Some(Given::FlagOnly(b)) => Ok(*b),
            Some(Given::Switch(true)) => Ok(true),
            _ => Ok(self
                .settings
                .file
                .boolean(key)
                .map_err(engine_error)?
                .unwrap_or(false)),
        }
    }

    fn switch(&self, key: &str) -> Result<Option<bool>> {
        match self.given(key) {
            Some(Given::Switch(true) | Given::FlagOnly(true)) => Ok(Some(true)),
            _ => self.settings.file.boolean(key).map_err(engine_error),
        }
    }

    fn list(&self, key: &str) -> Result<Vec<String>> {
        match self.given(key) {
            Some(Given::List(v)) if !v.is_empty() => Ok(v.clone()),
            _ => self.settings.file.list(key).map_err(engine_error),
        }
    }

    fn invocation(&self) -> Result<Vec<String>> {
        self.settings.invocation().map_err(engine_error)
    }
}

impl PgClusterArgs {
    pub(crate) fn given(&self) -> Flags {
        vec![
            ("pg-path", Given::Path(self.pg_path.clone())),
            ("pg-host", Given::Text(self.pg_host.clone())),
            ("pg-port", Given::Number(self.pg_port.map(i64::from))),
            ("pg-user", Given::Text(self.pg_user.clone())),
        ]
    }
}

/// `--archive-timeout` (backup and check).
pub(crate) fn archive_timeout(t: Option<u64>) -> (&'static str, Given) {
    ("archive-timeout", Given::Number(t.map(|t| t as i64)))
}

impl PgBackupArgs {
    pub(crate) fn given(&self) -> Flags {
        vec![
            archive_timeout(self.archive_timeout),
            ("start-fast", Given::Switch(self.start_fast)),
        ]
    }
}

impl PgRestoreArgs {
    pub(crate) fn given(&self) -> Flags {
        vec![
            ("type", Given::Text(self.kind.clone())),
            ("target", Given::Text(self.target.clone())),
            ("target-action", Given::Text(self.target_action.clone())),
            ("target-timeline", Given::Text(self.target_timeline.clone())),
            ("tablespace-map", Given::List(self.tablespace_map.clone())),
            ("link-all", Given::Switch(self.link_all)),
            ("link-map", Given::List(self.link_map.clone())),
            ("archive-mode", Given::Text(self.archive_mode.clone())),
            ("ignore-archive-gap", Given::Switch(self.ignore_archive_gap)),
            ("target-exclusive", Given::Switch(self.target_exclusive)),
            ("recovery-option", Given::List(self.recovery_option.clone())),
            ("db-include", Given::List(self.db_include.clone())),
            ("db-exclude", Given::List(self.db_exclude.clone())),
        ]
    }
}

impl FilesBackupArgs {
    pub(crate) fn given(&self) -> Flags {
        vec![("source", Given::Path(self.source.clone()))]
    }
}

impl StreamBackupArgs {
    pub(crate) fn given(&self) -> Flags {
        vec![("command", Given::List(self.command.clone()))]
    }
}

impl StreamRestoreArgs {
    pub(crate) fn given(&self) -> Flags {
        vec![("command", Given::List(self.command.clone()))]
    }
}

/// A size as pgBackRest writes it: bytes, or a number with KiB, MiB, GiB, TiB (or KB, MB, GB,
/// TB, which pgBackRest also counts in 1024s; B alone is bytes). None when it is not one.
pub(crate) fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

#[cfg(test)]
mod size_tests {
    use super::parse_size;

    #[test]
    fn sizes_as_pgbackrest_writes_them() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("128MiB"), Some(128 << 20));
        assert_eq!(parse_size("1GB"), Some(1 << 30));
        assert_eq!(parse_size("2 tib"), Some(2 << 40));
        assert_eq!(parse_size("1.5GB"), None);
        assert_eq!(parse_size("GB"), None);
        assert_eq!(parse_size("99999999999TB"), None);
    }
}
