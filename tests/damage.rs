//! Regression tests for damage found after issue 9's first round: a damaged pack that backups
//! kept deduplicating against, a lost index that made `stanza-repair` drop every backup, and
//! a restore to a closed stdout that exited 0, and what an adversarial pass found after. Each
//! is named after its item and defect.

mod common;

use common::*;
use std::fs;
use std::io::Read;
use std::path::PathBuf;
use std::process::Stdio;

fn restore_to(
    env: &Env,
    label: Option<&str>,
    name: &str,
) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let dest = env.path(name);
    let d = dest.to_str().ok_or("path")?;
    match label {
        Some(l) => env.ok(&["restore", "--set", l, "--dest", d])?,
        None => env.ok(&["restore", "--dest", d])?,
    };
    Ok(dest)
}

/// Defect: with a byte flipped inside a (present) pack, verify exited 4, and the next
/// `backup --type full` exited 0 with "0 new chunks": it deduplicated against the damaged
/// chunk and could not be restored.
#[test]
fn item8_a_damaged_pack_is_not_deduplicated_against_after_verify() -> TestResult {
    let env = Env::new("files")?;
    let src = two_backups(&env)?;
    let first = env.labels()?.first().cloned().ok_or("no backup")?;
    for pack in files_under(&env.repo.join("stanza/main/pack")) {
        // Inside the first chunk's blob (the header is 16 bytes).
        flip_byte(&pack, 40)?;
    }
    let out = env.run(&["verify"])?;
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("damage register"), "{}", stdout(&out));
    assert!(env.repo.join("stanza/main/damaged").exists());
    // info no longer says "ok" for a stanza verify found damaged (defect: it did).
    assert_eq!(env.info()?[0]["status"]["code"], 99);
    let text = String::from_utf8(env.ok(&["info"])?)?;
    assert!(text.contains("status: error (damaged"), "{text}");

    let s = src.to_str().ok_or("path")?;
    let out = env.run(&["backup", "--type", "full", "--source", s])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("stores that data again"),
        "{}",
        stderr(&out)
    );
    let last = env.last_backup()?;
    assert!(
        last["info"]["repository"]["delta"].as_u64().unwrap_or(0) > 0,
        "the new full deduplicated against the damaged chunks: {last}"
    );
    let dest = restore_to(&env, None, "new")?;
    assert_eq!(tree_diff(&src, &dest), Vec::<String>::new());
    // The oldest backup needed the same chunks: it restores from the new copies.
    let dest = restore_to(&env, Some(&first), "first")?;
    for f in ["one", "two"] {
        assert!(fs::read(dest.join(f))? == fs::read(src.join(f))?, "{f}");
    }
    assert!(!dest.join("three").exists());
    // Nothing any backup needs is damaged any more; the damaged packs are only counted.
    let out = env.run(&["verify"])?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("no longer needed"),
        "{}",
        stdout(&out)
    );
    Ok(())
}

/// Verify re-reads the packs each time: a damage register that no longer matches (a pack put
/// back intact) is cleared, and one that cannot be read is rewritten.
#[test]
fn item8_verify_rewrites_a_stale_or_damaged_register() -> TestResult {
    let env = Env::new("files")?;
    two_backups(&env)?;
    let packs = files_under(&env.repo.join("stanza/main/pack"));
    let pack = packs.first().ok_or("no pack")?;
    let good = fs::read(pack)?;
    let mut bad = good.clone();
    bad[40] ^= 0x5a;
    fs::write(pack, &bad)?;
    assert_eq!(env.run(&["verify"])?.status.code(), Some(4));
    let register = env.repo.join("stanza/main/damaged");
    assert!(register.exists());
    fs::write(pack, &good)?;
    let out = env.run(&["verify"])?;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("cleared"), "{}", stdout(&out));
    assert!(!register.exists());
    // A register of garbage: backup warns (and still works), verify rewrites it.
    fs::write(&register, b"garbage")?;
    fs::write(pack, &bad)?;
    let out = env.run(&[
        "backup",
        "--type",
        "full",
        "--source",
        env.path("src").to_str().ok_or("p")?,
    ])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("damage register"), "{}", stderr(&out));
    let out = env.run(&["verify"])?;
    let reg = cairn_repo::damage::DamageRegister::decode("damaged", &fs::read(&register)?)?;
    assert_eq!(reg.packs.len(), 1, "{}", stdout(&out));
    Ok(())
}

