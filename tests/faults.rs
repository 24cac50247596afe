//! Faults from the environment: a full repository disk and an unreadable source file each give
//! one clear error and a non-zero exit, and leave no listed backup that cannot be restored.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn a_full_repository_disk_fails_cleanly() -> TestResult {
    // A small tmpfs is a real full disk; mounting one needs root (CI runs as root).
    assert!(
        is_root(),
        "this test needs root to mount a small tmpfs (CI runs as root)"
    );
    let env = Env::new("files")?;
    let mnt = env.path("small");
    fs::create_dir_all(&mnt)?;
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&mnt)
        .status()?;
    assert!(st.success(), "cannot mount tmpfs");
    let result = (|| -> TestResult {
        let mut small = Env {
            dir: tempfile::tempdir()?,
            repo: mnt.join("repo"),
            stanza: "main".into(),
        };
        small.stanza = "main".into();
        small.ok(&["stanza-create", "--engine", "files"])?;
        let src = env.path("src");
        fs::create_dir_all(&src)?;
        fs::write(src.join("small"), b"fits")?;
        small.ok(&[
            "backup",
            "--type",
            "full",
            "--source",
            src.to_str().ok_or("path")?,
        ])?;
        fs::write(src.join("big"), bytes(4, 12 * 1024 * 1024))?;
        let out = small.run(&[
            "backup",
            "--type",
            "full",
            "--source",
            src.to_str().ok_or("path")?,
        ])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert!(
            stderr.contains("No space left") && stderr.contains("free space"),
            "{stderr}"
        );
        // Only the first backup is listed, and it still restores and verifies.
        assert_eq!(small.labels()?.len(), 1);
        let dest = env.path("out");
        small.ok(&["restore", "--dest", dest.to_str().ok_or("path")?])?;
        assert_eq!(fs::read(dest.join("small"))?, b"fits");
        let v = small.run(&["verify"])?;
        assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
        Ok(())
    })();
    let _ = Command::new("umount").arg(&mnt).status();
    result
}

#[test]
fn an_unreadable_source_file_is_named() -> TestResult {
    // Root reads everything, so run cairn as an unprivileged user.
    assert!(
        is_root(),
        "this test needs root to run cairn as user nobody"
    );
    let dir = tempfile::tempdir()?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777))?;
    let src = dir.path().join("src");
    fs::create_dir_all(&src)?;
    fs::write(src.join("ok"), b"fine")?;
    fs::write(src.join("secret"), b"no")?;
    fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o000))?;
    let repo = dir.path().join("repo");
    // A copy nobody can run even when the build directory is under a private home.
    let bin = common::pg::cairn_bin().display().to_string();
    let run_as_nobody = |args: &[&str]| {
        Command::new("runuser")
            .args(["-u", "nobody", "--", &bin, "--repo"])
            .arg(&repo)
            .args(["--stanza", "main", "--log-level", "warn"])
            .args(args)
            .output()
    };
    let out = run_as_nobody(&["stanza-create", "--engine", "files"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_as_nobody(&["backup", "--source", src.to_str().ok_or("path")?])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("secret") && stderr.contains("Permission denied"),
        "{stderr}"
    );
    let out = run_as_nobody(&["info", "--output", "json"])?;
    let info: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        info[0]["backup"].as_array().map(|a| a.len()),
        Some(0),
        "{info}"
    );
    Ok(())
}
