//! One function per command. Each resolves its options (flag > env > config file), opens the
//! repository and stanza, and calls into the repo and engines crates.

use crate::Cli;
use crate::Command;
use crate::config::ConfigFile;
use crate::info;
use crate::progress::Reporter;
use anyhow::{Context, Result, anyhow};
use cairn_engines::postgres::backup::{self as pg_backup, PgBackupOptions};
use cairn_engines::postgres::identity::Identity;
use cairn_engines::postgres::restore::{self as pg_restore, Recovery, RestoreOptions, TargetType};
use cairn_engines::postgres::session::Connection;
use cairn_engines::postgres::wal::WalFileName;
use cairn_engines::{EngineKind, files, stream};
use cairn_repo::backup::{BackupJob, BackupOptions, DEFAULT_PACK_TARGET};
use cairn_repo::pipeline::{Progress, VanishPolicy};
use cairn_repo::repository::StanzaInfo;
use cairn_repo::storage::Storage;
use cairn_repo::storage::local::LocalStorage;
use cairn_repo::storage::retry::{RetryPolicy, Retrying};
use cairn_repo::storage::s3::{DEFAULT_IO_TIMEOUT, S3Options, S3Storage};
use cairn_repo::{BackupLabel, BackupType, Repository, Stanza, StanzaName, manifest, verify};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A mistake in how cairn was called (exit code 2).
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Usage {}

/// `verify` found damage (exit code 4); the report is already printed.
#[derive(Debug)]
pub struct Damaged(pub usize);
impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "verify found {} damaged or missing object(s); see the list above",
            self.0
        )
    }
}
impl std::error::Error for Damaged {}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(msg.into()))
}

pub fn exit_code(e: &anyhow::Error) -> ExitCode {
    if is_broken_pipe(e) {
        return ExitCode::SUCCESS;
    }
    if e.downcast_ref::<Usage>().is_some() {
        return ExitCode::from(2);
    }
    if e.downcast_ref::<Damaged>().is_some() {
        return ExitCode::from(4);
    }
    match e.downcast_ref::<cairn_repo::Error>() {
        Some(cairn_repo::Error::NotFound(_)) => ExitCode::from(1),
        Some(cairn_repo::Error::Invalid(_)) => ExitCode::from(2),
        Some(cairn_repo::Error::Locked(_)) => ExitCode::from(5),
        _ => ExitCode::from(3),
    }
}

/// The error and its causes on one line.
pub fn describe(e: &anyhow::Error) -> String {
    format!("{e:#}")
}

/// A closed stdout (`cairn restore --dest - | head`) is the reader's choice, not a failure.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Options after merging every source.
struct Settings {
    file: ConfigFile,
    repo: Option<String>,
    stanza: Option<String>,
    process_max: usize,
    compress_level: i32,
    pg_path_flag: Option<PathBuf>,
    config_path: Option<PathBuf>,
    pg_host_flag: Option<String>,
    pg_port_flag: Option<u16>,
    pg_user_flag: Option<String>,
    s3: S3Flags,
    io_timeout: Duration,
    /// Every store opened, so their request counts can be logged at the end.
    opened: Mutex<Vec<Arc<dyn Storage>>>,
}

/// The S3 options as given on the command line or in the environment.
#[derive(Default)]
struct S3Flags {
    endpoint: Option<String>,
    region: Option<String>,
    path_style: bool,
    sse: Option<String>,
    kms_key_id: Option<String>,
    ca_file: Option<PathBuf>,
}

