//! `expire` on files and stream stanzas: pgBackRest's retention rules with their dependents,
//! `--set`, `--dry-run`, garbage collection in two steps (condemn, then delete after the
//! margin), and a backup that finds a pack it reuses about to be deleted.

mod common;

use common::*;
use std::fs;
use std::path::Path;

/// A full of fresh random data (`f`, 3 MB) then an incr that changes a small file.
fn full_and_incr(env: &Env, src: &Path, seed: u64, extra: &[&str]) -> TestResult {
    fs::write(src.join("f"), bytes(seed, 3_000_000))?;
    let s = src.to_str().ok_or("path")?;
    env.ok(&["backup", "--type", "full", "--source", s])?;
    fs::write(src.join("small"), format!("{seed}"))?;
    let mut args = vec!["backup", "--type", "incr", "--source", s];
    args.extend_from_slice(extra);
    env.ok(&args)?;
    Ok(())
}

fn restores(env: &Env, src: &Path, label: Option<&str>, name: &str) -> TestResult {
    let dest = env.path(name);
    let d = dest.to_str().ok_or("path")?;
    match label {
        Some(l) => env.ok(&["restore", "--set", l, "--dest", d])?,
        None => env.ok(&["restore", "--dest", d])?,
    };
    assert_eq!(tree_diff(src, &dest), Vec::<String>::new());
    Ok(())
}

#[test]
fn retention_full_expires_the_oldest_full_with_its_dependents_and_frees_its_data() -> TestResult {
    let env = Env::new("files")?;
    let src = env.path("src");
    fs::create_dir(&src)?;
    full_and_incr(&env, &src, 1, &[])?;
    full_and_incr(&env, &src, 2, &[])?;
    let before = du(&env.repo);
    let labels = env.labels()?;
    // The third full's incr expires by the retention after it succeeds (margin 0: at once).
    full_and_incr(
        &env,
        &src,
        3,
        &["--retention-full", "2", "--gc-margin", "0"],
    )?;
    let after = env.labels()?;
    assert_eq!(after.len(), 4, "{after:?}");
    assert!(!after.contains(&labels[0]) && !after.contains(&labels[1]));
    // One full's unique data (3 MB of random bytes) came in and one went out.
    let now = du(&env.repo);
    assert!(
        now < before + 500_000,
        "the repository grew from {before} to {now} bytes"
    );
    assert!(
        !env.repo
            .join("stanza/main/backup")
            .join(&labels[0])
            .exists()
    );
    let v = env.run(&["verify"])?;
    assert!(v.status.success(), "{}", stdout(&v));
    assert!(!stdout(&v).contains("not backups"), "{}", stdout(&v));
    restores(&env, &src, None, "latest")?;
    Ok(())
}

#[test]
fn retention_diff_expires_old_diffs_with_their_incrs_and_keeps_fulls() -> TestResult {
    let env = Env::new("files")?;
    let src = env.path("src");
    fs::create_dir(&src)?;
    fs::write(src.join("f"), bytes(1, 100_000))?;
    let s = src.to_str().ok_or("path")?;
    for kind in ["full", "diff", "incr", "diff", "incr"] {
        fs::write(src.join(kind), bytes(kind.len() as u64, 1000))?;
        env.ok(&["backup", "--type", kind, "--source", s])?;
    }
    let labels = env.labels()?;
    // F D1 I1 D2 I2 with retention-diff=2: F counts as a diff, and there are only three.
    env.ok(&["expire", "--retention-diff", "2", "--gc-margin", "0"])?;
    assert_eq!(env.labels()?, labels);
    // With retention-diff=1, D1 goes with its incr (F is counted, never expired by it).
    env.ok(&["expire", "--retention-diff", "1", "--gc-margin", "0"])?;
    let kept = env.labels()?;
    assert_eq!(
        kept,
        [labels[0].clone(), labels[3].clone(), labels[4].clone()]
    );
    assert!(env.run(&["verify"])?.status.success());
    restores(&env, &src, None, "latest")?;
    Ok(())
}

