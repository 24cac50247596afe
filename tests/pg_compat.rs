//! A pgBackRest user's configuration and command lines, given to cairn unchanged: pgBackRest's
//! INI file (sections `[global]`, `[<stanza>]`, `[global:<command>]`), its option names on
//! the command line (`--pg1-path`, `--repo1-path`, `--repo1-retention-full`), its
//! `PGBACKREST_*` variables, and its log file, against real PostgreSQL 15 and a real S3 server
//! (moto). Options cairn does not support are warned about, encryption it cannot give is
//! refused.

mod common;

use common::pg::{Cluster, Res, as_postgres, cairn_bin};
use common::s3::{ACCESS_KEY, SECRET_KEY, create_bucket, start_moto};
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

/// cairn as postgres with only the given words (no `--repo`, `--stanza` or `--pg-*`: the
/// configuration file or pgBackRest's spellings give them).
fn cairn(env: &[(String, String)], args: &[&str]) -> Res<Output> {
    Ok(as_postgres(&cairn_bin().display().to_string())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args(args)
        .output()?)
}

/// cairn as root against the repository `repo`, its index cache under `dir`.
fn cairn_at(dir: &Path, repo: &Path, args: &[&str]) -> Res<Output> {
    Ok(Command::new(cairn_bin())
        .env("CAIRN_CACHE_PATH", dir.join("cache"))
        .arg("--repo")
        .arg(repo)
        .args(args)
        .output()?)
}