impl Settings {
    fn resolve(cli: &Cli) -> Result<Settings> {
        let g = &cli.global;
        let mut file = ConfigFile::load(g.config.as_deref())?;
        let stanza = match &g.stanza {
            Some(s) => Some(s.clone()),
            None => file.string("stanza")?,
        };
        if let Some(s) = &stanza {
            file.select_stanza(s)?;
        }
        let repo = match &g.repo {
            Some(r) => Some(r.clone()),
            None => file.string("repo")?,
        };
        let process_max = match g.process_max {
            Some(n) => n as i64,
            None => file.integer("process-max")?.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, |n| n.get()) as i64
            }),
        };
        if !(1..=256).contains(&process_max) {
            return Err(usage(format!(
                "--process-max {process_max} is out of range: use 1 to 256"
            )));
        }
        let compress_level = match g.compress_level {
            Some(n) => n as i64,
            None => file.integer("compress-level")?.unwrap_or(3),
        };
        if !(1..=19).contains(&compress_level) {
            return Err(usage(format!(
                "--compress-level {compress_level} is out of range: use 1 to 19"
            )));
        }
        let io_timeout = match g.io_timeout {
            Some(n) => n as i64,
            None => file
                .integer("io-timeout")?
                .unwrap_or(DEFAULT_IO_TIMEOUT.as_secs() as i64),
        };
        if !(1..=86_400).contains(&io_timeout) {
            return Err(usage(format!(
                "--io-timeout {io_timeout} is out of range: use 1 to 86400 seconds"
            )));
        }
        Ok(Settings {
            io_timeout: Duration::from_secs(io_timeout as u64),
            opened: Mutex::default(),
            file,
            repo,
            stanza,
            process_max: process_max as usize,
            compress_level: compress_level as i32,
            pg_path_flag: g.pg_path.clone(),
            config_path: g.config.clone(),
            pg_host_flag: g.pg_host.clone(),
            pg_port_flag: g.pg_port,
            pg_user_flag: g.pg_user.clone(),
            s3: S3Flags {
                endpoint: g.s3_endpoint.clone(),
                region: g.s3_region.clone(),
                path_style: g.s3_path_style,
                sse: g.s3_sse.clone(),
                kms_key_id: g.s3_kms_key_id.clone(),
                ca_file: g.s3_ca_file.clone(),
            },
        })
    }

    fn string(&self, flag: &Option<String>, key: &str) -> Result<Option<String>> {
        match flag {
            Some(v) => Ok(Some(v.clone())),
            None => self.file.string(key),
        }
    }

    fn path(&self, flag: &Option<PathBuf>, key: &str) -> Result<Option<PathBuf>> {
        match flag {
            Some(v) => Ok(Some(v.clone())),
            None => Ok(self.file.string(key)?.map(PathBuf::from)),
        }
    }

    fn flag(&self, flag: bool, key: &str) -> Result<bool> {
        Ok(flag || self.file.boolean(key)?.unwrap_or(false))
    }

    fn pg_options(&self, archive_timeout: Option<u64>) -> Result<PgBackupOptions> {
        let timeout = match archive_timeout {
            Some(t) => t as i64,
            None => self.file.integer("archive-timeout")?.unwrap_or(60),
        };
        Ok(PgBackupOptions {
            pg_path: self.pg_path()?,
            connection: self.pg_connection()?,
            archive_timeout: std::time::Duration::from_secs(timeout.max(1) as u64),
            start_fast: true,
        })
    }

    fn pg_connection(&self) -> Result<Connection> {
        let port = match self.pg_port_flag {
            Some(p) => Some(p),
            None => match self.file.integer("pg-port")? {
                Some(p) => Some(
                    u16::try_from(p)
                        .map_err(|_| usage(format!("pg-port {p} is not a port number")))?,
                ),
                None => None,
            },
        };
        Ok(Connection {
            host: self.string(&self.pg_host_flag, "pg-host")?,
            port,
            user: self.string(&self.pg_user_flag, "pg-user")?,
        })
    }

    fn pg_path(&self) -> Result<PathBuf> {
        self.path(&self.pg_path_flag, "pg-path")?
            .ok_or_else(|| usage("give --pg-path: the PostgreSQL data directory"))
    }

    fn stanza_name(&self) -> Result<StanzaName> {
        let s = self.stanza.as_deref().ok_or_else(|| {
            usage("no stanza given: use --stanza, CAIRN_STANZA or 'stanza' in the config file")
        })?;
        StanzaName::parse(s).map_err(|e| usage(e.to_string()))
    }

    async fn store(&self, create: bool) -> Result<Arc<dyn Storage>> {
        let store = self.open_store(create).await?;
        if let Ok(mut opened) = self.opened.lock() {
            opened.push(store.clone());
        }
        Ok(store)
    }

    /// What the stores opened so far have sent (S3 request counts), for the log.
    fn request_summaries(&self) -> Vec<String> {
        self.opened
            .lock()
            .map(|o| o.iter().filter_map(|s| s.request_summary()).collect())
            .unwrap_or_default()
    }

    async fn open_store(&self, create: bool) -> Result<Arc<dyn Storage>> {
        let repo = self.repo.as_deref().ok_or_else(|| {
            usage("no repository given: use --repo, CAIRN_REPO or 'repo' in the config file")
        })?;
        let policy = RetryPolicy {
            budget: self.io_timeout * 2,
            max_delay: self.io_timeout.min(RetryPolicy::default().max_delay),
            ..RetryPolicy::default()
        };
        if repo.starts_with("s3://") {
            let mut o = S3Options::from_url(repo).map_err(|e| usage(e.to_string()))?;
            o.endpoint = self.string(&self.s3.endpoint, "s3-endpoint")?;
            o.region = self.string(&self.s3.region, "s3-region")?;
            o.path_style = self.flag(self.s3.path_style, "s3-path-style")?;
            o.sse = self.string(&self.s3.sse, "s3-sse")?;
            o.kms_key_id = self.string(&self.s3.kms_key_id, "s3-kms-key-id")?;
            o.ca_file = self.path(&self.s3.ca_file, "s3-ca-file")?;
            o.io_timeout = self.io_timeout;
            if let Some(sse) = &o.sse
                && sse != "aws:kms"
                && sse != "AES256"
            {
                return Err(usage(format!("--s3-sse '{sse}': use aws:kms or AES256")));
            }
            if o.kms_key_id.is_some() && o.sse.as_deref() != Some("aws:kms") {
                return Err(usage("--s3-kms-key-id needs --s3-sse aws:kms"));
            }
            let s3 = S3Storage::new(o).await?.with_retry(policy);
            return Ok(Arc::new(Retrying::new(s3, policy)));
        }
        let path = Path::new(repo);
        if create && !path.exists() {
            std::fs::create_dir_all(path)
                .with_context(|| format!("cannot create repository directory {repo}"))?;
        }
        if create && !path.join(cairn_repo::repository::REPO_MARKER).exists() {
            let non_empty = std::fs::read_dir(path)
                .with_context(|| format!("cannot read repository directory {repo}"))?
                .next()
                .is_some();
            if non_empty {
                return Err(usage(format!(
                    "{repo} is not empty and not a cairn repository; give --repo an empty or new directory"
                )));
            }
        }
        Ok(Arc::new(Retrying::new(LocalStorage::new(path)?, policy)))
    }
}

