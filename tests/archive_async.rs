//! Asynchronous WAL archiving (`--archive-async`, issue 11) against real PostgreSQL 15
//! clusters: archive-push acknowledges a segment only once it is durable in the repository,
//! even when its processes are killed at random moments; `--archive-push-queue-max` drops WAL
//! only when the repository cannot be reached; archive-get prefetches what recovery asks for
//! next.

mod common;

use common::pg::{Cluster, Res, chown_postgres};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// `archive_command` with asynchronous archiving through `spool`, plus `extra` options.
fn async_command(c: &Cluster, spool: &Path, extra: &str) -> String {
    c.archive_command().replace(
        "archive-push %p",
        &format!(
            "--process-max 2 archive-push --archive-async --spool-path {} {extra} %p",
            spool.display()
        ),
    )
}

fn spool(c: &Cluster) -> Res<std::path::PathBuf> {
    let spool = c.dir.path().join("spool");
    fs::create_dir_all(&spool)?;
    chown_postgres(&spool)?;
    Ok(spool)
}

/// Fill and switch `n` segments; returns the last one's name.
fn make_segments(c: &Cluster, n: usize) -> Res<String> {
    let mut last = String::new();
    for _ in 0..n {
        c.sql("insert into t select g from generate_series(1, 20000) g")?;
        last = c.switch_wal()?;
    }
    Ok(last)
}