/// Defect: with `index/` lost, `stanza-repair` left out every backup ("chunk ... is in no
/// present pack") and removed them from the catalog, though every pack was there.
#[test]
fn item6_stanza_repair_after_a_lost_index_keeps_every_backup() -> TestResult {
    let env = Env::new("files")?;
    let src = two_backups(&env)?;
    let before = env.labels()?;
    for seg in files_under(&env.repo.join("stanza/main/index")) {
        fs::remove_file(seg)?;
    }
    let out = env.run(&["stanza-repair"])?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("indexed again"), "{}", stdout(&out));
    assert!(!stdout(&out).contains("removed"), "{}", stdout(&out));
    assert_eq!(env.labels()?, before);
    let dest = restore_to(&env, None, "out")?;
    assert_eq!(tree_diff(&src, &dest), Vec::<String>::new());
    let out = env.run(&["verify"])?;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    // A second repair has nothing to index again.
    let out = env.run(&["stanza-repair"])?;
    assert!(!stdout(&out).contains("indexed again"), "{}", stdout(&out));
    Ok(())
}

/// Defect: `stanza-repair` that removed backups from the catalog (their data lost) exited 0.
#[test]
fn item6_stanza_repair_that_leaves_backups_out_exits_with_warnings() -> TestResult {
    let env = Env::new("files")?;
    two_backups(&env)?;
    for p in files_under(&env.repo.join("stanza/main/pack")) {
        fs::remove_file(p)?;
    }
    let out = env.run(&["stanza-repair"])?;
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    // Listed before: they stay listed, reported as damaged.
    assert!(stdout(&out).contains("stays listed"), "{}", stdout(&out));
    assert!(!stdout(&out).contains("removed"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("completed with warnings"),
        "{}",
        stderr(&out)
    );
    // With the catalog lost too, nothing vouches for them: left out.
    for g in env.catalog_generations()? {
        fs::remove_file(g)?;
    }
    fs::remove_file(env.stanza_dir().join("catalog"))?;
    let out = env.run(&["stanza-repair"])?;
    assert_eq!(out.status.code(), Some(6), "{}", stdout(&out));
    assert!(stdout(&out).contains("left out"), "{}", stdout(&out));
    Ok(())
}

/// Defect: `cairn restore --dest - | head -c 10` exited 0: a restore cut short by its reader
/// looked like a complete one.
#[test]
fn item3_a_restore_to_stdout_whose_reader_stops_early_fails() -> TestResult {
    let env = Env::new("stream")?;
    let data = bytes(7, 8 << 20);
    env.ok_stdin(&["backup"], &data)?;
    let mut child = env
        .cmd(&["restore", "--dest", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut out = child.stdout.take().ok_or("stdout")?;
    let mut first = [0u8; 10];
    out.read_exact(&mut first)?;
    drop(out);
    let mut err = String::new();
    child
        .stderr
        .take()
        .ok_or("stderr")?
        .read_to_string(&mut err)?;
    let status = child.wait()?;
    assert_eq!(status.code(), Some(3), "{err}");
    assert!(err.contains("closed it after"), "{err}");
    assert!(err.contains(&format!("of {} bytes", data.len())), "{err}");
    // A reader that takes everything still gets exit 0 and every byte.
    let out = env.ok(&["restore", "--dest", "-"])?;
    assert!(out == data);
    Ok(())
}

/// Defect: a restore from two swapped packs failed with a storage message ("range ... is
/// outside the object's 108 bytes") that did not say the repository was damaged.
#[test]
fn item7_a_restore_from_swapped_packs_says_the_repository_is_damaged() -> TestResult {
    let env = Env::new("files")?;
    two_backups(&env)?;
    let packs = files_under(&env.repo.join("stanza/main/pack"));
    assert_eq!(packs.len(), 2, "{packs:?}");
    let (a, b) = (fs::read(&packs[0])?, fs::read(&packs[1])?);
    fs::write(&packs[0], &b)?;
    fs::write(&packs[1], &a)?;
    for label in env.labels()? {
        let dest = env.path(&format!("out-{label}"));
        let out = env.run(&[
            "restore",
            "--set",
            &label,
            "--dest",
            dest.to_str().ok_or("p")?,
        ])?;
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("is damaged") && err.contains("cairn verify"),
            "{err}"
        );
    }
    Ok(())
}

/// Defect: one damaged index segment made every backup, restore and stanza-repair exit 3.
#[test]
fn item6_a_damaged_index_segment_stops_nothing_and_stanza_repair_replaces_it() -> TestResult {
    let env = Env::new("files")?;
    let src = two_backups(&env)?;
    let before = env.labels()?;
    for seg in files_under(&env.repo.join("stanza/main/index")) {
        flip_byte(&seg, 60)?;
    }
    // A host whose index cache does not hold them yet (a cached copy was checked against
    // its name when fetched, so it stays good; verify reads the repository's own).
    fs::remove_dir_all(env.path("cache"))?;
    let s = src.to_str().ok_or("path")?;
    let out = env.run(&["backup", "--type", "full", "--source", s])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("stanza-repair"), "{}", stderr(&out));
    let out = env.run(&["stanza-repair"])?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("damaged index segment"),
        "{}",
        stdout(&out)
    );
    let mut labels = env.labels()?;
    labels.truncate(before.len());
    assert_eq!(labels, before);
    for label in env.labels()? {
        let dest = restore_to(&env, Some(&label), &format!("out-{label}"))?;
        assert_eq!(
            tree_diff(&src, &dest).is_empty(),
            label != before[0],
            "{label}"
        );
    }
    let out = env.run(&["verify"])?;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    Ok(())
}