#[test]
fn expire_set_dry_run_and_refusals() -> TestResult {
    let env = Env::new("files")?;
    let src = env.path("src");
    fs::create_dir(&src)?;
    full_and_incr(&env, &src, 1, &[])?;
    let labels = env.labels()?;
    // The only full cannot go.
    let out = env.run(&["expire", "--set", &labels[0]])?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("only one"), "{}", stderr(&out));
    full_and_incr(&env, &src, 2, &[])?;
    // Dry run: says what would go, changes nothing.
    let files = files_under(&env.repo);
    let out = env
        .cmd(&[
            "expire",
            "--set",
            &labels[0],
            "--dry-run",
            "--gc-margin",
            "0",
        ])
        .env("CAIRN_LOG_LEVEL", "info")
        .output()?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(files_under(&env.repo), files);
    assert_eq!(env.labels()?.len(), 4);
    // --set takes the incr that depends on it.
    env.ok(&["expire", "--set", &labels[0], "--gc-margin", "0"])?;
    assert_eq!(env.labels()?.len(), 2);
    assert!(env.run(&["verify"])?.status.success());
    restores(&env, &src, None, "latest")?;
    // Mistakes: an unknown label, no policy at all, a zero or bad retention.
    let out = env.run(&["expire", "--set", &labels[0]])?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    for args in [
        vec!["expire"],
        vec!["expire", "--retention-full", "0"],
        vec![
            "expire",
            "--retention-full",
            "2",
            "--retention-full-type",
            "days",
        ],
        vec!["expire", "--set", "yesterday"],
    ] {
        let out = env.run(&args)?;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(env.labels()?.len(), 2);
    Ok(())
}

#[test]
fn condemned_packs_wait_for_their_margin_and_are_not_reused_meanwhile() -> TestResult {
    let env = Env::new("files")?;
    let src = env.path("src");
    fs::create_dir(&src)?;
    full_and_incr(&env, &src, 1, &[])?;
    let old = fs::read(src.join("f"))?;
    full_and_incr(&env, &src, 2, &[])?;
    let packs = files_under(&env.repo.join("stanza/main/pack")).len();
    env.ok(&["expire", "--retention-full", "1", "--gc-margin", "2"])?;
    // Condemned, not deleted: info shows what the next expire frees.
    assert!(env.repo.join("stanza/main/condemned").exists());
    assert_eq!(files_under(&env.repo.join("stanza/main/pack")).len(), packs);
    let info = env.info()?;
    let repo = &info[0]["cairn"]["repository"];
    assert!(
        repo["condemned"]["size"].as_u64().unwrap_or(0) > 2_000_000,
        "{repo}"
    );
    assert_eq!(repo["condemned"]["packs"], 1, "{repo}");
    // Random data: no compression; the two backups of the kept full share everything but
    // the small file, and the expired full's data is still stored (condemned).
    let (dedup, comp) = (
        repo["dedup-ratio"].as_f64().unwrap_or(0.0),
        repo["compression-ratio"].as_f64().unwrap_or(0.0),
    );
    assert!((0.9..1.1).contains(&comp), "{repo}");
    assert!((0.9..1.1).contains(&dedup), "{repo}");
    let text = stdout(&env.cmd(&["info"]).output()?);
    assert!(text.contains("waiting for deletion"), "{text}");
    // A new backup of the expired data stores it again instead of reusing the condemned pack.
    fs::write(src.join("f"), &old)?;
    let s = src.to_str().ok_or("path")?;
    env.ok(&["backup", "--type", "full", "--source", s])?;
    let rec = env.last_backup()?;
    assert!(
        rec["info"]["repository"]["delta"].as_u64().unwrap_or(0) > 2_000_000,
        "the backup reused a condemned pack: {rec}"
    );
    std::thread::sleep(std::time::Duration::from_millis(2100));
    env.ok(&["expire", "--retention-full", "1", "--gc-margin", "2"])?;
    assert!(env.run(&["verify"])?.status.success());
    restores(&env, &src, None, "latest")?;
    Ok(())
}

