//! The `cairn` command line. Options come from flags, `CAIRN_*` environment variables and the
//! TOML config file (`config`, `settings`), engine options reach the engines through `options`,
//! commands are in `commands`, output formats in `info`.
//!
//! Exit codes: 0 success; 1 not found (unknown stanza, backup or WAL file); 2 usage (bad
//! option, bad value); 3 the operation failed; 4 `verify` found damage; 5 the stanza is locked;
//! 6 completed with warnings (see `exit`).

/// `println!` that ignores a closed stdout (`cairn info | head -1`, `cairn verify | true`):
/// the command's outcome decides its exit code, not whether anyone read its report (a
/// panic there ended as "internal error", exit 70).
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

/// `print!` that ignores a closed stdout (see `say!`).
macro_rules! say_raw {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = write!(out, $($t)*).and_then(|()| out.flush());
    }};
}

mod commands;
mod config;
mod exit;
mod info;
mod logging;
mod options;
mod pgbackrest;
mod progress;
mod repo_view;
mod settings;
mod status_file;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "cairn",
    version,
    about = "Backup repository engine for databases",
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
    /// The subcommand's name (`backup`), for the config file's `[global:backup]` sections.
    #[arg(skip)]
    pub command_name: String,
    /// Switches negated on the command line as pgBackRest does (`--no-delta`).
    #[arg(skip)]
    pub negated: Vec<String>,
    /// What translating pgBackRest's option names found to report once logging is set up.
    #[arg(skip)]
    pub(crate) notes: pgbackrest::Notes,
    /// The options given on the command line or in `CAIRN_*` variables, by long name, for
    /// the log file's begin line.
    #[arg(skip)]
    pub given: Vec<(String, Option<String>)>,
    /// `--repo` came from `CAIRN_REPO`, not the command line (which pgBackRest's
    /// `--repo1-path` there then wins over).
    #[arg(skip)]
    pub repo_from_env: bool,
}

/// The options `matches` got from the command line or the environment, by long name.
fn given_options(
    command: &clap::Command,
    matches: &clap::ArgMatches,
) -> Vec<(String, Option<String>)> {
    use clap::parser::ValueSource;
    let mut given = Vec::new();
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else {
            continue;
        };
        let id = arg.get_id().as_str();
        if !matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let value = if arg.get_action().takes_values() {
            matches.get_raw(id).map(|v| {
                v.map(|s| s.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(",")
            })
        } else {
            None
        };
        given.push((long.to_string(), value));
    }
    given
}

#[derive(Debug, Args)]
pub struct GlobalOpts {
    /// Repository: a local directory or s3://bucket/prefix.
    #[arg(long, global = true, env = "CAIRN_REPO")]
    pub repo: Option<String>,
    /// Stanza name.
    #[arg(long, global = true, env = "CAIRN_STANZA")]
    pub stanza: Option<String>,
    /// TOML config file (default /etc/cairn/cairn.toml when it exists).
    #[arg(long, global = true, env = "CAIRN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Worker threads and concurrent transfers (default: number of cores).
    #[arg(long, global = true, env = "CAIRN_PROCESS_MAX")]
    pub process_max: Option<usize>,
    /// zstd level for new chunks, 1..=19 (default 3).
    #[arg(long, global = true, env = "CAIRN_COMPRESS_LEVEL")]
    pub compress_level: Option<i32>,
    /// off, error, warn, info, debug or trace (default info).
    #[arg(long, global = true, env = "CAIRN_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Directory of the local index cache (default $XDG_CACHE_HOME/cairn or ~/.cache/cairn);
    /// it holds copies of index segments and can be removed at any time.
    #[arg(long, global = true, env = "CAIRN_CACHE_PATH")]
    pub cache_path: Option<String>,
    #[arg(long, global = true, env = "CAIRN_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    #[arg(long, global = true, env = "CAIRN_S3_REGION")]
    pub s3_region: Option<String>,
    /// Address buckets as endpoint/bucket (MinIO and most S3-compatible stores).
    #[arg(long, global = true, env = "CAIRN_S3_PATH_STYLE")]
    pub s3_path_style: bool,
    /// Server-side encryption: aws:kms or AES256.
    #[arg(long, global = true, env = "CAIRN_S3_SSE")]
    pub s3_sse: Option<String>,
    /// KMS key for --s3-sse aws:kms.
    #[arg(long, global = true, env = "CAIRN_S3_KMS_KEY_ID")]
    pub s3_kms_key_id: Option<String>,
    /// PEM file of a private CA that signed the S3 endpoint's certificate (added to the
    /// system's roots).
    #[arg(long, global = true, env = "CAIRN_S3_CA_FILE")]
    pub s3_ca_file: Option<PathBuf>,
    /// Seconds a repository request may wait for the server; a failing request is retried for
    /// at most twice this long (default 60).
    #[arg(long, global = true, env = "CAIRN_IO_TIMEOUT")]
    pub io_timeout: Option<u64>,
    /// Directory of this host's status files of running backups and restores, which `info`
    /// reads for their progress (default /tmp/cairn).
    #[arg(long, global = true, env = "CAIRN_LOCK_PATH")]
    pub lock_path: Option<PathBuf>,
    /// Also write the log to <log-path>/<stanza>-<command>.log (pgBackRest's file name).
    #[arg(long, global = true, env = "CAIRN_LOG_PATH")]
    pub log_path: Option<PathBuf>,
    /// Level of the log file: off, error, warn, info (default), debug or trace.
    #[arg(long, global = true, env = "CAIRN_LOG_LEVEL_FILE")]
    pub log_level_file: Option<String>,
    /// Directory of more pgBackRest-style *.conf files to read after the config file
    /// (default /etc/pgbackrest/conf.d with pgBackRest's default config file).
    #[arg(long, global = true, env = "CAIRN_CONFIG_INCLUDE_PATH")]
    pub config_include_path: Option<PathBuf>,
    #[command(flatten)]
    pub pg: PgClusterArgs,
    #[command(flatten)]
    pub repo1: Repo1Args,
}