/// Defect: after the pack holding only the first incr's data was lost, `stanza-repair` also
/// removed the newer incr that no longer used it, so a plain restore then gave the full's
/// older data with exit 0.
#[test]
fn item6_stanza_repair_keeps_a_backup_whose_parent_lost_data_it_no_longer_uses() -> TestResult {
    let env = Env::new("files")?;
    let src = env.path("src");
    fs::create_dir_all(&src)?;
    fs::write(src.join("a"), bytes(1, 1_000_000))?;
    fs::write(src.join("b"), b"v1")?;
    set_mtime(&src.join("a"), 1_600_000_000, 0);
    set_mtime(&src.join("b"), 1_600_000_000, 0);
    let s = src.to_str().ok_or("path")?;
    env.ok(&["backup", "--type", "full", "--source", s])?;
    let packs_before = files_under(&env.repo.join("stanza/main/pack"));
    fs::write(src.join("b"), b"v2")?;
    set_mtime(&src.join("b"), 1_600_000_100, 0);
    env.ok(&["backup", "--type", "incr", "--source", s])?;
    let lost: Vec<_> = files_under(&env.repo.join("stanza/main/pack"))
        .into_iter()
        .filter(|p| !packs_before.contains(p))
        .collect();
    assert_eq!(lost.len(), 1, "{lost:?}");
    fs::write(src.join("b"), b"v3")?;
    set_mtime(&src.join("b"), 1_600_000_200, 0);
    env.ok(&["backup", "--type", "incr", "--source", s])?;
    let labels = env.labels()?;
    fs::remove_file(&lost[0])?;

    let out = env.run(&["stanza-repair"])?;
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    // The incr whose pack was lost stays listed too, reported as damaged (repair keeps what
    // the catalog listed: see `stanza_repair_keeps_a_listed_backup_whose_chunk_is_damaged`).
    assert_eq!(env.labels()?, labels);
    assert!(
        stdout(&out).contains(&format!("damaged: backup {} stays listed", labels[1])),
        "{}",
        stdout(&out)
    );
    let dest = restore_to(&env, None, "out")?;
    assert_eq!(fs::read(dest.join("b"))?, b"v3");
    assert!(fs::read(dest.join("a"))? == fs::read(src.join("a"))?);
    Ok(())
}

/// Defect: a stream restore to `--dest FILE` that failed on a damaged chunk left a file of the
/// full size with zeros where the data was missing.
#[test]
fn item3_a_failed_stream_restore_leaves_no_file_behind() -> TestResult {
    let env = Env::new("stream")?;
    env.ok_stdin(&["backup"], &bytes(5, 5_000_000))?;
    for pack in files_under(&env.repo.join("stanza/main/pack")) {
        let half = fs::metadata(&pack)?.len() as usize / 2;
        flip_byte(&pack, half)?;
    }
    let dest = env.path("dump.bin");
    let out = env.run(&["restore", "--dest", dest.to_str().ok_or("path")?])?;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(!dest.exists(), "a failed restore left {}", dest.display());
    Ok(())
}

