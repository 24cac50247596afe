//! Options after merging every source: flag > `CAIRN_*` environment > config file. Opens the
//! repository's store with the resolved S3, timeout and retry settings.

use crate::Cli;
use crate::config::ConfigFile;
use crate::exit::usage;
use anyhow::{Context, Result};
use cairn_repo::StanzaName;
use cairn_repo::storage::Storage;
use cairn_repo::storage::local::LocalStorage;
use cairn_repo::storage::retry::{RetryPolicy, Retrying};
use cairn_repo::storage::s3::{DEFAULT_IO_TIMEOUT, S3Credentials, S3Options, S3Storage};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Every long option name of every command (what the config file may set), plus `stanza`.
fn known_options() -> Vec<String> {
    use clap::CommandFactory;
    let cli = Cli::command();
    let mut names: Vec<String> = std::iter::once(&cli)
        .chain(cli.get_subcommands())
        .flat_map(|c| c.get_arguments())
        .filter_map(|a| a.get_long().map(str::to_string))
        .chain(["stanza".to_string(), "engine".to_string()])
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Options after merging every source.
pub(crate) struct Settings {
    pub(crate) file: ConfigFile,
    pub(crate) repo: Option<String>,
    pub(crate) stanza: Option<String>,
    pub(crate) process_max: usize,
    pub(crate) compress_level: i32,
    pub(crate) config_path: Option<PathBuf>,
    pub(crate) s3: S3Flags,
    pub(crate) io_timeout: Duration,
    /// This host's status files of running backups and restores (`status_file`).
    pub(crate) lock_path: PathBuf,
    /// Every store opened, so their request counts can be logged at the end.
    pub(crate) opened: Mutex<Vec<Arc<dyn Storage>>>,
}

/// The S3 options as given on the command line or in the environment.
#[derive(Default)]
pub(crate) struct S3Flags {
    pub(crate) endpoint: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) path_style: bool,
    pub(crate) sse: Option<String>,
    pub(crate) kms_key_id: Option<String>,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) credentials: Option<S3Credentials>,
    /// The credentials came from the command line or the environment, which a restored
    /// cluster's restore_command does not carry.
    pub(crate) credentials_outside_file: bool,
}

