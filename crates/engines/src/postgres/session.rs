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
            Error::Invalid(format!(
                "cannot connect to PostgreSQL at {}: {e}; check --pg-host, --pg-port and --pg-user",
                self.describe()
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
    move |e| Error::Invalid(format!("PostgreSQL {what} failed: {e}"))
}

/// A backup in progress on the server.
pub struct BackupSession {
    client: Client,
    version_num: i32,
    pub start_lsn: Lsn,
    pub timeline: u32,
    pub start_wal: String,
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
    let s: String = row.get(0);
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
            Error::Invalid(format!(
                "cannot read the server's data_directory ({e}); connect as a superuser or a member of pg_read_all_settings"
            ))
        })?;
    let server: String = row.get(0);
    let resolve = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (theirs, ours) = (resolve(Path::new(&server)), resolve(pg_path));
    if theirs != ours {
        return Err(Error::Invalid(format!(
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
    let rows = client
        .query(
            "select oid::int8, spcname::text from pg_tablespace where spcname not in ('pg_default', 'pg_global') order by oid",
            &[],
        )
        .await
        .map_err(sql_err("listing tablespaces"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, i64>(0) as u32, r.get::<_, String>(1)))
        .collect())
}

impl BackupSession {
    /// `pg_backup_start(label, fast)` on PostgreSQL 15+, `pg_start_backup(label, fast, false)`
    /// on 12 to 14.
    pub async fn start(client: Client, label: &str, fast: bool) -> Result<BackupSession> {
        let v: String = client
            .query_one("show server_version_num", &[])
            .await
            .map_err(sql_err("reading server_version_num"))?
            .get(0);
        let version_num: i32 = v.parse().unwrap_or(0);
        if version_num < 120000 {
            return Err(Error::Invalid(format!(
                "PostgreSQL {version_num} is too old: cairn needs 12 or later"
            )));
        }
        let sql = if version_num >= 150000 {
            "select lsn::text, pg_walfile_name(lsn) from pg_backup_start($1, $2) as lsn"
        } else {
            "select lsn::text, pg_walfile_name(lsn) from pg_start_backup($1, $2, false) as lsn"
        };
        let row = client
            .query_one(sql, &[&label, &fast])
            .await
            .map_err(sql_err("starting the backup"))?;
        let lsn: String = row.get(0);
        let start_wal: String = row.get(1);
        let start_lsn = Lsn::parse(&lsn)
            .ok_or_else(|| Error::Invalid(format!("unexpected start LSN '{lsn}'")))?;
        let timeline = u32::from_str_radix(start_wal.get(..8).unwrap_or(""), 16)
            .map_err(|_| Error::Invalid(format!("unexpected WAL file name '{start_wal}'")))?;
        Ok(BackupSession {
            client,
            version_num,
            start_lsn,
            timeline,
            start_wal,
        })
    }

    /// `pg_backup_stop(true)` (waiting until the last segment is archived); returns the
    /// contents of `backup_label` and `tablespace_map` that the restored cluster needs.
    pub async fn stop(self) -> Result<Stopped> {
        let sql = if self.version_num >= 150000 {
            "select lsn::text, pg_walfile_name(lsn), labelfile, spcmapfile from pg_backup_stop(true)"
        } else {
            "select lsn::text, pg_walfile_name(lsn), labelfile, spcmapfile from pg_stop_backup(false, true)"
        };
        let row = self
            .client
            .query_one(sql, &[])
            .await
            .map_err(sql_err("stopping the backup"))?;
        let lsn: String = row.get(0);
        let map: Option<String> = row.get(3);
        Ok(Stopped {
            stop_lsn: Lsn::parse(&lsn)
                .ok_or_else(|| Error::Invalid(format!("unexpected stop LSN '{lsn}'")))?,
            stop_wal: row.get(1),
            backup_label: row.get(2),
            tablespace_map: map.filter(|m| !m.is_empty()),
        })
    }
}