fn ok(out: Output, what: &str) -> Res<Output> {
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(out)
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// pgBackRest's configuration for `c`, shaped as its user guide writes it.
fn pgbackrest_conf(c: &Cluster, log: &Path) -> String {
    format!(
        "[demo]\npg1-path={data}\npg1-port=5432\npg1-socket-path={sock}\npg1-user=postgres\n\n\
         [global]\nrepo1-path={repo}\nrepo1-retention-full=1\nstart-fast=y\nlog-level-console=warn\n\
         log-level-file=detail\nlog-path={log}\nrepo1-bundle=y\nrepo1-block=y\ncompress-type=zst\n\
         archive-copy=y\n\n\
         [global:archive-push]\ncompress-level=3\n",
        data = c.data.display(),
        sock = c.sock.display(),
        repo = c.repo.display(),
        log = log.display(),
    )
}

#[test]
fn a_pgbackrest_configuration_backs_up_archives_expires_and_restores() -> Res<()> {
    let mut c = Cluster::init(None)?;
    let conf = c.dir.path().join("pgbackrest.conf");
    let log = c.dir.path().join("log");
    fs::write(&conf, pgbackrest_conf(&c, &log))?;
    common::pg::chown_postgres(&conf)?;
    let conf_arg = conf.display().to_string();
    let env = c.env.clone();
    // archive_command as pgBackRest's guide writes it, with cairn's name.
    c.configure(&format!(
        "archive_command = 'env CAIRN_CACHE_PATH={} {} --config {conf_arg} --stanza=demo archive-push %p'",
        c.dir.path().join("cache").display(),
        cairn_bin().display()
    ))?;
    c.start()?;
    let created = ok(
        cairn(
            &env,
            &["--config", &conf_arg, "--stanza=demo", "stanza-create"],
        )?,
        "stanza-create",
    )?;
    // The option cairn does not support is named, once, on the console; those whose intent
    // cairn always fulfils (bundling, block incremental, zstd) are not warned about.
    let warned = text(&created);
    assert!(
        warned.contains("archive-copy") && warned.contains("line 17"),
        "{warned}"
    );
    assert!(
        !warned.contains("repo1-bundle") && !warned.contains("compress-type"),
        "{warned}"
    );
    c.sql("create table t as select generate_series(1, 1000) as i")?;
    ok(
        cairn(&env, &["--config", &conf_arg, "--stanza=demo", "check"])?,
        "check",
    )?;
    ok(
        cairn(
            &env,
            &[
                "--config",
                &conf_arg,
                "--stanza=demo",
                "backup",
                "--type=full",
            ],
        )?,
        "first full backup",
    )?;
    c.sql("insert into t select generate_series(1001, 2000)")?;
    // pgBackRest's spellings on the command line, with a space or '=': the second full
    // backup expires the first (repo1-retention-full=1 from the file).
    ok(
        cairn(
            &env,
            &[
                "--config",
                &conf_arg,
                "--stanza",
                "demo",
                "--log-level-console",
                "warn",
                "backup",
                "--type",
                "full",
                "--start-fast",
            ],
        )?,
        "second full backup",
    )?;
    let info = ok(
        cairn(
            &env,
            &[
                "--config",
                &conf_arg,
                "--stanza=demo",
                "info",
                "--output=json",
            ],
        )?,
        "info",
    )?;
    let info: serde_json::Value = serde_json::from_slice(&info.stdout)?;
    let backups = info[0]["backup"].as_array().ok_or("no backup list")?;
    assert_eq!(backups.len(), 1, "retention-full=1 keeps one: {info}");
    // The log file, as pgBackRest names and writes it: begin line with the effective options
    // (from the file and the command line), end line with the outcome.
    let backup_log = fs::read_to_string(log.join("demo-backup.log"))?;
    assert_eq!(
        backup_log
            .matches("-------------------PROCESS START-------------------")
            .count(),
        2,
        "{backup_log}"
    );
    for want in [
        "backup command begin",
        "--pg-path=",
        "--retention-full=1",
        "--type=full",
        "backup command end: completed successfully",
    ] {
        assert!(backup_log.contains(want), "{want}: {backup_log}");
    }
    // archive-push logged to its own file, and not a line per segment at info on the console.
    let marker = c.switch_wal()?;
    c.wait_archived(&marker)?;
    assert!(log.join("demo-archive-push.log").exists());
    // Restore with pgBackRest's spelling of the destination (pg1-path on the command line
    // wins over the file's), then start the copy and read the second backup's rows.
    c.stop()?;
    let dest = c.dir.path().join("restored");
    ok(
        cairn(
            &env,
            &[
                "--config",
                &conf_arg,
                "--stanza=demo",
                &format!("--pg1-path={}", dest.display()),
                "restore",
                "--type=immediate",
                "--target-action=promote",
            ],
        )?,
        "restore",
    )?;
    let mut r = c.sibling(dest);
    r.start()?;
    r.wait_promoted()?;
    assert_eq!(r.sql("select count(*) from t")?, "2000");
    r.stop()?;
    Ok(())
}

#[test]
fn pgbackrest_options_cairn_cannot_honour_are_refused_or_warned() -> Res<()> {
    let dir = tempfile::tempdir()?;
    let repo = dir.path().join("repo");
    let src = dir.path().join("src");
    fs::create_dir_all(&src)?;
    fs::write(src.join("a"), b"a file")?;
    let conf = dir.path().join("pgbackrest.conf");
    let run = |args: &[&str], env: &[(&str, &str)]| -> Res<Output> {
        Ok(Command::new(cairn_bin())
            .env("CAIRN_CACHE_PATH", dir.path().join("cache"))
            .envs(env.iter().copied())
            .args(["--config", conf.to_str().ok_or("path")?])
            .args(args)
            .output()?)
    };
    // Encryption cairn does not give: storing the backups in the clear instead would be a
    // silent downgrade.
    fs::write(
        &conf,
        format!(
            "[global]\nrepo1-path={}\nrepo1-cipher-type=aes-256-cbc\n",
            repo.display()
        ),
    )?;
    let out = run(&["--stanza=app", "stanza-create", "--engine=files"], &[])?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("unencrypted"), "{}", text(&out));
    assert!(
        !repo.exists(),
        "a refused configuration created the repository"
    );
    fs::write(
        &conf,
        format!(
            "[global]\nrepo1-path={}\nrepo1-cipher-pass=x\n",
            repo.display()
        ),
    )?;
    let out = run(&["--stanza=app", "info"], &[])?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("line 3") && text(&out).contains("cipher"),
        "{}",
        text(&out)
    );
    // A line that is not an option names its file and line; no section is an error too.
    fs::write(&conf, "repo1-path=/x\n")?;
    let out = run(&["--stanza=app", "info"], &[])?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("line 1"), "{}", text(&out));
    // Typos and options of a second repository are warned about, and the rest works.
    fs::write(
        &conf,
        format!(
            "[global]\nrepo1-path={}\nproces-max=2\nrepo2-path=/elsewhere\n[app]\nsource={}\n",
            repo.display(),
            src.display()
        ),
    )?;
    let out = run(&["--stanza=app", "stanza-create", "--engine=files"], &[])?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("did you mean 'process-max'") && text(&out).contains("repo2-path"),
        "{}",
        text(&out)
    );
    // PGBACKREST_* variables win over the file, and a negated switch over both.
    let out = run(
        &["--stanza=app", "backup", "--type=full", "--no-delta"],
        &[("PGBACKREST_REPO1_RETENTION_FULL", "1")],
    )?;
    assert!(out.status.success(), "{}", text(&out));
    fs::write(src.join("b"), b"another")?;
    let out = run(
        &["--stanza=app", "backup", "--type=full"],
        &[("PGBACKREST_REPO1_RETENTION_FULL", "1")],
    )?;
    assert!(out.status.success(), "{}", text(&out));
    let out = run(&["--stanza=app", "info", "--output=json"], &[])?;
    let info: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        info[0]["backup"].as_array().map(Vec::len),
        Some(1),
        "PGBACKREST_REPO1_RETENTION_FULL=1 expired the first: {info}"
    );
    Ok(())
}

