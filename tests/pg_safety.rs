//! Issue 9, "Nothing silently wrong", for PostgreSQL: each test pins one item and runs against a
//! real PostgreSQL 15 cluster (small, one per test). Every case was reproduced on main before
//! the fix: the copy's timeline entered the archive, the wrong directory was backed up, the
//! impossible targets were written for PostgreSQL to reject, the hole went unreported.

mod common;

use common::pg::{Cluster, Res, cairn_bin};
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The directory holding timeline `tli`'s archived files.
fn archive_dir(c: &Cluster, tli: u32) -> Res<PathBuf> {
    let id = fs::read_dir(c.repo.join("stanza/main/archive"))?
        .next()
        .ok_or("no archive id")??
        .path();
    Ok(id.join(format!("{tli:08X}")))
}

fn started(c: &mut Cluster) -> Res<()> {
    c.cairn_ok(&["stanza-create", "--engine", "postgres"])?;
    c.start()?;
    c.sql("create table t as select g from generate_series(1, 1000) g")?;
    Ok(())
}

/// A stopped cluster with a full backup and `n` segments archived after it (their names).
fn backup_then_segments(n: usize) -> Res<(Cluster, Vec<String>)> {
    let mut c = Cluster::init(None)?;
    started(&mut c)?;
    c.cairn_ok(&["backup", "--type", "full"])?;
    let mut segs = Vec::new();
    for _ in 0..n {
        c.sql("insert into t select g from generate_series(1, 1000) g")?;
        segs.push(c.switch_wal()?);
    }
    c.wait_archived(segs.last().ok_or("no segment")?)?;
    c.stop()?;
    Ok((c, segs))
}

#[test]
fn item1_archive_push_from_a_restored_copy_is_refused() -> Res<()> {
    let mut c = Cluster::init(None)?;
    started(&mut c)?;
    c.cairn_ok(&["backup", "--type", "full"])?;
    let last = c.switch_wal()?;
    c.wait_archived(&last)?;
    c.stop()?;

    // A copy restored elsewhere, started with its restored settings: it recovers, promotes
    // to timeline 2 and tries to archive with production's archive_command.
    let dest = c.dir.path().join("copy");
    c.cairn_ok(&["restore", "--dest", dest.to_str().ok_or("path")?])?;
    let mut copy = c.sibling(dest.clone());
    copy.start()?;
    copy.wait_promoted()?;
    copy.sql("select pg_switch_wal()")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while copy.sql("select failed_count from pg_stat_archiver")? == "0" {
        assert!(Instant::now() < deadline, "the copy never tried to archive");
        std::thread::sleep(Duration::from_millis(100));
    }
    copy.stop()?;
    assert!(
        !archive_dir(&c, 2)?.exists(),
        "the copy's timeline 2 entered production's archive"
    );
    let log = fs::read_to_string(c.dir.path().join("postgres.log"))?;
    assert!(
        log.contains("refusing to archive")
            && log.contains(&dest.display().to_string())
            && log.contains(&c.data.display().to_string()),
        "{log}"
    );

    // Without any pg-path, archive-push refuses and says where to set it.
    let seg = dest.join("pg_wal").join(&last);
    let mut cmd = Command::new(cairn_bin());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("CAIRN_")) {
        cmd.env_remove(k);
    }
    let out = cmd
        .current_dir(&dest)
        .args(&c.repo_args)
        .args(["--stanza", "main", "archive-push"])
        .arg(&seg)
        .output()?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("set pg-path in the config file"),
        "{}",
        stderr(&out)
    );

    // restore --archive-mode off: the copy never archives.
    let dest2 = c.dir.path().join("copy2");
    c.cairn_ok(&[
        "restore",
        "--archive-mode",
        "off",
        "--dest",
        dest2.to_str().ok_or("path")?,
    ])?;
    let auto = fs::read_to_string(dest2.join("postgresql.auto.conf"))?;
    assert!(auto.contains("archive_mode = 'off'"), "{auto}");
    let mut copy2 = c.sibling(dest2);
    copy2.start()?;
    copy2.wait_promoted()?;
    assert_eq!(copy2.sql("show archive_mode")?, "off");
    copy2.stop()?;
    let out = c.cairn(&[
        "restore",
        "--archive-mode",
        "sometimes",
        "--dest",
        "/nonexistent",
    ])?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    Ok(())
}