impl Settings {
    pub(crate) fn resolve(cli: &Cli) -> Result<Settings> {
        let g = &cli.global;
        // pgBackRest's variables for where the configuration is (the file itself cannot say).
        let env_path = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let config = g.config.clone().or_else(|| env_path("PGBACKREST_CONFIG"));
        let include = g
            .config_include_path
            .clone()
            .or_else(|| env_path("PGBACKREST_CONFIG_INCLUDE_PATH"));
        let mut file = ConfigFile::load(
            config.as_deref(),
            include.as_deref(),
            &cli.command_name,
            cli.negated.clone(),
            cli.notes.clone(),
        )?;
        let stanza = match &g.stanza {
            Some(s) => Some(s.clone()),
            None => file.string("stanza")?,
        };
        if let Some(s) = &stanza {
            file.select_stanza(s)?;
        }
        file.check_keys(&known_options())
            .map_err(|e| usage(format!("{e:#}")))?;
        // pgBackRest's `--repo=<index>` (check_pgbackrest passes `--repo=1`): cairn has one
        // repository, so index 1 is the one repo1-path (or cairn's own settings) names.
        let flag_name = if cli.repo_from_env {
            "CAIRN_REPO"
        } else {
            "--repo"
        };
        let repo_flag = if repo_index(g.repo.as_deref(), flag_name)? {
            file.notes.details.push(
                "--repo 1 is pgBackRest's repository index: cairn's one repository (repo1) is used"
                    .into(),
            );
            None
        } else {
            g.repo.clone()
        };
        let repo1_given = [
            &g.repo1.repo1_path,
            &g.repo1.repo1_kind,
            &g.repo1.repo1_s3_bucket,
        ]
        .iter()
        .any(|o| o.is_some());
        if repo1_given && repo_flag.is_some() && !cli.repo_from_env {
            return Err(usage(
                "both --repo and --repo1-path (or --repo1-type, --repo1-s3-bucket) are given: they name the same thing; give one",
            ));
        }
        // A pgBackRest index in the file (`repo=1`) names no path; another than 1 is refused,
        // unless --repo or CAIRN_REPO is given: that wins (repo=2 in the file, --repo=1 given).
        let from_file = match file.string("repo")? {
            Some(r) if is_index(&r) => {
                if g.repo.is_none() {
                    repo_index(Some(&r), &format!("repo (in {})", file.source_of("repo")))?;
                }
                None
            }
            other => other,
        };
        let repo = match &repo_flag {
            // pgBackRest's spelling on the command line wins over CAIRN_REPO.
            Some(_) if repo1_given => repo1(&file, &g.repo1)?,
            Some(r) => Some(r.clone()),
            None if repo1_given => repo1(&file, &g.repo1)?,
            None => match from_file {
                Some(r) => Some(r),
                None => repo1(&file, &g.repo1)?,
            },
        };
        let index_given = g.repo.is_some() && repo_flag.is_none();
        // --repo=1 on the command line hides CAIRN_REPO from clap: the repository it names
        // is then repo1.
        let repo = match repo {
            None if index_given => std::env::var("CAIRN_REPO")
                .ok()
                .filter(|r| !r.is_empty() && !is_index(r)),
            r => r,
        };
        if repo.is_none() && index_given {
            return Err(usage(format!(
                "{flag_name} {} selects pgBackRest's repository 1, but no repository is configured: set repo1-path (or cairn's repo) in the configuration file, or give --repo the repository's directory or s3:// URL",
                g.repo.as_deref().unwrap_or("1")
            )));
        }
        let flag_or_file = |flag: &Option<String>, key: &str| -> Result<Option<String>> {
            match flag {
                Some(v) => Ok(Some(v.clone())),
                None => file.string(key),
            }
        };
        match flag_or_file(&g.repo1.repo1_cipher_type, "repo1-cipher-type")?.as_deref() {
            None | Some("none") => {}
            Some(c) => {
                return Err(usage(format!(
                    "repo1-cipher-type '{c}': cairn does not encrypt repositories, so the backups would be stored unencrypted; use an encrypted file system or S3 server-side encryption (--s3-sse) and set repo1-cipher-type=none"
                )));
            }
        }
        let path_style =
            match flag_or_file(&g.repo1.repo1_s3_uri_style, "repo1-s3-uri-style")?.as_deref() {
                None | Some("host") => g.s3_path_style,
                Some("path") => true,
                Some(other) => {
                    return Err(usage(format!(
                        "repo1-s3-uri-style '{other}': use host or path"
                    )));
                }
            };
        let credentials = match (
            flag_or_file(&g.repo1.repo1_s3_key, "repo1-s3-key")?,
            flag_or_file(&g.repo1.repo1_s3_key_secret, "repo1-s3-key-secret")?,
        ) {
            (None, None) => None,
            (Some(access_key_id), Some(secret_access_key)) => Some(S3Credentials {
                access_key_id,
                secret_access_key,
                session_token: flag_or_file(&g.repo1.repo1_s3_token, "repo1-s3-token")?,
            }),
            _ => {
                return Err(usage(
                    "repo1-s3-key and repo1-s3-key-secret go together: give both, or neither to use the AWS credential chain",
                ));
            }
        };
        let endpoint = match flag_or_file(&g.s3_endpoint, "s3-endpoint")? {
            // pgBackRest's endpoint is a host name, reached over https (at repo1-storage-port,
            // or repo1-storage-host instead when given).
            Some(e) if !e.contains("://") => {
                let host =
                    flag_or_file(&g.repo1.repo1_storage_host, "repo1-storage-host")?.unwrap_or(e);
                let port = match g.repo1.repo1_storage_port {
                    Some(p) => Some(i64::from(p)),
                    None => file.integer("repo1-storage-port")?,
                };
                Some(match port {
                    Some(p) => format!("https://{host}:{p}"),
                    None => format!("https://{host}"),
                })
            }
            other => other,
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
        let lock_path = match &g.lock_path {
            Some(p) => p.clone(),
            None => file
                .string("lock-path")?
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(crate::status_file::DEFAULT_LOCK_PATH)),
        };
        let credentials_outside_file = g.repo1.repo1_s3_key.is_some()
            || g.repo1.repo1_s3_key_secret.is_some()
            || file.set_by_env("repo1-s3-key")
            || file.set_by_env("repo1-s3-key-secret");
        Ok(Settings {
            lock_path,
            io_timeout: Duration::from_secs(io_timeout as u64),
            opened: Mutex::default(),
            file,
            repo,
            stanza,
            process_max: process_max as usize,
            compress_level: compress_level as i32,
            config_path: config.clone(),
            s3: S3Flags {
                credentials_outside_file,
                endpoint,
                region: g.s3_region.clone(),
                path_style,
                credentials,
                sse: g.s3_sse.clone(),
                kms_key_id: g.s3_kms_key_id.clone(),
                ca_file: g.s3_ca_file.clone(),
            },
        })
    }