/// The deletion protocol's last guard (format.md, "Condemned packs"): a backup that reuses a
/// pack condemned while it ran (an expire the stanza lock did not keep out) and due to be
/// deleted refuses to list itself, rather than list a backup whose data is about to go.
#[test]
fn a_backup_reusing_a_pack_condemned_while_it_ran_is_not_listed() -> TestResult {
    use cairn_repo::gc::{CondemnedList, CondemnedPack};
    let env = Env::new("stream")?;
    let data = env.path("data");
    fs::write(&data, bytes(5, 4_000_000))?;
    env.ok_stdin(&["backup"], &fs::read(&data)?)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let packs = files_under(&env.repo.join("stanza/main/pack"))
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(String::from))
        .map(|name| {
            let id = cairn_repo::ids::PackId::parse(&name)?;
            Ok(CondemnedPack {
                pack: id,
                since: now,
                delete_after: now,
            })
        })
        .collect::<Result<Vec<_>, cairn_repo::Error>>()?;
    let list = env.path("condemned");
    fs::write(&list, CondemnedList { packs }.encode())?;
    // The producer condemns every pack after cairn has read the index, before it commits.
    let script = format!(
        "cat '{}'; cp '{}' '{}'",
        data.display(),
        list.display(),
        env.repo.join("stanza/main/condemned").display()
    );
    let out = env.run(&["backup", "--", "sh", "-c", &script])?;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("about to be deleted"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.labels()?.len(), 1);
    Ok(())
}

/// One index segment per backup would make every job read as many segments as backups ever
/// taken: an expire merges them once there are more than `gc::MAX_SEGMENTS`.
#[test]
fn backups_keep_index_segments_few_and_expire_merges_them() -> TestResult {
    let env = Env::new("stream")?;
    let segments = || files_under(&env.repo.join("stanza/main/index")).len();
    let mut most = 0;
    for i in 0..(cairn_repo::gc::MAX_SEGMENTS as u64 + 3) {
        env.ok_stdin(&["backup", "--type", "full"], &bytes(100 + i, 20_000))?;
        most = most.max(segments());
    }
    // Each backup adds a segment; four of one size merge into one (format.md, "Index
    // segment"): small ones never number more than three.
    assert!(most <= 4, "{most} segments");
    let labels = env.labels()?;
    assert!(env.run(&["verify"])?.status.success());
    for (i, label) in labels.iter().enumerate() {
        let out = env.ok(&["restore", "--set", label, "--dest", "-"])?;
        assert!(out == bytes(100 + i as u64, 20_000), "{label}");
    }
    // Expire merges what is left whenever it deletes a pack a segment names.
    env.ok(&["expire", "--retention-full", "2", "--gc-margin", "0"])?;
    assert!(segments() <= 2, "{} segments", segments());
    assert_eq!(env.labels()?, labels[labels.len() - 2..]);
    assert!(env.run(&["verify"])?.status.success());
    let last = env.ok(&["restore", "--dest", "-"])?;
    assert!(last == bytes(100 + cairn_repo::gc::MAX_SEGMENTS as u64 + 2, 20_000));
    Ok(())
}

/// Garbage collection killed at each of its steps (as SIGKILL would: nothing released or
/// flushed): every listed backup still restores, verify finds no damage, and the next expire
/// finishes the job.
#[test]
fn expire_killed_at_any_step_leaves_every_listed_backup_restorable() -> TestResult {
    for point in [
        "expire-after-catalog",
        "gc-after-repack",
        "gc-after-condemn",
        "gc-after-new-segments",
        "gc-after-old-segments",
        "gc-mid-packs",
        "gc-after-packs",
    ] {
        let env = Env::new("files")?;
        let src = env.path("src");
        fs::create_dir(&src)?;
        // Kept by every backup, in the first full's pack: that pack becomes mostly garbage
        // and is rewritten.
        fs::write(src.join("keep"), bytes(99, 200_000))?;
        for seed in 1..=3 {
            full_and_incr(&env, &src, seed, &[])?;
        }
        let before = du(&env.repo);
        let out = env
            .cmd(&["expire", "--retention-full", "1", "--gc-margin", "0"])
            .env("CAIRN_FAILPOINT", format!("kill:{point}"))
            .output()?;
        assert!(
            !out.status.success(),
            "{point}: the fail point was not reached"
        );
        let labels = env.labels()?;
        for l in &labels {
            let dest = env.path(&format!("out-{point}-{l}"));
            env.ok(&["restore", "--set", l, "--dest", dest.to_str().ok_or("p")?])?;
        }
        restores(&env, &src, None, &format!("latest-{point}"))?;
        let v = env.run(&["verify"])?;
        assert!(v.status.success(), "{point}: {}", stdout(&v));
        // The lock the killed expire left is taken over; the next expire finishes.
        env.ok(&["expire", "--retention-full", "1", "--gc-margin", "0"])?;
        assert_eq!(env.labels()?.len(), 2, "{point}");
        assert!(
            du(&env.repo) + 4_000_000 < before,
            "{point}: nothing was freed"
        );
        let v = env.run(&["verify"])?;
        assert!(v.status.success(), "{point}: {}", stdout(&v));
        assert!(
            !stdout(&v).contains("not backups"),
            "{point}: {}",
            stdout(&v)
        );
        restores(&env, &src, None, &format!("after-{point}"))?;
    }
    Ok(())
}