#[test]
fn item2_backup_of_a_data_directory_the_server_does_not_run_on_is_refused() -> Res<()> {
    let mut c = Cluster::init(None)?;
    started(&mut c)?;
    // Another data directory of the same system (a stale copy), while --pg-host reaches
    // production.
    c.stop()?;
    let other = c.dir.path().join("stale-copy");
    Cluster::check_output(
        "cp -a",
        Command::new("cp")
            .arg("-a")
            .arg(&c.data)
            .arg(&other)
            .output()?,
    )?;
    c.start()?;
    let wrong = c.sibling(other.clone());
    for cmd in [&["backup", "--type", "full"][..], &["check"][..]] {
        let out = wrong.cairn(cmd)?;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {err}");
        assert!(
            err.contains(&other.display().to_string())
                && err.contains(&c.data.display().to_string())
                && err.contains("is not the data directory"),
            "{cmd:?}: {err}"
        );
    }
    let info: serde_json::Value =
        serde_json::from_slice(&c.cairn_ok(&["info", "--output", "json"])?.stdout)?;
    assert_eq!(
        info[0]["backup"].as_array().map(Vec::len),
        Some(0),
        "{info}"
    );

    // The real directory through a symlink is the same directory (check compares it the
    // same way backup does), and the real one backs up.
    let link = c.dir.path().join("data-link");
    std::os::unix::fs::symlink(&c.data, &link)?;
    c.sibling(link).cairn_ok(&["check"])?;
    c.cairn_ok(&["backup", "--type", "full"])?;
    Ok(())
}

#[test]
fn item4_impossible_recovery_targets_are_refused_before_anything_is_written() -> Res<()> {
    let mut c = Cluster::init(None)?;
    started(&mut c)?;
    c.cairn_ok(&["backup", "--type", "full"])?;
    std::thread::sleep(Duration::from_millis(1100));
    c.sql("insert into t select g from generate_series(1, 500) g")?;
    std::thread::sleep(Duration::from_millis(1100));
    // now_utc() ends in '+00'; the same instant spelled with ' UTC'.
    let now = c.now_utc()?;
    let wall = now.trim_end_matches("+00").to_string();
    std::thread::sleep(Duration::from_millis(1100));
    c.sql("insert into t select g from generate_series(1, 500) g")?;
    let last = c.switch_wal()?;
    c.wait_archived(&last)?;
    let dest = c.dir.path().join("restored");
    let d = dest.to_str().ok_or("path")?;

    let refused = |args: &[&str], code: i32, says: &str| -> Res<()> {
        let mut full = vec!["restore", "--dest", d];
        full.extend_from_slice(args);
        let out = c.cairn(&full)?;
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        assert!(!dest.exists(), "{args:?} wrote {}", dest.display());
        Ok(())
    };
    for (target, says) in [
        ("2026-13-45 99:99:99+00", "month 13"),
        ("2099-02-30 10:00:00+00", "no day 30"),
        ("99999-01-01 00:00:00+00", "4-digit year"),
        ("2026-11-23 10:00:00+25", "out of range"),
        ("2026-11-23 10:00:00 Mars/Olympus", "numeric offset"),
    ] {
        refused(&["--type", "time", "--target", target], 2, says)?;
    }
    refused(&["--type", "lsn", "--target", "0/XYZ"], 2, "not an LSN")?;
    refused(
        &["--type", "xid", "--target", "12ab"],
        2,
        "not a transaction id",
    )?;
    refused(
        &["--type", "name", "--target", &"n".repeat(64)],
        2,
        "1 to 63",
    )?;
    refused(&["--target-timeline", "0"], 2, "timeline number")?;
    refused(
        &[
            "--type",
            "xid",
            "--target",
            "1234",
            "--target-action",
            "explode",
        ],
        2,
        "pause, promote or shutdown",
    )?;
    // Before every backup: the earliest reachable time is named.
    refused(
        &["--type", "time", "--target", "2001-01-01 00:00:00+00"],
        1,
        "the earliest time a restore can reach is just after",
    )?;
    // No zone, and within 16 hours of the only backup: the zone decides, so it is refused.
    refused(
        &["--type", "time", "--target", &wall],
        2,
        "has no time zone",
    )?;

    // The same instant with a named zone is accepted and recovers exactly to it.
    c.cairn_ok(&[
        "restore",
        "--dest",
        d,
        "--archive-mode",
        "off",
        "--type",
        "time",
        "--target",
        &format!("{wall} UTC"),
        "--target-action",
        "promote",
    ])?;
    c.stop()?;
    let mut r = c.sibling(dest.clone());
    r.start()?;
    r.wait_promoted()?;
    assert_eq!(r.sql("select count(*) from t")?, "1500");
    r.stop()?;
    Ok(())
}

