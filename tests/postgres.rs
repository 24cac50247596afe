//! The PostgreSQL engine against real PostgreSQL 15 clusters (started by the tests as the
//! `postgres` user): WAL archiving through archive_command, archive-get for restore_command.

mod common;

use common::pg::{Cluster, Res, as_postgres, cairn_bin, chown_postgres};
use std::fs;
use std::process::Command;

#[test]
fn archive_command_pushes_segments_and_archive_get_returns_them() -> Res<()> {
    let mut c = Cluster::init(None)?;
    // Keep an exact copy of each segment PostgreSQL archives, to compare with archive-get.
    let copies = c.dir.path().join("copies");
    fs::create_dir_all(&copies)?;
    chown_postgres(&copies)?;
    c.configure(&format!(
        "archive_command = 'cp %p {}/%f && {}'",
        copies.display(),
        c.archive_command()
    ))?;
    c.cairn_ok(&["stanza-create", "--engine", "postgres"])?;
    c.start()?;
    c.sql("create table t as select g from generate_series(1, 100000) g")?;
    let first = c.switch_wal()?;
    c.sql("insert into t select g from generate_series(1, 100000) g")?;
    let second = c.switch_wal()?;
    c.wait_archived(&second)?;

    for name in [&first, &second] {
        let dest = c.dir.path().join(format!("got-{name}"));
        c.cairn_ok(&["archive-get", name, dest.to_str().ok_or("path")?])?;
        assert!(
            fs::read(&dest)? == fs::read(copies.join(name))?,
            "{name} differs from what PostgreSQL archived"
        );
    }

    // Not in the archive: exit 1, as restore_command needs.
    let out = c.cairn(&[
        "archive-get",
        "0000000100000000000000FF",
        c.dir.path().join("x").to_str().ok_or("path")?,
    ])?;
    assert_eq!(out.status.code(), Some(1));

    // The same segment again is fine; different content under its name fails and keeps ours.
    let seg = copies.join(&first);
    Cluster::check_output("archive-push", c.archive_push(&seg)?)?;
    let forged = c.dir.path().join("forged").join(&first);
    fs::create_dir_all(forged.parent().ok_or("parent")?)?;
    let mut bytes = fs::read(&seg)?;
    let n = bytes.len();
    bytes[n - 1] ^= 0xFF;
    fs::write(&forged, &bytes)?;
    chown_postgres(c.dir.path())?;
    let out = c.archive_push(&forged)?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("different content"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dest = c.dir.path().join("after-forge");
    c.cairn_ok(&["archive-get", &first, dest.to_str().ok_or("path")?])?;
    assert!(
        fs::read(&dest)? == fs::read(&seg)?,
        "the original must be kept"
    );
    Ok(())
}

#[test]
fn a_segment_from_another_cluster_is_refused_and_not_stored() -> Res<()> {
    let mut main = Cluster::init(None)?;
    main.cairn_ok(&["stanza-create", "--engine", "postgres"])?;
    let other = Cluster::init(None)?;
    // A segment of the other cluster, under a name the main cluster has not archived.
    let theirs = other.data.join("pg_wal/000000010000000000000001");
    let staged = main.dir.path().join("000000010000000000000001");
    fs::copy(&theirs, &staged)?;
    chown_postgres(main.dir.path())?;
    let out = main.archive_push(&staged)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("database system") && stderr.contains("wrong stanza"),
        "{stderr}"
    );
    let out = main.cairn(&[
        "archive-get",
        "000000010000000000000001",
        main.dir.path().join("x").to_str().ok_or("path")?,
    ])?;
    assert_eq!(
        out.status.code(),
        Some(1),
        "a refused segment must not be stored"
    );
    // The main cluster's own archiving still works.
    main.start()?;
    let seg = main.switch_wal()?;
    main.wait_archived(&seg)?;
    Ok(())
}

