//! `verify` names every damaged or missing object and the backups it affects; restore of
//! damaged data fails loudly instead of writing wrong bytes.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};

fn objects(repo: &Path, under: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![repo.join(under)];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

fn setup() -> Result<(Env, Vec<String>), Box<dyn std::error::Error>> {
    let env = Env::new("files")?;
    let src = env.path("src");
    fs::create_dir_all(&src)?;
    fs::write(src.join("one"), bytes(1, 3_000_000))?;
    fs::write(src.join("two"), text(2, 2_000_000))?;
    set_mtime(&src.join("one"), 1_600_000_000, 0);
    set_mtime(&src.join("two"), 1_600_000_000, 0);
    env.ok(&[
        "backup",
        "--type",
        "full",
        "--source",
        src.to_str().ok_or("path")?,
    ])?;
    fs::write(src.join("three"), bytes(3, 1_000_000))?;
    set_mtime(&src.join("three"), 1_600_000_000, 0);
    env.ok(&[
        "backup",
        "--type",
        "incr",
        "--source",
        src.to_str().ok_or("path")?,
    ])?;
    let labels = env.labels()?;
    Ok((env, labels))
}

fn flip(path: &Path, at: usize) -> std::io::Result<Vec<u8>> {
    let orig = fs::read(path)?;
    let mut bad = orig.clone();
    let i = at % bad.len();
    bad[i] ^= 0x20;
    fs::write(path, &bad)?;
    Ok(orig)
}

#[test]
fn a_flipped_byte_in_any_pack_index_or_manifest_is_named() -> TestResult {
    let (env, labels) = setup()?;
    let repo = env.repo.clone();
    let mut targets = objects(&repo, "stanza/main/pack");
    targets.extend(objects(&repo, "stanza/main/index"));
    targets.extend(objects(&repo, "stanza/main/backup"));
    assert!(targets.len() >= 5, "{targets:?}");
    for path in &targets {
        for at in [0usize, 100, 4096, usize::MAX / 3] {
            let orig = flip(path, at)?;
            let out = env.run(&["verify"])?;
            fs::write(path, &orig)?;
            let rel = path.strip_prefix(&repo)?.to_string_lossy().into_owned();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                out.status.code(),
                Some(4),
                "flip at {at} in {rel} not detected: {stdout}"
            );
            assert!(
                stdout.contains(&rel),
                "verify output does not name {rel}: {stdout}"
            );
            if rel.contains("/backup/") {
                assert!(
                    labels.iter().any(|l| stdout.contains(l.as_str())),
                    "{stdout}"
                );
            }
        }
    }
    assert!(env.run(&["verify"])?.status.success());
    Ok(())
}

#[test]
fn a_removed_pack_names_the_backups_that_lost_data() -> TestResult {
    let (env, labels) = setup()?;
    let packs = objects(&env.repo, "stanza/main/pack");
    // The full backup's pack holds data both backups need.
    let mut hit = false;
    for p in &packs {
        let orig = fs::read(p)?;
        fs::remove_file(p)?;
        let out = env.run(&["verify"])?;
        fs::write(p, &orig)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(4), "{stdout}");
        assert!(stdout.contains("pack is missing"), "{stdout}");
        if labels.iter().all(|l| stdout.contains(l.as_str())) {
            hit = true;
        }
    }
    assert!(
        hit,
        "no pack removal was reported against every backup that needs it"
    );
    Ok(())
}

#[test]
fn restore_of_a_damaged_chunk_fails_loudly() -> TestResult {
    let (env, _) = setup()?;
    for p in objects(&env.repo, "stanza/main/pack") {
        // Damage the data area (just after the 16-byte header), not the trailer.
        let orig = flip(&p, 40)?;
        let dest = env.path("out");
        let out = env.run(&["restore", "--dest", dest.to_str().ok_or("path")?])?;
        fs::write(&p, &orig)?;
        let _ = fs::remove_dir_all(&dest);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert!(stderr.contains("damaged"), "{stderr}");
    }
    Ok(())
}

/// Defect (adversarial pass, 2026-11-24): verify takes no lock, and a backup expired while it
/// ran was reported as damage ("manifest ... is missing"). It is no longer a backup.
#[test]
fn a_backup_expired_while_verify_runs_is_not_damage() -> TestResult {
    let env = Env::new("stream")?;
    for seed in 1..=3 {
        env.ok_stdin(&["backup", "--type", "full"], &bytes(seed, 100_000))?;
    }
    // verify pauses after reading the catalog; expire removes two backups meanwhile.
    let verify = env
        .cmd(&["verify"])
        .env("CAIRN_FAILPOINT", "act:verify-before-backups")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    std::thread::sleep(std::time::Duration::from_millis(1000));
    env.ok(&["expire", "--retention-full", "1"])?;
    let out = verify.wait_with_output()?;
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    Ok(())
}
