//! Regression tests for stanza-repair and stanza-create on a damaged stanza, found by issue
//! 9's last adversarial pass. Each is named after its defect.

mod common;

use common::*;
use std::fs;

fn restores_source(env: &Env, src: &std::path::Path, name: &str) -> TestResult {
    let dest = env.path(name);
    env.ok(&["restore", "--dest", dest.to_str().ok_or("path")?])?;
    assert_eq!(tree_diff(src, &dest), Vec::<String>::new());
    Ok(())
}

/// Defect: with one byte flipped in the full's index segment, stanza-repair indexed the pack
/// again into a segment with the same (content-derived) name, then removed that key as
/// "damaged", and left both backups out of the catalog.
#[test]
fn stanza_repair_keeps_the_segment_it_rewrites_under_a_damaged_ones_name() -> TestResult {
    let env = Env::new("files")?;
    let src = two_backups(&env)?;
    let segments = files_under(&env.repo.join("stanza/main/index"));
    assert_eq!(segments.len(), 2);
    for seg in &segments {
        let before = fs::read(seg)?;
        flip_byte(seg, 100)?;
        let out = env.run(&["stanza-repair"])?;
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(env.labels()?.len(), 2, "{}", stdout(&out));
        assert_eq!(
            fs::read(seg)?,
            before,
            "the segment was not rewritten as it was"
        );
        assert!(env.run(&["verify"])?.status.success());
        restores_source(&env, &src, &format!("out-{}", before.len()))?;
    }
    Ok(())
}

/// Defect: with stanza.info and both catalogs lost, `stanza-create --engine stream` wrote a
/// stream stanza.info over files backups; stanza-repair then listed them, verify called the
/// stanza clean, and restore refused every backup.
#[test]
fn stanza_create_after_losing_the_catalogs_too_keeps_the_backups_engine() -> TestResult {
    let env = Env::new("files")?;
    let src = two_backups(&env)?;
    let stanza = env.repo.join("stanza/main");
    for f in env.catalog_objects()? {
        fs::remove_file(f)?;
    }
    fs::remove_file(stanza.join("stanza.info"))?;
    let out = env.run(&["stanza-create", "--engine", "stream"])?;
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("give --engine files"),
        "{}",
        stderr(&out)
    );
    assert!(!stanza.join("stanza.info").exists());
    env.ok(&["stanza-create", "--engine", "files"])?;
    env.ok(&["stanza-repair"])?;
    assert_eq!(env.labels()?.len(), 2);
    restores_source(&env, &src, "out")?;

    // A stanza.info of the wrong engine written by hand (or by an older cairn): the backups
    // are not listed by repair, verify says why, restore refuses with what to do.
    let files_info = fs::read(stanza.join("stanza.info"))?;
    fs::remove_file(stanza.join("stanza.info"))?;
    let mut other = Env::new("stream")?;
    other.stanza = "main".into();
    let wrong = other.repo.join("stanza/main/stanza.info");
    fs::copy(&wrong, stanza.join("stanza.info"))?;
    let v = env.run(&["verify"])?;
    assert_eq!(v.status.code(), Some(4), "{}", stdout(&v));
    assert!(
        stdout(&v).contains("taken by the files engine"),
        "{}",
        stdout(&v)
    );
    let r = env.run(&["restore", "--dest", env.path("out2").to_str().ok_or("p")?])?;
    assert_ne!(r.status.code(), Some(0));
    assert!(stderr(&r).contains("--engine files"), "{}", stderr(&r));
    fs::write(stanza.join("stanza.info"), files_info)?;
    assert!(env.run(&["verify"])?.status.success());
    Ok(())
}