/// pgBackRest's repository options, accepted as pgBackRest spells them (`--repo1-path`,
/// `repo1-type=s3` with `repo1-s3-bucket`) and resolved into `--repo` and the S3 settings
/// (`settings`); `--repo` wins.
#[derive(Debug, Args)]
pub struct Repo1Args {
    #[arg(long = "repo1-path", global = true, hide = true)]
    pub repo1_path: Option<String>,
    #[arg(long = "repo1-type", global = true, hide = true)]
    pub repo1_kind: Option<String>,
    #[arg(long = "repo1-s3-bucket", global = true, hide = true)]
    pub repo1_s3_bucket: Option<String>,
    #[arg(long = "repo1-s3-uri-style", global = true, hide = true)]
    pub repo1_s3_uri_style: Option<String>,
    #[arg(long = "repo1-s3-key", global = true, hide = true)]
    pub repo1_s3_key: Option<String>,
    #[arg(long = "repo1-s3-key-secret", global = true, hide = true)]
    pub repo1_s3_key_secret: Option<String>,
    #[arg(long = "repo1-s3-token", global = true, hide = true)]
    pub repo1_s3_token: Option<String>,
    #[arg(long = "repo1-storage-host", global = true, hide = true)]
    pub repo1_storage_host: Option<String>,
    #[arg(long = "repo1-storage-port", global = true, hide = true)]
    pub repo1_storage_port: Option<u16>,
    #[arg(long = "repo1-cipher-type", global = true, hide = true)]
    pub repo1_cipher_type: Option<String>,
}

// Engine-specific options, grouped under a heading of their own in `--help`. The engines read
// them by their long names (`options::EngineOptions`); names, environment variables and
// config file keys are the user's interface and do not change.

/// The PostgreSQL cluster: where its data directory is and how to reach the server (used by
/// stanza-create, backup, check, archive-push and a restore without --dest).
#[derive(Debug, Args)]
#[command(next_help_heading = "PostgreSQL options")]
pub struct PgClusterArgs {
    /// PostgreSQL data directory.
    #[arg(long, global = true, env = "CAIRN_PG_PATH")]
    pub pg_path: Option<PathBuf>,
    /// PostgreSQL host or socket directory.
    #[arg(long, global = true, env = "CAIRN_PG_HOST")]
    pub pg_host: Option<String>,
    #[arg(long, global = true, env = "CAIRN_PG_PORT")]
    pub pg_port: Option<u16>,
    #[arg(long, global = true, env = "CAIRN_PG_USER")]
    pub pg_user: Option<String>,
}