#[test]
fn a_pgbackrest_s3_repository_configuration_reaches_the_bucket() -> Res<()> {
    let moto = start_moto()?;
    create_bucket(moto.port, "pgbackrest")?;
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("src");
    common::make_tree(&src, 7)?;
    let conf = dir.path().join("pgbackrest.conf");
    // The keys in the file, as pgBackRest's guide puts them; no AWS_* variables at all.
    fs::write(
        &conf,
        format!(
            "[global]\nrepo1-type=s3\nrepo1-path=/demo-repo\nrepo1-s3-bucket=pgbackrest\n\
             repo1-s3-endpoint={}\nrepo1-s3-region=us-east-1\nrepo1-s3-uri-style=path\n\
             repo1-s3-key={ACCESS_KEY}\nrepo1-s3-key-secret={SECRET_KEY}\n\
             [app]\nsource={}\n",
            moto.endpoint(),
            src.display()
        ),
    )?;
    let run = |args: &[&str]| -> Res<Output> {
        let mut c = Command::new(cairn_bin());
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") || k.starts_with("CAIRN_") || k.starts_with("PGBACKREST_") {
                c.env_remove(k);
            }
        }
        let out = c
            .env("CAIRN_CACHE_PATH", dir.path().join("cache"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .args(["--config", conf.to_str().ok_or("path")?, "--stanza=app"])
            .args(args)
            .output()?;
        ok(out, &format!("{args:?}"))
    };
    run(&["stanza-create", "--engine=files"])?;
    run(&["backup", "--type=full"])?;
    let dest = dir.path().join("dest");
    run(&["restore", "--dest", dest.to_str().ok_or("path")?])?;
    assert_eq!(common::tree_diff(&src, &dest), Vec::<String>::new());
    // The repository is in the bucket under the prefix repo1-path names.
    let listing = Command::new("curl")
        .args([
            "-s",
            &format!("{}/pgbackrest?prefix=demo-repo/", moto.endpoint()),
        ])
        .output()?;
    assert!(
        String::from_utf8_lossy(&listing.stdout).contains("demo-repo/"),
        "{}",
        String::from_utf8_lossy(&listing.stdout)
    );
    Ok(())
}

