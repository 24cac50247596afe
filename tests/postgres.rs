//! The PostgreSQL engine against real PostgreSQL 15 clusters (started by the tests as the
//! `postgres` user): WAL archiving through archive_command, archive-get for restore_command.

mod common;

use common::pg::{Cluster, Res, chown_postgres};
use std::fs;

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
    c.cairn_ok(&["archive-push", seg.to_str().ok_or("path")?])?;
    let forged = c.dir.path().join("forged").join(&first);
    fs::create_dir_all(forged.parent().ok_or("parent")?)?;
    let mut bytes = fs::read(&seg)?;
    let n = bytes.len();
    bytes[n - 1] ^= 0xFF;
    fs::write(&forged, &bytes)?;
    chown_postgres(c.dir.path())?;
    let out = c.cairn(&["archive-push", forged.to_str().ok_or("path")?])?;
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
    let out = main.cairn(&["archive-push", staged.to_str().ok_or("path")?])?;
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
