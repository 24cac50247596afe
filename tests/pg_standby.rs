//! A backup taken from a streaming standby (real PostgreSQL 15 primary and replica): cairn
//! connects to the standby, runs the non-exclusive backup there, copies the standby's files,
//! and waits for the WAL it needs to reach the archive from the primary. The backup restores
//! to the data the standby had replayed.

mod common;

use common::pg::{Cluster, PG_BIN, Res, as_postgres, cairn_bin};
use std::fs;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const STANDBY_PORT: &str = "5433";

fn psql(c: &Cluster, port: &str, sql: &str) -> Res<String> {
    let out = Cluster::check_output(
        "psql",
        as_postgres("psql")
            .arg("-h")
            .arg(&c.sock)
            .args(["-p", port, "-U", "postgres", "-XAtq", "-c", sql])
            .output()?,
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// cairn against the standby: its data directory and port.
fn cairn_on_standby(c: &Cluster, standby: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = as_postgres(&cairn_bin().display().to_string());
    cmd.envs(c.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args(&c.repo_args)
        .args(["--stanza", &c.stanza, "--log-level", "info", "--pg-path"])
        .arg(standby)
        .arg("--pg-host")
        .arg(&c.sock)
        .args(["--pg-port", STANDBY_PORT, "--pg-user", "postgres"])
        .args(args);
    cmd
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_backup_from_a_streaming_standby_restores() -> Res<()> {
    let mut primary = Cluster::init(None)?;
    primary.start()?;
    primary.cairn_ok(&["stanza-create"])?;
    primary.sql("create table t as select generate_series(1, 5000) as i")?;

    // The standby: pg_basebackup -R from the primary, on its own port.
    let standby_data = primary.dir.path().join("standby");
    Cluster::check_output(
        "pg_basebackup",
        as_postgres(&format!("{PG_BIN}/pg_basebackup"))
            .arg("-h")
            .arg(&primary.sock)
            .args([
                "-p", "5432", "-U", "postgres", "-R", "-X", "stream", "-c", "fast", "-D",
            ])
            .arg(&standby_data)
            .output()?,
    )?;
    let conf = standby_data.join("postgresql.conf");
    let mut text_conf = fs::read_to_string(&conf)?;
    text_conf.push_str(&format!("\nport = {STANDBY_PORT}\n"));
    fs::write(&conf, text_conf)?;
    let mut standby = primary.sibling(standby_data.clone());
    standby.start()?;
    primary.sql("insert into t select generate_series(5001, 6000)")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while psql(&primary, STANDBY_PORT, "select count(*) from t")
        .ok()
        .as_deref()
        != Some("6000")
    {
        if Instant::now() > deadline {
            return Err("the standby did not catch up within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        psql(&primary, STANDBY_PORT, "select pg_is_in_recovery()")?,
        "t"
    );

    // The backup runs on the standby; while it waits for its last segment, the primary
    // writes and switches WAL (as a busy primary, or archive_timeout, would).
    let mut backup = cairn_on_standby(&primary, &standby_data, &["backup", "--type", "full"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = backup.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = backup.kill();
            return Err("the standby backup did not finish within 120 s".into());
        }
        let _ = primary.sql("insert into t select 0 where false; select pg_switch_wal()");
        std::thread::sleep(Duration::from_millis(500));
    };
    let out = backup.wait_with_output()?;
    assert!(status.success(), "{}", text(&out));
    assert!(text(&out).contains("from a standby"), "{}", text(&out));
    let info: serde_json::Value =
        serde_json::from_slice(&primary.cairn_ok(&["info", "--output", "json"])?.stdout)?;
    let b = &info[0]["backup"][0];
    assert_eq!(b["cairn"]["meta"]["backup-standby"], "true", "{info}");
    let label = b["label"].as_str().ok_or("label")?.to_string();

    // check on the standby says where it must run instead of failing obscurely.
    let out = cairn_on_standby(&primary, &standby_data, &["check"]).output()?;
    assert!(!out.status.success());
    assert!(text(&out).contains("standby"), "{}", text(&out));

    standby.stop()?;
    primary.stop()?;
    let dest = primary.dir.path().join("restored");
    primary.cairn_ok(&[
        "restore",
        "--set",
        &label,
        "--dest",
        dest.to_str().ok_or("path")?,
        "--type=immediate",
        "--target-action=promote",
    ])?;
    // The restored copy is the standby's: give it the primary's port back.
    let conf = dest.join("postgresql.conf");
    let mut text_conf = fs::read_to_string(&conf)?;
    text_conf.push_str("\nport = 5432\n");
    fs::write(&conf, text_conf)?;
    let mut r = primary.sibling(dest);
    r.start()?;
    r.wait_promoted()?;
    assert_eq!(r.sql("select count(*) from t")?, "6000");
    common::pg::amcheck(&r)?;
    r.stop()?;
    Ok(())
}
