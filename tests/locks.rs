//! Stanza locks as leases in the repository (format.md, "Lock"): a lock of another host is
//! respected while its lease runs and taken over after; two commands that find a stale lock
//! together never both take it (the takeover race of delete-then-create); and a holder whose
//! lock was taken over writes nothing more.

mod common;

use cairn_repo::codec::{self, magic};
use cairn_repo::lock::LockInfo;
use common::*;
use std::fs;
use std::io::Write;
use std::process::Stdio;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn write_lock(env: &Env, generation: u64, host: &str, pid: u32, lease_until: i64) -> TestResult {
    let dir = env.repo.join("stanza/main/lease");
    fs::create_dir_all(&dir)?;
    let info = LockInfo {
        host: host.into(),
        pid,
        command: "backup".into(),
        since: now() - 10,
        lease_until,
    };
    fs::write(
        dir.join(format!("{generation:016x}")),
        codec::seal(magic::LOCK, &info, false),
    )?;
    Ok(())
}

#[test]
fn a_lock_of_another_host_holds_while_its_lease_runs_and_is_taken_over_after() -> TestResult {
    let env = Env::new("files")?;
    let src = two_backups(&env)?;
    let s = src.to_str().ok_or("path")?;
    write_lock(&env, 7, "db-host-2", 4242, now() + 600)?;
    let out = env.run(&["backup", "--source", s])?;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("db-host-2"), "{}", stderr(&out));
    let info = env.info()?;
    assert_eq!(info[0]["status"]["lock"]["backup"]["held"], true, "{info}");
    // Its lease ran out: the holder is gone; the next command takes the lock over.
    write_lock(&env, 7, "db-host-2", 4242, now() - 1)?;
    let out = env
        .cmd(&["backup", "--source", s])
        .env("CAIRN_LOG_LEVEL", "warn")
        .output()?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("taking over"), "{}", stderr(&out));
    assert_eq!(env.labels()?.len(), 3);
    assert!(files_under(&env.repo.join("stanza/main/lease")).is_empty());
    Ok(())
}

/// Defect (issue 10): after a crash left a stale lock, two backups started together could
/// both take it over (each deleted whatever was at the key, possibly the other's fresh
/// lock), both report `complete`, and one be missing from the catalog.
#[test]
fn two_backups_finding_a_stale_lock_never_both_take_it() -> TestResult {
    let env = Env::new("stream")?;
    let mut dead = std::process::Command::new("true").spawn()?;
    let dead_pid = dead.id();
    dead.wait()?;
    let mut listed = 0;
    for round in 0..8u64 {
        write_lock(
            &env,
            100 + round,
            &cairn_repo::lock::hostname(),
            dead_pid,
            now() + 600,
        )?;
        let spawn = || {
            env.cmd(&["backup", "--type", "full"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
        };
        // Both start before either gets its input: they race for the lock.
        let (mut a, mut b) = (spawn()?, spawn()?);
        let feed = |c: &mut std::process::Child, seed: u64| {
            let input = c.stdin.take();
            std::thread::spawn(move || {
                if let Some(mut i) = input {
                    // The one refused the lock exits without reading: ignore its pipe.
                    let _ = i.write_all(&bytes(seed, 200_000));
                }
            })
        };
        let (fa, fb) = (feed(&mut a, round * 2), feed(&mut b, round * 2 + 1));
        let (a, b) = (a.wait_with_output()?, b.wait_with_output()?);
        let _ = (fa.join(), fb.join());
        let ok = [&a, &b].iter().filter(|o| o.status.success()).count();
        for o in [&a, &b] {
            assert!(
                o.status.success() || o.status.code() == Some(5),
                "{}",
                stderr(o)
            );
        }
        listed += ok;
        assert_eq!(
            env.labels()?.len(),
            listed,
            "round {round}: a completed backup is not listed"
        );
    }
    assert!(listed >= 8);
    assert!(env.run(&["verify"])?.status.success());
    Ok(())
}

/// A holder that stalled past its lease and was taken over must not write: the backup fails
/// at its commit and lists nothing.
#[test]
fn a_holder_whose_lock_was_taken_over_writes_nothing() -> TestResult {
    let env = Env::new("stream")?;
    let mut child = env
        .cmd(&["backup", "--type", "full"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or("stdin")?;
    stdin.write_all(&bytes(1, 1_000_000))?;
    let lease = env.repo.join("stanza/main/lease");
    let start = std::time::Instant::now();
    while files_under(&lease).is_empty() && start.elapsed().as_secs() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let held = files_under(&lease);
    assert_eq!(held.len(), 1);
    let generation = u64::from_str_radix(
        held[0].file_name().and_then(|n| n.to_str()).ok_or("name")?,
        16,
    )?;
    // Another host takes the lock over (as it would once the lease ran out).
    write_lock(&env, generation + 1, "db-host-2", 4242, now() + 600)?;
    drop(stdin);
    let out = child.wait_with_output()?;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("lost its lock"), "{}", stderr(&out));
    assert!(env.labels()?.is_empty());
    Ok(())
}

/// Defect: a lease object at the last generation (ffffffffffffffff) made every locking
/// command panic ("attempt to add with overflow") until it was removed by hand.
#[test]
fn a_lease_at_the_last_generation_is_refused_not_a_panic() -> TestResult {
    let env = Env::new("files")?;
    let src = two_backups(&env)?;
    let mut dead = std::process::Command::new("true").spawn()?;
    let dead_pid = dead.id();
    dead.wait()?;
    write_lock(
        &env,
        u64::MAX,
        &cairn_repo::lock::hostname(),
        dead_pid,
        now() + 600,
    )?;
    let out = env.run(&["backup", "--source", src.to_str().ok_or("p")?])?;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("remove it"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("internal error"), "{}", stderr(&out));
    Ok(())
}