/// Retention (pgBackRest's names and meanings); also read by `backup`, which expires after it
/// succeeds when one is set (unless --no-expire).
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Retention options")]
pub struct RetentionArgs {
    /// Full backups to keep (count), or days to keep them (with --retention-full-type time).
    #[arg(long, env = "CAIRN_RETENTION_FULL", value_parser = clap::value_parser!(u32).range(1..))]
    pub retention_full: Option<u32>,
    /// count (default) or time.
    #[arg(long, env = "CAIRN_RETENTION_FULL_TYPE")]
    pub retention_full_type: Option<String>,
    /// Differential backups to keep (full backups count as differential ones here).
    #[arg(long, env = "CAIRN_RETENTION_DIFF", value_parser = clap::value_parser!(u32).range(1..))]
    pub retention_diff: Option<u32>,
    /// Keep the WAL to recover to any point only from the newest N backups of
    /// --retention-archive-type; older backups keep the WAL that makes them consistent.
    #[arg(long, env = "CAIRN_RETENTION_ARCHIVE", value_parser = clap::value_parser!(u32).range(1..))]
    pub retention_archive: Option<u32>,
    /// full (default), diff or incr: which backups --retention-archive counts.
    #[arg(long, env = "CAIRN_RETENTION_ARCHIVE_TYPE")]
    pub retention_archive_type: Option<String>,
    /// Seconds a condemned pack waits before garbage collection deletes it (default 3600);
    /// see docs/format.md, "Condemned packs".
    #[arg(long, env = "CAIRN_GC_MARGIN", value_parser = clap::value_parser!(u64).range(0..=2_592_000))]
    pub gc_margin: Option<u64>,
    /// Rewrite packs at least this many percent garbage (default 80; 100 never): the chunks
    /// kept backups need are copied into new packs and the old ones freed.
    #[arg(long, env = "CAIRN_REPACK_THRESHOLD")]
    pub repack_threshold: Option<u64>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "PostgreSQL options")]
pub struct PgBackupArgs {
    /// Seconds to wait for the backup's WAL to reach the archive (postgres; default 60).
    #[arg(long, env = "CAIRN_ARCHIVE_TIMEOUT")]
    pub archive_timeout: Option<u64>,
    /// Checkpoint at once when the backup starts (the default; --no-start-fast, or
    /// start-fast=n in the config file, waits for the next scheduled checkpoint as
    /// pgBackRest's default does, which spreads the checkpoint's writes).
    #[arg(long, env = "CAIRN_START_FAST")]
    pub start_fast: bool,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "PostgreSQL options")]