fn init_logging(level: &str) -> Result<()> {
    let filter = match level {
        "off" | "error" | "warn" | "info" | "debug" | "trace" => level,
        other => {
            return Err(usage(format!(
                "--log-level '{other}': use off, error, warn, info, debug or trace"
            )));
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .try_init();
    Ok(())
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    let settings = Settings::resolve(&cli)?;
    let level = settings
        .string(&cli.global.log_level, "log-level")?
        .unwrap_or_else(|| "info".into());
    init_logging(&level)?;
    let quiet = level == "off" || level == "error" || level == "warn";
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.process_max.clamp(2, 16))
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        // Heavy commands report what they cost in requests; archive-push, run for every WAL
        // segment by PostgreSQL, stays quiet unless asked (--log-level debug).
        let heavy = matches!(
            cli.command,
            Command::Backup { .. } | Command::Restore { .. }
        );
        let result = dispatch(cli.command, &settings, quiet).await;
        for line in settings.request_summaries() {
            if heavy {
                tracing::info!("{line}");
            } else {
                tracing::debug!("{line}");
            }
        }
        result
    })
}

async fn dispatch(command: Command, s: &Settings, quiet: bool) -> Result<ExitCode> {
    match command {
        Command::StanzaCreate { engine } => stanza_create(s, engine).await,
        Command::ArchivePush { wal_path } => archive_push(s, &wal_path).await,
        Command::ArchiveGet { wal_name, dest } => archive_get(s, &wal_name, &dest).await,
        Command::Backup {
            kind,
            source,
            delta,
            archive_timeout,
        } => backup(s, kind, source, delta, archive_timeout, quiet).await,
        Command::Restore {
            set,
            dest,
            kind,
            target,
            target_action,
            target_timeline,
            tablespace_map,
            delta,
        } => {
            let mut maps = Vec::new();
            for m in &tablespace_map {
                let (name, path) = m
                    .split_once('=')
                    .ok_or_else(|| usage(format!("--tablespace-map '{m}': use NAME=PATH")))?;
                maps.push((name.to_string(), PathBuf::from(path)));
            }
            let args = RestoreArgs {
                tablespace_map: maps,
                set: s.string(&set, "set")?,
                dest: s.path(&dest, "dest")?,
                kind: s.string(&kind, "type")?,
                target: s.string(&target, "target")?,
                target_action: s.string(&target_action, "target-action")?,
                target_timeline: s.string(&target_timeline, "target-timeline")?,
                delta: s.flag(delta, "delta")?,
            };
            restore(s, args, quiet).await
        }
        Command::Info { output } => info_cmd(s, output).await,
        Command::Check { archive_timeout } => check_cmd(s, archive_timeout).await,
        Command::Verify { set } => verify_cmd(s, set).await,
    }
}

