//! Issue 9, "Nothing silently wrong": failed producers and consumers of stream backups, files
//! that change while they are read, hard links, holes and special files, and restores steered
//! outside their destination by a crafted manifest. Each test is named after the item it pins.

mod common;

use cairn_repo::manifest::{Content, EntryKind, FileEntry, Manifest};
use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The manifest object of the newest backup, on local disk.
fn manifest_path(env: &Env) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let label = env.labels()?.pop().ok_or("no backup")?;
    Ok(env
        .repo
        .join("stanza")
        .join(&env.stanza)
        .join("backup")
        .join(label)
        .join("manifest"))
}

fn read_manifest(path: &Path) -> Result<Manifest, Box<dyn std::error::Error>> {
    Ok(Manifest::decode("manifest", &fs::read(path)?)?)
}

fn write_manifest(path: &Path, mut m: Manifest) -> TestResult {
    m.entries.sort_by(|a, b| a.path.cmp(&b.path));
    fs::write(path, m.encode())?;
    Ok(())
}

#[test]
fn item10_restore_never_follows_a_symlink_out_of_its_destination() -> TestResult {
    let env = Env::new("files")?;
    let src = env.path("src");
    fs::create_dir_all(src.join("d"))?;
    fs::write(src.join("d/f"), b"payload")?;
    let src_arg = src.to_str().ok_or("path")?;
    env.ok(&["backup", "--type", "full", "--source", src_arg])?;

    // Craft: a symlink `evil` -> an outside directory, and a file beneath it.
    let outside = env.path("outside");
    fs::create_dir(&outside)?;
    let mpath = manifest_path(&env)?;
    let mut m = read_manifest(&mpath)?;
    let f = m
        .entries
        .iter()
        .find(|e| e.path == b"d/f")
        .cloned()
        .ok_or("no d/f in the manifest")?;
    assert!(matches!(f.content, Content::Chunks(_)));
    m.entries.push(FileEntry {
        path: b"evil".to_vec(),
        kind: EntryKind::Symlink,
        link_target: Some(outside.to_str().ok_or("path")?.as_bytes().to_vec()),
        content: Content::None,
        size: 0,
        ..f.clone()
    });
    m.entries.push(FileEntry {
        path: b"evil/pwned".to_vec(),
        ..f
    });
    write_manifest(&mpath, m)?;

    let dest = env.path("dest");
    let out = env.run(&["restore", "--dest", dest.to_str().ok_or("path")?])?;
    assert!(
        !out.status.success(),
        "restore of a crafted manifest succeeded"
    );
    assert!(
        stderr(&out).contains("beneath a symlink"),
        "{}",
        stderr(&out)
    );
    assert!(
        !outside.join("pwned").exists(),
        "restore wrote outside its destination"
    );
    assert_eq!(fs::read_dir(&outside)?.count(), 0);

    let out = env.run(&["verify"])?;
    assert_eq!(out.status.code(), Some(4), "verify: {}", stderr(&out));
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(report.contains("evil/pwned"), "{report}");
    Ok(())
}

// ---- item 3: producers and consumers of stream backups ----

/// A started PostgreSQL 15 cluster with a table big enough that a dump spans many chunks.
fn dump_cluster() -> Result<common::pg::Cluster, Box<dyn std::error::Error>> {
    let mut c = common::pg::Cluster::init(None)?;
    c.start()?;
    c.sql(
        "CREATE TABLE item3 AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS v \
         FROM generate_series(1, 200000) g",
    )?;
    Ok(c)
}

fn pg_dump_args(c: &common::pg::Cluster) -> Vec<String> {
    vec![
        format!("{}/pg_dump", common::pg::PG_BIN),
        "-h".into(),
        c.sock.display().to_string(),
        "-p".into(),
        "5432".into(),
        "-U".into(),
        "postgres".into(),
        "-Fc".into(),
        "-Z0".into(),
        "postgres".into(),
    ]
}

fn run_with(env: &Env, args: &[&str], command: &[String]) -> std::io::Result<std::process::Output> {
    let mut c = env.cmd(args);
    c.arg("--").args(command);
    c.stdin(std::process::Stdio::null()).output()
}

fn write_script(path: &Path, body: &str) -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, format!("#!/bin/bash\n{body}\n"))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