/// pgBackRest's restore options on a real cluster: `--target-exclusive` stops before the
/// target transaction, `--recovery-option` (with pgBackRest's `-` for `_`) reaches
/// PostgreSQL, `--type preserve` keeps the destination's own recovery settings through a
/// `--delta` restore, and `--type none` writes none, so the copy starts from the WAL put in
/// its `pg_wal`.
#[test]
fn restore_types_preserve_and_none_target_exclusive_and_recovery_options() -> Res<()> {
    let mut c = Cluster::init(None)?;
    c.start()?;
    c.cairn_ok(&["stanza-create"])?;
    c.sql("create table t (i int)")?;
    c.sql("insert into t values (1)")?;
    c.cairn_ok(&["backup", "--type", "full"])?;
    let info: serde_json::Value =
        serde_json::from_slice(&c.cairn_ok(&["info", "--output", "json"])?.stdout)?;
    let wal_start = info[0]["backup"][0]["archive"]["start"]
        .as_str()
        .ok_or("no archive start")?
        .to_string();
    let wal_stop = info[0]["backup"][0]["archive"]["stop"]
        .as_str()
        .ok_or("no archive stop")?
        .to_string();
    c.sql("insert into t values (2)")?;
    let xid = c.sql("begin; insert into t values (3); select txid_current(); commit")?;
    let xid = xid
        .lines()
        .find(|l| l.chars().all(|c| c.is_ascii_digit()) && !l.is_empty())
        .ok_or("no xid")?
        .to_string();
    c.sql("insert into t values (4)")?;
    let marker = c.switch_wal()?;
    c.wait_archived(&marker)?;
    c.stop()?;

    // --target-exclusive: rows 1 and 2, not the target transaction's 3; the recovery option
    // (recovery-end-command, as pgBackRest users spell it) runs at promotion.
    let dest = c.dir.path().join("exclusive");
    let ran = c.dir.path().join("recovery-ended");
    c.cairn_ok(&[
        "restore",
        "--dest",
        dest.to_str().ok_or("path")?,
        "--type=xid",
        &format!("--target={xid}"),
        "--target-exclusive",
        "--target-action=promote",
        &format!(
            "--recovery-option=recovery-end-command=touch {}",
            ran.display()
        ),
    ])?;
    let auto = fs::read_to_string(dest.join("postgresql.auto.conf"))?;
    assert!(
        auto.contains("recovery_target_inclusive = 'false'")
            && auto.contains("recovery_end_command = 'touch "),
        "{auto}"
    );
    let mut r = c.sibling(dest.clone());
    r.start()?;
    r.wait_promoted()?;
    assert_eq!(
        r.sql("select string_agg(i::text, ',' order by i) from t")?,
        "1,2"
    );
    assert!(ran.exists(), "the recovery option did not reach PostgreSQL");
    r.stop()?;

    // --type preserve through --delta: the destination's settings and signal file stay as
    // they were, byte for byte; the backup's postgresql.auto.conf does not replace them.
    let mine = "# the operator's own\nrecovery_target_name = 'kept'\nprimary_conninfo = 'host=x'\n";
    fs::write(dest.join("postgresql.auto.conf"), mine)?;
    fs::write(dest.join("standby.signal"), b"")?;
    let _ = fs::remove_file(dest.join("recovery.signal"));
    common::pg::chown_postgres(&dest)?;
    c.cairn_ok(&[
        "restore",
        "--delta",
        "--dest",
        dest.to_str().ok_or("path")?,
        "--type",
        "preserve",
    ])?;
    assert_eq!(fs::read_to_string(dest.join("postgresql.auto.conf"))?, mine);
    assert!(dest.join("standby.signal").exists());
    assert!(!dest.join("recovery.signal").exists());
    // ... and options that would write settings are refused with preserve.
    let out = c.cairn(&[
        "restore",
        "--delta",
        "--dest",
        dest.to_str().ok_or("path")?,
        "--type",
        "preserve",
        "--recovery-option",
        "primary_conninfo=y",
    ])?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // --type none: no signal file and no restore_command; with the backup's WAL put into
    // pg_wal by hand, the copy starts as a primary holding the backup's rows.
    let none = c.dir.path().join("none");
    c.cairn_ok(&[
        "restore",
        "--dest",
        none.to_str().ok_or("path")?,
        "--type",
        "none",
    ])?;
    assert!(!none.join("recovery.signal").exists() && !none.join("standby.signal").exists());
    let auto = fs::read_to_string(none.join("postgresql.auto.conf"))?;
    assert!(!auto.contains("archive-get"), "{auto}");
    let (first, last) = (
        u64::from_str_radix(&wal_start[16..], 16)?,
        u64::from_str_radix(&wal_stop[16..], 16)?,
    );
    for seg in first..=last {
        let name = format!("{}{seg:08X}", &wal_start[..16]);
        let to = none.join("pg_wal").join(&name);
        c.cairn_ok(&["archive-get", &name, to.to_str().ok_or("path")?])?;
    }
    let mut n = c.sibling(none);
    n.start()?;
    n.wait_promoted()?;
    assert_eq!(
        n.sql("select string_agg(i::text, ',' order by i) from t")?,
        "1"
    );
    n.stop()?;
    Ok(())
}

