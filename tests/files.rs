//! The files and stream engines through the `cairn` binary: exact round trips, backup chains,
//! deduplication figures, and clear errors for bad input.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;

#[test]
fn tree_round_trips_exactly_through_full_diff_and_incr() -> TestResult {
    let env = Env::new("files")?;
    let src = env.path("src");
    make_tree(&src, 1)?;
    env.ok(&[
        "backup",
        "--type",
        "full",
        "--source",
        src.to_str().ok_or("path")?,
    ])?;
    let snap_full = env.path("snap-full");
    copy_tree(&src, &snap_full)?;

    // Change, add and delete files; diff then incr.
    fs::write(src.join("data/f3"), bytes(99, 5000))?;
    fs::write(src.join("data/new-file"), bytes(100, 70_000))?;
    fs::remove_file(src.join("data/f1"))?;
    fs::remove_dir(src.join("empty/nested-empty"))?;
    set_mtime(&src.join("data/f3"), 1_700_000_000, 5);
    set_mtime(&src.join("data/new-file"), 1_700_000_001, 6);
    set_mtime(&src.join("data"), 1_700_000_002, 7);
    set_mtime(&src.join("empty"), 1_700_000_003, 8);
    env.ok(&[
        "backup",
        "--type",
        "diff",
        "--source",
        src.to_str().ok_or("path")?,
    ])?;
    let diff = env.last_backup()?;
    assert_eq!(diff["type"], "diff");
    // Only the two changed files were read, not the whole tree.
    assert_eq!(diff["info"]["delta"], 75_000, "{diff}");

    fs::write(src.join("data/deep/er/small-5"), b"changed in incr")?;
    set_mtime(&src.join("data/deep/er/small-5"), 1_700_000_100, 0);
    fs::set_permissions(src.join("data/f2"), fs::Permissions::from_mode(0o600))?;
    env.ok(&[
        "backup",
        "--type",
        "incr",
        "--source",
        src.to_str().ok_or("path")?,
    ])?;
    let incr = env.last_backup()?;
    assert_eq!(incr["type"], "incr");
    assert_eq!(
        incr["reference"].as_array().map(|a| a.len()),
        Some(2),
        "{incr}"
    );

    let out = env.path("restore-latest");
    env.ok(&["restore", "--dest", out.to_str().ok_or("path")?])?;
    assert_eq!(tree_diff(&src, &out), Vec::<String>::new());

    let labels = env.labels()?;
    let out_full = env.path("restore-full");
    env.ok(&[
        "restore",
        "--set",
        &labels[0],
        "--dest",
        out_full.to_str().ok_or("path")?,
    ])?;
    assert_eq!(tree_diff(&snap_full, &out_full), Vec::<String>::new());

    let v = env.run(&["verify"])?;
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    Ok(())
}

#[test]
fn stream_round_trips_to_file_and_stdout() -> TestResult {
    let env = Env::new("stream")?;
    let data = text(5, 9_000_000);
    env.ok_stdin(&["backup", "--type", "full"], &data)?;
    let file = env.path("restored.dump");
    env.ok(&["restore", "--dest", file.to_str().ok_or("path")?])?;
    assert!(
        fs::read(&file)? == data,
        "stream restored to a file differs"
    );
    let stdout = env.ok(&["restore", "--dest", "-"])?;
    assert!(stdout == data, "stream restored to stdout differs");
    // An empty stream is a valid (empty) backup when asked for (issue 9, item 3).
    env.ok_stdin(&["backup", "--type", "full", "--allow-empty"], b"")?;
    assert!(env.ok(&["restore", "--dest", "-"])?.is_empty());
    Ok(())
}

fn new_chunks(b: &serde_json::Value) -> u64 {
    b["cairn"]["new-chunks"].as_u64().unwrap_or(u64::MAX)
}

#[test]
fn the_same_100_mib_twice_adds_under_one_percent() -> TestResult {
    let env = Env::new("files")?;
    let src = env.path("src");
    fs::create_dir_all(&src)?;
    for i in 0..10 {
        fs::write(
            src.join(format!("part{i}")),
            bytes(1000 + i, 10 * 1024 * 1024),
        )?;
    }
    env.ok(&[
        "backup",
        "--type",
        "full",
        "--source",
        src.to_str().ok_or("path")?,
    ])?;
    let before = du(&env.repo);
    env.ok(&[
        "backup",
        "--type",
        "full",
        "--source",
        src.to_str().ok_or("path")?,
    ])?;
    let added = du(&env.repo) - before;
    eprintln!("second full backup of 100 MiB added {added} bytes");
    assert!(added < 1024 * 1024, "second copy added {added} bytes");
    assert_eq!(new_chunks(&env.last_backup()?), 0);
    Ok(())
}

