//! Every command with `--repo s3://bucket/prefix` against a real S3-compatible server (moto on
//! 127.0.0.1): files and stream round trips through a full + diff + incr + incr chain restored
//! with --process-max 8, verify, and PostgreSQL point-in-time recovery with WAL archived to
//! and fetched from S3.

mod common;

use common::pg::{Cluster, Res};
use common::s3::{Moto, aws_env, create_bucket, start_moto};
use common::{bytes, set_mtime, text, tree_diff};
use std::fs;
use std::process::{Command, Output, Stdio};

fn cairn(moto: &Moto, bucket: &str, args: &[&str], stdin: Option<&[u8]>) -> Res<Output> {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
    c.envs(aws_env())
        .args(moto.repo_args(bucket, "cairn"))
        .args(["--stanza", "main", "--log-level", "warn"])
        .args(args);
    let out = match stdin {
        None => c.stdin(Stdio::null()).output()?,
        Some(data) => {
            let mut child = c
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            let mut pipe = child.stdin.take().ok_or("stdin")?;
            let data = data.to_vec();
            let w = std::thread::spawn(move || std::io::Write::write_all(&mut pipe, &data));
            let out = child.wait_with_output()?;
            w.join().map_err(|_| "writer")??;
            out
        }
    };
    if !out.status.success() {
        return Err(format!("cairn {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(out)
}

#[test]
fn files_and_stream_round_trip_on_s3_through_a_chain() -> Res<()> {
    let moto = start_moto()?;
    create_bucket(moto.port, "files")?;
    create_bucket(moto.port, "stream")?;
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("src");
    common::make_tree(&src, 3)?;
    let s = src.to_str().ok_or("path")?;
    cairn(
        &moto,
        "files",
        &["stanza-create", "--engine", "files"],
        None,
    )?;
    cairn(
        &moto,
        "files",
        &["backup", "--type", "full", "--source", s],
        None,
    )?;
    for (i, kind) in ["diff", "incr", "incr"].iter().enumerate() {
        let f = src.join(format!("data/changed-{i}"));
        fs::write(&f, bytes(40 + i as u64, 700_000 + i * 1000))?;
        set_mtime(&f, 1_700_000_000 + i as i64, 0);
        set_mtime(&src.join("data"), 1_700_000_100 + i as i64, 0);
        cairn(
            &moto,
            "files",
            &["backup", "--type", kind, "--source", s],
            None,
        )?;
    }
    let out = dir.path().join("out");
    cairn(
        &moto,
        "files",
        &[
            "--process-max",
            "8",
            "restore",
            "--dest",
            out.to_str().ok_or("path")?,
        ],
        None,
    )?;
    assert_eq!(tree_diff(&src, &out), Vec::<String>::new());
    let info: serde_json::Value = serde_json::from_slice(
        &cairn(&moto, "files", &["info", "--output", "json"], None)?.stdout,
    )?;
    let types: Vec<&str> = info[0]["backup"]
        .as_array()
        .ok_or("backups")?
        .iter()
        .filter_map(|b| b["type"].as_str())
        .collect();
    assert_eq!(types, ["full", "diff", "incr", "incr"]);
    cairn(&moto, "files", &["verify"], None)?;

    let dump = text(8, 6_000_000);
    cairn(
        &moto,
        "stream",
        &["stanza-create", "--engine", "stream"],
        None,
    )?;
    cairn(&moto, "stream", &["backup", "--type", "full"], Some(&dump))?;
    let restored = cairn(
        &moto,
        "stream",
        &["--process-max", "8", "restore", "--dest", "-"],
        None,
    )?;
    assert!(restored.stdout == dump, "stream restored from S3 differs");
    Ok(())
}

#[test]
fn postgres_point_in_time_recovery_from_s3() -> Res<()> {
    let moto = start_moto()?;
    create_bucket(moto.port, "pgrepo")?;
    let mut c = Cluster::init_s3(moto.repo_args("pgrepo", "cluster"), aws_env())?;
    c.cairn_ok(&["stanza-create", "--engine", "postgres"])?;
    c.start()?;
    c.sql("create table ticks (id bigserial primary key, batch int)")?;
    c.cairn_ok(&["backup", "--type", "full"])?;
    c.sql("insert into ticks (batch) select 1 from generate_series(1, 1000)")?;
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let t = c.now_utc()?;
    std::thread::sleep(std::time::Duration::from_millis(1100));
    c.sql("insert into ticks (batch) select 2 from generate_series(1, 1000)")?;
    let last = c.switch_wal()?;
    c.wait_archived(&last)?;
    c.stop()?;
    fs::remove_dir_all(&c.data)?;

    let dest = c.dir.path().join("restored");
    c.cairn_ok(&[
        "restore",
        "--dest",
        dest.to_str().ok_or("path")?,
        "--type",
        "time",
        "--target",
        &t,
        "--target-action",
        "promote",
    ])?;
    let auto = fs::read_to_string(dest.join("postgresql.auto.conf"))?;
    assert!(
        auto.contains("--s3-endpoint") && auto.contains("s3://pgrepo/cluster"),
        "{auto}"
    );
    let mut r = c.sibling(dest);
    r.set("archive_mode = off")?;
    r.start()?;
    r.wait_promoted()?;
    assert_eq!(
        r.sql("select count(*) from ticks")?,
        "1000",
        "exactly the rows committed before the target"
    );
    r.stop()?;
    c.cairn_ok(&["verify"])?;

    // repo-ls over S3: the archived segments with their size and S3's LastModified time.
    let listed: serde_json::Value = serde_json::from_slice(
        &c.cairn_ok(&[
            "repo-ls",
            "archive/main/15-1",
            "--recurse",
            "--output",
            "json",
        ])?
        .stdout,
    )?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let last_key = format!("{}/{last}", &last[..16]);
    let seg = &listed[&last_key];
    assert_eq!(seg["type"], "file", "{listed}");
    assert_eq!(seg["size"], 16 * 1024 * 1024, "{listed}");
    let time = seg["time"].as_i64().ok_or("no time")?;
    assert!(
        (now - 3600..=now + 60).contains(&time),
        "time {time} is not S3's LastModified (now {now})"
    );
    let got = c.cairn_ok(&["repo-get", &format!("archive/main/15-1/{last_key}")])?;
    assert_eq!(got.stdout.len(), 16 * 1024 * 1024);
    Ok(())
}