/// `--db-include`: one database of three comes back whole; the other two user databases'
/// files come back zero-filled and sparse at their recorded sizes, so the cluster starts and
/// they can be dropped. A database that is not in the backup, or a system database, is an
/// error before the destination is touched.
#[test]
fn db_include_restores_one_database_of_three() -> Res<()> {
    let mut c = Cluster::init(None)?;
    c.start()?;
    c.cairn_ok(&["stanza-create"])?;
    for db in ["db1", "db2", "db3"] {
        c.sql(&format!("create database {db}"))?;
        let out = c
            .client(
                "psql",
                &[
                    "-d",
                    db,
                    "-qAtc",
                    &format!(
                        "create table t as select '{db}' as name, generate_series(1, 5000) as i"
                    ),
                ],
            )
            .output()?;
        Cluster::check_output("psql", out)?;
    }
    c.cairn_ok(&["backup", "--type", "full"])?;
    let marker = c.switch_wal()?;
    c.wait_archived(&marker)?;
    let oid = |db: &str| {
        c.sql(&format!(
            "select oid from pg_database where datname = '{db}'"
        ))
    };
    let (db1, db2) = (oid("db1")?, oid("db2")?);
    c.stop()?;

    let dest = c.dir.path().join("selective");
    let d = dest.to_str().ok_or("path")?;
    for (bad, why) in [("nope", "does not exist"), ("postgres", "always restored")] {
        let out = c.cairn(&["restore", "--dest", d, "--db-include", bad])?;
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out));
        assert!(text(&out).contains(why), "{bad}: {}", text(&out));
        assert!(!dest.exists(), "a refused selective restore touched {d}");
    }
    c.cairn_ok(&[
        "restore",
        "--dest",
        d,
        "--db-include=db2",
        "--type=immediate",
        "--target-action=promote",
    ])?;
    // db1's table file is all zeroes, sparse, at its recorded size; db2's is not.
    let relfile = |db_oid: &str| -> Res<std::path::PathBuf> {
        let dir = dest.join("base").join(db_oid);
        let mut biggest = None;
        for e in fs::read_dir(&dir)? {
            let e = e?;
            let len = e.metadata()?.len();
            if biggest.as_ref().is_none_or(|(l, _)| len > *l) {
                biggest = Some((len, e.path()));
            }
        }
        Ok(biggest.ok_or("empty database directory")?.1)
    };
    let zeroed = relfile(&db1)?;
    let bytes = fs::read(&zeroed)?;
    assert!(
        !bytes.is_empty() && bytes.iter().all(|b| *b == 0),
        "{zeroed:?}"
    );
    use std::os::unix::fs::MetadataExt;
    assert!(
        fs::metadata(&zeroed)?.blocks() * 512 < bytes.len() as u64,
        "{zeroed:?} is not sparse"
    );
    assert!(fs::read(relfile(&db2)?)?.iter().any(|b| *b != 0));
    assert!(dest.join("base").join(&db1).join("PG_VERSION").exists());
    let mut r = c.sibling(dest.clone());
    r.start()?;
    r.wait_promoted()?;
    let count = r
        .client(
            "psql",
            &["-d", "db2", "-qAtc", "select count(*), min(name) from t"],
        )
        .output()?;
    let count = Cluster::check_output("psql db2", count)?;
    assert_eq!(String::from_utf8_lossy(&count.stdout).trim(), "5000|db2");
    // The left-out databases are dropped, as pgBackRest's users do next.
    r.sql("drop database db1")?;
    r.sql("drop database db3")?;
    assert_eq!(
        r.sql("select string_agg(datname, ',' order by datname) from pg_database where datname like 'db%'")?,
        "db2"
    );
    r.stop()?;
    Ok(())
}

