//! Real PostgreSQL 15 clusters for tests: initdb'd and started as the `postgres` user in a
//! temporary directory, listening only on a private socket directory, with `archive_command`
//! set to the `cairn` binary under test. Stopped (immediate) when dropped.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The cairn binary under test, copied where the `postgres` user can run it (the build
/// directory may sit under a home directory postgres cannot enter).
pub fn cairn_bin() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        // One copy per build of the binary, shared by every test process.
        let src = fs::metadata(env!("CARGO_BIN_EXE_cairn")).map(|m| {
            use std::os::unix::fs::MetadataExt;
            format!("{}-{}", m.len(), m.mtime_nsec() + m.mtime() * 1_000_000_000)
        });
        let dir = std::env::temp_dir().join(format!("cairn-test-bin-{}", src.unwrap_or_default()));
        let bin = dir.join("cairn");
        if bin.exists() {
            return bin;
        }
        remove_old_copies();
        let tmp = format!("cairn.tmp-{}", std::process::id());
        let copied = fs::create_dir_all(&dir)
            .and_then(|_| fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)))
            .and_then(|_| fs::copy(env!("CARGO_BIN_EXE_cairn"), dir.join(&tmp)))
            .and_then(|_| fs::set_permissions(dir.join(&tmp), fs::Permissions::from_mode(0o755)))
            .and_then(|_| fs::rename(dir.join(&tmp), &bin));
        match copied {
            Ok(()) => bin,
            Err(e) => panic!("cannot copy the cairn binary to {}: {e}", dir.display()),
        }
    })
}

/// Copies of earlier builds (one per build, ~450 MB each in debug) would fill /tmp over a
/// day of rebuilding: remove those untouched for an hour (no test run lasts that long).
fn remove_old_copies() {
    let hour = std::time::Duration::from_secs(3600);
    for e in fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > hour));
        if old
            && e.file_name()
                .to_string_lossy()
                .starts_with("cairn-test-bin-")
        {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

pub struct Cluster {
    pub dir: std::sync::Arc<tempfile::TempDir>,
    pub data: PathBuf,
    pub sock: PathBuf,
    pub repo: PathBuf,
    pub stanza: String,
    /// How cairn reaches the repository (`--repo <dir>`, or an S3 URL with its options).
    pub repo_args: Vec<String>,
    /// Extra environment for cairn and the server (AWS credentials for S3).
    pub env: Vec<(String, String)>,
    running: bool,
}

pub fn as_postgres(program: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--", program]);
    for (k, _) in std::env::vars() {
        if k.starts_with("CAIRN_") || k.starts_with("PG") {
            c.env_remove(k);
        }
    }
    c
}

fn check(what: &str, out: Output) -> Res<Output> {
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into())
    }
}

pub fn chown_postgres(path: &Path) -> Res<()> {
    check(
        "chown",
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .output()?,
    )?;
    Ok(())
}

impl Cluster {
    /// initdb (with data checksums) a new cluster; `repo` is shared by clusters that should
    /// archive to the same repository (None: a fresh one in this cluster's directory).
    pub fn init(repo: Option<&Path>) -> Res<Cluster> {
        Self::init_with(repo, None, Vec::new())
    }