#[test]
fn item3_failed_killed_missing_or_empty_producers_are_not_recorded_as_backups() -> TestResult {
    let cluster = dump_cluster()?;
    let env = Env::new("stream")?;
    let dump = pg_dump_args(&cluster);

    // pg_dump cut off mid-stream (SIGPIPE after 200 kB), then its wrapper killed.
    let wrapper = env.path("dump-then-die.sh");
    let quoted: Vec<String> = dump.iter().map(|a| format!("'{a}'")).collect();
    write_script(
        &wrapper,
        &format!(
            "echo 'wrapper: dump starting' >&2\n{} | head -c 200000\nkill -9 $$",
            quoted.join(" ")
        ),
    )?;
    let out = run_with(&env, &["backup"], &[wrapper.display().to_string()])?;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("killed by signal 9"), "{err}");
    assert!(err.contains("wrapper: dump starting"), "{err}");
    assert!(env.labels()?.is_empty(), "a killed dump was listed");

    // A producer that does not exist.
    let out = run_with(&env, &["backup"], &["/nonexistent/pg_dump".into()])?;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/nonexistent/pg_dump"),
        "{}",
        stderr(&out)
    );
    assert!(env.labels()?.is_empty());

    // A producer that fails with a message.
    let out = run_with(
        &env,
        &["backup"],
        &[
            "sh".into(),
            "-c".into(),
            "echo partial; echo 'no such database' >&2; exit 1".into(),
        ],
    )?;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("exited with status 1"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("no such database"),
        "{}",
        stderr(&out)
    );
    assert!(env.labels()?.is_empty());

    // Empty streams: from a command and from stdin, refused unless --allow-empty.
    let out = run_with(&env, &["backup"], &["true".into()])?;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("empty"), "{}", stderr(&out));
    let out = env.run(&["backup"])?; // stdin is /dev/null
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("--allow-empty"), "{}", stderr(&out));
    assert!(env.labels()?.is_empty(), "an empty stream was listed");
    let out = run_with(&env, &["backup", "--allow-empty"], &["true".into()])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.labels()?.len(), 1);

    // The lock was released every time: a real dump now succeeds and restores.
    let out = run_with(&env, &["backup"], &dump)?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.labels()?.len(), 2);
    let sql = env.path("restored.sql");
    let to_sql = vec![
        format!("{}/pg_restore", common::pg::PG_BIN),
        "-f".into(),
        sql.display().to_string(),
    ];
    let out = run_with(&env, &["restore"], &to_sql)?;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = fs::read_to_string(&sql)?;
    assert!(text.contains("CREATE TABLE public.item3"), "{text:.300}");
    assert!(text.contains("COPY public.item3"), "{text:.300}");
    Ok(())
}

#[test]
fn item3_a_failing_or_early_exiting_consumer_fails_the_restore() -> TestResult {
    let cluster = dump_cluster()?;
    let env = Env::new("stream")?;
    let out = run_with(&env, &["backup"], &pg_dump_args(&cluster))?;
    assert!(out.status.success(), "{}", stderr(&out));

    // pg_restore into a database that does not exist.
    let restore = vec![
        format!("{}/pg_restore", common::pg::PG_BIN),
        "-h".into(),
        cluster.sock.display().to_string(),
        "-p".into(),
        "5432".into(),
        "-U".into(),
        "postgres".into(),
        "-d".into(),
        "no_such_db".into(),
    ];
    let out = run_with(&env, &["restore"], &restore)?;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("no_such_db"), "{}", stderr(&out));

    // A consumer that reads a little and exits 0: a broken pipe, but not a success.
    let out = run_with(
        &env,
        &["restore"],
        &["head".into(), "-c".into(), "10".into()],
    )?;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("exited before reading the whole stream"),
        "{}",
        stderr(&out)
    );

    // And the real thing works: the table comes back.
    cluster.sql("CREATE DATABASE item3_copy")?;
    let mut good = restore.clone();
    let last = good.len() - 1;
    good[last] = "item3_copy".into();
    let out = run_with(&env, &["restore"], &good)?;
    assert!(out.status.success(), "{}", stderr(&out));
    let n = cluster.sql("SELECT count(*) FROM item3")?;
    assert_eq!(n, "200000");
    Ok(())
}

