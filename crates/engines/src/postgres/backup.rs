//! A backup of a live cluster: check the cluster is the stanza's, start the backup on the
//! server, copy the data directory (and tablespaces) through the repository's pipeline, stop
//! the backup, store `backup_label` (and `tablespace_map`), wait until every WAL segment from
//! start to stop is in the archive, then commit. Any failure before the commit leaves no
//! listed backup, and the dropped connection ends the server's backup.

use super::datadir::{self, BadPages};
use super::identity::Identity;
use super::page_probe;
use super::session::{self, BackupSession, Connection};
use super::wal::{WalFileName, XLogFileName};
use cairn_repo::backup::{BackupJob, BackupOptions, SourceEntry};
use cairn_repo::catalog::BackupRecord;
use cairn_repo::chunker::DEFAULT_CDC;
use cairn_repo::manifest::{Content, EntryKind, FileEntry};
use cairn_repo::pipeline::Progress;
use cairn_repo::{Error, Result, Stanza};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct PgBackupOptions {
    pub pg_path: PathBuf,
    pub connection: Connection,
    pub archive_timeout: Duration,
    /// `fast` checkpoint at backup start (pgBackRest's --start-fast); default on.
    pub start_fast: bool,
}

fn memory_file(path: &str, text: String, mode: u32) -> SourceEntry {
    let bytes = text.into_bytes();
    let size = bytes.len() as u64;
    let mut slot = Some(bytes);
    SourceEntry {
        entry: FileEntry {
            path: path.as_bytes().to_vec(),
            kind: EntryKind::File,
            mode,
            uid: unsafe_ids().0,
            gid: unsafe_ids().1,
            mtime_ns: cairn_repo::time::now_unix() * 1_000_000_000,
            size,
            link_target: None,
            content: Content::None,
            meta: BTreeMap::new(),
        },
        policy: DEFAULT_CDC,
        origin: format!("{path} (from pg_backup_stop)"),
        open: Some(Box::new(move || {
            let b = slot.take().unwrap_or_default();
            Ok(Box::new(std::io::Cursor::new(b)) as Box<dyn std::io::Read + Send>)
        })),
        watch: None,
    }
}

fn unsafe_ids() -> (u32, u32) {
    // SAFETY: getuid/getgid have no preconditions and cannot fail.
    unsafe { (libc::getuid(), libc::getgid()) }
}

pub async fn backup(
    stanza: &Stanza,
    opts: BackupOptions,
    pg: &PgBackupOptions,
    progress: Arc<dyn Progress>,
) -> Result<BackupRecord> {
    let identity = Identity::from_meta(&stanza.info.meta)?;
    let (local, control) = Identity::read_data_dir(&pg.pg_path)?;
    if local.system_id != identity.system_id {
        return Err(Error::Invalid(format!(
            "--pg-path {} is database system {}, but stanza '{}' is for system {}; after pg_upgrade, run `cairn stanza-upgrade` first",
            pg.pg_path.display(),
            local.system_id,
            stanza.name(),
            identity.system_id
        )));
    }
    let client = pg.connection.connect().await?;
    let server_sysid = session::system_identifier(&client).await?;
    if server_sysid != identity.system_id {
        return Err(Error::Invalid(format!(
            "the PostgreSQL server at --pg-host is database system {server_sysid}, but stanza '{}' is for system {}",
            stanza.name(),
            identity.system_id
        )));
    }
    session::check_data_directory(&client, &pg.connection, &pg.pg_path).await?;

    let mut job = BackupJob::begin(stanza, opts).await?;
    let result = run(&mut job, client, &identity, &control, pg, progress).await;
    match result {
        Ok(meta) => job.commit(meta).await,
        Err(e) => {
            let _ = job.abort().await;
            Err(e)
        }
    }
}

