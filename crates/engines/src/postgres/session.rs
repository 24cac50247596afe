//! The non-exclusive backup protocol over a PostgreSQL connection (tokio-postgres). The
//! session that calls `pg_backup_start` must stay open until `pg_backup_stop`; if cairn dies,
//! the connection drops and PostgreSQL ends the backup itself, so nothing is left in progress.

use super::lsn::Lsn;
use cairn_repo::{Error, Result};
use std::path::Path;
use tokio_postgres::{Client, NoTls};

#[derive(Clone, Debug, Default)]
pub struct Connection {
    /// Host name, or a socket directory (starting with `/`).
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
}

impl Connection {
    pub fn describe(&self) -> String {
        format!(
            "{}:{} as {}",
            self.host.as_deref().unwrap_or("/var/run/postgresql"),
            self.port.unwrap_or(5432),
            self.user.as_deref().unwrap_or("postgres")
        )
    }

    pub async fn connect(&self) -> Result<Client> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(self.host.as_deref().unwrap_or("/var/run/postgresql"))
            .port(self.port.unwrap_or(5432))
            .user(self.user.as_deref().unwrap_or("postgres"))
            .dbname("postgres")
            .application_name("cairn")
            .connect_timeout(std::time::Duration::from_secs(30));
        let (client, conn) = cfg.connect(NoTls).await.map_err(|e| {
            Error::Database(format!(
                "cannot connect to PostgreSQL at {}: {}; check --pg-host, --pg-port and --pg-user",
                self.describe(),
                pg_error_text(&e)
            ))
        })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("PostgreSQL connection closed: {e}");
            }
        });
        Ok(client)
    }
}

fn sql_err(what: &str) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
    move |e| Error::Database(format!("PostgreSQL {what} failed: {}", pg_error_text(&e)))
}

/// The server's own message (severity, text, detail, hint) when there is one, else the
/// client error with its causes: tokio-postgres prints a server error as just "db error".
pub fn pg_error_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}: {}", db.severity(), db.message());
        if let Some(d) = db.detail() {
            s.push_str(&format!(" (detail: {d})"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!(" (hint: {h})"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(c) = source {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(&format!(": {text}"));
        }
        source = c.source();
    }
    s
}

/// Column `i` of a server row, as a typed error (never a panic) when it is not what cairn
/// asked for.
pub fn col<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    i: usize,
    what: &str,
) -> Result<T> {
    row.try_get(i).map_err(|e| {
        Error::Database(format!(
            "PostgreSQL answered {what} with an unexpected column {i}: {}",
            pg_error_text(&e)
        ))
    })
}

/// A backup in progress on the server.
pub struct BackupSession {
    client: Client,
    version_num: i32,
    pub start_lsn: Lsn,
    pub timeline: u32,
    pub start_wal: String,
    /// The server is a standby (in recovery): its WAL reaches the archive from the primary,
    /// and `pg_walfile_name` cannot be called there.
    pub standby: bool,
    seg_size: u32,
}

/// The WAL file holding the byte before `lsn`, as `pg_walfile_name` names it.
fn walfile_name(timeline: u32, lsn: Lsn, seg_size: u32) -> String {
    super::wal::XLogFileName(
        timeline,
        lsn.0.saturating_sub(1) / u64::from(seg_size.max(1)),
        seg_size,
    )
}

impl std::fmt::Debug for BackupSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BackupSession(start {})", self.start_lsn)
    }
}

#[derive(Debug)]
pub struct Stopped {
    pub stop_lsn: Lsn,
    pub stop_wal: String,
    pub backup_label: String,
    pub tablespace_map: Option<String>,
}

/// Server facts checked before a backup.
pub async fn system_identifier(client: &Client) -> Result<u64> {
    let row = client
        .query_one(
            "select system_identifier::text from pg_control_system()",
            &[],
        )
        .await
        .map_err(sql_err("reading pg_control_system()"))?;
    let s: String = col(&row, 0, "pg_control_system()")?;
    s.parse()
        .map_err(|_| Error::Invalid(format!("unexpected system identifier '{s}'")))
}

/// Refuse a `--pg-path` that is not the connected server's data directory (pgBackRest's
/// `[058]`): a copy of another directory of the same system would be listed as the newest
/// backup, yet its files would not match the WAL the server archives, and it would not restore.
/// Both sides are compared with symlinks resolved.
pub async fn check_data_directory(
    client: &Client,
    conn: &Connection,
    pg_path: &Path,
) -> Result<()> {
    let row = client
        .query_one("show data_directory", &[])
        .await
        .map_err(|e| {
            Error::Database(format!(
                "cannot read the server's data_directory ({}); connect as a superuser or a member of pg_read_all_settings",
                pg_error_text(&e)
            ))
        })?;
    let server: String = col(&row, 0, "show data_directory")?;
    let resolve = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (theirs, ours) = (resolve(Path::new(&server)), resolve(pg_path));
    if theirs != ours {
        return Err(Error::Usage(format!(
            "--pg-path {} is not the data directory of the PostgreSQL server at {}, which runs on {}; set --pg-path (pg-path) to {}, or point --pg-host/--pg-port at the server running on {}",
            ours.display(),
            conn.describe(),
            theirs.display(),
            theirs.display(),
            ours.display()
        )));
    }
    Ok(())
}

/// User tablespaces: (oid, name).
pub async fn tablespaces(client: &Client) -> Result<Vec<(u32, String)>> {
    oid_names(
        client,
        "select oid::int8, spcname::text from pg_tablespace where spcname not in ('pg_default', 'pg_global') order by oid",
        ("listing tablespaces", "the tablespace list"),
    )
    .await
}