#[test]
fn item3_sigterm_during_a_stream_backup_kills_the_producer_and_lists_nothing() -> TestResult {
    let env = Env::new("stream")?;
    let pidfile = env.path("producer.pid");
    let script = env.path("slow-producer.sh");
    write_script(
        &script,
        &format!(
            "echo $$ > '{}'\nhead -c 300000 /dev/urandom\nexec sleep 1000",
            pidfile.display()
        ),
    )?;
    let child = env
        .cmd(&["backup", "--", script.to_str().ok_or("path")?])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let pid: i32 = loop {
        if let Some(p) = fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "producer never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SAFETY: sending a signal to the cairn child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output()?;
    let err = stderr(&out);
    // Defect: with its own signal handlers in place, cairn exited 3 here instead of 143.
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(err.contains("SIGTERM"), "{err}");
    // The producer is gone (reaped by cairn, so not even a zombie).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the producer {pid} outlived cairn"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(env.labels()?.is_empty(), "an interrupted backup was listed");
    // The lock is released: the next backup runs.
    let out = run_with(&env, &["backup"], &["echo".into(), "data".into()])?;
    assert!(out.status.success(), "{}", stderr(&out));
    Ok(())
}

// ---- item 9: files that change while read, hard links, holes, special files ----

#[test]
fn item9_backup_of_a_file_as_source_is_refused_before_it_starts() -> TestResult {
    let env = Env::new("files")?;
    let file = env.path("not-a-dir");
    fs::write(&file, b"a regular file")?;
    // At info level, so that a "backup ... started" line would show.
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .env_remove("CAIRN_LOG_LEVEL")
        .arg("--repo")
        .arg(&env.repo)
        .args([
            "--stanza",
            &env.stanza,
            "--log-level",
            "info",
            "backup",
            "--source",
        ])
        .arg(&file)
        .stdin(std::process::Stdio::null())
        .output()?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&file.display().to_string()) && err.contains("--source must be a directory"),
        "{err}"
    );
    assert!(
        !err.contains("started"),
        "the backup started before refusing: {err}"
    );
    assert!(env.labels()?.is_empty());
    Ok(())
}

#[test]
fn item9_a_file_rewritten_during_the_backup_is_reread_then_warned_and_marked() -> TestResult {
    use std::os::unix::fs::FileExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let env = Env::new("files")?;
    let src = env.path("src");
    fs::create_dir_all(&src)?;
    fs::write(src.join("calm"), b"never changes")?;
    let busy = src.join("busy");
    fs::write(&busy, bytes(9, 48 << 20))?;

    // A writer that never stops rewriting the file while cairn runs: every read of it (and
    // every re-read) overlaps writes, so cairn must give up after its bounded re-reads.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, busy) = (stop.clone(), busy.clone());
        std::thread::spawn(move || -> std::io::Result<u64> {
            let f = fs::OpenOptions::new().write(true).open(&busy)?;
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let off = (n * 7_919 * 4096) % (48 << 20);
                f.write_all_at(&n.to_le_bytes().repeat(512), off)?;
                n += 1;
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            Ok(n)
        })
    };
    let out = env.run(&[
        "--process-max",
        "1",
        "backup",
        "--source",
        src.to_str().ok_or("path")?,
    ]);
    stop.store(true, Ordering::SeqCst);
    let writes = writer.join().map_err(|_| "writer panicked")??;
    let out = out?;
    assert!(writes > 0);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("busy") && err.contains("changed while it was read"),
        "{err}"
    );
    assert!(!err.contains("calm"), "{err}");

    // Listed, and the manifest marks the file (and only it).
    assert_eq!(env.labels()?.len(), 1);
    let m = read_manifest(&manifest_path(&env)?)?;
    let marked: Vec<String> = m
        .entries
        .iter()
        .filter(|e| e.meta.contains_key("changed-during-backup"))
        .map(|e| e.display_path())
        .collect();
    assert_eq!(marked, vec!["busy".to_string()]);
    assert_eq!(
        m.record
            .meta
            .get("files-changed-during-backup")
            .map(String::as_str),
        Some("1")
    );
    let text = String::from_utf8(env.ok(&["info"])?)?;
    assert!(
        text.contains("1 file(s) changed while they were read"),
        "{text}"
    );

    // Once it is quiet, the next backup is clean.
    let out = env.run(&["backup", "--source", src.to_str().ok_or("path")?])?;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    Ok(())
}