async fn open_stanza(s: &Settings) -> Result<Stanza> {
    let name = s.stanza_name()?;
    let repo = Repository::open(s.store(false).await?).await?;
    Ok(repo.stanza(&name).await?)
}

fn engine_of(stanza: &Stanza) -> Result<EngineKind> {
    EngineKind::parse(&stanza.info.engine).map_err(|_| {
        anyhow!(
            "stanza '{}' uses engine '{}', which this cairn does not know; upgrade cairn",
            stanza.name(),
            stanza.info.engine
        )
    })
}

async fn stanza_create(s: &Settings, engine: Option<String>) -> Result<ExitCode> {
    let name = s.stanza_name()?;
    let engine = s
        .string(&engine, "engine")?
        .unwrap_or_else(|| "postgres".into());
    let kind = EngineKind::parse(&engine).map_err(|e| usage(e.to_string()))?;
    let meta = if kind == EngineKind::Postgres {
        let pg_path = s.pg_path()?;
        Identity::from_data_dir(&pg_path)?.to_meta()
    } else {
        BTreeMap::new()
    };
    let repo = Repository::open_or_init(s.store(true).await?).await?;
    let info = StanzaInfo {
        name: name.clone(),
        engine: kind.as_str().to_string(),
        created: cairn_repo::time::now_unix(),
        meta,
    };
    let stanza = repo.create_stanza(info).await?;
    tracing::info!(
        "stanza '{}' ({} engine) is ready in {}",
        stanza.name(),
        stanza.info.engine,
        repo.location()
    );
    Ok(ExitCode::SUCCESS)
}