/// Defect: with a pack's trailer cut off (its chunks intact), restore worked, but verify
/// recorded the whole pack as damaged, after which restore failed ("not in the repository
/// index") and stanza-repair left the backups out: verify now checks such a pack's chunks
/// where the index places them, and keeps the intact ones usable.
#[test]
fn a_pack_with_a_damaged_trailer_keeps_its_intact_chunks_usable_after_verify() -> TestResult {
    let env = Env::new("files")?;
    let src = two_backups(&env)?;
    let first = env.labels()?.remove(0);
    let packs = files_under(&env.repo.join("stanza/main/pack"));
    // The full's pack: the larger one.
    let pack = packs
        .iter()
        .max_by_key(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .ok_or("no pack")?;
    let len = fs::metadata(pack)?.len();
    fs::OpenOptions::new()
        .write(true)
        .open(pack)?
        .set_len(len - 100)?;
    let v = env.run(&["verify"])?;
    assert_eq!(v.status.code(), Some(4), "{}", stdout(&v));
    assert!(
        stdout(&v).contains("are intact and stay usable"),
        "{}",
        stdout(&v)
    );
    assert!(
        stdout(&v).contains("(affects: no listed backup)"),
        "{}",
        stdout(&v)
    );
    // Both backups still restore, after verify and after a repair.
    let dest = env.path("full");
    env.ok(&[
        "restore",
        "--set",
        &first,
        "--dest",
        dest.to_str().ok_or("p")?,
    ])?;
    restores_source(&env, &src, "latest")?;
    let out = env.run(&["stanza-repair"])?;
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(env.labels()?.len(), 2);
    restores_source(&env, &src, "after-repair")?;
    Ok(())
}

/// Defect: a damaged (not missing) `cairn.repo` made every command fail, stanza-repair
/// included, with "run `cairn verify`", which failed the same way.
#[test]
fn a_damaged_repository_marker_is_written_again_by_stanza_repair() -> TestResult {
    let env = Env::new("files")?;
    let src = two_backups(&env)?;
    let marker = env.repo.join("cairn.repo");
    flip_byte(&marker, 30)?;
    let out = env.run(&["info"])?;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("stanza-repair"), "{}", stderr(&out));
    let out = env.run(&["stanza-repair"])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.labels()?.len(), 2);
    restores_source(&env, &src, "out")?;
    // An empty marker too.
    fs::write(&marker, b"")?;
    env.ok(&["stanza-repair"])?;
    assert!(env.run(&["verify"])?.status.success());
    Ok(())
}

/// Defect: a damaged (not missing) stanza.info gave "run `cairn verify`", which failed the
/// same way; it now says that stanza-create writes it again, with the backups' engine.
#[test]
fn a_damaged_stanza_info_says_how_to_write_it_again() -> TestResult {
    let env = Env::new("files")?;
    let src = two_backups(&env)?;
    let info = env.repo.join("stanza/main/stanza.info");
    flip_byte(&info, 30)?;
    let out = env.run(&["verify"])?;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("stanza-create --engine files"),
        "{}",
        stderr(&out)
    );
    env.ok(&["stanza-create", "--engine", "files"])?;
    assert_eq!(env.labels()?.len(), 2);
    restores_source(&env, &src, "out")?;
    Ok(())
}

/// Defect (adversarial pass, 2026-11-24): after one flipped bit in an incremental's pack,
/// `verify` then `stanza-repair` left that backup out of the catalog, and the next expire
/// deleted its manifest: the backup was gone, though all but one chunk was intact and the
/// next backup would have stored that chunk again. A listed backup stays listed.
#[test]
fn stanza_repair_keeps_a_listed_backup_whose_chunk_is_damaged() -> TestResult {
    let env = Env::new("stream")?;
    let full = bytes(1, 400_000);
    let mut incr = full.clone();
    incr.extend(bytes(2, 300_000));
    env.ok_stdin(&["backup", "--type", "full"], &full)?;
    env.ok_stdin(&["backup", "--type", "incr"], &incr)?;
    let labels = env.labels()?;
    let mut packs = files_under(&env.stanza_dir().join("pack"));
    packs.sort_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok());
    let newest = packs.pop().ok_or("no pack")?;
    flip_byte(&newest, 100)?;
    assert_eq!(env.run(&["verify"])?.status.code(), Some(4));
    let out = env.run(&["stanza-repair"])?;
    assert_eq!(out.status.code(), Some(6), "{}", stdout(&out));
    assert!(stdout(&out).contains("stays listed"), "{}", stdout(&out));
    assert_eq!(env.labels()?, labels);
    env.ok(&["expire", "--retention-full", "5"])?;
    assert_eq!(
        env.labels()?,
        labels,
        "expire removed a backup repair had kept"
    );
    // The next backup of the same data stores the damaged chunk again: the old one restores.
    env.ok_stdin(&["backup", "--type", "full"], &incr)?;
    assert!(env.ok(&["restore", "--set", &labels[1], "--dest", "-"])? == incr);
    Ok(())
}

/// Finding (second adversarial pass, 2026-11-24): when a listed backup's manifest had
/// vanished, stanza-repair removed it from the catalog pointing at a "left out" line it never
/// printed, and exited 0.
#[test]
fn stanza_repair_that_drops_a_backup_whose_manifest_is_gone_says_so_and_warns() -> TestResult {
    let env = Env::new("stream")?;
    env.ok_stdin(&["backup", "--type", "full"], &bytes(1, 100_000))?;
    env.ok_stdin(&["backup", "--type", "full"], &bytes(2, 100_000))?;
    let labels = env.labels()?;
    fs::remove_file(env.manifest_path(&labels[1]))?;
    let out = env.run(&["stanza-repair"])?;
    assert_eq!(out.status.code(), Some(6), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("its manifest is missing"),
        "{}",
        stdout(&out)
    );
    Ok(())
}