    /// A cluster whose repository is given by `repo_args` (e.g. an S3 URL and options), with
    /// `env` in cairn's and the server's environment.
    pub fn init_s3(repo_args: Vec<String>, env: Vec<(&str, &str)>) -> Res<Cluster> {
        Self::init_with(
            None,
            Some(repo_args),
            env.into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn init_with(
        repo: Option<&Path>,
        repo_args: Option<Vec<String>>,
        env: Vec<(String, String)>,
    ) -> Res<Cluster> {
        let dir = tempfile::tempdir()?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        fs::create_dir_all(&sock)?;
        let repo = repo
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.path().join("repo"));
        fs::create_dir_all(&repo)?;
        chown_postgres(dir.path())?;
        chown_postgres(&repo)?;
        check(
            "initdb",
            as_postgres(&format!("{PG_BIN}/initdb"))
                .args(["-k", "-A", "trust", "-U", "postgres", "-D"])
                .arg(&data)
                .output()?,
        )?;
        let repo_args =
            repo_args.unwrap_or_else(|| vec!["--repo".into(), repo.display().to_string()]);
        // The index cache in the test's directory (the dir is the postgres user's), not in
        // the postgres user's home, where every test would leave one.
        let mut env = env;
        env.push((
            "CAIRN_CACHE_PATH".into(),
            dir.path().join("cache").display().to_string(),
        ));
        let c = Cluster {
            dir: dir.into(),
            data,
            sock,
            repo,
            stanza: "main".into(),
            repo_args,
            env,
            running: false,
        };
        c.configure("")?;
        Ok(c)
    }

    /// Append cairn's settings (and `extra`) to postgresql.conf.
    pub fn configure(&self, extra: &str) -> Res<()> {
        let conf = format!(
            "\nport = 5432\nunix_socket_directories = '{}'\nlisten_addresses = ''\nwal_level = replica\narchive_mode = on\narchive_command = '{}'\nfsync = off\nmax_wal_size = 1GB\nlog_min_messages = warning\n{extra}\n",
            self.sock.display(),
            self.archive_command()
        );
        let path = self.data.join("postgresql.conf");
        let mut text = fs::read_to_string(&path)?;
        text.push_str(&conf);
        fs::write(&path, text)?;
        Ok(())
    }

    pub fn archive_command(&self) -> String {
        let env: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(
            "{}{} {} --stanza {} --pg-path {} --log-level warn archive-push %p",
            if env.is_empty() {
                String::new()
            } else {
                format!("env {} ", env.join(" "))
            },
            cairn_bin().display(),
            self.repo_args.join(" "),
            self.stanza,
            self.data.display()
        )
    }

    /// A cluster on another data directory (a restore of this one), sharing its socket
    /// directory and repository; only one of them may run at a time.
    pub fn sibling(&self, data: PathBuf) -> Cluster {
        Cluster {
            dir: self.dir.clone(),
            data,
            sock: self.sock.clone(),
            repo: self.repo.clone(),
            stanza: self.stanza.clone(),
            repo_args: self.repo_args.clone(),
            env: self.env.clone(),
            running: false,
        }
    }

    /// The restored copy at `data`, started with archiving off and waited on until promoted.
    pub fn start_copy(&self, data: &Path) -> Res<Cluster> {
        let mut r = self.sibling(data.to_path_buf());
        r.set("archive_mode = off")?;
        r.start()?;
        r.wait_promoted()?;
        Ok(r)
    }

    /// Append settings to postgresql.auto.conf (they win over postgresql.conf).
    pub fn set(&self, settings: &str) -> Res<()> {
        let path = self.data.join("postgresql.auto.conf");
        let mut text = fs::read_to_string(&path).unwrap_or_default();
        text.push_str(&format!("\n{settings}\n"));
        fs::write(&path, text)?;
        chown_postgres(&path)?;
        Ok(())
    }

    /// Wait until recovery has ended (the cluster was promoted).
    pub fn wait_promoted(&self) -> Res<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if self
                .sql("select pg_is_in_recovery()")
                .map(|r| r == "f")
                .unwrap_or(false)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("the restored cluster did not finish recovery within 90 s".into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Run a PostgreSQL client program (pgbench, pg_amcheck...) against this cluster.
    pub fn client(&self, program: &str, args: &[&str]) -> Command {
        let mut c = as_postgres(&format!("{PG_BIN}/{program}"));
        c.arg("-h")
            .arg(&self.sock)
            .args(["-p", "5432", "-U", "postgres"])
            .args(args);
        c
    }

    pub fn check_output(what: &str, out: Output) -> Res<Output> {
        check(what, out)
    }

    pub fn start(&mut self) -> Res<()> {
        let log = self.dir.path().join("postgres.log");
        check(
            "pg_ctl start",
            as_postgres(&format!("{PG_BIN}/pg_ctl"))
                .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .args(["-w", "-t", "60", "-D"])
                .arg(&self.data)
                .arg("-l")
                .arg(&log)
                .arg("start")
                .output()?,
        )
        .map_err(|e| format!("{e}\nlog: {}", fs::read_to_string(&log).unwrap_or_default()))?;
        self.running = true;
        Ok(())
    }

    pub fn stop(&mut self) -> Res<()> {
        if self.running {
            check(
                "pg_ctl stop",
                as_postgres(&format!("{PG_BIN}/pg_ctl"))
                    .args(["-w", "-m", "fast", "-D"])
                    .arg(&self.data)
                    .arg("stop")
                    .output()?,
            )?;
            self.running = false;
        }
        Ok(())
    }

    /// Run SQL with psql; returns trimmed unaligned output.
    pub fn sql(&self, sql: &str) -> Res<String> {
        let out = check(
            "psql",
            as_postgres("psql")
                .arg("-h")
                .arg(&self.sock)
                .args([
                    "-p",
                    "5432",
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-XAtq",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-c",
                    sql,
                ])
                .output()?,
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Run cairn as postgres against this cluster's repository and stanza.
    pub fn cairn(&self, args: &[&str]) -> Res<Output> {
        Ok(as_postgres(&cairn_bin().display().to_string())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(&self.repo_args)
            .args(["--stanza", &self.stanza, "--log-level", "warn", "--pg-path"])
            .arg(&self.data)
            .arg("--pg-host")
            .arg(&self.sock)
            .args(["--pg-port", "5432", "--pg-user", "postgres"])
            .args(args)
            .output()?)
    }

    /// `archive-push <wal>` run in the data directory, as PostgreSQL runs archive_command.
    pub fn archive_push(&self, wal: &Path) -> Res<Output> {
        Ok(as_postgres(&cairn_bin().display().to_string())
            .current_dir(&self.data)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(&self.repo_args)
            .args(["--stanza", &self.stanza, "--log-level", "warn", "--pg-path"])
            .arg(&self.data)
            .arg("archive-push")
            .arg(wal)
            .output()?)
    }

    pub fn cairn_ok(&self, args: &[&str]) -> Res<Output> {
        check(&format!("cairn {args:?}"), self.cairn(args)?)
    }

    /// Wait until PostgreSQL reports `wal` archived (pg_stat_archiver).
    pub fn wait_archived(&self, wal: &str) -> Res<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let last = self.sql("select coalesce(last_archived_wal, '') from pg_stat_archiver")?;
            if last.as_str() >= wal && !last.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let failed =
                    self.sql("select failed_count, last_failed_wal from pg_stat_archiver")?;
                return Err(format!(
                    "{wal} not archived within 60 s (last archived '{last}', failures {failed})"
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's clock now, as a `--target` for a time restore (UTC, microseconds).
    pub fn now_utc(&self) -> Res<String> {
        self.sql("select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
    }

    /// Switch to a new WAL segment and return the name of the one just finished.
    pub fn switch_wal(&self) -> Res<String> {
        self.sql("select pg_walfile_name(pg_switch_wal())")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            let _ = as_postgres(&format!("{PG_BIN}/pg_ctl"))
                .args(["-w", "-m", "immediate", "-D"])
                .arg(&self.data)
                .arg("stop")
                .output();
        }
    }
}

/// pg_amcheck with `--heapallindexed` over every database of a running cluster.
#[allow(dead_code)]
pub fn amcheck(r: &Cluster) -> Res<()> {
    Cluster::check_output(
        "pg_amcheck",
        r.client(
            "pg_amcheck",
            &["--install-missing", "--heapallindexed", "--all"],
        )
        .output()?,
    )?;
    Ok(())
}

/// pg_checksums --check over a stopped cluster's data directory.
#[allow(dead_code)]
pub fn checksums(r: &Cluster) -> Res<()> {
    let out = Command::new("runuser")
        .args([
            "-u",
            "postgres",
            "--",
            &format!("{PG_BIN}/pg_checksums"),
            "--check",
            "-D",
        ])
        .arg(&r.data)
        .output()?;
    Cluster::check_output("pg_checksums --check", out)?;
    Ok(())
}