async fn backup(
    s: &Settings,
    kind: Option<String>,
    source: Option<PathBuf>,
    delta: bool,
    archive_timeout: Option<u64>,
    quiet: bool,
) -> Result<ExitCode> {
    let stanza = open_stanza(s).await?;
    let engine = engine_of(&stanza)?;
    let kind = s.string(&kind, "type")?.unwrap_or_else(|| "incr".into());
    let kind = BackupType::parse(&kind).map_err(|e| usage(e.to_string()))?;
    let mut meta = BTreeMap::new();
    let source = match engine {
        EngineKind::Files => {
            let dir = s.path(&source, "source")?.ok_or_else(|| {
                usage("a files stanza backs up --source <directory>; give --source")
            })?;
            let dir = std::fs::canonicalize(&dir).with_context(|| {
                format!(
                    "cannot open source directory {}; check --source",
                    dir.display()
                )
            })?;
            meta.insert("source".to_string(), dir.display().to_string());
            Some(dir)
        }
        EngineKind::Stream => {
            if std::io::stdin().is_terminal() {
                return Err(usage(
                    "a stream stanza backs up standard input: pipe the data in, e.g. `pg_dump -Fc db | cairn backup`",
                ));
            }
            None
        }
        EngineKind::Postgres => None,
    };
    let opts = BackupOptions {
        kind,
        process_max: s.process_max,
        compress_level: s.compress_level,
        pack_target: DEFAULT_PACK_TARGET,
        vanish: if engine == EngineKind::Postgres {
            VanishPolicy::Skip
        } else {
            VanishPolicy::Fail
        },
        delta: s.flag(delta, "delta")?,
        command: "backup".into(),
    };
    if engine == EngineKind::Postgres {
        let pg = s.pg_options(archive_timeout)?;
        let progress: Arc<dyn Progress> = Arc::new(Reporter::new("backup", quiet));
        let rec = pg_backup::backup(&stanza, opts, &pg, progress).await?;
        log_backup(&rec);
        if rec
            .meta
            .get("checksum-page-errors")
            .is_some_and(|n| n != "0")
        {
            tracing::warn!(
                "backup {} found invalid page checksums: {}",
                rec.label,
                rec.meta
                    .get("checksum-page-error-list")
                    .map(String::as_str)
                    .unwrap_or("")
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut job = BackupJob::begin(&stanza, opts).await?;
    tracing::info!("backup {} ({}) started", job.label, job.kind);
    let result = async {
        let sources = match &source {
            Some(dir) => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || files::sources(&dir)).await??
            }
            None => vec![stream::source(Box::new(std::io::stdin()))],
        };
        let progress: Arc<dyn Progress> = Arc::new(Reporter::new("backup", quiet));
        job.copy(sources, progress).await?;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        let _ = job.abort().await;
        return Err(e);
    }
    let rec = job.commit(meta).await?;
    log_backup(&rec);
    Ok(ExitCode::SUCCESS)
}

fn log_backup(rec: &cairn_repo::catalog::BackupRecord) {
    tracing::info!(
        "backup {} ({}) complete: {} files, {} logical, {} read, {} new in the repository ({} new chunks)",
        rec.label,
        rec.kind,
        rec.file_count,
        info::human(rec.size),
        info::human(rec.delta),
        info::human(rec.repo_delta),
        rec.new_chunk_count
    );
}

struct RestoreArgs {
    tablespace_map: Vec<(String, PathBuf)>,
    set: Option<String>,
    dest: Option<PathBuf>,
    kind: Option<String>,
    target: Option<String>,
    target_action: Option<String>,
    target_timeline: Option<String>,
    delta: bool,
}

/// The `restore_command` a restored cluster uses: this cairn, this repository and stanza.
/// `s` as one word of restore_command, which PostgreSQL hands to the shell after expanding
/// `%` escapes: as is when it is plain, else in double quotes (which survive
/// postgresql.auto.conf's single-quoted string), with `%` doubled.
fn shell_word(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        return s.to_string();
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' | '$' | '`' => out.extend(['\\', c]),
            '%' => out.push_str("%%"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

fn restore_command(s: &Settings, stanza: &Stanza) -> Result<String> {
    let exe = std::env::current_exe().context("cannot find the cairn executable's path")?;
    let repo = s.repo.as_deref().unwrap_or_default();
    let repo = std::fs::canonicalize(repo)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| repo.to_string());
    let mut cmd = format!(
        "{} --repo {} --stanza {}",
        shell_word(&exe.display().to_string()),
        shell_word(&repo),
        stanza.name()
    );
    if repo.starts_with("s3://") {
        if let Some(e) = s.string(&s.s3.endpoint, "s3-endpoint")? {
            cmd.push_str(&format!(" --s3-endpoint {}", shell_word(&e)));
        }
        if let Some(r) = s.string(&s.s3.region, "s3-region")? {
            cmd.push_str(&format!(" --s3-region {}", shell_word(&r)));
        }
        if s.flag(s.s3.path_style, "s3-path-style")? {
            cmd.push_str(" --s3-path-style");
        }
        if let Some(ca) = s.path(&s.s3.ca_file, "s3-ca-file")? {
            let ca = std::fs::canonicalize(&ca).unwrap_or(ca);
            cmd.push_str(&format!(
                " --s3-ca-file {}",
                shell_word(&ca.display().to_string())
            ));
        }
    }
    if s.io_timeout != DEFAULT_IO_TIMEOUT {
        cmd.push_str(&format!(" --io-timeout {}", s.io_timeout.as_secs()));
    }
    if let Some(c) = &s.config_path {
        cmd.push_str(&format!(
            " --config {}",
            shell_word(&c.display().to_string())
        ));
    }
    cmd.push_str(" archive-get %f \"%p\"");
    Ok(cmd)
}

async fn restore(s: &Settings, args: RestoreArgs, quiet: bool) -> Result<ExitCode> {
    let stanza = open_stanza(s).await?;
    let engine = engine_of(&stanza)?;
    if engine != EngineKind::Postgres && !args.tablespace_map.is_empty() {
        return Err(usage("--tablespace-map is for postgres stanzas"));
    }
    let pitr = args.kind.is_some()
        || args.target.is_some()
        || args.target_action.is_some()
        || args.target_timeline.is_some();
    if engine != EngineKind::Postgres && (pitr || args.delta) {
        return Err(usage(
            "--type, --target, --target-action, --target-timeline and --delta are for postgres stanzas; restore a files or stream stanza with --dest",
        ));
    }
    let catalog = stanza.catalog().await?;
    if catalog.backups.is_empty() {
        return Err(cairn_repo::Error::NotFound(format!(
            "stanza '{}' has no backup to restore",
            stanza.name()
        ))
        .into());
    }
    let set = match &args.set {
        Some(l) => Some(BackupLabel::parse(l).map_err(|e| usage(e.to_string()))?),
        None => None,
    };
    // Progress on stderr never mixes with a stream restored to stdout.
    let progress: Arc<dyn Progress> = Arc::new(Reporter::new("restore", quiet));
    if engine == EngineKind::Postgres {
        let recovery = Recovery {
            kind: TargetType::parse(args.kind.as_deref().unwrap_or("default"))
                .map_err(|e| usage(e.to_string()))?,
            target: args.target.clone(),
            action: args.target_action.clone(),
            timeline: args.target_timeline.clone(),
            restore_command: restore_command(s, &stanza)?,
        };
        recovery.validate().map_err(|e| usage(e.to_string()))?;
        let record = pg_restore::choose_backup(&catalog, set.as_ref(), &recovery)?;
        let dest = match args.dest.clone() {
            Some(d) => d,
            None => s.pg_path()?,
        };
        let chain = stanza.chain(&catalog, &record.label).await?;
        let entries = manifest::resolve(&chain)?;
        let index = stanza.index().await?;
        pg_restore::restore(
            &stanza,
            &index,
            &record,
            &entries,
            &RestoreOptions {
                dest: dest.clone(),
                delta: args.delta,
                process_max: s.process_max,
                recovery: recovery.clone(),
                tablespace_map: args.tablespace_map.clone(),
            },
            progress,
        )
        .await?;
        tracing::info!(
            "restored backup {} to {}; start PostgreSQL there to recover{}",
            record.label,
            dest.display(),
            match &recovery.target {
                Some(t) => format!(" to {t}"),
                None => String::new(),
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    let label = match set {
        Some(l) => l,
        None => catalog
            .latest()
            .map(|b| b.label.clone())
            .ok_or_else(|| usage("no backup"))?,
    };
    let chain = stanza.chain(&catalog, &label).await?;
    let entries = manifest::resolve(&chain)?;
    let index = stanza.index().await?;
    let dest = args.dest.ok_or_else(|| {
        usage("give --dest: a directory (files) or a file or - for stdout (stream)")
    })?;
    match engine {
        EngineKind::Files => {
            files::restore(&stanza, &index, &entries, &dest, s.process_max, progress).await?
        }
        _ => stream::restore(&stanza, &index, &entries, &dest, s.process_max, progress).await?,
    }
    tracing::info!("restored backup {label} to {}", dest.display());
    Ok(ExitCode::SUCCESS)
}

async fn info_cmd(s: &Settings, output: Option<String>) -> Result<ExitCode> {
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

async fn verify_cmd(s: &Settings, set: Option<String>) -> Result<ExitCode> {
    let stanza = open_stanza(s).await?;
    let only = match s.string(&set, "set")? {
        Some(l) => Some(BackupLabel::parse(&l).map_err(|e| usage(e.to_string()))?),
        None => None,
    };
    if let Some(l) = &only
        && stanza.catalog().await?.get(l).is_none()
    {
        return Err(cairn_repo::Error::NotFound(format!(
            "backup {l} does not exist in stanza '{}'",
            stanza.name()
        ))
        .into());
    }
    let mut report = verify::verify(&stanza, s.process_max, only.as_ref()).await?;
    let mut wal_note = String::new();
    if engine_of(&stanza)? == EngineKind::Postgres {
        let catalog = stanza.catalog().await?;
        let wal =
            cairn_engines::postgres::verify::verify_wal(&stanza, &catalog, only.as_ref()).await?;
        wal_note = format!(", {} WAL file(s) ({})", wal.files, info::human(wal.bytes));
        report.problems.extend(wal.problems);
    }
    for p in &report.problems {
        let affects: Vec<String> = p.affects.iter().map(|l| l.to_string()).collect();
        let affects = if affects.is_empty() {
            "no listed backup".to_string()
        } else {
            affects.join(", ")
        };
        println!("damaged: {}: {} (affects: {affects})", p.object, p.detail);
    }
    println!(
        "verify: {} backup(s), {} pack(s), {} chunk(s), {} read{wal_note}; {} problem(s); {} unreferenced pack(s) and {} unlisted manifest(s) left by interrupted backups",
        report.backups,
        report.packs,
        report.chunks,
        info::human(report.bytes),
        report.problems.len(),
        report.unreferenced_packs,
        report.unlisted_manifests
    );
    if report.ok() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(Damaged(report.problems.len()).into())
    }
}

async fn postgres_stanza(s: &Settings) -> Result<(Stanza, Identity)> {
    let stanza = open_stanza(s).await?;
    if engine_of(&stanza)? != EngineKind::Postgres {
        return Err(usage(format!(
            "stanza '{}' uses the {} engine; archive-push and archive-get are for postgres stanzas",
            stanza.name(),
            stanza.info.engine
        )));
    }
    let identity = Identity::from_meta(&stanza.info.meta)?;
    Ok((stanza, identity))
}

fn wal_name(name: &str) -> Result<WalFileName> {
    WalFileName::parse(name).ok_or_else(|| {
        usage(format!(
            "'{name}' is not a WAL segment, .partial, .history or .backup file name"
        ))
    })
}

async fn archive_push(s: &Settings, wal_path: &Path) -> Result<ExitCode> {
    let file_name = wal_path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| usage(format!("{} does not name a WAL file", wal_path.display())))?;
    let name = wal_name(file_name)?;
    let (stanza, identity) = postgres_stanza(s).await?;
    let data = std::fs::read(wal_path)
        .with_context(|| format!("cannot read WAL file {}", wal_path.display()))?;
    identity.check_wal(&name, &data)?;
    let outcome = stanza
        .archive_push(
            &identity.archive_id(),
            name.timeline,
            &name.name,
            &data,
            s.compress_level,
        )
        .await?;
    match outcome {
        cairn_repo::archive::PushOutcome::Stored => {
            tracing::info!("pushed WAL file {} to the archive", name.name)
        }
        cairn_repo::archive::PushOutcome::AlreadyArchived => {
            tracing::warn!(
                "WAL file {} was already in the archive with the same content",
                name.name
            )
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn archive_get(s: &Settings, name: &str, dest: &Path) -> Result<ExitCode> {
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
fn write_atomically(dest: &Path, data: &[u8]) -> std::io::Result<()> {
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

async fn check_cmd(s: &Settings, archive_timeout: Option<u64>) -> Result<ExitCode> {
    let (stanza, _) = postgres_stanza(s).await?;
    let pg = s.pg_options(archive_timeout)?;
    let wal = pg_backup::check(&stanza, &pg).await?;
    tracing::info!("WAL segment {wal} was archived: archive_command works");
    println!(
        "check: WAL segment {wal} reached the archive of stanza '{}'",
        stanza.name()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::shell_word;

    #[test]
    fn restore_command_words_survive_the_shell_and_percent_expansion() {
        assert_eq!(shell_word("/var/lib/cairn"), "/var/lib/cairn");
        assert_eq!(shell_word("s3://bucket/prefix"), "s3://bucket/prefix");
        assert_eq!(shell_word("/srv/my repo"), "\"/srv/my repo\"");
        assert_eq!(
            shell_word("/a/$HOME`x`\"q\""),
            "\"/a/\\$HOME\\`x\\`\\\"q\\\"\""
        );
        assert_eq!(shell_word("/data/100%"), "\"/data/100%%\"");
        assert_eq!(shell_word(""), "\"\"");
    }
}