async fn run(
    job: &mut BackupJob,
    client: tokio_postgres::Client,
    identity: &Identity,
    control: &super::control::ControlFile,
    pg: &PgBackupOptions,
    progress: Arc<dyn Progress>,
) -> Result<BTreeMap<String, String>> {
    let tablespaces = session::tablespaces(&client).await?;
    let databases = session::databases(&client).await?;
    let session = BackupSession::start(
        client,
        &format!("cairn backup {}", job.label),
        pg.start_fast,
        identity.wal_segment_size,
    )
    .await?;
    tracing::info!(
        "backup start archive = {}, lsn = {}{}",
        session.start_wal,
        session.start_lsn,
        if session.standby {
            " (from a standby: its WAL reaches the archive from the primary)"
        } else {
            ""
        }
    );
    let standby = session.standby;
    if let Some(parent) = job.parent() {
        match page_probe::for_parent(
            &parent.meta,
            identity.system_id,
            session.timeline,
            session.start_lsn,
        ) {
            Ok(probe) => job.set_page_probe(Arc::new(probe)),
            Err(why) => tracing::info!(
                "{why}: changed relation files are stored in whole units, not page by page"
            ),
        }
    }
    let bad: BadPages = Default::default();
    let (path, start_lsn, checksums, relseg) = (
        pg.pg_path.clone(),
        session.start_lsn,
        control.checksums_enabled(),
        control.relseg_size,
    );
    let bad2 = bad.clone();
    let repo = std::fs::canonicalize(job.stanza().store().location()).ok();
    let sources = tokio::task::spawn_blocking(move || {
        datadir::sources(&path, repo, checksums, start_lsn, relseg, &bad2)
    })
    .await
    .map_err(|e| Error::Invalid(format!("scan failed: {e}")))??;
    job.copy(sources, progress.clone()).await?;
    let (start_lsn, start_wal, timeline) = (
        session.start_lsn,
        session.start_wal.clone(),
        session.timeline,
    );
    let stopped = session.stop().await?;
    tracing::info!(
        "backup stop archive = {}, lsn = {}",
        stopped.stop_wal,
        stopped.stop_lsn
    );
    let mut extra = vec![memory_file("backup_label", stopped.backup_label, 0o600)];
    if let Some(map) = stopped.tablespace_map {
        extra.push(memory_file("tablespace_map", map, 0o600));
    }
    job.copy(extra, Arc::new(cairn_repo::pipeline::NoProgress))
        .await?;

    wait_for_archive(
        job.stanza(),
        identity,
        timeline,
        &start_wal,
        &stopped.stop_wal,
        pg.archive_timeout,
        standby,
    )
    .await?;

    let mut bad = bad.lock().map(|b| b.clone()).unwrap_or_default();
    // A file this backup did not read again (unchanged since the parent) still holds the
    // invalid pages the parent found in it: the backup restores them, so it reports them.
    if let Some(parent) = job.parent() {
        let inherited: std::collections::HashSet<&[u8]> = job
            .entries()
            .iter()
            .filter(|e| matches!(e.content, cairn_repo::manifest::Content::Inherit))
            .map(|e| e.path.as_slice())
            .collect();
        for (path, blocks) in recorded_page_errors(&parent.meta) {
            if inherited.contains(path.as_bytes()) {
                bad.entry(path).or_insert(blocks);
            }
        }
    }
    let mut meta = BTreeMap::from([
        ("pg-path".to_string(), pg.pg_path.display().to_string()),
        ("system-id".to_string(), identity.system_id.to_string()),
        ("version".to_string(), identity.version.to_string()),
        ("timeline".to_string(), timeline.to_string()),
        ("start-lsn".to_string(), start_lsn.to_string()),
        ("stop-lsn".to_string(), stopped.stop_lsn.to_string()),
        ("wal-start".to_string(), start_wal),
        ("wal-stop".to_string(), stopped.stop_wal),
        ("backup-standby".to_string(), standby.to_string()),
        (
            "checksum-page-errors".to_string(),
            bad.values().map(Vec::len).sum::<usize>().to_string(),
        ),
    ]);
    // A JSON list of [oid, name] (names may hold any character).
    meta.insert(
        "databases".to_string(),
        serde_json::to_string(&databases).unwrap_or_default(),
    );
    if !tablespaces.is_empty() {
        let list: Vec<String> = tablespaces
            .iter()
            .map(|(oid, name)| format!("{oid}={name}"))
            .collect();
        meta.insert("tablespaces".to_string(), list.join(","));
    }
    if !bad.is_empty() {
        let list: Vec<String> = bad
            .iter()
            .map(|(f, blocks)| {
                format!(
                    "{f} ({})",
                    blocks
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
            .collect();
        tracing::warn!("invalid page checksums: {}", list.join("; "));
        meta.insert("checksum-page-error-list".to_string(), list.join("; "));
    }
    Ok(meta)
}

/// The invalid pages a backup recorded (`checksum-page-error-list`: `path (block, ...); ...`),
/// as (path, blocks).
pub fn recorded_page_errors(meta: &BTreeMap<String, String>) -> Vec<(String, Vec<u32>)> {
    let Some(list) = meta.get("checksum-page-error-list") else {
        return Vec::new();
    };
    list.split("; ")
        .filter_map(|item| {
            let (path, blocks) = item.rsplit_once(" (")?;
            let blocks = blocks
                .strip_suffix(')')?
                .split(", ")
                .map(|b| b.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((path.to_string(), blocks))
        })
        .collect()
}

/// The tablespaces a backup recorded (`tablespaces`: `oid=name,...`), as (oid, name).
pub fn recorded_tablespaces(meta: &BTreeMap<String, String>) -> Vec<(u32, String)> {
    meta.get("tablespaces")
        .map(|t| {
            t.split(',')
                .filter_map(|p| p.split_once('='))
                .filter_map(|(oid, name)| Some((oid.parse().ok()?, name.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The databases a backup recorded (`databases`: a JSON list of `[oid, name]`), as (oid,
/// name); none for backups made before the fact was recorded.
pub fn recorded_databases(meta: &BTreeMap<String, String>) -> Vec<(u32, String)> {
    meta.get("databases")
        .and_then(|list| serde_json::from_str(list).ok())
        .unwrap_or_default()
}

/// Wait until every segment from `start` to `stop` (inclusive) is in the archive.
async fn wait_for_archive(
    stanza: &Stanza,
    identity: &Identity,
    timeline: u32,
    start: &str,
    stop: &str,
    timeout: Duration,
    standby: bool,
) -> Result<()> {
    let seg = identity.wal_segment_size;
    let parse = |n: &str| WalFileName::parse(n).and_then(|w| w.segno(seg));
    let (Some(first), Some(last)) = (parse(start), parse(stop)) else {
        return Err(Error::Invalid(format!(
            "unexpected WAL range {start} .. {stop}"
        )));
    };
    let deadline = Instant::now() + timeout;
    let archive_id = identity.archive_id();
    tracing::info!(
        "waiting for WAL {start}{} to reach the archive (up to {} s, --archive-timeout)",
        if start == stop {
            String::new()
        } else {
            format!(" .. {stop}")
        },
        timeout.as_secs()
    );
    for segno in first..=last {
        let name = XLogFileName(timeline, segno, seg);
        let key = stanza.archive_key(&archive_id, timeline, &name)?;
        loop {
            if stanza.store().head(&key).await.is_ok() {
                break;
            }
            if Instant::now() > deadline && standby {
                return Err(Error::Timeout(format!(
                    "WAL segment {name} did not reach the archive within {} s (--archive-timeout): this backup ran on a standby, whose WAL the primary archives, and the primary archives a segment only once it is full or switched; set archive_timeout on the primary (e.g. 60s), or run `select pg_switch_wal()` there, or give a longer --archive-timeout; and check that the primary's archive_command is 'cairn --stanza={} archive-push %p'",
                    timeout.as_secs(),
                    stanza.name()
                )));
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "WAL segment {name} did not reach the archive within {} s (--archive-timeout); check that archive_command is 'cairn --stanza={} archive-push %p' and works (`cairn check`)",
                    timeout.as_secs(),
                    stanza.name()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// `check`: prove archive_command works. Write a restore point (so there is WAL to switch
/// away from), switch WAL, and wait for the finished segment to reach the archive.
pub async fn check(stanza: &Stanza, pg: &PgBackupOptions) -> Result<String> {
    let identity = Identity::from_meta(&stanza.info.meta)?;
    let client = pg.connection.connect().await?;
    let sysid = session::system_identifier(&client).await?;
    if sysid != identity.system_id {
        return Err(Error::Invalid(format!(
            "the PostgreSQL server is database system {sysid}, but stanza '{}' is for system {}",
            stanza.name(),
            identity.system_id
        )));
    }
    session::check_data_directory(&client, &pg.connection, &pg.pg_path).await?;
    let setting = |name: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(&format!("show {name}"), &[])
                .await
                .map_err(|e| {
                    Error::Database(format!(
                        "cannot read {name}: {}",
                        session::pg_error_text(&e)
                    ))
                })
                .and_then(|r| session::col::<String>(&r, 0, name))
        }
    };
    let in_recovery = client
        .query_one("select pg_is_in_recovery()", &[])
        .await
        .map_err(|e| {
            Error::Database(format!(
                "cannot ask whether the server is a standby: {}",
                session::pg_error_text(&e)
            ))
        })
        .and_then(|r| session::col::<bool>(&r, 0, "pg_is_in_recovery()"))?;
    if in_recovery {
        return Err(Error::Usage(format!(
            "the server at {} is a standby: check switches WAL and waits for it in the archive, which only the primary can do; run check against the primary (backups may run on the standby)",
            pg.connection.describe()
        )));
    }
    let mode = setting("archive_mode").await?;
    if mode == "off" {
        return Err(Error::Invalid(
            "archive_mode is off: set archive_mode = on and restart PostgreSQL".into(),
        ));
    }
    let command = setting("archive_command").await?;
    if !command.contains("archive-push") {
        return Err(Error::Invalid(format!(
            "archive_command is '{command}'; set it to 'cairn --stanza={} archive-push %p'",
            stanza.name()
        )));
    }
    let row = client
        .query_one(
            "select pg_walfile_name(lsn), (select timeline_id from pg_control_checkpoint()) from \
             (select pg_create_restore_point('cairn archive check'), pg_switch_wal() as lsn) s",
            &[],
        )
        .await
        .map_err(|e| {
            Error::Database(format!("cannot switch WAL: {}", session::pg_error_text(&e)))
        })?;
    let wal: String = session::col(&row, 0, "the WAL switch")?;
    let name = WalFileName::parse(&wal)
        .ok_or_else(|| Error::Invalid(format!("unexpected WAL name {wal}")))?;
    wait_for_archive(
        stanza,
        &identity,
        name.timeline,
        &wal,
        &wal,
        pg.archive_timeout,
        false,
    )
    .await?;
    Ok(wal)
}