    pub(crate) fn string(&self, flag: &Option<String>, key: &str) -> Result<Option<String>> {
        match flag {
            Some(v) => Ok(Some(v.clone())),
            None => self.file.string(key),
        }
    }

    pub(crate) fn path(&self, flag: &Option<PathBuf>, key: &str) -> Result<Option<PathBuf>> {
        match flag {
            Some(v) => Ok(Some(v.clone())),
            None => Ok(self.file.string(key)?.map(PathBuf::from)),
        }
    }

    pub(crate) fn integer(&self, flag: Option<u64>, key: &str) -> Result<Option<i64>> {
        match flag {
            Some(v) => Ok(Some(v.min(i64::MAX as u64) as i64)),
            None => self.file.integer(key),
        }
    }

    pub(crate) fn flag(&self, flag: bool, key: &str) -> Result<bool> {
        Ok(flag || self.file.boolean(key)?.unwrap_or(false))
    }

    /// The words that run this cairn again against this repository and stanza, with the
    /// options it needs to reach them (S3, timeout, config file): what a restored cluster's
    /// restore_command calls.
    pub(crate) fn invocation(&self) -> Result<Vec<String>> {
        let exe = std::env::current_exe().context("cannot find the cairn executable's path")?;
        let repo = self.repo.as_deref().unwrap_or_default();
        let repo = std::fs::canonicalize(repo)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| repo.to_string());
        let mut words = vec![exe.display().to_string(), "--repo".into(), repo.clone()];
        words.extend(["--stanza".into(), self.stanza_name()?.to_string()]);
        let mut add = |flag: &str, value: Option<String>| {
            words.push(flag.to_string());
            words.extend(value);
        };
        if repo.starts_with("s3://") {
            if self.s3.credentials.is_some() && self.s3.credentials_outside_file {
                tracing::warn!(
                    "the restored cluster's restore_command cannot reach the repository with the S3 keys given on the command line or in PGBACKREST_* variables (it does not carry them); put repo1-s3-key and repo1-s3-key-secret in the configuration file, or use the AWS credential chain, before starting it"
                );
            }
            if let Some(e) = &self.s3.endpoint {
                add("--s3-endpoint", Some(e.clone()));
            }
            if let Some(r) = self.string(&self.s3.region, "s3-region")? {
                add("--s3-region", Some(r));
            }
            if self.s3.path_style || self.file.boolean("s3-path-style")?.unwrap_or(false) {
                add("--s3-path-style", None);
            }
            if let Some(ca) = self.path(&self.s3.ca_file, "s3-ca-file")? {
                let ca = std::fs::canonicalize(&ca).unwrap_or(ca);
                add("--s3-ca-file", Some(ca.display().to_string()));
            }
        }
        if self.io_timeout != DEFAULT_IO_TIMEOUT {
            add("--io-timeout", Some(self.io_timeout.as_secs().to_string()));
        }
        if let Some(c) = &self.config_path {
            add("--config", Some(c.display().to_string()));
        }
        Ok(words)
    }

    pub(crate) fn stanza_name(&self) -> Result<StanzaName> {
        let s = self.stanza.as_deref().ok_or_else(|| {
            usage("no stanza given: use --stanza, CAIRN_STANZA or 'stanza' in the config file")
        })?;
        StanzaName::parse(s).map_err(|e| usage(e.to_string()))
    }

    pub(crate) async fn store(&self, create: bool) -> Result<Arc<dyn Storage>> {
        let store = self.open_store(create).await?;
        if let Ok(mut opened) = self.opened.lock() {
            opened.push(store.clone());
        }
        Ok(store)
    }

    /// What the stores opened so far have sent (S3 request counts), for the log.
    pub(crate) fn request_summaries(&self) -> Vec<String> {
        self.opened
            .lock()
            .map(|o| o.iter().filter_map(|s| s.request_summary()).collect())
            .unwrap_or_default()
    }

    pub(crate) async fn open_store(&self, create: bool) -> Result<Arc<dyn Storage>> {
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
            o.endpoint = self.s3.endpoint.clone();
            o.credentials = self.s3.credentials.clone();
            o.region = self.string(&self.s3.region, "s3-region")?;
            o.path_style =
                self.s3.path_style || self.file.boolean("s3-path-style")?.unwrap_or(false);
            o.sse = self.string(&self.s3.sse, "s3-sse")?;
            o.kms_key_id = self.string(&self.s3.kms_key_id, "s3-kms-key-id")?;
            // pgBackRest's repo1-s3-kms-key-id alone asks for SSE-KMS.
            if o.kms_key_id.is_some() && o.sse.is_none() {
                o.sse = Some("aws:kms".into());
            }
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
            let s3 = S3Storage::new(o).await?.with_retry(policy.clone());
            return Ok(Arc::new(Retrying::new(s3, policy)));
        }
        let path = Path::new(repo);
        if !path.is_absolute() {
            return Err(usage(format!(
                "--repo '{repo}' is a relative path: give an absolute directory or s3://bucket/prefix (a relative path would depend on where cairn runs; archive_command runs in the data directory)"
            )));
        }
        if create && !path.exists() {
            std::fs::create_dir_all(path)
                .with_context(|| format!("cannot create repository directory {repo}"))?;
        }
        if create && !path.join(cairn_repo::repository::REPO_MARKER).exists() {
            let non_empty = std::fs::read_dir(path)
                .with_context(|| format!("cannot read repository directory {repo}"))?
                .next()
                .is_some();
            if non_empty && path.join("stanza").is_dir() {
                return Err(usage(format!(
                    "{repo} holds stanza data but its {} marker is missing; if --repo is right, run `cairn --stanza=<name> stanza-repair` to recreate it",
                    cairn_repo::repository::REPO_MARKER
                )));
            }
            if non_empty {
                return Err(usage(format!(
                    "{repo} is not empty and not a cairn repository; give --repo an empty or new directory"
                )));
            }
        }
        Ok(Arc::new(Retrying::new(LocalStorage::new(path)?, policy)))
    }
}