pub struct PgRestoreArgs {
    /// postgres: the recovery to set up: default (to the end of the archive), immediate (to
    /// consistency), time, lsn, xid or name (to --target), standby, preserve (keep the
    /// destination's recovery settings) or none (write none; WAL from pg_wal only).
    #[arg(long = "type", env = "CAIRN_TYPE")]
    pub kind: Option<String>,
    #[arg(long, env = "CAIRN_TARGET")]
    pub target: Option<String>,
    #[arg(long, env = "CAIRN_TARGET_ACTION")]
    pub target_action: Option<String>,
    #[arg(long, env = "CAIRN_TARGET_TIMELINE")]
    pub target_timeline: Option<String>,
    /// Restore a tablespace elsewhere: NAME=PATH (name or oid); repeatable.
    #[arg(long)]
    pub tablespace_map: Vec<String>,
    /// postgres: restore every followed symlink of the data directory (pg_wal on its own
    /// disk, a configuration file kept elsewhere) as the link to its recorded target, instead
    /// of as a directory or file in its place.
    #[arg(long, env = "CAIRN_LINK_ALL")]
    pub link_all: bool,
    /// postgres: restore PATH (relative to the data directory) as a symlink to TARGET, its
    /// contents written there: PATH=TARGET (pg_wal=/mnt/wal); repeatable.
    #[arg(long)]
    pub link_map: Vec<String>,
    /// postgres: off writes archive_mode = 'off' so the restored copy never archives;
    /// preserve (default) keeps the backup's setting.
    #[arg(long, env = "CAIRN_ARCHIVE_MODE")]
    pub archive_mode: Option<String>,
    /// postgres: restore even when the target lies beyond a hole in the WAL archive
    /// (replay stops at the hole).
    #[arg(long, env = "CAIRN_IGNORE_ARCHIVE_GAP")]
    pub ignore_archive_gap: bool,
    /// postgres: stop recovery just before the target instead of just after it
    /// (recovery_target_inclusive = false); --type time, lsn or xid.
    #[arg(long, env = "CAIRN_TARGET_EXCLUSIVE")]
    pub target_exclusive: bool,
    /// postgres: one more setting to write with the recovery settings, KEY=VALUE (e.g.
    /// primary_conninfo=...); repeatable; a restore_command given here replaces cairn's.
    #[arg(long, value_name = "KEY=VALUE")]
    pub recovery_option: Vec<String>,
    /// postgres: restore only this database (name or oid; repeatable): the other user
    /// databases' files come back zero-filled and sparse, to be dropped once the cluster is up.
    #[arg(long, value_name = "NAME")]
    pub db_include: Vec<String>,
    /// postgres: leave this database out (name or oid; repeatable), its files zero-filled.
    #[arg(long, value_name = "NAME")]
    pub db_exclude: Vec<String>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Files options")]
pub struct FilesBackupArgs {
    /// Directory to back up (files engine).
    #[arg(long, env = "CAIRN_SOURCE")]
    pub source: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Stream options")]
pub struct StreamBackupArgs {
    /// Stream: the producer to run (no shell), e.g. `-- pg_dump -Fc -Z0 db`; its failure
    /// fails the backup.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Stream options")]
pub struct StreamRestoreArgs {
    /// Stream: the consumer to feed (no shell), e.g. `-- pg_restore -d db`; its failure
    /// fails the restore.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Asynchronous archiving (archive-push and archive-get).
#[derive(Debug, Args)]
#[command(next_help_heading = "Asynchronous archiving")]
pub struct SpoolArgs {
    /// Push queued WAL in parallel batches in the background (archive-push), prefetch the
    /// WAL recovery will ask for next (archive-get).
    #[arg(long, env = "CAIRN_ARCHIVE_ASYNC")]
    pub archive_async: bool,
    /// This host's directory for the asynchronous queues (default /var/spool/cairn).
    #[arg(long, env = "CAIRN_SPOOL_PATH")]
    pub spool_path: Option<PathBuf>,
    /// Seconds archive-push waits for the background worker's word (default 60).
    #[arg(long, env = "CAIRN_ARCHIVE_TIMEOUT")]
    pub archive_timeout: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the stanza (and the repository, if the directory is new or empty).
    StanzaCreate {
        /// postgres (default), files or stream.
        #[arg(long, env = "CAIRN_ENGINE")]
        engine: Option<String>,
    },
    /// archive_command: store a WAL file; exits 0 only once it is durable in the repository.
    ArchivePush {
        /// The file to archive (PostgreSQL's %p, relative to the data directory).
        wal_path: PathBuf,
        #[command(flatten)]
        spool: SpoolArgs,
        /// With --archive-async: when the repository cannot be reached and more than this
        /// much WAL waits (e.g. 4GiB), drop it (acknowledged, not archived: a hole in the
        /// archive) so pg_wal does not fill the disk. Default: never drop.
        #[arg(long, env = "CAIRN_ARCHIVE_PUSH_QUEUE_MAX", value_name = "SIZE")]
        archive_push_queue_max: Option<String>,
    },
    /// restore_command: fetch a WAL file; exits 1 when the archive does not have it.
    ArchiveGet {
        /// The file's name (PostgreSQL's %f).
        wal_name: String,
        /// Where to write it (PostgreSQL's %p).
        dest: PathBuf,
        #[command(flatten)]
        spool: SpoolArgs,
        /// With --archive-async: how much WAL to prefetch ahead of recovery (default 128MiB).
        #[arg(long, env = "CAIRN_ARCHIVE_GET_QUEUE_MAX", value_name = "SIZE")]
        archive_get_queue_max: Option<String>,
    },
    /// Back up: files from --source; stream from the output of COMMAND (after `--`), or stdin.
    Backup {
        /// full, diff or incr (default incr; the first backup is always full).
        #[arg(long = "type", env = "CAIRN_TYPE")]
        kind: Option<String>,
        /// Read every file instead of trusting size and mtime.
        #[arg(long, env = "CAIRN_DELTA")]
        delta: bool,
        /// Keep an empty source as a backup: an empty --source directory (files) or an empty
        /// stream (stream). Refused by default: an empty source is usually a mistake (an
        /// unmounted file system, a producer that wrote nothing).
        #[arg(long)]
        allow_empty: bool,
        /// Do not expire after the backup even though a retention is set.
        #[arg(long)]
        no_expire: bool,
        /// A name or description for the backup, KEY=VALUE (repeatable), shown by info;
        /// `annotate` changes them later.
        #[arg(long, value_name = "KEY=VALUE")]
        annotation: Vec<String>,
        #[command(flatten)]
        retention: RetentionArgs,
        #[command(flatten)]
        pg: PgBackupArgs,
        #[command(flatten)]
        files: FilesBackupArgs,
        #[command(flatten)]
        stream: StreamBackupArgs,
    },
    /// Restore a backup.
    Restore {
        /// Backup label (default: the newest).
        #[arg(long, env = "CAIRN_SET")]
        set: Option<String>,
        /// Destination directory (files), file or - for stdout (stream).
        #[arg(long, env = "CAIRN_DEST")]
        dest: Option<PathBuf>,
        #[arg(long, env = "CAIRN_DELTA")]
        delta: bool,
        #[command(flatten)]
        pg: PgRestoreArgs,
        #[command(flatten)]
        stream: StreamRestoreArgs,
    },
    /// Show backups, sizes and deduplication.
    Info {
        /// text (default) or json.
        #[arg(long, env = "CAIRN_OUTPUT")]
        output: Option<String>,
        /// Show this backup only, with its databases, symlinks and tablespaces (needs
        /// --stanza).
        #[arg(long)]
        set: Option<String>,
        /// Show backups of this type only: full, diff or incr.
        #[arg(long = "type")]
        kind: Option<String>,
    },
    /// Print cairn's version: text (`cairn 0.1.0`), or `--output num` for one integer as
    /// pgBackRest prints its own (major * 1,000,000 + minor * 1,000 + patch).
    Version {
        /// text (default) or num.
        #[arg(long)]
        output: Option<String>,
    },
    /// Add, change or remove (KEY=, empty) annotations of a backup.
    Annotate {
        /// The backup to annotate.
        #[arg(long)]
        set: String,
        /// KEY=VALUE to set, KEY= to remove; repeatable.
        #[arg(long, value_name = "KEY=VALUE", required = true)]
        annotation: Vec<String>,
    },
    /// After pg_upgrade: point the stanza at the cluster's new identity (read from --pg-path);
    /// earlier backups stay listed and restorable, the next backup is a full.
    StanzaUpgrade,
    /// Rebuild the stanza's catalog from its backup manifests (and a lost repository marker).
    StanzaRepair,
    /// Stop the stanza: backups, expires, repairs and archive-push refuse until `start`.
    Stop,
    /// Start a stopped stanza again.
    Start,
    /// Delete the stanza and everything in it (it must be stopped first).
    StanzaDelete {
        /// Delete even though the PostgreSQL cluster at pg-path is running.
        #[arg(long)]
        force: bool,
    },
    /// Remove the backups the retention selects (or --set and its dependents), then the data
    /// and WAL no kept backup needs.
    Expire {
        /// Expire this backup and every backup that depends on it (from the command line
        /// only: a standing setting would expire a backup at every run).
        #[arg(long)]
        set: Option<String>,
        /// Print what would be expired and the space it would free; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        retention: RetentionArgs,
    },
    /// Confirm archive_command works: switch WAL and wait for the segment to arrive.
    Check {
        /// Seconds to wait for the segment (default 60).
        #[arg(
            long,
            env = "CAIRN_ARCHIVE_TIMEOUT",
            help_heading = "PostgreSQL options"
        )]
        archive_timeout: Option<u64>,
    },
    /// List the repository as a pgBackRest repository (archive/<stanza>/<id>/...,
    /// backup/<stanza>/<label>/...); see README, "repo-ls and repo-get".
    RepoLs {
        /// A path in that view, relative to the repository or absolute inside it (default: the
        /// top).
        path: Option<String>,
        /// text (default) or json (pgBackRest's form).
        #[arg(long, env = "CAIRN_OUTPUT")]
        output: Option<String>,
        /// List everything beneath the path, not only its children.
        #[arg(long)]
        recurse: bool,
        /// Only names matching this regular expression.
        #[arg(long, value_name = "REGEX")]
        filter: Option<String>,
        /// asc (default), desc or none.
        #[arg(long)]
        sort: Option<String>,
    },
    /// Write a file of the repository view (see repo-ls) to standard output, as plain bytes.
    RepoGet {
        /// The file, relative to the repository or absolute inside it.
        file: String,
        /// Exit 1 without an error message when the file does not exist.
        #[arg(long)]
        ignore_missing: bool,
        /// pgBackRest's "do not decrypt": accepted; nothing in the view is encrypted.
        #[arg(long)]
        raw: bool,
    },
    /// Re-read and check every object; non-zero with a list of what is wrong.
    Verify {
        /// Check only this backup's data (all objects are still read).
        #[arg(long, env = "CAIRN_SET")]
        set: Option<String>,
    },
}

/// A restore allocates pack ranges (up to 16 MiB) and decoded chunks (up to 4 MiB) on one
/// thread and frees them on another, many times a second. glibc's dynamic mmap threshold then
/// moves them into per-thread arenas that keep freed memory, and a restore's peak RSS grew
/// with the size of the backup (2 GiB tree, --process-max 8: 318 MiB). A fixed 4 MiB threshold
/// hands such buffers straight back to the kernel when freed (same restore: 170 MiB, same
/// speed). Only for restore: the backup pipeline, which reuses 4 MiB buffers, ran 6x slower
/// at --process-max 1 with it.
///
/// A fixed mmap threshold also fixes glibc's trim threshold at its 128 KiB default: each
/// freed 1 MiB decoded unit at the top of a heap went back to the kernel, and the next one
/// faulted its pages in again, one fault per 4 KiB restored (854 MB restore: 193,000 faults,
/// 1.8 s of which 1.8 s system time). Keeping up to 64 MiB free per heap: 27,000 faults,
/// 0.95 s, peak RSS 50 -> 54 MiB (3 alternating runs, bench/README.md).
fn tune_allocator(command: &Command) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if matches!(command, Command::Restore { .. }) {
        // SAFETY: mallopt only sets an allocator parameter; it is called in main before any
        // other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
        }
    }
}