/// Defect: stanza-repair can list a backup whose parent it left out; expire then removed the
/// parent's manifest as unlisted and deleted the packs of the files the child inherits from
/// it, and the listed child could no longer be restored.
#[test]
fn expire_keeps_the_chain_of_a_listed_backup_whose_parent_is_unlisted() -> TestResult {
    let env = Env::new("files")?;
    let src = env.path("src");
    fs::create_dir(&src)?;
    let s = src.to_str().ok_or("path")?;
    fs::write(src.join("a"), bytes(1, 1_000_000))?;
    env.ok(&["backup", "--type", "full", "--source", s])?;
    fs::write(src.join("a2"), bytes(2, 1_000_000))?;
    env.ok(&["backup", "--type", "incr", "--source", s])?;
    fs::write(src.join("small"), b"x")?;
    env.ok(&["backup", "--type", "incr", "--source", s])?;
    let labels = env.labels()?;
    // As stanza-repair leaves it when the middle backup lost data only it used: the newest is
    // listed, its parent is not.
    let stanza = env.repo.join("stanza/main");
    let mut catalog = env.read_catalog()?;
    catalog.backups.retain(|b| b.label.as_str() != labels[1]);
    env.write_catalog(&catalog)?;
    env.ok(&["expire", "--retention-full", "1", "--gc-margin", "0"])?;
    assert!(
        stanza
            .join("backup")
            .join(&labels[1])
            .join("manifest")
            .exists()
    );
    restores(&env, &src, Some(&labels[2]), "child")?;
    Ok(())
}

/// Defect: with `catalog` damaged and an older `catalog.copy`, expire worked from the copy:
/// it removed the newer backup's manifest as unlisted and deleted its data, which the
/// stanza-repair it recommended would have recovered.
#[test]
fn expire_and_backup_refuse_to_work_from_a_catalog_copy() -> TestResult {
    let env = Env::new("files")?;
    let src = env.path("src");
    fs::create_dir(&src)?;
    let s = src.to_str().ok_or("path")?;
    fs::write(src.join("a"), bytes(1, 500_000))?;
    env.ok(&["backup", "--type", "full", "--source", s])?;
    let stanza = env.repo.join("stanza/main");
    fs::write(src.join("b"), bytes(2, 500_000))?;
    env.ok(&["backup", "--type", "full", "--source", s])?;
    let labels = env.labels()?;
    // The newest generation damaged, the one before it lacks the newest backup; and the
    // copy damaged too (else readers take the copy, which is as new).
    flip_byte(&env.catalog_generations()?[0], 30)?;
    flip_byte(&stanza.join("catalog"), 30)?;
    assert_eq!(
        env.labels()?,
        labels[..1],
        "readers fall back to the older generation"
    );
    for args in [
        vec!["expire", "--retention-full", "2", "--gc-margin", "0"],
        vec!["backup", "--type", "full", "--source", s],
    ] {
        let out = env.run(&args)?;
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("stanza-repair"), "{}", stderr(&out));
    }
    assert!(
        stanza
            .join("backup")
            .join(&labels[1])
            .join("manifest")
            .exists()
    );
    env.ok(&["stanza-repair"])?;
    assert_eq!(env.labels()?, labels);
    restores(&env, &src, None, "latest")?;
    Ok(())
}