#[test]
fn a_1_kib_in_place_edit_of_64_mib_adds_about_one_chunk() -> TestResult {
    let env = Env::new("files")?;
    let src = env.path("src");
    fs::create_dir_all(&src)?;
    let mut data = bytes(7, 64 * 1024 * 1024);
    fs::write(src.join("big"), &data)?;
    env.ok(&[
        "backup",
        "--type",
        "full",
        "--source",
        src.to_str().ok_or("path")?,
    ])?;
    data[40_000_000..40_001_024].copy_from_slice(&bytes(8, 1024));
    fs::write(src.join("big"), &data)?;
    env.ok(&[
        "backup",
        "--type",
        "incr",
        "--source",
        src.to_str().ok_or("path")?,
    ])?;
    let b = env.last_backup()?;
    let added = b["info"]["repository"]["delta"]
        .as_u64()
        .unwrap_or(u64::MAX);
    eprintln!(
        "1 KiB edit of 64 MiB: {} new chunks, {added} bytes",
        new_chunks(&b)
    );
    assert!(new_chunks(&b) <= 2, "{b}");
    assert!(added <= 8 * 1024 * 1024, "{b}");
    Ok(())
}

#[test]
fn an_insertion_into_a_32_mib_text_file_adds_a_few_chunks() -> TestResult {
    let env = Env::new("files")?;
    let src = env.path("src");
    fs::create_dir_all(&src)?;
    let data = text(11, 32 * 1024 * 1024);
    fs::write(src.join("dump.sql"), &data)?;
    env.ok(&[
        "backup",
        "--type",
        "full",
        "--source",
        src.to_str().ok_or("path")?,
    ])?;
    let full = env.last_backup()?;
    let mut edited = data[..16 * 1024 * 1024].to_vec();
    edited.extend_from_slice(b"INSERT INTO t VALUES ('a row added in the middle');\n");
    edited.extend_from_slice(&data[16 * 1024 * 1024..]);
    fs::write(src.join("dump.sql"), &edited)?;
    env.ok(&[
        "backup",
        "--type",
        "incr",
        "--source",
        src.to_str().ok_or("path")?,
    ])?;
    let b = env.last_backup()?;
    eprintln!(
        "insertion into 32 MiB text: {} new chunks of {}, {} bytes",
        new_chunks(&b),
        b["cairn"]["chunks"],
        b["info"]["repository"]["delta"]
    );
    assert!(new_chunks(&b) <= 3, "{b}");
    assert!(
        full["cairn"]["chunks"].as_u64().unwrap_or(0) >= 16,
        "{full}"
    );
    Ok(())
}

#[test]
fn a_second_dump_with_two_small_edits_adds_a_few_chunks() -> TestResult {
    let env = Env::new("stream")?;
    let data = text(21, 32 * 1024 * 1024);
    env.ok_stdin(&["backup", "--type", "full"], &data)?;
    let mut edited = data.clone();
    edited[5_000_000..5_000_010].copy_from_slice(b"0123456789");
    edited.splice(25_000_000..25_000_000, b"-- a new line\n".iter().copied());
    env.ok_stdin(&["backup", "--type", "full"], &edited)?;
    let b = env.last_backup()?;
    eprintln!(
        "second dump with two edits: {} new chunks of {}",
        new_chunks(&b),
        b["cairn"]["chunks"]
    );
    assert!(new_chunks(&b) <= 4, "{b}");
    assert!(env.ok(&["restore", "--dest", "-"])? == edited);
    Ok(())
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_input_gets_a_clear_error_and_exit_code() -> TestResult {
    let env = Env::new("files")?;
    let src = env.path("src");
    fs::create_dir_all(&src)?;
    fs::write(src.join("a"), b"a")?;

    // Restore before any backup: not found.
    let out = env.run(&["restore", "--dest", env.path("x").to_str().ok_or("path")?])?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("no backup"), "{}", stderr_of(&out));

    env.ok(&["backup", "--source", src.to_str().ok_or("path")?])?;
    let mut other = env.cmd(&["info"]);
    other.args(["--stanza", "nope"]);
    // As pgBackRest: a status on stdout (exit 0) for monitors, and the why on stderr.
    let out = other.output()?;
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("status: error (missing stanza path)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr_of(&out).contains("stanza 'nope' does not exist"),
        "{}",
        stderr_of(&out)
    );

    let out = env.run(&[
        "restore",
        "--set",
        "20200101-000000F",
        "--dest",
        env.path("y").to_str().ok_or("path")?,
    ])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("20200101-000000F"),
        "{}",
        stderr_of(&out)
    );

    let out = env.run(&[
        "restore",
        "--set",
        "../../etc",
        "--dest",
        env.path("y").to_str().ok_or("path")?,
    ])?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));

    let out = env.run(&["restore", "--dest", src.to_str().ok_or("path")?])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("not empty"), "{}", stderr_of(&out));

    let out = env.run(&[
        "backup",
        "--source",
        env.path("missing").to_str().ok_or("path")?,
    ])?;
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("missing"), "{}", stderr_of(&out));

    let out = env.run(&[
        "backup",
        "--type",
        "weekly",
        "--source",
        src.to_str().ok_or("path")?,
    ])?;
    assert_eq!(out.status.code(), Some(2));

    // A directory that is not a repository: for info, pgBackRest's "missing stanza path"
    // (exit 0, so a monitor gets an answer), with the reason on stderr.
    let mut c = env.cmd(&["info"]);
    c.args(["--repo", src.to_str().ok_or("path")?]);
    let out = c.output()?;
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("missing stanza path"));
    assert!(
        stderr_of(&out).contains("not a cairn repository"),
        "{}",
        stderr_of(&out)
    );

    // stanza-create refuses a non-empty directory that is not a repository.
    let mut c = env.cmd(&["stanza-create", "--engine", "files"]);
    c.args(["--repo", src.to_str().ok_or("path")?]);
    let out = c.output()?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));

    // Only one backup is listed, and it still verifies.
    assert_eq!(env.labels()?.len(), 1);
    assert!(env.run(&["verify"])?.status.success());
    Ok(())
}