#[test]
fn item5_a_hole_in_the_wal_archive_is_reported_and_a_restore_beyond_it_refused() -> Res<()> {
    let mut c = Cluster::init(None)?;
    started(&mut c)?;
    c.cairn_ok(&["backup", "--type", "full"])?;
    let info: serde_json::Value =
        serde_json::from_slice(&c.cairn_ok(&["info", "--output", "json"])?.stdout)?;
    let label = info[0]["backup"][0]["label"]
        .as_str()
        .ok_or("label")?
        .to_string();
    let mut segs = Vec::new();
    for _ in 0..3 {
        c.sql("insert into t select g from generate_series(1, 1000) g")?;
        segs.push(c.switch_wal()?);
    }
    c.wait_archived(&segs[2])?;
    c.stop()?;
    // The middle segment, after the backup's end, goes missing.
    let hole = &segs[1];
    let path = archive_dir(&c, 1)?.join(hole);
    fs::remove_file(&path)?;

    let out = c.cairn(&["verify"])?;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(4), "{text}{}", stderr(&out));
    let line = text
        .lines()
        .find(|l| l.contains("gap"))
        .ok_or_else(|| format!("no gap line: {text}"))?;
    assert!(line.contains(hole) && line.contains(&label), "{line}");

    let info = stdout(&c.cairn_ok(&["info"])?);
    assert!(
        info.contains(&format!("segment {hole} is missing")),
        "{info}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&c.cairn_ok(&["info", "--output", "json"])?.stdout)?;
    let recovery = &json[0]["backup"][0]["recovery"];
    assert_eq!(recovery["gap"]["first-missing"], hole.as_str(), "{json}");
    assert_eq!(recovery["reachable-until"], segs[0].as_str(), "{json}");

    let dest = c.dir.path().join("restored");
    let d = dest.to_str().ok_or("path")?;
    for args in [
        &["restore", "--dest", d][..],
        &[
            "restore",
            "--dest",
            d,
            "--type",
            "time",
            "--target",
            "2999-01-01 00:00:00+00",
        ][..],
    ] {
        let out = c.cairn(args)?;
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(hole) && stderr(&out).contains("--ignore-archive-gap"),
            "{}",
            stderr(&out)
        );
        assert!(!dest.exists(), "{args:?} wrote {}", dest.display());
    }
    // Up to the hole is fine, and so is the whole archive once told to accept the loss.
    let up_to = c.dir.path().join("up-to-hole");
    c.cairn_ok(&[
        "restore",
        "--dest",
        up_to.to_str().ok_or("path")?,
        "--type",
        "lsn",
        "--target",
        &lsn_before(hole)?,
    ])?;
    c.cairn_ok(&["restore", "--dest", d, "--ignore-archive-gap"])?;
    assert!(dest.join("global/pg_control").exists());
    Ok(())
}

