//! `expire` on a real PostgreSQL 15 cluster: three fulls of changing data with
//! `--retention-full 2`. The oldest full and its dependents go, the repository shrinks by
//! about one full's unique data, the WAL before the oldest kept backup goes (timeline
//! histories stay), `verify` passes, and the oldest kept backup restores and replays to the
//! end of the archive.

mod common;

use common::du;
use common::pg::{Cluster, Res};

fn wal_files(c: &Cluster) -> Vec<String> {
    let mut names: Vec<String> =
        common::files_under(&c.repo.join("stanza").join(&c.stanza).join("archive"))
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(String::from))
            .collect();
    names.sort();
    names
}

#[test]
fn retention_full_on_postgres_expires_backups_data_and_wal() -> Res<()> {
    let mut c = Cluster::init(None)?;
    c.cairn_ok(&["stanza-create", "--engine", "postgres"])?;
    c.start()?;
    c.sql("create table t (id bigserial primary key, pad text not null)")?;
    let fill = |c: &Cluster, round: u32| -> Res<()> {
        // About 20 MB of new rows each round: each full has unique data of its own.
        c.sql(&format!(
            "truncate t; insert into t (pad) select md5(random()::text) || repeat('{round}', 200) from generate_series(1, 80000)"
        ))?;
        Ok(())
    };
    let mut sizes = Vec::new();
    for round in 1..=3 {
        fill(&c, round)?;
        c.cairn_ok(&["backup", "--type", "full"])?;
        c.sql(&format!("insert into t (pad) values ('after {round}')"))?;
        c.cairn_ok(&["backup", "--type", "incr"])?;
        sizes.push(du(&c.repo));
    }
    let last = c.switch_wal()?;
    c.wait_archived(&last)?;
    let rows: u32 = c.sql("select count(*) from t")?.parse()?;
    let info: serde_json::Value =
        serde_json::from_slice(&c.cairn_ok(&["info", "--output", "json"])?.stdout)?;
    let labels = common::backup_labels(&info);
    assert_eq!(labels.len(), 6);
    let wal_before = wal_files(&c);

    c.cairn_ok(&["expire", "--retention-full", "2", "--gc-margin", "0"])?;

    let info: serde_json::Value =
        serde_json::from_slice(&c.cairn_ok(&["info", "--output", "json"])?.stdout)?;
    let kept = common::backup_labels(&info);
    assert_eq!(kept, labels[2..].to_vec(), "{info}");
    // About one full's unique data is gone (each full added sizes[i] - sizes[i-1]).
    let now = du(&c.repo);
    let one_full = sizes[1] - sizes[0];
    assert!(
        now + one_full / 2 < sizes[2],
        "the repository went from {} to {now} bytes; one full adds about {one_full}",
        sizes[2]
    );
    // The WAL before the oldest kept backup's start is gone; histories and later WAL stay.
    let start = info[0]["backup"][0]["archive"]["start"]
        .as_str()
        .ok_or("archive start")?
        .to_string();
    let wal_after = wal_files(&c);
    assert!(wal_after.len() < wal_before.len());
    assert!(
        wal_after
            .iter()
            .all(|w| w.ends_with(".history") || w[..24] >= *start),
        "{start}: {wal_after:?}"
    );
    assert!(wal_after.iter().any(|w| w.starts_with(&start)));
    let v = c.cairn(&["verify"])?;
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));

    // A stopped stanza refuses archive-push (PostgreSQL keeps the segment and retries), and
    // stanza-delete refuses while the cluster runs.
    c.cairn_ok(&["stop"])?;
    let wal = c.data.join("pg_wal").join(&last);
    let out = c.archive_push(&wal)?;
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = c.cairn(&["stanza-delete"])?;
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("is running"));
    c.cairn_ok(&["start"])?;

    // The oldest kept backup restores and replays to the end of the archive.
    c.stop()?;
    let dest = c.dir.path().join("restored");
    c.cairn_ok(&[
        "restore",
        "--set",
        &kept[0],
        "--dest",
        dest.to_str().ok_or("path")?,
    ])?;
    let mut r = c.sibling(dest);
    r.set("archive_mode = off")?;
    r.start()?;
    r.wait_promoted()?;
    let restored: u32 = r.sql("select count(*) from t")?.parse()?;
    assert_eq!(restored, rows);
    r.stop()?;

    // --retention-archive 1: only the newest full keeps the WAL to replay to any point; the
    // older one keeps what makes it consistent, and says so.
    let wal_before = wal_files(&c);
    c.cairn_ok(&[
        "expire",
        "--retention-full",
        "2",
        "--retention-archive",
        "1",
        "--gc-margin",
        "0",
    ])?;
    let info: serde_json::Value =
        serde_json::from_slice(&c.cairn_ok(&["info", "--output", "json"])?.stdout)?;
    assert_eq!(common::backup_labels(&info), kept);
    let wal_after = wal_files(&c);
    assert!(wal_after.len() < wal_before.len(), "{wal_after:?}");
    let b0 = &info[0]["backup"][0];
    assert_eq!(b0["cairn"]["meta"]["wal-after-stop"], "expired", "{b0}");
    let (s0, e0) = (
        b0["archive"]["start"].as_str().ok_or("start")?,
        b0["archive"]["stop"].as_str().ok_or("stop")?,
    );
    assert!(
        wal_after.iter().any(|w| w.starts_with(s0)) && wal_after.iter().any(|w| w.starts_with(e0))
    );
    let v = c.cairn(&["verify"])?;
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    // Its default restore (to the end of the archive) is refused; to consistency it works.
    let dest = c.dir.path().join("restored-2");
    let d = dest.to_str().ok_or("path")?;
    let out = c.cairn(&["restore", "--set", &kept[0], "--dest", d])?;
    assert!(
        !out.status.success(),
        "a restore through the expired WAL was not refused"
    );
    let _ = std::fs::remove_dir_all(&dest);
    c.cairn_ok(&[
        "restore",
        "--set",
        &kept[0],
        "--dest",
        d,
        "--type",
        "immediate",
        "--target-action",
        "promote",
    ])?;
    let mut r = c.sibling(dest);
    r.set("archive_mode = off")?;
    r.start()?;
    r.wait_promoted()?;
    assert!(r.sql("select count(*) from t")?.parse::<u32>()? > 0);
    r.stop()?;
    Ok(())
}

