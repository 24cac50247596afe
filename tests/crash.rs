//! Crash safety: a backup killed (SIGKILL) at random moments never leaves a listed backup that
//! fails to restore, leaves nothing `verify` calls damage, and the next backup succeeds.

mod common;

use common::*;
use std::fs;
use std::time::Duration;

#[test]
fn backups_killed_at_random_moments_leave_a_consistent_repository() -> TestResult {
    let env = Env::new("files")?;
    let src = env.path("src");
    fs::create_dir_all(src.join("d"))?;
    for i in 0..24u64 {
        fs::write(
            src.join(format!("d/file-{i}")),
            bytes(500 + i, 1_500_000 + i as usize * 10_000),
        )?;
    }
    fs::write(src.join("dump.sql"), text(9, 8_000_000))?;
    let src_s = src.to_str().ok_or("path")?.to_string();
    // Delays from a fixed sequence so a failure can be reproduced.
    let delays = bytes(77, 32);
    let mut killed = 0;
    for (round, d) in delays.iter().take(10).enumerate() {
        if round % 3 == 2 {
            // Change a file now and then so incrementals have something new to store.
            fs::write(
                src.join(format!("d/file-{round}")),
                bytes(9000 + round as u64, 1_200_000),
            )?;
        }
        let kind = if round % 2 == 0 { "full" } else { "incr" };
        let mut child = env
            .cmd(&[
                "--process-max",
                "2",
                "backup",
                "--type",
                kind,
                "--source",
                &src_s,
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(*d as u64 * 4));
        if child.try_wait()?.is_none() {
            child.kill()?;
            killed += 1;
        }
        child.wait()?;
    }
    eprintln!("killed {killed} of 10 backups");
    // The next backup takes over the dead process's lock and succeeds.
    env.ok(&["backup", "--type", "incr", "--source", &src_s])?;
    let labels = env.labels()?;
    assert!(!labels.is_empty());
    // Every listed backup restores; the newest matches the source exactly.
    for (i, label) in labels.iter().enumerate() {
        let dest = env.path(&format!("restore-{i}"));
        env.ok(&[
            "restore",
            "--set",
            label,
            "--dest",
            dest.to_str().ok_or("path")?,
        ])?;
        if i + 1 == labels.len() {
            assert_eq!(tree_diff(&src, &dest), Vec::<String>::new());
        }
        fs::remove_dir_all(&dest)?;
    }
    let out = env.run(&["verify"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}