/// `backup --annotation` and `annotate`, as pgBackRest's: recorded with the backup, changed
/// and removed (`KEY=`) later, shown by `info` (JSON `annotation`, only on annotated backups).
#[test]
fn annotations_are_recorded_changed_removed_and_shown() -> Res<()> {
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("src");
    fs::create_dir_all(&src)?;
    fs::write(src.join("a"), b"a file")?;
    let repo = dir.path().join("repo");
    let run = |args: &[&str]| -> Res<Output> {
        cairn_at(
            dir.path(),
            &repo,
            &[&["--stanza=app", "--log-level=warn"], args].concat(),
        )
    };
    let info = || -> Res<serde_json::Value> {
        let out = ok(run(&["info", "--output=json"])?, "info")?;
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    ok(run(&["stanza-create", "--engine=files"])?, "stanza-create")?;
    let s = src.to_str().ok_or("path")?;
    ok(
        run(&[
            "backup",
            "--source",
            s,
            "--annotation",
            "source=nightly",
            "--annotation=desc=first run",
        ])?,
        "backup",
    )?;
    ok(run(&["backup", "--source", s])?, "second backup")?;
    let v = info()?;
    let label = v[0]["backup"][0]["label"]
        .as_str()
        .ok_or("label")?
        .to_string();
    assert_eq!(
        v[0]["backup"][0]["annotation"],
        serde_json::json!({"desc": "first run", "source": "nightly"})
    );
    assert!(
        v[0]["backup"][1].get("annotation").is_none(),
        "an unannotated backup has no annotation field, as in pgBackRest: {v}"
    );
    ok(
        run(&[
            "annotate",
            "--set",
            &label,
            "--annotation",
            "source=",
            "--annotation",
            "ticket=OPS-7",
        ])?,
        "annotate",
    )?;
    let v = info()?;
    assert_eq!(
        v[0]["backup"][0]["annotation"],
        serde_json::json!({"desc": "first run", "ticket": "OPS-7"})
    );
    let text_info = ok(run(&["info"])?, "info")?;
    assert!(
        String::from_utf8_lossy(&text_info.stdout)
            .contains("annotation(s): desc: first run, ticket: OPS-7"),
        "{}",
        String::from_utf8_lossy(&text_info.stdout)
    );
    // Mistakes: a backup that does not exist (1), a word without '=' (2).
    let out = run(&[
        "annotate",
        "--set",
        "20200101-000000F",
        "--annotation",
        "a=b",
    ])?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = run(&["annotate", "--set", &label, "--annotation", "oops"])?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        info()?[0]["backup"][0]["annotation"],
        serde_json::json!({"desc": "first run", "ticket": "OPS-7"}),
        "a refused annotate changed nothing"
    );
    Ok(())
}

/// `info` shows a running backup's and restore's progress as pgBackRest does
/// (`status.lock.backup` and `status.lock.restore`: held, size, size-cplt), from the status
/// files the running commands keep in the lock path; none is left once they end.
#[test]
fn info_shows_a_running_backup_and_restore_with_their_progress() -> Res<()> {
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("src");
    fs::create_dir_all(&src)?;
    // Incompressible, so the backup takes seconds even here.
    let mut data = vec![0u8; 400 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    fs::write(src.join("big"), &data)?;
    drop(data);
    let base = |c: &mut Command| {
        c.env("CAIRN_CACHE_PATH", dir.path().join("cache"))
            .arg("--repo")
            .arg(dir.path().join("repo"))
            .arg("--lock-path")
            .arg(dir.path().join("locks"))
            .args(["--stanza=app", "--log-level=warn", "--process-max=1"]);
    };
    let run = |args: &[&str]| -> Res<Output> {
        let mut c = Command::new(cairn_bin());
        base(&mut c);
        Ok(c.args(args).output()?)
    };
    let lock = || -> Res<serde_json::Value> {
        let out = ok(run(&["info", "--output=json"])?, "info")?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        Ok(v[0]["status"]["lock"].clone())
    };
    ok(run(&["stanza-create", "--engine=files"])?, "stanza-create")?;
    for (what, args) in [
        (
            "backup",
            vec!["backup", "--source", src.to_str().ok_or("path")?],
        ),
        (
            "restore",
            vec![
                "restore",
                "--dest",
                dir.path().join("dest").to_str().ok_or("path")?,
            ],
        ),
    ] {
        let mut c = Command::new(cairn_bin());
        base(&mut c);
        let mut child = c.args(&args).stderr(std::process::Stdio::piped()).spawn()?;
        let mut seen = None;
        while child.try_wait()?.is_none() {
            let l = lock()?;
            if l[what]["held"] == true && l[what]["size"].as_u64().is_some() {
                seen = Some(l);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = child.wait_with_output()?;
        assert!(out.status.success(), "{what}: {}", text(&out));
        let seen = seen.ok_or(format!("info never showed the {what} running"))?;
        let (size, done) = (
            seen[what]["size"].as_u64().unwrap_or(0),
            seen[what]["size-cplt"].as_u64().unwrap_or(u64::MAX),
        );
        assert!(size >= 400 << 20 && done <= size, "{what}: {seen}");
        let after = lock()?;
        assert_eq!(after[what]["held"], false, "{what}: {after}");
        assert!(after[what].get("size").is_none(), "{what}: {after}");
    }
    Ok(())
}

/// Defect: `info --output json` against a repository that does not exist (a wrong --repo, or
/// a mount that is not there) exited 3 with an error, so a monitor got no JSON to judge.
/// Now, as pgBackRest: the named stanza with status 1 ("missing stanza path"), or no stanzas,
/// exit 0, and the reason on stderr.
#[test]
fn defect_info_json_on_a_missing_repository_was_an_error_not_json() -> Res<()> {
    let dir = tempfile::tempdir()?;
    let repo = dir.path().join("not-mounted");
    let run = |args: &[&str]| cairn_at(dir.path(), &repo, args);
    let out = run(&["--stanza=main", "info", "--output=json"])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v[0]["name"], "main");
    assert_eq!(v[0]["status"]["code"], 1, "{v}");
    assert!(text(&out).contains("does not exist"), "{}", text(&out));
    let out = run(&["info", "--output=json"])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout)?,
        serde_json::json!([])
    );
    // A directory that is not a cairn repository: the same answer.
    fs::create_dir_all(&repo)?;
    let out = run(&["--stanza=main", "info", "--output=json"])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v[0]["status"]["code"], 1, "{v}");
    Ok(())
}