/// Defect: `backup --source DIR` on a stream stanza ignored --source and backed up stdin.
#[test]
fn item15_source_on_a_stream_stanza_is_refused() -> TestResult {
    let env = Env::new("stream")?;
    let out = env.run(&["backup", "--source", "/etc"])?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--source is for files stanzas"),
        "{}",
        stderr(&out)
    );
    assert!(env.labels()?.is_empty());
    Ok(())
}

/// Defect: with the catalog's copy (or the catalog) damaged, verify exited 0: the redundancy
/// could be lost without a word.
#[test]
fn item6_verify_reports_a_damaged_catalog_or_copy() -> TestResult {
    for which in 0..3 {
        let env = Env::new("files")?;
        two_backups(&env)?;
        // The newest generation, the one before it, and the copy.
        let path = match which {
            2 => env.stanza_dir().join("catalog"),
            n => env.catalog_generations()?[n].clone(),
        };
        let name = path
            .strip_prefix(env.stanza_dir())?
            .to_str()
            .ok_or("path")?
            .to_string();
        flip_byte(&path, 30)?;
        let out = env.run(&["verify"])?;
        assert_eq!(out.status.code(), Some(4), "{name}: {}", stdout(&out));
        assert!(
            stdout(&out).contains(&format!("stanza/main/{name}:")),
            "{}",
            stdout(&out)
        );
        let out = env.run(&["stanza-repair"])?;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let out = env.run(&["verify"])?;
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stdout(&out));
    }
    Ok(())
}

/// Defect: with `stanza.info` deleted, `stanza-create` (the only way back) wrote an empty
/// catalog over the one listing every backup; with it damaged, nothing could rewrite it.
#[test]
fn item6_a_lost_or_damaged_stanza_info_is_written_again_and_the_catalog_kept() -> TestResult {
    let env = Env::new("files")?;
    let src = two_backups(&env)?;
    let before = env.labels()?;
    let info = env.repo.join("stanza/main/stanza.info");
    fs::remove_file(&info)?;
    let out = env.run(&["stanza-create", "--engine", "files"])?;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("holds data"), "{}", stderr(&out));
    assert_eq!(env.labels()?, before);
    flip_byte(&info, 30)?;
    env.ok(&["stanza-create", "--engine", "files"])?;
    assert_eq!(env.labels()?, before);
    let dest = restore_to(&env, None, "out")?;
    assert_eq!(tree_diff(&src, &dest), Vec::<String>::new());
    Ok(())
}

/// Defect: a manifest left by a backup interrupted before its catalog update (a crash, a full
/// disk) made verify exit 4, against the commit order in format.md (such a manifest is not a
/// backup); and a verify running beside a backup reported the running one.
#[test]
fn item6_a_manifest_the_catalog_does_not_list_yet_is_listed_not_damage() -> TestResult {
    let env = Env::new("files")?;
    let src = env.path("src");
    fs::create_dir_all(&src)?;
    fs::write(src.join("a"), bytes(1, 300_000))?;
    let s = src.to_str().ok_or("path")?;
    env.ok(&["backup", "--type", "full", "--source", s])?;
    let saved = env.save_catalogs()?;
    fs::write(src.join("b"), bytes(2, 300_000))?;
    env.ok(&["backup", "--type", "incr", "--source", s])?;
    let interrupted = env.labels()?.last().cloned().ok_or("no backup")?;
    // The state a crash between the manifest and the catalog write leaves.
    env.put_back_catalogs(&saved)?;
    let out = env.run(&["verify"])?;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains(&interrupted), "{}", stdout(&out));
    assert!(stdout(&out).contains("not backups"), "{}", stdout(&out));
    // It is complete, so stanza-repair lists it.
    env.ok(&["stanza-repair"])?;
    assert_eq!(env.labels()?.last(), Some(&interrupted));
    Ok(())
}

