//! Regression tests for operator mistakes that cairn accepted without a word (issue 9's last
//! adversarial pass): an empty or self-containing --source, an incremental on a damaged chain,
//! and a stanza whose stanza.info was lost. Each is named after its defect.

mod common;

use common::*;
use std::fs;

/// Defect: `backup --source <empty dir>` (a file system that was not mounted) was listed as
/// the newest backup, and a default restore brought back nothing.
#[test]
fn an_empty_source_directory_is_refused_unless_allowed() -> TestResult {
    let env = Env::new("files")?;
    let src = env.path("src");
    fs::create_dir(&src)?;
    let s = src.to_str().ok_or("path")?;
    let out = env.run(&["backup", "--source", s])?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is empty"), "{}", stderr(&out));
    assert!(stderr(&out).contains("--allow-empty"), "{}", stderr(&out));
    assert!(env.labels()?.is_empty());
    env.ok(&["backup", "--source", s, "--allow-empty"])?;
    assert_eq!(env.labels()?.len(), 1);
    Ok(())
}

/// Defect: a local repository inside --source was accepted: each backup stored the
/// repository itself, growing with every run.
#[test]
fn a_repository_inside_the_source_is_refused() -> TestResult {
    let mut env = Env::new("files")?;
    let src = env.path("tree");
    fs::create_dir_all(src.join("data"))?;
    fs::write(src.join("data/f"), b"x")?;
    env.repo = src.join("repo");
    env.ok(&["stanza-create", "--engine", "files"])?;
    let out = env.run(&["backup", "--source", src.to_str().ok_or("path")?])?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is inside --source"),
        "{}",
        stderr(&out)
    );
    assert!(env.labels()?.is_empty());
    // Nor a source inside the repository.
    let inside = env.repo.join("stanza");
    let out = env.run(&["backup", "--source", inside.to_str().ok_or("path")?])?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is inside the repository"),
        "{}",
        stderr(&out)
    );
    // The source beside it is fine.
    env.ok(&[
        "backup",
        "--source",
        src.join("data").to_str().ok_or("path")?,
    ])?;
    Ok(())
}

/// Defect: an incremental backup whose full's manifest was gone failed with "run cairn
/// verify", without saying that a full backup needs no parent.
#[test]
fn an_incr_on_a_damaged_chain_suggests_a_full_backup() -> TestResult {
    let env = Env::new("files")?;
    let src = two_backups(&env)?;
    let full = env.labels()?.remove(0);
    let manifest = env.manifest_path(&full);
    fs::remove_file(&manifest)?;
    let s = src.to_str().ok_or("path")?;
    let out = env.run(&["backup", "--type", "incr", "--source", s])?;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("--type full"), "{}", stderr(&out));
    env.ok(&["backup", "--type", "full", "--source", s])?;
    Ok(())
}

/// Defect: with stanza.info lost, `info` said the stanza did not exist (while it held every
/// backup), and `stanza-create --engine stream` wrote it back for a files stanza.
#[test]
fn a_lost_stanza_info_is_named_and_written_back_only_with_its_engine() -> TestResult {
    let env = Env::new("files")?;
    two_backups(&env)?;
    fs::remove_file(env.repo.join("stanza/main/stanza.info"))?;
    let out = env.run(&["info"])?;
    assert_ne!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stderr(&out).contains("holds data"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("stanza-create --engine files"),
        "{}",
        stderr(&out)
    );
    let out = env.run(&["stanza-create", "--engine", "stream"])?;
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("give --engine files"),
        "{}",
        stderr(&out)
    );
    assert!(!env.repo.join("stanza/main/stanza.info").exists());
    env.ok(&["stanza-create", "--engine", "files"])?;
    assert_eq!(env.labels()?.len(), 2);
    assert!(env.run(&["verify"])?.status.success());
    Ok(())
}

/// Defect: `info` without --stanza failed outright (exit 3) when one stanza's catalogs were
/// damaged, hiding every healthy stanza of the repository.
#[test]
fn info_of_the_whole_repository_lists_healthy_stanzas_beside_a_damaged_one() -> TestResult {
    let env = Env::new("files")?;
    two_backups(&env)?;
    env.stanza_beside("other", "files")?;
    for f in env.catalog_objects()? {
        flip_byte(&f, 20)?;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--repo")
        .arg(&env.repo)
        .args(["info", "--output", "json"])
        .output()?;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("main"), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let by_name = |n: &str| {
        json.as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == n))
            .map(|s| s["status"]["code"].clone())
    };
    assert_eq!(by_name("other"), Some(serde_json::json!(2)), "{json}");
    assert_eq!(by_name("main"), Some(serde_json::json!(99)), "{json}");
    Ok(())
}

/// Defect: `cairn info --output json | true` ended "internal error: failed printing to
/// stdout" with exit 70, and an error with a closed stderr exited 101.
#[test]
fn a_closed_stdout_or_stderr_does_not_change_the_exit_code() -> TestResult {
    let env = Env::new("files")?;
    two_backups(&env)?;
    for (args, code) in [(vec!["info", "--output", "json"], 0), (vec!["verify"], 0)] {
        let mut child = env
            .cmd(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        drop(child.stdout.take());
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().ok_or("stderr")?, &mut err)?;
        assert_eq!(child.wait()?.code(), Some(code), "{args:?}: {err}");
        assert!(!err.contains("internal error"), "{err}");
    }
    let mut child = env
        .cmd(&["restore", "--set", "nosuch"])
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    drop(child.stderr.take());
    let code = child.wait()?.code();
    assert!(
        code != Some(101) && code != Some(70) && code != Some(0),
        "{code:?}"
    );
    Ok(())
}

/// Defect: a producer that wrote 100 MB to stderr without a newline made cairn hold it all
/// (405 MB peak) and quote all of it in its error.
#[test]
fn a_producers_endless_stderr_line_is_quoted_cut_short() -> TestResult {
    let env = Env::new("stream")?;
    let out = env.run(&[
        "backup",
        "--",
        "sh",
        "-c",
        "echo data; head -c 20000000 /dev/zero | tr '\\0' x >&2; exit 1",
    ])?;
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    // The producer's stderr is passed through as is (without a final newline here).
    let (_, line) = err.rsplit_once("cairn: error:").ok_or("no error line")?;
    assert!(
        line.contains("exited with status 1"),
        "{}",
        &line[..line.len().min(300)]
    );
    assert!(line.len() < 5_000, "the error line is {} bytes", line.len());
    Ok(())
}

/// Defect (adversarial pass, 2026-11-25): a restore into the repository was accepted and left
/// a stanza directory without stanza.info there, which `info` then reported as damage.
#[test]
fn defect_a_restore_into_the_repository_was_accepted() -> TestResult {
    let env = Env::new("files")?;
    let src = env.path("tree");
    fs::create_dir_all(&src)?;
    fs::write(src.join("f"), b"x")?;
    env.ok(&["backup", "--source", src.to_str().ok_or("path")?])?;
    for dest in [env.repo.join("stanza/x"), env.repo.clone()] {
        let out = env.run(&["restore", "--dest", dest.to_str().ok_or("path")?])?;
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("restore outside the repository"),
            "{}",
            stderr(&out)
        );
    }
    assert!(!env.repo.join("stanza/x").exists());
    Ok(())
}