/// Defect: a restore into the mount point of a freshly made file system was refused as "not
/// empty" because of its empty lost+found directory.
#[test]
fn defect_a_restore_into_a_fresh_mount_point_was_refused_for_its_lost_and_found() -> Res<()> {
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("src");
    common::make_tree(&src, 5)?;
    let dest = dir.path().join("mnt");
    fs::create_dir_all(dest.join("lost+found"))?;
    let repo = dir.path().join("repo");
    let run = |args: &[&str]| cairn_at(dir.path(), &repo, &[&["--stanza=app"], args].concat());
    ok(run(&["stanza-create", "--engine=files"])?, "stanza-create")?;
    ok(
        run(&["backup", "--source", src.to_str().ok_or("path")?])?,
        "backup",
    )?;
    ok(
        run(&["restore", "--dest", dest.to_str().ok_or("path")?])?,
        "restore",
    )?;
    assert!(dest.join("lost+found").is_dir());
    let diff: Vec<String> = common::tree_diff(&src, &dest)
        .into_iter()
        .filter(|d| !d.contains("lost+found"))
        .collect();
    assert_eq!(diff, Vec::<String>::new());
    // A lost+found that holds something is not empty.
    let other = dir.path().join("mnt2");
    fs::create_dir_all(other.join("lost+found"))?;
    fs::write(other.join("lost+found/#1234"), b"recovered")?;
    let out = run(&["restore", "--dest", other.to_str().ok_or("path")?])?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    Ok(())
}