/// Defect: after a backup stopped between its manifest and its catalog update (a full disk),
/// the next backup in the same second failed with "manifest already exists".
#[test]
fn item6_a_leftover_manifest_does_not_block_the_next_backup() -> TestResult {
    let env = Env::new("files")?;
    let src = env.path("src");
    fs::create_dir_all(&src)?;
    fs::write(src.join("a"), bytes(1, 100_000))?;
    let s = src.to_str().ok_or("path")?;
    env.ok(&["backup", "--type", "full", "--source", s])?;
    let dir = env.repo.join("stanza/main");
    let saved = env.save_catalogs()?;
    // Leftovers of many "interrupted" fulls, one per second from now on: whichever second
    // the next backup starts in, its first choice of label is taken.
    let first = env.labels()?[0].clone();
    let manifest = fs::read(dir.join("backup").join(&first).join("manifest"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    for t in now..now + 30 {
        let label = format!("{}F", cairn_repo::time::label_stamp(t));
        fs::create_dir_all(dir.join("backup").join(&label))?;
        fs::write(dir.join("backup").join(&label).join("manifest"), &manifest)?;
    }
    env.put_back_catalogs(&saved)?;
    let out = env.run(&["backup", "--type", "full", "--source", s])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.labels()?.len(), 2);
    Ok(())
}

/// Defect: a stream `--dest` that exists and a files `--dest` that is a regular file exited 3
/// (a failure) instead of 2 (a mistake in how cairn was called), like a non-empty directory.
#[test]
fn item16_a_destination_that_cannot_be_used_is_a_usage_error() -> TestResult {
    let stream = Env::new("stream")?;
    stream.ok_stdin(&["backup"], b"data")?;
    let existing = stream.path("exists");
    fs::write(&existing, b"keep me")?;
    let out = stream.run(&["restore", "--dest", existing.to_str().ok_or("path")?])?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(fs::read(&existing)?, b"keep me");
    let files = Env::new("files")?;
    two_backups(&files)?;
    let file = files.path("a-file");
    fs::write(&file, b"keep me")?;
    let out = files.run(&["restore", "--dest", file.to_str().ok_or("path")?])?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is a file"), "{}", stderr(&out));
    assert_eq!(fs::read(&file)?, b"keep me");
    Ok(())
}

/// Defect: `backup -- sh -c 'echo data; sleep 30 & exit 1'` failed only after 30 s: the
/// producer had exited non-zero, but the grandchild it left behind held its stdout open and
/// cairn waited for end of file before looking at the exit status.
#[test]
fn item3_a_failed_producer_whose_child_holds_stdout_fails_at_once() -> TestResult {
    let env = Env::new("stream")?;
    let started = std::time::Instant::now();
    let out = env.run(&["backup", "--", "sh", "-c", "echo data; sleep 60 & exit 1"])?;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("exited with status 1"),
        "{}",
        stderr(&out)
    );
    assert!(env.labels()?.is_empty(), "a failed producer was listed");
    // Well before the grandchild's 60 s are over (the check is generous on a busy machine).
    assert!(took.as_secs() < 40, "the failure took {took:?}");
    // A producer that exits cleanly while its child still writes keeps every byte.
    let out = env.run(&[
        "backup",
        "--",
        "sh",
        "-c",
        "echo first; (sleep 1; echo second) & exit 0",
    ])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.ok(&["restore", "--dest", "-"])?, b"first\nsecond\n");
    Ok(())
}

/// Defect: a backup killed while writing a pack left `.tmp-pack-...` files that nothing ever
/// reported or counted: verify said nothing of the space they held.
#[test]
fn item8_leftovers_of_interrupted_writes_are_reported_by_verify() -> TestResult {
    let env = Env::new("files")?;
    two_backups(&env)?;
    let dir = env.repo.join("stanza/main/pack/ab");
    fs::create_dir_all(&dir)?;
    fs::write(dir.join(".tmp-pack-ab12-4242-7"), vec![0u8; 5000])?;
    let out = env.run(&["verify"])?;
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("1 leftover(s) of interrupted writes (4.9KB known"),
        "{}",
        stdout(&out)
    );
    fs::remove_file(dir.join(".tmp-pack-ab12-4242-7"))?;
    let out = env.run(&["verify"])?;
    assert!(!stdout(&out).contains("leftover"), "{}", stdout(&out));
    Ok(())
}