/// Every database: (oid, name), as `info --set` lists them.
pub async fn databases(client: &Client) -> Result<Vec<(u32, String)>> {
    oid_names(
        client,
        "select oid::int8, datname::text from pg_database order by oid",
        ("listing databases", "the database list"),
    )
    .await
}

/// Rows of (oid, name) from `sql`; `(doing, what)` name the query and its result in errors.
async fn oid_names(
    client: &Client,
    sql: &str,
    (doing, what): (&str, &str),
) -> Result<Vec<(u32, String)>> {
    let rows = client.query(sql, &[]).await.map_err(sql_err(doing))?;
    rows.iter()
        .map(|r| Ok((col::<i64>(r, 0, what)? as u32, col::<String>(r, 1, what)?)))
        .collect()
}

impl BackupSession {
    /// `pg_backup_start(label, fast)` on PostgreSQL 15+, `pg_start_backup(label, fast, false)`
    /// on 12 to 14.
    /// On a standby (PostgreSQL allows a non-exclusive backup there) the start timeline is the
    /// restartpoint's, read from `pg_control_checkpoint()`, and WAL file names are computed
    /// here (`seg_size`: the cluster's WAL segment size).
    pub async fn start(
        client: Client,
        label: &str,
        fast: bool,
        seg_size: u32,
    ) -> Result<BackupSession> {
        let row = client
            .query_one("show server_version_num", &[])
            .await
            .map_err(sql_err("reading server_version_num"))?;
        let v: String = col(&row, 0, "show server_version_num")?;
        let version_num: i32 = v.parse().unwrap_or(0);
        if version_num < 120000 {
            return Err(Error::Invalid(format!(
                "PostgreSQL {version_num} is too old: cairn needs 12 or later"
            )));
        }
        let row = client
            .query_one("select pg_is_in_recovery()", &[])
            .await
            .map_err(sql_err("asking whether the server is a standby"))?;
        let standby: bool = col(&row, 0, "pg_is_in_recovery()")?;
        let sql = match (version_num >= 150000, standby) {
            (true, false) => {
                "select lsn::text, pg_walfile_name(lsn) from pg_backup_start($1, $2) as lsn"
            }
            (false, false) => {
                "select lsn::text, pg_walfile_name(lsn) from pg_start_backup($1, $2, false) as lsn"
            }
            (true, true) => {
                "select lsn::text, (select timeline_id::text from pg_control_checkpoint()) from pg_backup_start($1, $2) as lsn"
            }
            (false, true) => {
                "select lsn::text, (select timeline_id::text from pg_control_checkpoint()) from pg_start_backup($1, $2, false) as lsn"
            }
        };
        let row = client
            .query_one(sql, &[&label, &fast])
            .await
            .map_err(sql_err("starting the backup"))?;
        let lsn: String = col(&row, 0, "the backup start")?;
        let second: String = col(&row, 1, "the backup start")?;
        let start_lsn = Lsn::parse(&lsn)
            .ok_or_else(|| Error::Invalid(format!("unexpected start LSN '{lsn}'")))?;
        let (timeline, start_wal) = if standby {
            let tli: u32 = second
                .parse()
                .map_err(|_| Error::Invalid(format!("unexpected timeline '{second}'")))?;
            (tli, walfile_name(tli, start_lsn, seg_size))
        } else {
            let tli = u32::from_str_radix(second.get(..8).unwrap_or(""), 16)
                .map_err(|_| Error::Invalid(format!("unexpected WAL file name '{second}'")))?;
            (tli, second)
        };
        Ok(BackupSession {
            client,
            version_num,
            start_lsn,
            timeline,
            start_wal,
            standby,
            seg_size,
        })
    }

    /// `pg_backup_stop(false)`; returns the contents of `backup_label` and `tablespace_map`
    /// that the restored cluster needs. PostgreSQL still switches to a new WAL segment, but
    /// does not wait for the archiver: its wait sleeps a whole second between checks, and the
    /// backup waits for the segments to reach the repository itself (`wait_for_archive`), as
    /// pgBackRest does.
    pub async fn stop(self) -> Result<Stopped> {
        let sql = match (self.version_num >= 150000, self.standby) {
            (true, false) => {
                "select lsn::text, pg_walfile_name(lsn), labelfile, spcmapfile from pg_backup_stop(false)"
            }
            (false, false) => {
                "select lsn::text, pg_walfile_name(lsn), labelfile, spcmapfile from pg_stop_backup(false, false)"
            }
            (true, true) => {
                "select lsn::text, '', labelfile, spcmapfile from pg_backup_stop(false)"
            }
            (false, true) => {
                "select lsn::text, '', labelfile, spcmapfile from pg_stop_backup(false, false)"
            }
        };
        let row = self
            .client
            .query_one(sql, &[])
            .await
            .map_err(sql_err("stopping the backup"))?;
        let lsn: String = col(&row, 0, "the backup stop")?;
        let map: Option<String> = col(&row, 3, "the backup stop")?;
        let stop_lsn = Lsn::parse(&lsn)
            .ok_or_else(|| Error::Invalid(format!("unexpected stop LSN '{lsn}'")))?;
        let stop_wal = if self.standby {
            walfile_name(self.timeline, stop_lsn, self.seg_size)
        } else {
            col(&row, 1, "the backup stop")?
        };
        Ok(Stopped {
            stop_lsn,
            stop_wal,
            backup_label: col(&row, 2, "the backup stop")?,
            tablespace_map: map.filter(|m| !m.is_empty()),
        })
    }
}
