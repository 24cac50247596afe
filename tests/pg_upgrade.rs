//! `stanza-upgrade` across a real `pg_upgrade` (PostgreSQL 15 to a new PostgreSQL 15 cluster
//! with a new system id: the only major version installed here): the stanza keeps the history
//! of its database identities, the first backup after the upgrade is a full, new WAL goes to
//! the new identity, old backups stay listed and restorable from their own WAL, verify checks
//! each identity's WAL against its own backups, and expire removes the old identity's WAL only
//! once no kept backup needs it.

mod common;

use common::pg::{Cluster, PG_BIN, Res, as_postgres};
use std::fs;
use std::process::Output;

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn info(c: &Cluster) -> Res<serde_json::Value> {
    Ok(serde_json::from_slice(
        &c.cairn_ok(&["info", "--output", "json"])?.stdout,
    )?)
}

fn initdb(dir: &std::path::Path) -> Res<()> {
    Cluster::check_output(
        "initdb",
        as_postgres(&format!("{PG_BIN}/initdb"))
            .args(["-k", "-A", "trust", "-U", "postgres", "-D"])
            .arg(dir)
            .output()?,
    )?;
    Ok(())
}

/// pg_upgrade from `old`'s (stopped) data directory into a new cluster at `new_data`, run
/// where postgres can write.
fn pg_upgrade(old: &Cluster, new_data: &std::path::Path) -> Res<()> {
    initdb(new_data)?;
    Cluster::check_output(
        "pg_upgrade",
        as_postgres(&format!("{PG_BIN}/pg_upgrade"))
            .current_dir(old.dir.path())
            .args([
                "-b", PG_BIN, "-B", PG_BIN, "-U", "postgres", "-p", "50432", "-P", "50433",
            ])
            .arg("-d")
            .arg(&old.data)
            .arg("-D")
            .arg(new_data)
            .arg("-s")
            .arg(old.dir.path())
            .output()?,
    )?;
    Ok(())
}

fn count(c: &Cluster) -> Res<String> {
    c.sql("select count(*) from t")
}