/// Defect: with an archived segment damaged (present, unreadable), verify said it affected "no
/// listed backup", info showed replay reaching the end of the archive, and archive-get exited
/// 3, which PostgreSQL takes for "not in the archive": recovery ended there, promoted, and the
/// transactions after it were lost with exit 0.
#[test]
fn item5_a_damaged_wal_segment_is_a_hole_and_archive_get_stops_recovery() -> Res<()> {
    let (c, segs) = backup_then_segments(3)?;
    let bad = &segs[1];
    let path = archive_dir(&c, 1)?.join(bad);
    let mut bytes = fs::read(&path)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&path, &bytes)?;

    let out = c.cairn(&["verify"])?;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(4), "{text}{}", stderr(&out));
    let line = text
        .lines()
        .find(|l| l.contains(bad.as_str()))
        .ok_or_else(|| format!("no line for {bad}: {text}"))?;
    assert!(!line.contains("affects: no listed backup"), "{line}");
    let said = format!("{text}{}", stderr(&out));
    assert!(
        said.contains("1 damaged archived WAL file(s)") && !said.contains("chunk(s) or pack(s)"),
        "{said}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&c.cairn_ok(&["info", "--output", "json"])?.stdout)?;
    let recovery = &json[0]["backup"][0]["recovery"];
    assert_eq!(recovery["reachable-until"], segs[0].as_str(), "{json}");
    // A default restore, which would replay through it, is refused like one across a hole.
    let restored = c.dir.path().join("restored");
    let out = c.cairn(&["restore", "--dest", restored.to_str().ok_or("path")?])?;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains(bad.as_str()), "{}", stderr(&out));
    assert!(!restored.exists());

    let dest = c.dir.path().join("fetched");
    let out = c.cairn(&["archive-get", bad, dest.to_str().ok_or("path")?])?;
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    assert!(stderr(&out).contains("is damaged"), "{}", stderr(&out));
    assert!(!dest.exists());

    Ok(())
}

/// Defect (second adversarial pass, 2026-11-25): a damaged segment put back intact was still
/// reported as a gap by the next verify (and refused by restore) until a second verify: verify
/// took the holes recorded by the verify before as its own.
#[test]
fn defect_verify_reported_a_gap_for_a_damaged_segment_put_back() -> Res<()> {
    let (c, segs) = backup_then_segments(2)?;
    let path = archive_dir(&c, 1)?.join(&segs[0]);
    let intact = fs::read(&path)?;
    let mut bytes = intact.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&path, &bytes)?;
    let out = c.cairn(&["verify"])?;
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    fs::write(&path, &intact)?;
    let out = c.cairn(&["verify"])?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    Ok(())
}

/// Defect (found by an adversarial pass, 2026-11-25): an archived segment's object copied over
/// another's (someone who can write to the repository, or a careless copy) is intact as an
/// object, so `archive-get` served the wrong segment under the name with exit 0, `repo-get`
/// too, and `verify` reported nothing; PostgreSQL takes a segment from the wrong position as
/// the end of WAL and promotes early. Read back, a segment's header must match its name.
#[test]
fn defect_a_wal_object_copied_over_another_was_served_as_that_segment() -> Res<()> {
    let (c, segs) = backup_then_segments(2)?;
    let (victim, other) = (&segs[0], &segs[1]);
    let dir = archive_dir(&c, 1)?;
    fs::copy(dir.join(other), dir.join(victim))?;
    common::pg::chown_postgres(&dir)?;

    let dest = c.dir.path().join("fetched");
    let out = c.cairn(&["archive-get", victim, dest.to_str().ok_or("path")?])?;
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    assert!(stderr(&out).contains(victim.as_str()), "{}", stderr(&out));
    assert!(!dest.exists());

    let out = c.cairn(&[
        "repo-get",
        &format!("archive/main/15-1/{}/{victim}", &victim[..16]),
    ])?;
    assert!(!out.status.success(), "repo-get served it");
    assert!(
        out.stdout.is_empty(),
        "repo-get wrote {} bytes",
        out.stdout.len()
    );

    let out = c.cairn(&["verify"])?;
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains(victim.as_str()), "{}", stdout(&out));
    Ok(())
}

