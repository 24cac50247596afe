//! `repo-ls` and `repo-get`: the repository as a pgBackRest repository looks, read the way
//! check_pgbackrest reads one (`--stanza`, `--repo=1`, `--config`, `--output=json`,
//! `--log-level-console=error`), against a real PostgreSQL 15 cluster (full and incr backups,
//! archived WAL, a timeline switch) and against a `files` stanza without PostgreSQL.

mod common;

use common::pg::{Cluster, Res, as_postgres, cairn_bin};
use serde_json::Value;
use std::io::Read;
use std::process::{Output, Stdio};

/// cairn as postgres with only the options given (no `--repo`: the test names it).
fn bare(c: &Cluster, args: &[&str]) -> Res<Output> {
    Ok(as_postgres(&cairn_bin().display().to_string())
        .envs(c.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args(args)
        .output()?)
}

fn json(out: &Output) -> Res<Value> {
    if !out.status.success() {
        return Err(format!(
            "cairn failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn ls(c: &Cluster, args: &[&str]) -> Res<Value> {
    let mut all = vec!["repo-ls", "--output", "json"];
    all.extend_from_slice(args);
    json(&c.cairn(&all)?)
}

fn names(v: &Value) -> Vec<String> {
    v.as_object()
        .map(|o| o.keys().filter(|k| *k != ".").cloned().collect())
        .unwrap_or_default()
}

fn failed_with(out: &Output, code: i32, words: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(err.contains(words), "expected '{words}' in: {err}");
}

#[test]
fn a_postgres_stanza_looks_like_a_pgbackrest_repository() -> Res<()> {
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let mut c = Cluster::init(None)?;
    c.cairn_ok(&["stanza-create", "--engine", "postgres"])?;
    // Old enough to be inherited by the incr backup (format.md, "Resolving ... Inherit").
    common::set_mtime(&c.data.join("PG_VERSION"), 1_000_000_000, 0);
    c.start()?;
    c.sql("create table t as select g from generate_series(1, 1000) g")?;
    let ts = c.dir.path().join("ts");
    std::fs::create_dir_all(&ts)?;
    common::pg::chown_postgres(&ts)?;
    c.sql(&format!("create tablespace ts location '{}'", ts.display()))?;
    c.sql("create table in_ts tablespace ts as select 1 as x")?;
    c.cairn_ok(&["backup", "--type", "full"])?;
    c.sql("insert into t select g from generate_series(1, 1000) g")?;
    c.cairn_ok(&["backup", "--type", "incr"])?;
    let last = c.switch_wal()?;
    c.wait_archived(&last)?;

    // A timeline switch: the same cluster back as a standby of its own archive, promoted.
    c.stop()?;
    std::fs::write(c.data.join("standby.signal"), "")?;
    common::pg::chown_postgres(&c.data.join("standby.signal"))?;
    c.set(&format!(
        "restore_command = '{} {} --stanza {} --log-level warn archive-get %f %p'",
        cairn_bin().display(),
        c.repo_args.join(" "),
        c.stanza
    ))?;
    c.start()?;
    c.sql("select pg_promote()")?;
    c.wait_promoted()?;
    let on_tl2 = c.switch_wal()?;
    assert!(on_tl2.starts_with("00000002"), "{on_tl2}");
    c.wait_archived(&on_tl2)?;

    let info: Value = serde_json::from_slice(&c.cairn_ok(&["info", "--output", "json"])?.stdout)?;
    let id = info[0]["archive"][0]["id"]
        .as_str()
        .ok_or("no archive id")?;
    assert_eq!(id, "15-1");
    let labels = common::backup_labels(&info);
    assert_eq!(labels.len(), 2, "{info:#}");

    // The top, exactly as pgBackRest renders it.
    let top = c.cairn_ok(&["repo-ls", "--output", "json"])?;
    assert_eq!(
        String::from_utf8_lossy(&top.stdout),
        "{\".\":{\"type\":\"path\"},\"archive\":{\"type\":\"path\"},\"backup\":{\"type\":\"path\"}}\n"
    );
    assert_eq!(names(&ls(&c, &["archive"])?), ["main"]);
    assert_eq!(names(&ls(&c, &["archive/main"])?), [id]);

    // The archive: segments under their first 16 hex digits, plain size, the object's time.
    let now = started + 600;
    let archive = ls(&c, &[&format!("archive/main/{id}"), "--recurse"])?;
    let seg = regex_like_segment;
    let mut segments = Vec::new();
    for (name, e) in archive.as_object().ok_or("not an object")? {
        if let Some((dir, file)) = name.split_once('/')
            && seg(file)
        {
            assert_eq!(dir, &file[..16], "{name}");
            assert_eq!(e["type"], "file", "{name}");
            assert_eq!(e["size"], 16_777_216, "{name}");
            let t = e["time"].as_i64().ok_or("no time")?;
            assert!(t >= started - 5 && t <= now, "{name}: time {t}");
            segments.push(file.to_string());
        }
    }
    let min = info[0]["archive"][0]["min"].as_str().ok_or("no min")?;
    let max = info[0]["archive"][0]["max"].as_str().ok_or("no max")?;
    assert!(segments.iter().any(|s| s == min) && segments.iter().any(|s| s == max));
    assert!(segments.contains(&on_tl2), "{archive:#}");
    assert!(
        archive["00000002.history"]["type"] == "file",
        "the history file directly under the archive id: {archive:#}"
    );
    assert!(
        names(&archive).iter().any(|n| n.ends_with(".backup")),
        "{archive:#}"
    );

    // repo-get of a segment: exactly what archive-get hands PostgreSQL.
    let wal = &segments[0];
    let path = format!("archive/main/{id}/{}/{wal}", &wal[..16]);
    let got = c.cairn_ok(&["repo-get", &path])?.stdout;
    let dest = c.dir.path().join("fetched");
    c.cairn_ok(&["archive-get", wal, &dest.display().to_string()])?;
    assert_eq!(got.len(), 16_777_216);
    assert!(
        got == std::fs::read(&dest)?,
        "repo-get and archive-get differ"
    );
    if let Ok(on_disk) = std::fs::read(c.data.join("pg_wal").join(wal)) {
        assert!(got == on_disk, "repo-get differs from pg_wal/{wal}");
    }
    let history = c
        .cairn_ok(&["repo-get", &format!("archive/main/{id}/00000002.history")])?
        .stdout;
    assert!(
        history.starts_with(b"1\t"),
        "{:?}",
        String::from_utf8_lossy(&history)
    );
    assert_eq!(archive["00000002.history"]["size"], history.len());

    // Backups: one path per label, as info lists them; the incr holds what it stored.
    let backups = ls(&c, &["backup/main"])?;
    assert_eq!(names(&backups), labels);
    for l in &labels {
        assert_eq!(backups[l]["type"], "path");
    }
    let (full, incr) = (&labels[0], &labels[1]);
    let version = c.cairn_ok(&[
        "repo-get",
        &format!("backup/main/{full}/pg_data/PG_VERSION"),
    ])?;
    assert_eq!(version.stdout, b"15\n");
    let full_tree = ls(&c, &[&format!("backup/main/{full}"), "--recurse"])?;
    assert_eq!(full_tree["pg_data"]["type"], "path");
    assert_eq!(full_tree["pg_data/PG_VERSION"]["size"], 3);
    assert_eq!(full_tree["pg_data/PG_VERSION"]["time"], 1_000_000_000);
    assert_eq!(full_tree["pg_data/base"]["type"], "path");
    // A tablespace as pgBackRest stores one: its files beside pg_data, a link to them in it.
    let oid = c.sql("select oid from pg_tablespace where spcname = 'ts'")?;
    assert_eq!(
        full_tree[&format!("pg_data/pg_tblspc/{oid}")],
        serde_json::json!({"type": "link", "destination": format!("../../pg_tblspc/{oid}")})
    );
    assert_eq!(full_tree[&format!("pg_tblspc/{oid}")]["type"], "path");
    let in_ts = c.sql("select pg_relation_filepath('in_ts')")?;
    assert!(in_ts.starts_with(&format!("pg_tblspc/{oid}/")), "{in_ts}");
    assert_eq!(full_tree[&in_ts]["size"], 8192, "{full_tree:#}");
    let page = c.cairn_ok(&["repo-get", &format!("backup/main/{full}/{in_ts}")])?;
    assert_eq!(page.stdout.len(), 8192);
    // Listed and read through the link in pg_data, as a file system would.
    let via_link = ls(
        &c,
        &[&format!("backup/main/{full}/pg_data/pg_tblspc/{oid}")],
    )?;
    assert!(
        names(&via_link).iter().any(|n| n.starts_with("PG_15_")),
        "{via_link}"
    );
    assert_eq!(
        names(&via_link),
        names(&ls(&c, &[&format!("backup/main/{full}/pg_tblspc/{oid}")])?)
    );
    let page2 = c.cairn_ok(&["repo-get", &format!("backup/main/{full}/pg_data/{in_ts}")])?;
    assert_eq!(page2.stdout, page.stdout);
    let incr_tree = ls(&c, &[&format!("backup/main/{incr}/pg_data"), "--recurse"])?;
    assert!(
        incr_tree.get("PG_VERSION").is_none(),
        "inherited, not stored by the incr"
    );
    assert_eq!(incr_tree["base"]["type"], "path");
    let rel = c.sql("select pg_relation_filepath('t')")?;
    assert_eq!(
        incr_tree[&rel]["type"], "file",
        "{rel} changed: {incr_tree:#}"
    );
    // A relation file, from its pages, is what the cluster had at backup time: its size.
    let table = c.cairn_ok(&["repo-get", &format!("backup/main/{incr}/pg_data/{rel}")])?;
    assert_eq!(
        Some(table.stdout.len() as u64),
        incr_tree[&rel]["size"].as_u64()
    );

    // --filter, --sort, text.
    let only = ls(
        &c,
        &[
            &format!("archive/main/{id}"),
            "--recurse",
            "--filter",
            "history$",
        ],
    )?;
    assert_eq!(names(&only), ["00000002.history"]);
    assert!(only.get(".").is_none(), "'.' does not match the filter");
    let text = |args: &[&str]| -> Res<Vec<String>> {
        let out = c.cairn_ok(args)?;
        Ok(String::from_utf8(out.stdout)?
            .lines()
            .map(String::from)
            .collect())
    };
    assert_eq!(text(&["repo-ls", "backup/main"])?, labels);
    let mut desc = labels.clone();
    desc.reverse();
    assert_eq!(text(&["repo-ls", "backup/main", "--sort", "desc"])?, desc);
    let abs = format!("{}/backup/main", c.repo.display());
    assert_eq!(text(&["repo-ls", &abs])?, labels);

    // check_pgbackrest's way: pgBackRest's config file and --repo=1.
    let conf = c.dir.path().join("pgbackrest.conf");
    std::fs::write(
        &conf,
        format!(
            "[global]\nrepo1-path={}\n\n[main]\npg1-path={}\n",
            c.repo.display(),
            c.data.display()
        ),
    )?;
    let conf_arg = format!("--config={}", conf.display());
    let pgbr = |extra: &[&str]| -> Res<Output> {
        let mut args = vec!["--stanza=main", "--log-level-console=error", &conf_arg];
        args.extend_from_slice(extra);
        bare(&c, &args)
    };
    let via_index = json(&pgbr(&[
        "repo-ls",
        "backup/main",
        "--output=json",
        "--repo=1",
    ])?)?;
    assert_eq!(names(&via_index), labels);
    let info1 = json(&pgbr(&["info", "--output=json", "--repo=1"])?)?;
    assert_eq!(info1[0]["archive"][0]["id"], id);
    failed_with(
        &pgbr(&["repo-ls", "backup/main", "--repo=2"])?,
        2,
        "one repository (repo1)",
    );
    failed_with(&pgbr(&["info", "--repo=2"])?, 2, "one repository (repo1)");

    // Mistakes: a missing file, a path outside the repository, //, another stanza, a path.
    let missing = format!("archive/main/{id}/0000000100000000/0000000100000000000000FF");
    failed_with(&c.cairn(&["repo-get", &missing])?, 1, &missing);
    let quiet = c.cairn(&["repo-get", &missing, "--ignore-missing"])?;
    assert_eq!((quiet.status.code(), quiet.stderr.len()), (Some(1), 0));
    let nothing = c.cairn_ok(&["repo-ls", "no/such/path", "--output", "json"])?;
    assert_eq!(
        String::from_utf8_lossy(&nothing.stdout),
        "{\".\":{\"type\":\"path\"}}\n"
    );
    failed_with(&c.cairn(&["repo-ls", "/etc"])?, 2, "is not in base path");
    failed_with(
        &c.cairn(&["repo-get", "/etc/passwd"])?,
        2,
        "is not in base path",
    );
    failed_with(
        &c.cairn(&["repo-ls", "backup//main"])?,
        2,
        "cannot contain //",
    );
    let other = bare(
        &c,
        &[
            "--repo",
            &c.repo.display().to_string(),
            "--stanza",
            "other",
            "repo-get",
            &path,
        ],
    )?;
    failed_with(&other, 2, "doesn't match the given path");
    failed_with(
        &c.cairn(&["repo-get", "backup/main"])?,
        2,
        "is a path, not a file",
    );

    // A damaged WAL object is an error, never wrong bytes.
    let object = c
        .repo
        .join("stanza/main/archive")
        .read_dir()?
        .next()
        .ok_or("no archive id")??
        .path()
        .join("00000001")
        .join(wal);
    let len = std::fs::metadata(&object)?.len();
    common::flip_byte(&object, (len / 2) as usize)?;
    let damaged = c.cairn(&["repo-get", &path])?;
    assert_ne!(damaged.status.code(), Some(0));
    assert!(damaged.stdout.is_empty(), "no bytes of a damaged file");
    assert!(String::from_utf8_lossy(&damaged.stderr).contains("damaged"));
    Ok(())
}

/// `[0-9A-F]{24}`
fn regex_like_segment(name: &str) -> bool {
    name.len() == 24
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

#[test]
fn a_files_stanza_lists_its_entries_under_the_label() -> common::TestResult {
    let env = common::Env::new("files")?;
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub"))?;
    std::fs::write(src.join("small"), b"hello\n")?;
    let big = common::bytes(7, 12 << 20);
    std::fs::write(src.join("sub/big"), &big)?;
    env.ok(&["backup", "--source", &src.display().to_string()])?;
    let label = env.labels()?.remove(0);
    let out: Value = serde_json::from_slice(&env.ok(&[
        "repo-ls",
        &format!("backup/main/{label}"),
        "--recurse",
        "--output",
        "json",
    ])?)?;
    assert_eq!(names(&out), ["small", "sub", "sub/big"]);
    assert_eq!(out["sub/big"]["size"], 12 << 20);
    let top: Value = serde_json::from_slice(&env.ok(&["repo-ls", "archive", "--output", "json"])?)?;
    assert!(names(&top).is_empty(), "no WAL archive for a files stanza");
    let got = env.ok(&["repo-get", &format!("backup/main/{label}/sub/big")])?;
    assert!(got == big, "repo-get of a chunked file");

    // Piped into something that stops reading: no panic, no error, exit 0.
    let mut child = env
        .cmd(&["repo-get", &format!("backup/main/{label}/sub/big")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut head = [0u8; 10];
    child
        .stdout
        .take()
        .ok_or("no stdout")?
        .read_exact(&mut head)?;
    let done = child.wait_with_output()?;
    assert_eq!(&head, &big[..10]);
    assert_eq!(done.status.code(), Some(0), "{}", common::stderr(&done));
    assert!(done.stderr.is_empty(), "{}", common::stderr(&done));
    Ok(())
}

/// Defects (adversarial pass, 2026-11-25): `--repo=1` on the command line lost to a `repo=2`
/// in the configuration file (refused), `--repo=1` with CAIRN_REPO naming the repository said
/// none was configured, and a refused index was said to come from `--repo` when CAIRN_REPO or
/// PGBACKREST_REPO gave it.
#[test]
fn defect_repo_1_lost_to_an_index_in_the_file_and_messages_named_the_wrong_source()
-> common::TestResult {
    let env = common::Env::new("files")?;
    let src = env.path("src");
    std::fs::create_dir_all(&src)?;
    std::fs::write(src.join("f"), b"x")?;
    env.ok(&["backup", "--source", src.to_str().ok_or("path")?])?;
    let conf = env.path("pgbackrest.conf");
    std::fs::write(
        &conf,
        format!(
            "[global]\nrepo1-path={}\n\n[global:info]\nrepo=2\n",
            env.repo.display()
        ),
    )?;
    let conf_arg = format!("--config={}", conf.display());
    let run = |vars: &[(&str, &str)], args: &[&str]| -> std::io::Result<Output> {
        let mut c = std::process::Command::new(cairn_bin());
        for (k, _) in std::env::vars() {
            if k.starts_with("CAIRN_") || k.starts_with("PGBACKREST_") {
                c.env_remove(k);
            }
        }
        c.env("CAIRN_CACHE_PATH", env.path("cache"))
            .envs(vars.iter().copied())
            .args(["--stanza", "main"])
            .args(args)
            .stdin(Stdio::null())
            .output()
    };
    let with_flag = run(&[], &[&conf_arg, "--repo=1", "info", "--output=json"])?;
    assert!(
        with_flag.status.success(),
        "{}",
        String::from_utf8_lossy(&with_flag.stderr)
    );
    failed_with(&run(&[], &[&conf_arg, "info"])?, 2, "repo (in");
    failed_with(&run(&[("CAIRN_REPO", "1")], &["info"])?, 2, "CAIRN_REPO 1");
    let repo = env.repo.to_str().ok_or("path")?;
    let via_env = run(
        &[("CAIRN_REPO", repo)],
        &["--repo=1", "info", "--output=json"],
    )?;
    assert!(
        via_env.status.success(),
        "{}",
        String::from_utf8_lossy(&via_env.stderr)
    );
    let conf1 = env.path("pgbackrest-1.conf");
    std::fs::write(&conf1, format!("[global]\nrepo1-path={repo}\n"))?;
    let conf1_arg = format!("--config={}", conf1.display());
    failed_with(
        &run(&[("PGBACKREST_REPO", "2")], &[&conf1_arg, "info"])?,
        2,
        "PGBACKREST_REPO",
    );
    Ok(())
}