#[test]
fn stanza_upgrade_after_pg_upgrade_keeps_old_backups_restorable() -> Res<()> {
    let mut old = Cluster::init(None)?;
    old.start()?;
    old.cairn_ok(&["stanza-create"])?;
    old.sql("create table t as select generate_series(1, 1000) as i")?;
    old.cairn_ok(&["backup", "--type", "full"])?;
    let marker = old.switch_wal()?;
    old.wait_archived(&marker)?;
    let old_label = info(&old)?[0]["backup"][0]["label"]
        .as_str()
        .ok_or("label")?
        .to_string();
    let old_sysid = old.sql("select system_identifier from pg_control_system()")?;
    old.stop()?;

    // A new cluster, and pg_upgrade from the old one into it (run where postgres can write).
    let new_data = old.dir.path().join("new");
    pg_upgrade(&old, &new_data)?;
    let mut new = old.sibling(new_data.clone());
    new.configure("")?;

    // Before stanza-upgrade the new cluster is refused, with the way out named.
    let out = new.cairn(&["backup", "--type", "full"])?;
    assert!(!out.status.success());
    assert!(text(&out).contains("stanza-upgrade"), "{}", text(&out));
    new.cairn_ok(&["stanza-upgrade"])?;
    // Again: nothing to do (the stanza is already the new cluster's).
    new.cairn_ok(&["stanza-upgrade"])?;

    new.start()?;
    new.sql("insert into t select generate_series(1001, 2000)")?;
    // An incremental after the upgrade would be against another cluster's pages: a full.
    let out = new.cairn_ok(&["backup", "--type", "incr"])?;
    assert!(text(&out).contains("taken as full"), "{}", text(&out));
    let marker = new.switch_wal()?;
    new.wait_archived(&marker)?;
    // Backups and WAL of the new cluster exist: stanza-upgrade does not go back.
    let out = old.cairn(&["stanza-upgrade"])?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let v = info(&new)?;
    let backups = v[0]["backup"].as_array().ok_or("backups")?;
    assert_eq!(backups.len(), 2, "{v}");
    assert_eq!(backups[1]["type"], "full");
    assert_eq!(backups[0]["database"]["id"], 1);
    assert_eq!(backups[1]["database"]["id"], 2);
    let dbs = v[0]["db"].as_array().ok_or("db")?;
    assert_eq!(dbs.len(), 2, "{v}");
    assert_eq!(dbs[0]["system-id"].to_string(), old_sysid);
    assert_eq!(v[0]["archive"].as_array().map(Vec::len), Some(2), "{v}");
    // repo-ls names each identity's WAL as info does (15-1, 15-2), each under its own id.
    let ids: Vec<String> = v[0]["archive"]
        .as_array()
        .ok_or("archive")?
        .iter()
        .filter_map(|a| a["id"].as_str().map(String::from))
        .collect();
    let listed: serde_json::Value = serde_json::from_slice(
        &new.cairn_ok(&["repo-ls", "archive/main", "--output", "json"])?
            .stdout,
    )?;
    let mut names: Vec<String> = listed
        .as_object()
        .ok_or("repo-ls")?
        .keys()
        .filter(|k| *k != ".")
        .cloned()
        .collect();
    names.sort();
    assert_eq!(names, ids, "{listed}");
    for (a, id) in v[0]["archive"]
        .as_array()
        .ok_or("archive")?
        .iter()
        .zip(&ids)
    {
        let Some(max) = a["max"].as_str() else {
            continue;
        };
        let seg = format!("archive/main/{id}/{}/{max}", &max[..16]);
        let got = new.cairn_ok(&["repo-get", &seg])?.stdout;
        assert_eq!(got.len(), 16 << 20, "{seg}");
    }
    let verified = new.cairn(&["verify"])?;
    assert_eq!(verified.status.code(), Some(0), "{}", text(&verified));
    new.stop()?;

    // The old backup restores, and recovers from the old cluster's WAL.
    let restored_old = old.dir.path().join("restored-old");
    new.cairn_ok(&[
        "restore",
        "--set",
        &old_label,
        "--dest",
        restored_old.to_str().ok_or("path")?,
        "--type=immediate",
        "--target-action=promote",
    ])?;
    let mut r = new.sibling(restored_old);
    r.start()?;
    r.wait_promoted()?;
    assert_eq!(count(&r)?, "1000");
    r.stop()?;
    // The newest, to the end of the new cluster's WAL.
    let restored_new = old.dir.path().join("restored-new");
    new.cairn_ok(&[
        "restore",
        "--dest",
        restored_new.to_str().ok_or("path")?,
        "--target-action=promote",
        "--type=immediate",
    ])?;
    let mut r = new.sibling(restored_new);
    r.start()?;
    r.wait_promoted()?;
    assert_eq!(count(&r)?, "2000");
    r.stop()?;

    // Expire the old full: the old identity's WAL goes, the new one's stays whole.
    new.cairn_ok(&["expire", "--retention-full", "1", "--gc-margin", "0"])?;
    let v = info(&new)?;
    assert_eq!(v[0]["backup"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(
        v[0]["db"].as_array().map(Vec::len),
        Some(2),
        "the db history keeps its ids: {v}"
    );
    assert_eq!(v[0]["backup"][0]["database"]["id"], 2, "{v}");
    let verified = new.cairn(&["verify"])?;
    assert_eq!(verified.status.code(), Some(0), "{}", text(&verified));
    let old_archive = new.repo.join("stanza/main/archive");
    let ids: Vec<String> = fs::read_dir(&old_archive)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let old_id = format!("15-{old_sysid}");
    let old_segments = common::files_under(&old_archive.join(&old_id))
        .into_iter()
        .filter(|p| !p.to_string_lossy().contains(".history"))
        .count();
    assert_eq!(old_segments, 0, "old identity's WAL kept: {ids:?}");
    Ok(())
}

/// Defect (adversarial pass): `stanza-upgrade` re-pointed the stanza at any cluster given as
/// --pg-path (a typo, an unrelated fresh cluster), after which the real cluster's archiving
/// failed and the step could not be undone. Now a cluster behind the stanza's WAL is refused,
/// and going back to the previous cluster works while nothing was stored under the new one.
#[test]
fn defect_stanza_upgrade_accepted_an_unrelated_cluster_and_could_not_be_undone() -> Res<()> {
    let mut old = Cluster::init(None)?;
    old.start()?;
    old.cairn_ok(&["stanza-create"])?;
    old.sql("create table t as select generate_series(1, 100) as i")?;
    old.cairn_ok(&["backup", "--type", "full"])?;
    let marker = old.switch_wal()?;
    old.wait_archived(&marker)?;
    old.stop()?;
    // An unrelated, freshly initialised cluster: refused, and the stanza unchanged.
    let stranger = old.dir.path().join("stranger");
    initdb(&stranger)?;
    let out = old.sibling(stranger).cairn(&["stanza-upgrade"])?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("not the upgraded cluster"),
        "{}",
        text(&out)
    );
    assert_eq!(info(&old)?[0]["db"].as_array().map(Vec::len), Some(1));
    // The real upgrade, undone before anything is stored under it, and done again.
    let new_data = old.dir.path().join("new");
    pg_upgrade(&old, &new_data)?;
    let new = old.sibling(new_data);
    new.cairn_ok(&["stanza-upgrade"])?;
    assert_eq!(info(&new)?[0]["db"].as_array().map(Vec::len), Some(2));
    old.cairn_ok(&["stanza-upgrade"])?;
    let v = info(&old)?;
    assert_eq!(v[0]["db"].as_array().map(Vec::len), Some(1), "{v}");
    new.cairn_ok(&["stanza-upgrade"])?;
    assert_eq!(info(&new)?[0]["db"].as_array().map(Vec::len), Some(2));
    Ok(())
}