#[test]
fn options_come_from_flags_then_env_then_config_file() -> TestResult {
    let env = Env::new("files")?;
    let src = env.path("src");
    fs::create_dir_all(&src)?;
    fs::write(src.join("a"), b"a")?;
    let cfg = env.path("cairn.toml");
    fs::write(
        &cfg,
        format!(
            "stanza = \"main\"\n[global]\nrepo = \"/nonexistent\"\n[main]\nrepo = \"{}\"\nsource = \"{}\"\n",
            env.repo.display(),
            src.display()
        ),
    )?;
    let bin = env!("CARGO_BIN_EXE_cairn");
    // Everything from the file.
    let st = std::process::Command::new(bin)
        .args(["--config", cfg.to_str().ok_or("path")?, "backup"])
        .env_remove("CAIRN_REPO")
        .output()?;
    assert!(st.status.success(), "{}", stderr_of(&st));
    // The environment wins over the file.
    let st = std::process::Command::new(bin)
        .args(["--config", cfg.to_str().ok_or("path")?, "info"])
        .env("CAIRN_REPO", "/nonexistent-from-env")
        .output()?;
    // info on a repository that is not there: a warning naming it (and exit 0, as pgBackRest).
    assert!(
        stderr_of(&st).contains("nonexistent-from-env"),
        "{}",
        stderr_of(&st)
    );
    // A flag wins over the environment.
    let st = std::process::Command::new(bin)
        .args([
            "--config",
            cfg.to_str().ok_or("path")?,
            "--repo",
            env.repo.to_str().ok_or("path")?,
            "info",
        ])
        .env("CAIRN_REPO", "/nonexistent-from-env")
        .output()?;
    assert!(st.status.success(), "{}", stderr_of(&st));
    Ok(())
}

/// Defect: a restore kept up to 256 files open at once, so under an open-file limit of 256
/// (a container's default, say) it failed with "too many open files".
#[test]
fn defect_a_restore_under_a_low_open_file_limit_failed() -> TestResult {
    let env = Env::new("files")?;
    let src = env.path("src");
    fs::create_dir_all(&src)?;
    for i in 0..600u64 {
        fs::write(
            src.join(format!("f{i:04}")),
            common::bytes(i, 3000 + i as usize),
        )?;
    }
    env.ok(&["backup", "--source", src.to_str().ok_or("path")?])?;
    let dest = env.path("dest");
    let out = std::process::Command::new("prlimit")
        .args(["--nofile=200:200", "--"])
        .arg(env!("CARGO_BIN_EXE_cairn"))
        .env("CAIRN_CACHE_PATH", env.path("cache"))
        .arg("--repo")
        .arg(&env.repo)
        .args([
            "--stanza",
            &env.stanza,
            "--log-level",
            "warn",
            "restore",
            "--dest",
        ])
        .arg(&dest)
        .output()?;
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(common::tree_diff(&src, &dest), Vec::<String>::new());
    Ok(())
}