/// Defect: a backup that stored again the chunks of a damaged pack (after verify recorded it)
/// or of a damaged index segment wrote a byte-identical object under the same name, took
/// "already exists" for success, left the damaged one in place, and listed a backup that
/// could not be restored.
#[test]
fn a_backup_storing_a_damaged_object_again_under_its_name_restores() -> TestResult {
    for damaged in ["pack", "index"] {
        let env = Env::new("stream")?;
        // One chunk, so the objects written again are byte for byte the damaged ones.
        let data = bytes(3, 100_000);
        env.ok_stdin(&["backup", "--type", "full"], &data)?;
        let object = files_under(&env.repo.join("stanza/main").join(damaged))
            .into_iter()
            .next()
            .ok_or("no object")?;
        flip_byte(
            &object,
            5000.min(fs::metadata(&object)?.len() as usize - 40),
        )?;
        if damaged == "pack" {
            assert_eq!(env.run(&["verify"])?.status.code(), Some(4));
        }
        env.ok_stdin(&["backup", "--type", "full"], &data)?;
        for label in env.labels()? {
            assert!(
                env.ok(&["restore", "--set", &label, "--dest", "-"])? == data,
                "{damaged}"
            );
        }
        // Chunks sealed in parallel may reach the pack in another order: then the new pack
        // and segment have other names, and the damaged segment is still there (damage that
        // affects no backup) until stanza-repair removes it.
        if damaged == "index" {
            env.ok(&["stanza-repair"])?;
        }
        let v = env.run(&["verify"])?;
        assert!(v.status.success(), "{damaged}: {}", stdout(&v));
    }
    Ok(())
}

/// Defect: a backup that stored again the chunks of a condemned pack wrote a pack with the
/// condemned one's name and counted it as new, so the check against packs about to be
/// deleted never looked at it, and the pack stayed condemned while a listed backup used it.
#[test]
fn a_backup_writing_a_condemned_packs_name_takes_it_off_the_list() -> TestResult {
    let env = Env::new("stream")?;
    // One chunk (below the chunker's minimum size), so the pack written again is the same.
    let a = bytes(4, 100_000);
    env.ok_stdin(&["backup", "--type", "full"], &a)?;
    env.ok_stdin(
        &["backup", "--type", "full", "--retention-full", "1"],
        &bytes(5, 100_000),
    )?;
    assert_eq!(
        env.info()?[0]["cairn"]["repository"]["condemned"]["packs"],
        1
    );
    env.ok_stdin(&["backup", "--type", "full"], &a)?;
    assert_eq!(
        env.info()?[0]["cairn"]["repository"]["condemned"]["packs"],
        0
    );
    env.ok(&["expire", "--retention-full", "2", "--gc-margin", "0"])?;
    assert!(env.ok(&["restore", "--dest", "-"])? == a);
    assert!(env.run(&["verify"])?.status.success());
    Ok(())
}

/// Defect: `CAIRN_SET` (or `set` in the config file, meant for restores) made a plain
/// `expire` remove that backup and its dependents, even over `--retention-full`.
#[test]
fn expire_takes_set_from_the_command_line_only() -> TestResult {
    let env = Env::new("files")?;
    let src = env.path("src");
    fs::create_dir(&src)?;
    full_and_incr(&env, &src, 1, &[])?;
    full_and_incr(&env, &src, 2, &[])?;
    let labels = env.labels()?;
    let out = env
        .cmd(&["expire", "--retention-full", "5"])
        .env("CAIRN_SET", &labels[0])
        .output()?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.labels()?, labels);
    Ok(())
}

/// Two fulls: the first of a big file and a small one (one pack), the second of the small one
/// alone. Once the first expires, its pack is mostly garbage. Returns the source.
fn a_pack_mostly_garbage_later(
    env: &Env,
) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    let src = env.path("src");
    fs::create_dir(&src)?;
    let s = src.to_str().ok_or("path")?;
    fs::write(src.join("big"), bytes(1, 3_000_000))?;
    fs::write(src.join("keep"), bytes(2, 200_000))?;
    env.ok(&["backup", "--type", "full", "--source", s])?;
    fs::remove_file(src.join("big"))?;
    env.ok(&["backup", "--type", "full", "--source", s])?;
    Ok(src)
}