/// Index segments are read in place from open files (format.md, "The local index cache"),
/// one descriptor each; a repository written before compaction may have thousands. The soft
/// limit on open files (often 1024) is raised to the hard one, as databases do.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write only the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Parse the command line, pgBackRest's option names (`--pg1-path`, `--repo1-retention-full`)
/// read as cairn's (see `pgbackrest::names`). Clap's own errors exit 2, as usage errors do.
fn parse_command_line() -> Result<Cli, ExitCode> {
    use clap::{CommandFactory, FromArgMatches};
    let command = Cli::command();
    let is_switch = |name: &str| {
        std::iter::once(&command)
            .chain(command.get_subcommands())
            .flat_map(|c| c.get_arguments())
            .any(|a| a.get_long() == Some(name) && !a.get_action().takes_values())
    };
    let mut negated = Vec::new();
    let mut notes = pgbackrest::Notes::default();
    let args = match pgbackrest::names::translate_args(
        std::env::args_os().collect(),
        is_switch,
        &mut negated,
        &mut notes,
    ) {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("cairn: error: {msg}");
            return Err(ExitCode::from(exit::USAGE));
        }
    };
    let matches = command.clone().get_matches_from(args);
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    cli.command_name = matches.subcommand_name().unwrap_or_default().to_string();
    cli.given = given_options(&command, &matches);
    cli.repo_from_env = matches!(
        matches.value_source("repo"),
        Some(clap::parser::ValueSource::EnvVariable)
    );
    if let Some((name, sub)) = matches.subcommand()
        && let Some(c) = command.find_subcommand(name)
    {
        for g in given_options(c, sub) {
            if !cli.given.iter().any(|(k, _)| *k == g.0) {
                cli.given.push(g);
            }
        }
    }
    cli.given.sort();
    cli.negated = negated;
    cli.notes = notes;
    Ok(cli)
}

fn main() -> ExitCode {
    let cli = match parse_command_line() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    tune_allocator(&cli.command);
    raise_open_files_limit();
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            let code = exit::exit_code(&e);
            if !exit::is_broken_pipe(&e) {
                // A closed stderr is no reason to change the exit code (or to panic).
                use std::io::Write as _;
                let _ = writeln!(std::io::stderr(), "cairn: error: {}", exit::describe(&e));
            }
            code
        }
    }
}