/// archive-push never waits on a backup or an expire: under pgbench load, with backups and
/// expires running back to back, every segment PostgreSQL finishes reaches the archive and no
/// archive_command call fails.
#[test]
fn archive_push_under_load_while_backups_and_expires_run() -> Res<()> {
    let mut c = Cluster::init(None)?;
    c.cairn_ok(&["stanza-create", "--engine", "postgres"])?;
    c.start()?;
    Cluster::check_output(
        "pgbench -i",
        c.client("pgbench", &["-i", "-s", "3", "-q", "postgres"])
            .output()?,
    )?;
    let mut load = c
        .client("pgbench", &["-n", "-c", "2", "-T", "40", "postgres"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    for round in 0..4 {
        let kind = if round % 2 == 0 { "full" } else { "incr" };
        c.cairn_ok(&[
            "backup",
            "--type",
            kind,
            "--retention-full",
            "1",
            "--gc-margin",
            "0",
        ])?;
        c.switch_wal()?;
    }
    c.cairn_ok(&["expire", "--retention-full", "1", "--gc-margin", "0"])?;
    let last = c.switch_wal()?;
    c.wait_archived(&last)?;
    let failed: u64 = c
        .sql("select failed_count from pg_stat_archiver")?
        .parse()?;
    assert_eq!(
        failed, 0,
        "archive_command failed while backups and expires ran"
    );
    let _ = load.kill();
    let _ = load.wait();
    // Every segment since the oldest kept backup is in the archive, without a hole.
    let v = c.cairn(&["verify"])?;
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    let wal = wal_files(&c);
    assert!(
        wal.iter().any(|w| w.starts_with(&last)),
        "{last} missing: {wal:?}"
    );
    c.stop()?;
    Ok(())
}