/// A pack mostly garbage (a big file gone, a small one still backed up) is rewritten: the
/// small file's chunk is copied into a new pack and the old pack freed; with
/// `--repack-threshold 100` it is kept whole. Either way every kept backup restores.
#[test]
fn a_pack_mostly_garbage_is_rewritten_unless_repacking_is_off() -> TestResult {
    for threshold in ["80", "100"] {
        let env = Env::new("files")?;
        let src = a_pack_mostly_garbage_later(&env)?;
        let packs = env.stanza_dir().join("pack");
        assert_eq!(files_under(&packs).len(), 1, "one pack holds both files");
        let before = du(&packs);
        let out = env
            .cmd(&[
                "expire",
                "--retention-full",
                "1",
                "--gc-margin",
                "0",
                "--repack-threshold",
                threshold,
                "--log-level",
                "info",
            ])
            .output()?;
        assert!(out.status.success(), "{}", stderr(&out));
        let after = du(&packs);
        if threshold == "100" {
            assert_eq!(after, before, "kept whole");
            assert!(!stderr(&out).contains("new pack"), "{}", stderr(&out));
        } else {
            assert!(stderr(&out).contains("into 1 new pack"), "{}", stderr(&out));
            assert!(after < before / 5, "{before} -> {after}");
            // Nothing more to do the next time.
            let again = env
                .cmd(&[
                    "expire",
                    "--retention-full",
                    "1",
                    "--gc-margin",
                    "0",
                    "--log-level",
                    "info",
                ])
                .output()?;
            assert!(!stderr(&again).contains("new pack"), "{}", stderr(&again));
            assert_eq!(du(&packs), after);
        }
        let v = env.run(&["verify"])?;
        assert!(v.status.success(), "{}", stdout(&v));
        restores(&env, &src, None, "out")?;
    }
    Ok(())
}

/// Repacking with a margin: the old pack is condemned, not deleted; a backup taken meanwhile
/// uses the new copy (condemned packs are not deduplicated against), and the next expire
/// after the margin deletes the old pack.
#[test]
fn a_repacked_pack_waits_for_its_margin_and_backups_use_the_new_copy() -> TestResult {
    let env = Env::new("files")?;
    let src = a_pack_mostly_garbage_later(&env)?;
    let s = src.to_str().ok_or("path")?;
    env.ok(&["expire", "--retention-full", "1", "--gc-margin", "2"])?;
    let packs = env.stanza_dir().join("pack");
    assert_eq!(
        files_under(&packs).len(),
        2,
        "the old pack waits, the new one holds `keep`"
    );
    let stored = du(&packs);
    env.ok(&["backup", "--type", "full", "--source", s])?;
    assert_eq!(du(&packs), stored, "the new backup stored nothing again");
    std::thread::sleep(std::time::Duration::from_secs(3));
    env.ok(&["expire", "--retention-full", "2", "--gc-margin", "2"])?;
    assert_eq!(files_under(&packs).len(), 1);
    assert!(env.run(&["verify"])?.status.success());
    for label in env.labels()? {
        restores(&env, &src, Some(&label), &format!("out-{label}"))?;
    }
    Ok(())
}

/// Defect (adversarial pass, 2026-11-24): an expire killed after its repack wrote a new pack
/// but before it indexed it leaves that pack unindexed; the next expire repacks the same
/// chunks into the same pack (content-named), indexes it, and then, with `--gc-margin 0`,
/// deleted it as the unindexed leftover it had listed at its start: no kept backup restored.
#[test]
fn a_rerun_expire_keeps_the_pack_its_repack_wrote_again() -> TestResult {
    let env = Env::new("files")?;
    let src = a_pack_mostly_garbage_later(&env)?;
    // What the interrupted run left: the repack's pack, in a repository that does not index it.
    let scratch = env.path("scratch");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&env.repo)
        .arg(&scratch)
        .status()?;
    assert!(copied.success());
    let before = files_under(&env.stanza_dir().join("pack"));
    let mut other = env.cmd(&["expire", "--retention-full", "1", "--gc-margin", "0"]);
    let out = other
        .args(["--repo", scratch.to_str().ok_or("path")?])
        .output()?;
    assert!(out.status.success(), "{}", stderr(&out));
    let rel =
        |p: &std::path::Path, root: &std::path::Path| p.strip_prefix(root).map(|r| r.to_path_buf());
    let mut leftover = None;
    for p in files_under(&scratch.join("stanza/main/pack")) {
        let r = rel(&p, &scratch)?;
        if !before
            .iter()
            .any(|b| rel(b, &env.repo).is_ok_and(|x| x == r))
        {
            leftover = Some((p.clone(), env.repo.join(&r)));
        }
    }
    let (from, to) = leftover.ok_or("the scratch expire wrote no new pack")?;
    fs::create_dir_all(to.parent().ok_or("parent")?)?;
    fs::copy(&from, &to)?;
    env.ok(&["expire", "--retention-full", "1", "--gc-margin", "0"])?;
    assert!(to.exists(), "the repacked pack was deleted");
    assert!(env.run(&["verify"])?.status.success());
    restores(&env, &src, None, "out")?;
    Ok(())
}

