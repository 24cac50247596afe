//! `stop`, `start` and `stanza-delete`: a stopped stanza refuses what writes to it, a stanza
//! is deleted only once stopped, and a PostgreSQL stanza not while its cluster runs.

mod common;

use common::*;
use std::fs;

#[test]
fn a_stopped_stanza_refuses_backup_expire_and_repair_until_started() -> TestResult {
    let env = Env::new("files")?;
    let src = two_backups(&env)?;
    let s = src.to_str().ok_or("path")?;
    env.ok(&["stop"])?;
    // Stopping twice is not an error.
    env.ok(&["stop"])?;
    for args in [
        vec!["backup", "--source", s],
        vec!["expire", "--retention-full", "1"],
        vec!["stanza-repair"],
    ] {
        let out = env.run(&args)?;
        assert_eq!(out.status.code(), Some(5), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("is stopped"), "{}", stderr(&out));
        assert!(stderr(&out).contains("start"), "{}", stderr(&out));
    }
    // Reading is still allowed.
    env.ok(&["info"])?;
    assert!(env.run(&["verify"])?.status.success());
    env.ok(&["restore", "--dest", env.path("out").to_str().ok_or("p")?])?;
    env.ok(&["start"])?;
    env.ok(&["backup", "--source", s])?;
    assert_eq!(env.labels()?.len(), 3);
    Ok(())
}

#[test]
fn stanza_delete_needs_a_stop_and_removes_only_that_stanza() -> TestResult {
    let env = Env::new("files")?;
    two_backups(&env)?;
    let other = env.stanza_beside("other", "files")?;
    let src = env.path("src");
    other.ok(&["backup", "--source", src.to_str().ok_or("p")?])?;

    let out = env.run(&["stanza-delete"])?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("stop"), "{}", stderr(&out));
    assert!(env.repo.join("stanza/main/catalog").exists());

    env.ok(&["stop"])?;
    env.ok(&["stanza-delete"])?;
    assert!(files_under(&env.repo.join("stanza/main")).is_empty());
    // Gone: info reports it as pgBackRest reports a missing stanza (status, exit code 0).
    let out = env.run(&["info"])?;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("status: error (missing stanza path)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The other stanza is untouched.
    assert_eq!(other.labels()?.len(), 1);
    assert!(other.run(&["verify"])?.status.success());
    // The name can be used again.
    env.ok(&["stanza-create", "--engine", "files"])?;
    fs::write(src.join("new"), b"x")?;
    env.ok(&["backup", "--source", src.to_str().ok_or("p")?])?;
    Ok(())
}