/// Defects in reading pgBackRest's options (adversarial pass): `CAIRN_REPO` in the
/// environment won over `--repo1-path` on the command line (the wrong repository, silently);
/// `--db-exclude` was dropped as unsupported; `PGBACKREST_CONFIG` was ignored; an empty
/// `log-path=` (or `PGBACKREST_LOG_PATH=`) wrote the log into the working directory (the data
/// directory, for archive-push); a key set twice gave a confusing type error.
#[test]
fn defect_pgbackrest_option_sources_were_misread() -> Res<()> {
    let dir = tempfile::tempdir()?;
    let (prod, test) = (dir.path().join("prod"), dir.path().join("test"));
    let run = |args: &[&str], env: &[(&str, &std::ffi::OsStr)]| -> Res<Output> {
        let mut c = Command::new(cairn_bin());
        for (k, _) in std::env::vars() {
            if k.starts_with("CAIRN_") || k.starts_with("PGBACKREST_") {
                c.env_remove(k);
            }
        }
        Ok(c.env("CAIRN_CACHE_PATH", dir.path().join("cache"))
            .current_dir(dir.path())
            .envs(env.iter().copied())
            .args(args)
            .output()?)
    };
    let p = |p: &std::path::Path| p.as_os_str().to_owned();
    ok(
        run(
            &[
                "--repo",
                prod.to_str().ok_or("path")?,
                "--stanza=app",
                "stanza-create",
                "--engine=files",
            ],
            &[],
        )?,
        "prod stanza",
    )?;
    // --repo1-path on the command line wins over CAIRN_REPO.
    let out = run(
        &[
            "--repo1-path",
            test.to_str().ok_or("path")?,
            "--stanza=other",
            "stanza-create",
            "--engine=files",
        ],
        &[("CAIRN_REPO", &p(&prod))],
    )?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        test.join("cairn.repo").exists(),
        "the command line's repository was not used"
    );
    let out = run(
        &[
            "--repo",
            prod.to_str().ok_or("path")?,
            "--stanza=other",
            "info",
        ],
        &[],
    )?;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "the stanza went into the environment's repository: {}",
        text(&out)
    );
    // Both on the command line: one too many.
    let out = run(
        &[
            "--repo",
            prod.to_str().ok_or("path")?,
            "--repo1-path",
            test.to_str().ok_or("path")?,
            "info",
        ],
        &[],
    )?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // --db-exclude reaches cairn (a files stanza refuses it as a postgres option).
    let out = run(
        &[
            "--repo",
            prod.to_str().ok_or("path")?,
            "--stanza=app",
            "restore",
            "--dest",
            "/nonexistent",
            "--db-exclude",
            "db2",
        ],
        &[],
    )?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(!text(&out).contains("is ignored"), "{}", text(&out));
    // PGBACKREST_CONFIG names the file to read.
    let conf = dir.path().join("elsewhere.conf");
    fs::write(&conf, format!("[global]\nrepo1-path={}\n", prod.display()))?;
    let out = run(
        &["--stanza=app", "info", "--output=json"],
        &[("PGBACKREST_CONFIG", &p(&conf))],
    )?;
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        v[0]["status"]["code"], 2,
        "the stanza of the named file's repository: {v}"
    );
    // Empty values are refused, never taken as the working directory.
    fs::write(
        &conf,
        format!("[global]\nrepo1-path={}\nlog-path=\n", prod.display()),
    )?;
    let out = run(
        &["--stanza=app", "info"],
        &[("PGBACKREST_CONFIG", &p(&conf))],
    )?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("line 3"), "{}", text(&out));
    let out = run(
        &[
            "--repo",
            prod.to_str().ok_or("path")?,
            "--stanza=app",
            "info",
        ],
        &[("PGBACKREST_LOG_PATH", std::ffi::OsStr::new(""))],
    )?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        !dir.path().join("app-info.log").exists(),
        "a log file in the working directory"
    );
    // A single-valued option set twice says so.
    fs::write(
        &conf,
        format!(
            "[global]\nrepo1-path={}\nrepo1-path=/elsewhere\n",
            prod.display()
        ),
    )?;
    let out = run(
        &["--stanza=app", "info"],
        &[("PGBACKREST_CONFIG", &p(&conf))],
    )?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("more than once"), "{}", text(&out));
    Ok(())
}

/// Defect: a log file that could not be opened (a log directory the postgres user cannot
/// write) failed the command, and for archive-push that stalls WAL archiving. Now a warning,
/// as pgBackRest gives, and the command runs.
#[test]
fn defect_a_log_file_that_could_not_be_opened_failed_the_command() -> Res<()> {
    let dir = tempfile::tempdir()?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
    let repo = dir.path().join("repo");
    let logs = dir.path().join("root-owned-logs");
    fs::create_dir_all(&logs)?;
    fs::set_permissions(&logs, fs::Permissions::from_mode(0o755))?;
    fs::create_dir_all(dir.path().join("cache"))?;
    common::pg::chown_postgres(&dir.path().join("cache"))?;
    let out = Command::new(cairn_bin())
        .env("CAIRN_CACHE_PATH", dir.path().join("cache"))
        .arg("--repo")
        .arg(&repo)
        .args(["--stanza=app", "stanza-create", "--engine=files"])
        .output()?;
    ok(out, "stanza-create")?;
    common::pg::chown_postgres(&repo)?;
    let out = as_postgres(&cairn_bin().display().to_string())
        .env("CAIRN_CACHE_PATH", dir.path().join("cache"))
        .arg("--repo")
        .arg(&repo)
        .arg("--log-path")
        .arg(&logs)
        .args(["--stanza=app", "info", "--output=json"])
        .output()?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("cannot open the log file"),
        "{}",
        text(&out)
    );
    Ok(())
}