#[test]
fn item9_sparse_files_come_back_sparse_with_their_length() -> TestResult {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let env = Env::new("files")?;
    let src = env.path("src");
    fs::create_dir_all(&src)?;
    let sparse = src.join("sparse.img");
    let f = fs::File::create(&sparse)?;
    f.write_all_at(&bytes(1, 4096), 0)?;
    f.write_all_at(&bytes(2, 4096), 32 << 20)?;
    f.set_len(64 << 20)?; // ends in a hole
    drop(f);
    let src_blocks = fs::metadata(&sparse)?.blocks();
    env.ok(&["backup", "--source", src.to_str().ok_or("path")?])?;
    let dest = env.path("dest");
    env.ok(&["restore", "--dest", dest.to_str().ok_or("path")?])?;
    let back = dest.join("sparse.img");
    let m = fs::metadata(&back)?;
    assert_eq!(m.len(), 64 << 20, "length of a file ending in a hole");
    assert_eq!(fs::read(&back)?, fs::read(&sparse)?);
    // Allocated: about the source's two data blocks, far from 64 MiB.
    assert!(
        m.blocks() * 512 < 1 << 20,
        "restored file allocates {} bytes (source {})",
        m.blocks() * 512,
        src_blocks * 512
    );
    Ok(())
}

#[test]
fn item9_hard_links_fifos_devices_survive_and_sockets_are_warned() -> TestResult {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let env = Env::new("files")?;
    let src = env.path("src");
    fs::create_dir_all(src.join("sub"))?;
    fs::write(src.join("a"), bytes(3, 100_000))?;
    fs::hard_link(src.join("a"), src.join("sub/b"))?;
    fs::hard_link(src.join("a"), src.join("z"))?;
    let mk = |p: &Path, mode: u32, dev: u64| -> TestResult {
        let c = std::ffi::CString::new(p.to_str().ok_or("path")?)?;
        // SAFETY: c is a valid NUL-terminated path.
        if unsafe { libc::mknod(c.as_ptr(), mode, dev as libc::dev_t) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(())
    };
    mk(&src.join("pipe"), libc::S_IFIFO | 0o640, 0)?;
    let as_root = unsafe { libc::geteuid() } == 0;
    if as_root {
        mk(
            &src.join("null"),
            libc::S_IFCHR | 0o666,
            libc::makedev(1, 3),
        )?;
    }
    let _sock = std::os::unix::net::UnixListener::bind(src.join("sock"))?;
    let out = env.run(&["backup", "--source", src.to_str().ok_or("path")?])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("socket") && stderr(&out).contains("sock"),
        "a skipped socket is warned about: {}",
        stderr(&out)
    );
    let m = read_manifest(&manifest_path(&env)?)?;
    let kind = |p: &[u8]| m.entries.iter().find(|e| e.path == p).map(|e| e.kind);
    assert_eq!(kind(b"a"), Some(EntryKind::File));
    assert_eq!(kind(b"sub/b"), Some(EntryKind::HardLink));
    assert_eq!(kind(b"pipe"), Some(EntryKind::Fifo));
    assert_eq!(kind(b"sock"), None);

    let dest = env.path("dest");
    env.ok(&["restore", "--dest", dest.to_str().ok_or("path")?])?;
    let a = fs::metadata(dest.join("a"))?;
    assert_eq!(a.nlink(), 3, "hard links restored as links");
    assert_eq!(fs::metadata(dest.join("sub/b"))?.ino(), a.ino());
    assert_eq!(fs::metadata(dest.join("z"))?.ino(), a.ino());
    assert_eq!(fs::read(dest.join("z"))?, bytes(3, 100_000));
    let p = fs::symlink_metadata(dest.join("pipe"))?;
    assert!(p.file_type().is_fifo());
    assert_eq!(p.mode() & 0o7777, 0o640);
    if as_root {
        let n = fs::symlink_metadata(dest.join("null"))?;
        assert!(n.file_type().is_char_device());
        assert_eq!(n.rdev(), libc::makedev(1, 3));
    }
    assert!(!dest.join("sock").exists());
    Ok(())
}