#[test]
fn check_proves_archive_command_works_and_fails_when_it_does_not() -> Res<()> {
    let mut c = Cluster::init(None)?;
    c.cairn_ok(&["stanza-create", "--engine", "postgres"])?;
    c.start()?;
    let out = c.cairn_ok(&["check"])?;
    assert!(String::from_utf8_lossy(&out.stdout).contains("reached the archive"));
    // An archive_command that does not archive: check times out with a clear message.
    c.sql("alter system set archive_command = '/bin/false archive-push %p'")?;
    c.sql("select pg_reload_conf()")?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    let out = c.cairn(&["check", "--archive-timeout", "3"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("did not reach the archive"), "{stderr}");
    Ok(())
}

/// A running cluster with a table `victim` whose block 2 has one byte flipped on disk (not
/// in its header), as a failing disk might leave it; returns the table's path.
fn cluster_with_a_corrupt_page() -> Res<(Cluster, String)> {
    let mut c = Cluster::init(None)?;
    c.cairn_ok(&["stanza-create", "--engine", "postgres"])?;
    c.start()?;
    c.sql(
        "create table victim as select g, repeat('x', 200) as pad from generate_series(1, 20000) g",
    )?;
    let rel = c.sql("select pg_relation_filepath('victim')")?;
    c.sql("checkpoint")?;
    c.stop()?;
    let path = c.data.join(&rel);
    let mut bytes = fs::read(&path)?;
    bytes[2 * 8192 + 5000] ^= 0x55;
    fs::write(&path, &bytes)?;
    c.start()?;
    Ok((c, rel))
}

#[test]
fn a_corrupted_page_is_reported_by_the_next_backup_and_by_info() -> Res<()> {
    let (c, rel) = cluster_with_a_corrupt_page()?;
    let out = c.cairn(&["backup", "--type", "full"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "a bad page warns, it does not abort: {stderr}"
    );
    assert!(
        stderr.contains("invalid page checksum") && stderr.contains(&rel),
        "{stderr}"
    );
    let info = String::from_utf8_lossy(&c.cairn_ok(&["info"])?.stdout).into_owned();
    assert!(
        info.contains("page checksum errors: 1") && info.contains(&format!("{rel} (2)")),
        "{info}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&c.cairn_ok(&["info", "--output", "json"])?.stdout)?;
    assert_eq!(
        json[0]["backup"][0]["cairn"]["meta"]["checksum-page-errors"], "1",
        "{json}"
    );
    Ok(())
}

#[test]
fn a_backup_killed_mid_copy_is_not_listed_and_leaves_no_backup_running() -> Res<()> {
    use std::os::unix::process::CommandExt;
    let mut c = Cluster::init(None)?;
    c.cairn_ok(&["stanza-create", "--engine", "postgres"])?;
    c.start()?;
    Cluster::check_output(
        "pgbench -i",
        c.client("pgbench", &["-i", "-s", "10", "-q", "postgres"])
            .output()?,
    )?;
    let uid: u32 = String::from_utf8(Command::new("id").args(["-u", "postgres"]).output()?.stdout)?
        .trim()
        .parse()?;
    let gid: u32 = String::from_utf8(Command::new("id").args(["-g", "postgres"]).output()?.stdout)?
        .trim()
        .parse()?;
    // Run cairn itself as postgres (not through runuser) so the kill reaches it.
    let mut child = Command::new(common::pg::cairn_bin())
        .uid(uid)
        .gid(gid)
        .arg("--repo")
        .arg(&c.repo)
        .args([
            "--stanza",
            "main",
            "--log-level",
            "warn",
            "--process-max",
            "1",
            "--pg-path",
        ])
        .arg(&c.data)
        .arg("--pg-host")
        .arg(&c.sock)
        .args(["--pg-port", "5432", "backup", "--type", "full"])
        .stderr(std::process::Stdio::null())
        .spawn()?;
    // Wait until the server shows cairn's session, i.e. the backup has started.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while c.sql("select count(*) from pg_stat_activity where application_name = 'cairn'")? == "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "cairn never connected"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let finished_early = child.try_wait()?.is_some();
    child.kill()?;
    child.wait()?;
    assert!(
        !finished_early,
        "the backup finished before it could be killed; make the database larger"
    );
    // No backup listed; the server ended cairn's session and with it the backup.
    let info: serde_json::Value =
        serde_json::from_slice(&c.cairn_ok(&["info", "--output", "json"])?.stdout)?;
    assert_eq!(
        info[0]["backup"].as_array().map(|a| a.len()),
        Some(0),
        "{info}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while c.sql("select count(*) from pg_stat_activity where application_name = 'cairn'")? != "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "cairn's backup session outlived it"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The next backup succeeds, and verify finds no damage.
    c.cairn_ok(&["backup", "--type", "full"])?;
    c.cairn_ok(&["verify"])?;
    Ok(())
}

/// A running cluster with a stanza and tablespace `ts1` (in the test's directory) holding
/// table `in_ts` of `rows` rows; returns the cluster and the tablespace's directory.
fn cluster_with_tablespace(rows: u32) -> Res<(Cluster, std::path::PathBuf)> {
    let mut c = Cluster::init(None)?;
    let ts = c.dir.path().join("ts1");
    fs::create_dir_all(&ts)?;
    chown_postgres(&ts)?;
    c.cairn_ok(&["stanza-create", "--engine", "postgres"])?;
    c.start()?;
    c.sql(&format!(
        "create tablespace ts1 location '{}'",
        ts.display()
    ))?;
    c.sql(&format!(
        "create table in_ts tablespace ts1 as select g from generate_series(1, {rows}) g"
    ))?;
    Ok((c, ts))
}

#[test]
fn tablespaces_restore_to_a_mapped_path_and_delta_restore_repairs_a_data_directory() -> Res<()> {
    let (mut c, ts) = cluster_with_tablespace(50_000)?;
    c.cairn_ok(&["backup", "--type", "full"])?;
    c.sql("insert into in_ts select g from generate_series(1, 1000) g")?;
    let last = c.switch_wal()?;
    c.wait_archived(&last)?;
    c.stop()?;
    fs::remove_dir_all(&c.data)?;
    fs::remove_dir_all(&ts)?;

    let moved = c.dir.path().join("ts1-moved");
    let dest = c.dir.path().join("restored");
    c.cairn_ok(&[
        "restore",
        "--dest",
        dest.to_str().ok_or("path")?,
        "--tablespace-map",
        &format!("ts1={}", moved.display()),
    ])?;
    assert!(
        !ts.exists(),
        "the tablespace must go to the mapped path, not its old one"
    );
    let mut r = c.sibling(dest.clone());
    r.set("archive_mode = off")?;
    r.start()?;
    r.wait_promoted()?;
    assert_eq!(r.sql("select count(*) from in_ts")?, "51000");
    assert_eq!(
        r.sql("select pg_tablespace_location(oid) from pg_tablespace where spcname = 'ts1'")?,
        moved.display().to_string()
    );
    r.stop()?;

    // A restore over a running cluster is refused.
    r.start()?;
    let out = c.cairn(&["restore", "--delta", "--dest", dest.to_str().ok_or("path")?])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("postmaster.pid"));
    r.stop()?;

    // Damage the stopped copy; --delta puts it right, fetching only what differs.
    let rel = "base/1/1259"; // pg_class of template1
    let mut bytes = fs::read(dest.join(rel))?;
    bytes[100] ^= 0xFF;
    fs::write(dest.join(rel), &bytes)?;
    fs::write(dest.join("stray-file"), b"not in the backup")?;
    let out = c.cairn(&["restore", "--dest", dest.to_str().ok_or("path")?])?;
    assert_eq!(
        out.status.code(),
        Some(2),
        "a non-empty destination without --delta is refused"
    );
    c.cairn_ok(&[
        "restore",
        "--delta",
        "--dest",
        dest.to_str().ok_or("path")?,
        "--tablespace-map",
        &format!("ts1={}", moved.display()),
    ])?;
    assert!(!dest.join("stray-file").exists());
    let mut r = c.sibling(dest.clone());
    r.set("archive_mode = off")?;
    r.start()?;
    r.wait_promoted()?;
    assert_eq!(r.sql("select count(*) from in_ts")?, "51000");
    r.stop()?;
    let out = Command::new("runuser")
        .args([
            "-u",
            "postgres",
            "--",
            &format!("{}/pg_checksums", common::pg::PG_BIN),
            "--check",
            "-D",
        ])
        .arg(&dest)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn verify_names_a_damaged_or_missing_wal_segment_and_the_backup_that_needs_it() -> Res<()> {
    let mut c = Cluster::init(None)?;
    c.cairn_ok(&["stanza-create", "--engine", "postgres"])?;
    c.start()?;
    c.cairn_ok(&["backup", "--type", "full"])?;
    let info: serde_json::Value =
        serde_json::from_slice(&c.cairn_ok(&["info", "--output", "json"])?.stdout)?;
    let label = info[0]["backup"][0]["label"]
        .as_str()
        .ok_or("label")?
        .to_string();
    let start = info[0]["backup"][0]["archive"]["start"]
        .as_str()
        .ok_or("wal start")?
        .to_string();
    let archive_dir = fs::read_dir(c.repo.join("stanza/main/archive"))?
        .next()
        .ok_or("archive id")??
        .path();
    let seg = archive_dir.join("00000001").join(&start);
    let orig = fs::read(&seg)?;

    let mut bad = orig.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    fs::write(&seg, &bad)?;
    let out = c.cairn(&["verify"])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{stdout}");
    assert!(
        stdout.contains(&start) && stdout.contains(&label) && stdout.contains("CRC"),
        "{stdout}"
    );

    fs::remove_file(&seg)?;
    let out = c.cairn(&["verify"])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{stdout}");
    assert!(
        stdout.contains("missing") && stdout.contains(&label),
        "{stdout}"
    );

    fs::write(&seg, &orig)?;
    chown_postgres(&seg)?;
    c.cairn_ok(&["verify"])?;
    Ok(())
}

/// Defect (found by an adversarial pass): a cluster whose `pg_wal` is a symlink (WAL on its
/// own disk) was restored with that symlink, pointing at the source's live WAL directory; the
/// restored copy's checkpoints then recycled the source's segments and the source could no
/// longer start. pg_wal must come back as a directory inside the destination.
#[test]
fn defect_a_symlinked_pg_wal_was_restored_as_a_link_to_the_source_wal() -> Res<()> {
    let mut c = Cluster::init(None)?;
    let wal = c.dir.path().join("wal-disk");
    fs::rename(c.data.join("pg_wal"), &wal)?;
    std::os::unix::fs::symlink(&wal, c.data.join("pg_wal"))?;
    chown_postgres(&wal)?;
    c.cairn_ok(&["stanza-create", "--engine", "postgres"])?;
    c.start()?;
    c.sql("create table t as select g from generate_series(1, 1000) g")?;
    c.cairn_ok(&["backup", "--type", "full"])?;
    let last = c.switch_wal()?;
    c.wait_archived(&last)?;
    c.stop()?;
    let listing = |dir: &std::path::Path| -> Res<Vec<_>> {
        let mut v: Vec<_> = fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        v.sort();
        Ok(v)
    };
    let before = listing(&wal)?;

    let dest = c.dir.path().join("restored");
    c.cairn_ok(&["restore", "--dest", dest.to_str().ok_or("path")?])?;
    let m = fs::symlink_metadata(dest.join("pg_wal"))?;
    assert!(
        m.is_dir(),
        "pg_wal restored as {:?}, not a directory",
        m.file_type()
    );
    // The copy starts (the source stopped: they share a port), promotes and checkpoints.
    let mut r = c.sibling(dest.clone());
    r.set("archive_mode = off")?;
    r.start()?;
    r.wait_promoted()?;
    r.sql("insert into t select g from generate_series(1, 100000) g")?;
    r.sql("checkpoint")?;
    r.stop()?;
    assert_eq!(before, listing(&wal)?, "the source's WAL directory changed");
    c.start()?;
    assert_eq!(c.sql("select count(*) from t")?, "1000");
    c.stop()?;
    Ok(())
}

/// Defect (found by an adversarial pass): `restore --delta` into a new directory on the
/// source's host reused the source's non-empty tablespace directory (the emptiness check was
/// skipped under --delta) and overwrote the live cluster's files there with older pages.
#[test]
fn defect_a_delta_restore_elsewhere_overwrote_the_source_tablespace() -> Res<()> {
    let (mut c, _ts) = cluster_with_tablespace(20_000)?;
    c.cairn_ok(&["backup", "--type", "full"])?;
    c.sql("insert into in_ts select g from generate_series(1, 20000) g")?;
    c.sql("checkpoint")?;

    let dest = c.dir.path().join("elsewhere");
    let out = c.cairn(&["restore", "--delta", "--dest", dest.to_str().ok_or("path")?])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("does not already point there"), "{err}");
    c.stop()?;
    c.start()?;
    assert_eq!(c.sql("select count(*) from in_ts")?, "40000");
    c.stop()?;
    Ok(())
}

/// Defect (found by an adversarial pass): `restore --delta` into a directory that is not a
/// data directory (a typo in --dest, or a subdirectory such as $PGDATA/base) deleted
/// everything in it that the backup does not list.
#[test]
fn defect_a_delta_restore_into_a_directory_that_is_not_a_data_directory_deleted_its_files()
-> Res<()> {
    let mut c = Cluster::init(None)?;
    c.cairn_ok(&["stanza-create", "--engine", "postgres"])?;
    c.start()?;
    c.cairn_ok(&["backup", "--type", "full"])?;
    c.stop()?;
    let precious = c.dir.path().join("home");
    fs::create_dir_all(precious.join("docs"))?;
    fs::write(precious.join("docs/thesis.txt"), b"years of work")?;
    chown_postgres(&precious)?;
    for dest in [precious.clone(), c.data.join("base")] {
        let before = fs::read_dir(&dest)?.count();
        let out = c.cairn(&["restore", "--delta", "--dest", dest.to_str().ok_or("path")?])?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {err}", dest.display());
        assert!(err.contains("is not a PostgreSQL data directory"), "{err}");
        assert_eq!(
            fs::read_dir(&dest)?.count(),
            before,
            "{} changed",
            dest.display()
        );
    }
    assert_eq!(
        fs::read(precious.join("docs/thesis.txt"))?,
        b"years of work"
    );
    // A data directory (or an interrupted restore of one) is still refreshed.
    c.cairn_ok(&[
        "restore",
        "--delta",
        "--dest",
        c.data.to_str().ok_or("path")?,
    ])?;
    c.start()?;
    c.stop()?;
    Ok(())
}

/// Defect: a `--delta` restore (run as postgres, as it always is) over a copy it had restored
/// itself failed with "Permission denied" when the cluster had a read-only file (a
/// `server.key` of mode 0400) or directory: the recorded modes it had set blocked its own
/// rewrite, so an interrupted or outdated copy could not be refreshed.
#[test]
fn defect_a_delta_restore_over_read_only_files_it_restored_failed() -> Res<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut c = Cluster::init(None)?;
    c.cairn_ok(&["stanza-create", "--engine", "postgres"])?;
    fs::write(c.data.join("server.key"), b"not really a key\n")?;
    fs::create_dir_all(c.data.join("operator_notes"))?;
    fs::write(c.data.join("operator_notes/readme"), b"read-only notes\n")?;
    chown_postgres(&c.data)?;
    fs::set_permissions(c.data.join("server.key"), fs::Permissions::from_mode(0o400))?;
    fs::set_permissions(
        c.data.join("operator_notes/readme"),
        fs::Permissions::from_mode(0o400),
    )?;
    fs::set_permissions(
        c.data.join("operator_notes"),
        fs::Permissions::from_mode(0o500),
    )?;
    c.start()?;
    c.sql("create table t as select generate_series(1, 100) as i")?;
    c.cairn_ok(&["backup", "--type", "full"])?;
    c.stop()?;
    let dest = c.dir.path().join("copy");
    let d = dest.to_str().ok_or("path")?;
    c.cairn_ok(&["restore", "--dest", d])?;
    assert_eq!(
        fs::metadata(dest.join("server.key"))?.permissions().mode() & 0o777,
        0o400
    );
    // Damage the copy, then refresh it in place.
    fs::write(dest.join("PG_VERSION"), b"99\n")?;
    c.cairn_ok(&["restore", "--delta", "--dest", d])?;
    assert_eq!(
        fs::read(dest.join("PG_VERSION"))?,
        fs::read(c.data.join("PG_VERSION"))?
    );
    assert_eq!(
        fs::metadata(dest.join("server.key"))?.permissions().mode() & 0o777,
        0o400,
        "the recorded mode is set again"
    );
    assert_eq!(
        fs::metadata(dest.join("operator_notes"))?
            .permissions()
            .mode()
            & 0o777,
        0o500
    );
    Ok(())
}

/// Defect: `--delta` rewrote a file in place even when it had another hard link, so the
/// bytes of that other path (outside the destination, not the backup's) changed too.
#[test]
fn defect_a_delta_restore_wrote_through_a_hard_link_to_a_file_outside() -> Res<()> {
    let mut c = Cluster::init(None)?;
    c.cairn_ok(&["stanza-create", "--engine", "postgres"])?;
    c.start()?;
    c.cairn_ok(&["backup", "--type", "full"])?;
    c.stop()?;
    let dest = c.dir.path().join("copy");
    let d = dest.to_str().ok_or("path")?;
    c.cairn_ok(&["restore", "--dest", d])?;
    let outside = c.dir.path().join("someone-elses-file");
    fs::hard_link(dest.join("PG_VERSION"), &outside)?;
    fs::write(&outside, b"their bytes\n")?;
    c.cairn_ok(&["restore", "--delta", "--dest", d])?;
    assert_eq!(
        fs::read(&outside)?,
        b"their bytes\n",
        "written through the link"
    );
    assert_eq!(
        fs::read(dest.join("PG_VERSION"))?,
        fs::read(c.data.join("PG_VERSION"))?
    );
    Ok(())
}

/// Defect: `restore --dest -` on a postgres stanza created a directory named "-" in the
/// working directory instead of saying that standard output is for stream stanzas.
#[test]
fn defect_restore_dest_dash_on_a_postgres_stanza_made_a_directory_named_dash() -> Res<()> {
    let mut c = Cluster::init(None)?;
    c.cairn_ok(&["stanza-create", "--engine", "postgres"])?;
    c.start()?;
    c.cairn_ok(&["backup", "--type", "full"])?;
    c.stop()?;
    let out = as_postgres(&cairn_bin().display().to_string())
        .current_dir(c.dir.path())
        .envs(c.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args(&c.repo_args)
        .args(["--stanza", &c.stanza, "restore", "--dest", "-"])
        .output()?;
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("stream stanzas"));
    assert!(!c.dir.path().join("-").exists());
    Ok(())
}

/// Defect: an incremental backup did not report the invalid pages of a file it did not read
/// again (unchanged since its parent): `error` was false and the count 0, yet restoring it
/// brings the same bad page back.
#[test]
fn defect_an_incremental_did_not_report_the_invalid_pages_it_inherited() -> Res<()> {
    let (c, rel) = cluster_with_a_corrupt_page()?;
    c.cairn_ok(&["backup", "--type", "full"])?;
    c.sql("create table other as select 1 as x")?;
    c.cairn_ok(&["backup", "--type", "incr"])?;
    let json: serde_json::Value =
        serde_json::from_slice(&c.cairn_ok(&["info", "--output", "json"])?.stdout)?;
    let incr = &json[0]["backup"][1];
    assert_eq!(incr["type"], "incr", "{json}");
    assert_eq!(incr["error"], true, "{json}");
    assert_eq!(incr["cairn"]["meta"]["checksum-page-errors"], "1", "{json}");
    assert!(
        incr["cairn"]["meta"]["checksum-page-error-list"]
            .as_str()
            .is_some_and(|l| l.contains(&format!("{rel} (2)"))),
        "{json}"
    );
    Ok(())
}