/// Defect (adversarial pass, 2026-11-24): an expire killed after it wrote the new catalog
/// generation but before it updated the copy (and deleted the expired manifests) left every
/// later backup and expire refused ("a newer generation may be lost"), and the repair it
/// asked for listed the expired backups again. Manifests an older catalog lists were removed
/// by a newer one, not added by a lost one: the next backup goes on, the expired stay expired.
#[test]
fn an_expire_killed_before_the_catalog_copy_does_not_block_backups() -> TestResult {
    let env = Env::new("stream")?;
    for seed in 1..=3 {
        env.ok_stdin(&["backup", "--type", "full"], &bytes(seed, 100_000))?;
    }
    let labels = env.labels()?;
    let out = env
        .cmd(&["expire", "--retention-full", "1"])
        .env("CAIRN_FAILPOINT", "kill:catalog-before-copy")
        .output()?;
    assert!(!out.status.success(), "the fail point did not fire");
    assert_eq!(
        env.labels()?,
        labels[2..],
        "the new generation lists the one kept"
    );
    let v = env.run(&["verify"])?;
    assert!(v.status.success(), "{}", stdout(&v));
    env.ok_stdin(&["backup", "--type", "full"], &bytes(4, 100_000))?;
    env.ok(&["expire", "--retention-full", "2"])?;
    let now = env.labels()?;
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(
        !now.contains(&labels[0]) && !now.contains(&labels[1]),
        "{now:?}"
    );
    assert!(env.ok(&["restore", "--dest", "-"])? == bytes(4, 100_000));
    Ok(())
}

/// Defect (adversarial pass, 2026-11-24): a stray file in `index/` (not a segment's name)
/// stopped garbage collection until stanza-repair deleted it.
#[test]
fn a_stray_file_in_the_index_directory_does_not_stop_garbage_collection() -> TestResult {
    let env = Env::new("stream")?;
    env.ok_stdin(&["backup", "--type", "full"], &bytes(1, 200_000))?;
    env.ok_stdin(&["backup", "--type", "full"], &bytes(2, 200_000))?;
    let stray = env.stanza_dir().join("index/README");
    fs::write(&stray, b"notes")?;
    env.ok(&["expire", "--retention-full", "1", "--gc-margin", "0"])?;
    assert_eq!(files_under(&env.stanza_dir().join("pack")).len(), 1);
    assert!(stray.exists(), "expire removed a file it does not own");
    assert!(env.ok(&["restore", "--dest", "-"])? == bytes(2, 200_000));
    Ok(())
}

/// Finding (adversarial pass, 2026-11-24): `expire --dry-run` beside a running backup counted
/// the pack the backup was writing as garbage without a word. It says a command holds the lock.
#[test]
fn a_dry_run_beside_a_running_backup_says_what_it_cannot_see() -> TestResult {
    use std::io::Write;
    let env = Env::new("stream")?;
    env.ok_stdin(&["backup", "--type", "full"], &bytes(1, 100_000))?;
    let mut backup = env
        .cmd(&["backup", "--type", "full"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut input = backup.stdin.take().ok_or("stdin")?;
    input.write_all(&bytes(2, 100_000))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let out = loop {
        let out = env
            .cmd(&[
                "expire",
                "--retention-full",
                "1",
                "--dry-run",
                "--log-level",
                "warn",
            ])
            .output()?;
        if stderr(&out).contains("is locked by backup") || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    drop(input);
    backup.wait()?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is locked by backup"),
        "{}",
        stderr(&out)
    );
    Ok(())
}