/// Whether the repository has `name` (archive-get exits 0).
fn archived(c: &Cluster, name: &str) -> Res<bool> {
    let dest = c.dir.path().join("probe");
    let out = c.cairn(&["archive-get", name, dest.to_str().ok_or("path")?])?;
    let _ = fs::remove_file(&dest);
    match out.status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => Err(format!(
            "archive-get {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into()),
    }
}

/// Every segment name of timeline 1 from the first to `last` (16 MiB segments).
fn segments_up_to(last: &str) -> Res<Vec<String>> {
    let n = u64::from_str_radix(&last[16..24], 16)? + (u64::from_str_radix(&last[8..16], 16)? << 8);
    Ok((1..=n)
        .map(|i| format!("00000001{:08X}{:08X}", i >> 8, i & 0xFF))
        .collect())
}

/// Background archive workers of the spool `spool` (their environment says what they are).
fn workers(spool: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let env = fs::read(e.path().join("environ")).unwrap_or_default();
        let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
        let has = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
        if has(&env, b"CAIRN_ASYNC_WORKER=1") && has(&cmd, spool.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn killed_at_random_moments_async_archiving_never_acknowledges_a_segment_it_did_not_store()
-> Res<()> {
    let mut c = Cluster::init(None)?;
    let spool = spool(&c)?;
    c.configure(&format!(
        "archive_command = '{}'",
        async_command(&c, &spool, "")
    ))?;
    c.cairn_ok(&["stanza-create", "--engine", "postgres"])?;
    c.start()?;
    c.sql("create table t (g int)")?;
    // Kill the background workers (what pushes and acknowledges) at random moments
    // meanwhile. (Not the calls themselves: PostgreSQL restarts its archiver, after 10 s,
    // when archive_command dies by a signal, and a dead call acknowledges nothing anyway.)
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let kills = std::sync::Arc::new(AtomicUsize::new(0));
    let killer = {
        let (stop, kills) = (stop.clone(), kills.clone());
        let spool = spool.display().to_string();
        std::thread::spawn(move || {
            let mut seed = 0x2545F4914F6CDD1Du64;
            while !stop.load(Ordering::Relaxed) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                std::thread::sleep(Duration::from_millis(100 + seed % 400));
                for pid in workers(&spool) {
                    if Command::new("kill")
                        .args(["-9", &pid])
                        .status()
                        .is_ok_and(|s| s.success())
                    {
                        kills.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    // Segments keep coming for a few seconds, and until a few workers were killed (workers
    // live briefly: a short run may kill none); whatever PostgreSQL has been told is archived
    // at any moment must be in the repository.
    let mut last = String::new();
    let mut told = String::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(6)
        || (kills.load(Ordering::Relaxed) < 3 && start.elapsed() < Duration::from_secs(60))
    {
        last = make_segments(&c, 1)?;
        let now = c.sql("select coalesce(last_archived_wal, '') from pg_stat_archiver")?;
        if !now.is_empty() && now != told {
            for name in segments_up_to(&now)? {
                assert!(
                    archived(&c, &name)?,
                    "{name} acknowledged but not in the repository"
                );
            }
            told = now;
        }
    }
    stop.store(true, Ordering::Relaxed);
    killer.join().map_err(|_| "killer thread")?;
    let kills = kills.load(Ordering::Relaxed);
    // Then archiving catches up, with no hole.
    c.wait_archived(&last)?;
    for name in segments_up_to(&last)? {
        assert!(archived(&c, &name)?, "{name} missing after catching up");
    }
    eprintln!("workers killed: {kills}; told archived during the kills: {told}");
    assert!(
        kills > 0 && !told.is_empty(),
        "the test killed nothing or nothing was archived meanwhile"
    );
    Ok(())
}

fn dirs_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        for e in fs::read_dir(&out[i]).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                out.push(e.path());
            }
        }
        i += 1;
    }
    out
}

fn set_modes(dirs: &[std::path::PathBuf], mode: u32) -> Res<()> {
    use std::os::unix::fs::PermissionsExt;
    for d in dirs {
        fs::set_permissions(d, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[test]
fn the_queue_max_drops_wal_only_while_the_repository_cannot_be_reached() -> Res<()> {
    let mut c = Cluster::init(None)?;
    let spool = spool(&c)?;
    c.configure(&format!(
        "archive_command = '{}'",
        async_command(&c, &spool, "--archive-push-queue-max 20MiB")
    ))?;
    c.cairn_ok(&["stanza-create", "--engine", "postgres"])?;
    c.start()?;
    c.sql("create table t (g int)")?;
    // Reachable: two segments, more than the queue max together, are archived, not dropped.
    let reachable = make_segments(&c, 2)?;
    c.wait_archived(&reachable)?;
    for name in segments_up_to(&reachable)? {
        assert!(
            archived(&c, &name)?,
            "{name} was dropped while the repository was reachable"
        );
    }
    // Unreachable (the archive directory cannot be written): three segments pile up past
    // the queue max and are dropped, so PostgreSQL goes on.
    let archive_dirs = dirs_under(&c.repo.join("stanza/main/archive"));
    set_modes(&archive_dirs, 0o500)?;
    let dropped = make_segments(&c, 3)?;
    let waited = c.wait_archived(&dropped);
    set_modes(&archive_dirs, 0o755)?;
    waited?;
    assert!(
        !archived(&c, &dropped)?,
        "{dropped} should have been dropped"
    );
    let log = fs::read_to_string(c.dir.path().join("postgres.log"))?;
    assert!(
        log.contains("DROPPED"),
        "no warning in the server's log:\n{log}"
    );
    // Reachable again: archived as before.
    let again = make_segments(&c, 1)?;
    c.wait_archived(&again)?;
    assert!(archived(&c, &again)?);
    Ok(())
}

#[test]
fn archive_get_prefetches_the_segments_recovery_asks_for_next() -> Res<()> {
    let mut c = Cluster::init(None)?;
    c.cairn_ok(&["stanza-create", "--engine", "postgres"])?;
    c.start()?;
    c.sql("create table t (g int)")?;
    let last = make_segments(&c, 6)?;
    c.wait_archived(&last)?;
    let names = segments_up_to(&last)?;
    let spool = spool(&c)?;
    let sp = spool.to_str().ok_or("path")?;
    let get = |name: &str| -> Res<Vec<u8>> {
        let dest = c.dir.path().join(format!("got-{name}"));
        let d = dest.to_str().ok_or("path")?;
        c.cairn_ok(&[
            "archive-get",
            "--archive-async",
            "--spool-path",
            sp,
            name,
            d,
        ])?;
        Ok(fs::read(&dest)?)
    };
    let sync_copy = |name: &str| -> Res<Vec<u8>> {
        let dest = c.dir.path().join(format!("sync-{name}"));
        c.cairn_ok(&["archive-get", name, dest.to_str().ok_or("path")?])?;
        Ok(fs::read(&dest)?)
    };
    assert!(get(&names[1])? == sync_copy(&names[1])?);
    // The worker fetches what follows into the spool.
    let inbox = fs::read_dir(spool_in(&spool)?)?
        .flatten()
        .next()
        .ok_or("no prefetch directory")?
        .path();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !names[2..].iter().all(|n| inbox.join(n).exists()) {
        assert!(
            Instant::now() < deadline,
            "not prefetched: {:?}",
            fs::read_dir(&inbox)?
                .flatten()
                .map(|e| e.file_name())
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The next call takes its segment from the spool: same bytes, and gone from the spool.
    for n in &names[2..] {
        assert!(get(n)? == sync_copy(n)?, "{n} differs");
    }
    assert!(
        !inbox.join(&names[2]).exists(),
        "a segment handed over stays in the spool"
    );
    // Past the end of the archive: exit 1, as restore_command needs.
    let beyond = format!("00000001{:08X}{:08X}", 0, names.len() + 5);
    let out = c.cairn(&[
        "archive-get",
        "--archive-async",
        "--spool-path",
        sp,
        &beyond,
        "/tmp/x",
    ])?;
    assert_eq!(out.status.code(), Some(1));
    Ok(())
}

/// The prefetch directory under the spool: `archive/main/<repository>/in`.
fn spool_in(spool: &Path) -> Res<std::path::PathBuf> {
    let repo = fs::read_dir(spool.join("archive/main"))?
        .flatten()
        .next()
        .ok_or("no repository directory in the spool")?;
    Ok(repo.path().join("in"))
}

/// A cluster archiving into two repositories through one spool (a migration from one to the
/// other): each repository gets every segment, none taken as stored for having reached the
/// other.
#[test]
fn two_repositories_sharing_a_spool_each_get_every_segment() -> Res<()> {
    let mut c = Cluster::init(None)?;
    let spool = spool(&c)?;
    let repo2 = c.dir.path().join("repo2");
    fs::create_dir_all(&repo2)?;
    chown_postgres(&repo2)?;
    let mut second = c.sibling(c.data.clone());
    second.repo_args = vec!["--repo".into(), repo2.display().to_string()];
    c.configure(&format!(
        "archive_command = '{} && {}'",
        async_command(&c, &spool, ""),
        async_command(&second, &spool, "")
    ))?;
    c.cairn_ok(&["stanza-create", "--engine", "postgres"])?;
    second.cairn_ok(&["stanza-create", "--engine", "postgres"])?;
    c.start()?;
    c.sql("create table t (g int)")?;
    let last = make_segments(&c, 6)?;
    c.wait_archived(&last)?;
    for name in segments_up_to(&last)? {
        assert!(archived(&c, &name)?, "{name} not in the first repository");
        assert!(
            archived(&second, &name)?,
            "{name} not in the second repository"
        );
    }
    Ok(())
}