/// Whether `value` of `what` is pgBackRest's repository index (`--repo=1`: only digits) rather
/// than cairn's repository path: true for index 1, cairn's one repository; an error for any
/// other index. A relative directory named only by digits is written `./1` (and `--repo` wants
/// an absolute path anyway).
fn repo_index(value: Option<&str>, what: &str) -> Result<bool> {
    let Some(v) = value.filter(|v| is_index(v)) else {
        return Ok(false);
    };
    if v.trim_start_matches('0') == "1" {
        return Ok(true);
    }
    Err(usage(format!(
        "{what} {v}: a number is pgBackRest's repository index, and cairn has one repository (repo1); use --repo=1 or leave --repo out, or give a repository path (a directory named only by digits is written ./{v}, or better as an absolute path)"
    )))
}

/// Whether a `repo` value is pgBackRest's repository index (only digits), not a path.
fn is_index(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())
}

/// The repository pgBackRest's options name: `repo1-path` (a directory), or with
/// `repo1-type=s3` the bucket `repo1-s3-bucket` and the prefix `repo1-path`. Flags win over
/// the file, each option on its own. None when none of them is set.
fn repo1(file: &ConfigFile, r: &crate::Repo1Args) -> Result<Option<String>> {
    let get = |flag: &Option<String>, key: &str| -> Result<Option<String>> {
        match flag {
            Some(v) => Ok(Some(v.clone())),
            None => file.string(key),
        }
    };
    let path = get(&r.repo1_path, "repo1-path")?;
    let kind = get(&r.repo1_kind, "repo1-type")?;
    let bucket = get(&r.repo1_s3_bucket, "repo1-s3-bucket")?;
    if path.is_none() && kind.is_none() && bucket.is_none() {
        return Ok(None);
    }
    let path = path.ok_or_else(|| {
        usage("repo1-path is not set: give cairn a repository path of its own (pgBackRest's default, /var/lib/pgbackrest, holds pgBackRest's repository)")
    })?;
    match kind.as_deref() {
        None | Some("posix") | Some("cifs") => Ok(Some(path)),
        Some("s3") => {
            let bucket = bucket.ok_or_else(|| usage("repo1-type=s3 needs repo1-s3-bucket"))?;
            Ok(Some(format!(
                "s3://{bucket}/{}",
                path.trim_start_matches('/')
            )))
        }
        Some(other) => Err(usage(format!(
            "repo1-type '{other}': cairn's repositories are posix (a directory) or s3"
        ))),
    }
}
