//! The whole PostgreSQL flow against a real PostgreSQL 15 cluster, with archive_command set to
//! the binary under test and pgbench writing throughout: full -> rows -> diff -> rows -> incr
//! -> rows -> a noted time -> rows (with xid, restore point and lsn targets) -> drop the
//! cluster -> restore to each target and count exactly the rows committed before it. Restored
//! clusters pass pg_amcheck (running) and pg_checksums (stopped); after a promotion the new
//! timeline is archived and a second point-in-time recovery on it works.

mod common;

use common::pg::{Cluster, Res, amcheck, checksums};
use std::process::Stdio;
use std::time::Duration;

const BATCH: u32 = 1000;

fn batch(c: &Cluster, n: u32) -> Res<()> {
    c.sql(&format!(
        "insert into ticks (batch) select {n} from generate_series(1, {BATCH})"
    ))?;
    Ok(())
}

/// Restore into a new directory with `args`, start, wait for promotion, return (cluster, rows).
fn restore_and_count(c: &Cluster, name: &str, args: &[&str], archive: bool) -> Res<(Cluster, u32)> {
    let dest = c.dir.path().join(format!("restore-{name}"));
    let mut full = vec!["restore", "--dest", dest.to_str().ok_or("path")?];
    full.extend_from_slice(args);
    c.cairn_ok(&full)?;
    let mut r = c.sibling(dest);
    if archive {
        // The restored cluster becomes the new primary: its archive_command names its own
        // data directory (archive-push refuses production's pg-path from here).
        r.set(&format!("archive_command = '{}'", r.archive_command()))?;
    } else {
        // Keep this restore from archiving a timeline of its own into the shared archive.
        r.set("archive_mode = off")?;
    }
    r.start()?;
    r.wait_promoted()?;
    let rows: u32 = r.sql("select count(*) from ticks")?.parse()?;
    Ok((r, rows))
}

#[test]
fn full_diff_incr_and_point_in_time_recovery_to_every_kind_of_target() -> Res<()> {
    let mut c = Cluster::init(None)?;
    c.cairn_ok(&["stanza-create", "--engine", "postgres"])?;
    c.start()?;
    Cluster::check_output(
        "pgbench -i",
        c.client("pgbench", &["-i", "-s", "5", "-q", "postgres"])
            .output()?,
    )?;
    c.sql("create table ticks (id bigserial primary key, batch int not null)")?;
    // pgbench keeps writing through every backup; it ends when the cluster stops.
    let mut load = c
        .client("pgbench", &["-n", "-c", "2", "-T", "300", "postgres"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;

    c.cairn_ok(&["backup", "--type", "full"])?;
    batch(&c, 1)?;
    c.cairn_ok(&["backup", "--type", "diff"])?;
    batch(&c, 2)?;
    c.cairn_ok(&["backup", "--type", "incr"])?;
    batch(&c, 3)?;
    std::thread::sleep(Duration::from_millis(1100));
    let t = c.now_utc()?;
    std::thread::sleep(Duration::from_millis(1100));
    let xid = c.sql(&format!(
        "insert into ticks (batch) select 4 from generate_series(1, {BATCH}); select txid_current()"
    ))?;
    c.sql("select pg_create_restore_point('after_batch_4')")?;
    batch(&c, 5)?;
    let lsn = c.sql("select pg_current_wal_insert_lsn()")?;
    batch(&c, 6)?;
    let last = c.switch_wal()?;
    c.wait_archived(&last)?;

    let info: serde_json::Value =
        serde_json::from_slice(&c.cairn_ok(&["info", "--output", "json"])?.stdout)?;
    let types: Vec<&str> = info[0]["backup"]
        .as_array()
        .ok_or("backups")?
        .iter()
        .filter_map(|b| b["type"].as_str())
        .collect();
    assert_eq!(types, ["full", "diff", "incr"]);
    assert!(info[0]["backup"][2]["lsn"]["start"].is_string(), "{info}");
    assert!(
        info[0]["archive"][0]["max"]
            .as_str()
            .is_some_and(|m| m >= last.as_str()),
        "{info}"
    );

    // Drop the cluster.
    c.stop()?;
    let _ = load.wait();
    std::fs::remove_dir_all(&c.data)?;

    // End of the archive, keeping archiving on: promotion starts timeline 2.
    let (mut end, rows) = restore_and_count(&c, "end", &[], true)?;
    assert_eq!(rows, 6 * BATCH, "end of archive");
    amcheck(&end)?;
    // A second point in time, on the new timeline.
    batch(&end, 7)?;
    std::thread::sleep(Duration::from_millis(1100));
    let t2 = end.now_utc()?;
    std::thread::sleep(Duration::from_millis(1100));
    batch(&end, 8)?;
    let tl2 = end.switch_wal()?;
    assert!(
        tl2.starts_with("00000002"),
        "promotion should have started timeline 2, got {tl2}"
    );
    end.wait_archived(&tl2)?;
    end.stop()?;
    checksums(&end)?;
    let out = c.cairn_ok(&["info"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("timeline 2"), "{text}");

    let (mut r, rows) = restore_and_count(
        &c,
        "t2",
        &[
            "--type",
            "time",
            "--target",
            &t2,
            "--target-action",
            "promote",
        ],
        false,
    )?;
    assert_eq!(rows, 7 * BATCH, "time target on timeline 2");
    r.stop()?;

    let cases: [(&str, Vec<&str>, u32); 5] = [
        (
            "time",
            vec![
                "--type",
                "time",
                "--target",
                &t,
                "--target-action",
                "promote",
            ],
            3,
        ),
        (
            "xid",
            vec![
                "--type",
                "xid",
                "--target",
                &xid,
                "--target-action",
                "promote",
                "--target-timeline",
                "1",
            ],
            4,
        ),
        (
            "name",
            vec![
                "--type",
                "name",
                "--target",
                "after_batch_4",
                "--target-action",
                "promote",
                "--target-timeline",
                "1",
            ],
            4,
        ),
        (
            "lsn",
            vec![
                "--type",
                "lsn",
                "--target",
                &lsn,
                "--target-action",
                "promote",
                "--target-timeline",
                "1",
            ],
            5,
        ),
        (
            "immediate",
            vec!["--type", "immediate", "--target-action", "promote"],
            2,
        ),
    ];
    for (name, args, batches) in cases {
        let (mut r, rows) = restore_and_count(&c, name, &args, false)?;
        assert_eq!(
            rows,
            batches * BATCH,
            "{name} target: expected exactly the rows committed before it"
        );
        if name == "time" {
            amcheck(&r)?;
        }
        r.stop()?;
        if name == "time" {
            checksums(&r)?;
        }
    }
    Ok(())
}