/// The last LSN before a segment, from its name (16 MiB segments).
fn lsn_before(seg: &str) -> Res<String> {
    let log = u64::from_str_radix(seg.get(8..16).ok_or("name")?, 16)?;
    let n = u64::from_str_radix(seg.get(16..24).ok_or("name")?, 16)?;
    let lsn = (log << 32) + (n << 24) - 1;
    Ok(format!("{:X}/{:X}", lsn >> 32, lsn as u32))
}

/// cairn with this cluster's repository and stanza but the connection options given.
fn cairn_connecting(c: &Cluster, conn: &[&str], args: &[&str]) -> Res<Output> {
    Ok(
        common::pg::as_postgres(&common::pg::cairn_bin().display().to_string())
            .args(&c.repo_args)
            .args(["--stanza", &c.stanza, "--log-level", "warn", "--pg-path"])
            .arg(&c.data)
            .args(conn)
            .args(args)
            .output()?,
    )
}

#[test]
fn item16_exit_codes_say_what_failed_and_messages_keep_the_servers_words() -> Res<()> {
    let mut c = Cluster::init(None)?;
    started(&mut c)?;
    let sock = c.sock.display().to_string();
    // A role that does not exist: a failure (3), not a usage mistake (2), in the server's words.
    let out = cairn_connecting(
        &c,
        &[
            "--pg-host",
            &sock,
            "--pg-port",
            "5432",
            "--pg-user",
            "nosuchrole",
        ],
        &["backup", "--type", "full"],
    )?;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("role \"nosuchrole\" does not exist"),
        "{}",
        stderr(&out)
    );
    // Nobody listening: a failure too.
    let out = cairn_connecting(
        &c,
        &[
            "--pg-host",
            &sock,
            "--pg-port",
            "5499",
            "--pg-user",
            "postgres",
        ],
        &["check", "--archive-timeout", "5"],
    )?;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
    // WAL of another system pushed into the stanza: a failure, not a usage mistake.
    let mut other = Cluster::init(None)?;
    other.start()?;
    let wal = other.switch_wal()?;
    let copy_dir = other.data.join("segment-copy");
    std::fs::create_dir_all(&copy_dir)?;
    let seg = copy_dir.join(&wal);
    std::fs::copy(other.data.join("pg_wal").join(&wal), &seg)?;
    other.stop()?;
    let out = c.archive_push(&seg)?;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    Ok(())
}

/// Defect: archive-push stored a garbage `00000005.history` (exit 0); being create-only it
/// stayed, made verify abort (exit 3) and every default restore fail.
#[test]
fn item16_archive_push_refuses_a_file_that_is_not_a_timeline_history() -> Res<()> {
    let c = Cluster::init(None)?;
    c.cairn_ok(&["stanza-create", "--engine", "postgres"])?;
    let garbage = c.data.join("00000005.history");
    fs::write(&garbage, b"hello, not a history\n")?;
    let out = c.archive_push(&garbage)?;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a timeline history file"),
        "{}",
        stderr(&out)
    );
    let good = c.data.join("00000002.history");
    fs::write(&good, b"1\t0/3000000\tno recovery target specified\n")?;
    let out = c.archive_push(&good)?;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = c.cairn(&["verify"])?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    Ok(())
}
