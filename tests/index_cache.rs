//! The local index cache (format.md, "The local index cache") is not trusted: a cached file
//! that is not the segment it is named after is fetched again, never looked up in or merged
//! into the repository; a cache removed while a command runs is made again.

mod common;

use common::*;
use std::fs;
use std::path::PathBuf;

fn cached_segments(env: &Env) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = files_under(&env.path("cache"))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n.len() == 64))
        .collect();
    all.sort();
    all
}

/// Defect (adversarial pass): a cached segment file holding another segment's bytes was used
/// as is; the next backup deduplicated against it and its compaction merged it into the
/// repository, deleting the real segments, so a listed backup could no longer be restored.
#[test]
fn a_cached_segment_swapped_for_another_is_fetched_again_not_merged() -> TestResult {
    let env = Env::new("stream")?;
    // Three backups of different data: three segments, one short of a compaction.
    for seed in 1..=3 {
        env.ok_stdin(&["backup", "--type", "full"], &bytes(seed, 300_000))?;
    }
    env.ok(&["info"])?;
    let cached = cached_segments(&env);
    assert_eq!(cached.len(), 3, "{cached:?}");
    // Every cached file now holds the first one's bytes.
    let first = fs::read(&cached[0])?;
    for c in &cached[1..] {
        fs::write(c, &first)?;
    }
    // The fourth backup reads the cache, then merges the four segments.
    env.ok_stdin(&["backup", "--type", "full"], &bytes(4, 300_000))?;
    fs::remove_dir_all(env.path("cache"))?;
    let v = env.run(&["verify"])?;
    assert!(v.status.success(), "{}", stdout(&v));
    for (i, label) in env.labels()?.iter().enumerate() {
        let out = env.ok(&["restore", "--set", label, "--dest", "-"])?;
        assert!(out == bytes(i as u64 + 1, 300_000), "{label}");
    }
    Ok(())
}

/// Crafted bytes with a valid CRC in a cached file (an extra record pointing a new chunk into
/// an existing pack): the backup must not take the chunk as stored.
#[test]
fn a_crafted_cached_segment_does_not_make_a_backup_skip_new_data() -> TestResult {
    let env = Env::new("stream")?;
    env.ok_stdin(&["backup", "--type", "full"], &bytes(1, 200_000))?;
    env.ok(&["info"])?;
    let cached = cached_segments(&env);
    assert_eq!(cached.len(), 1);
    // Rewrite the cached segment as a valid segment that also claims the chunk of the data
    // the next backup stores (one chunk: it is under the chunker's minimum).
    let new_data = bytes(2, 200_000);
    let bytes_in = fs::read(&cached[0])?;
    let mut seg = cairn_repo::index::Segment::decode("cached", &bytes_in)?;
    let first = seg.entries[0].1;
    seg.entries
        .push((cairn_repo::ChunkId::of(&new_data), first));
    seg.entries.sort_by_key(|e| e.0);
    fs::write(&cached[0], seg.encode())?;
    env.ok_stdin(&["backup", "--type", "full"], &new_data)?;
    fs::remove_dir_all(env.path("cache"))?;
    let out = env.ok(&["restore", "--dest", "-"])?;
    assert!(out == new_data, "the second backup's data was not stored");
    assert!(env.run(&["verify"])?.status.success());
    Ok(())
}

/// The cache may be removed at any moment (a tmp cleaner, an operator): a fetch that finds
/// its directory gone makes it again, and the command goes on.
#[test]
fn a_cache_removed_while_a_segment_is_fetched_is_made_again() -> TestResult {
    let env = Env::new("stream")?;
    env.ok_stdin(&["backup", "--type", "full"], &bytes(1, 300_000))?;
    env.ok_stdin(&["backup", "--type", "full"], &bytes(2, 300_000))?;
    fs::remove_dir_all(env.path("cache"))?;
    let out = env
        .cmd(&["restore", "--dest", "-"])
        .env("CAIRN_FAILPOINT", "act:index-cache-fetch")
        .stdin(std::process::Stdio::null())
        .output()?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == bytes(2, 300_000));
    assert_eq!(cached_segments(&env).len(), 2);
    Ok(())
}
