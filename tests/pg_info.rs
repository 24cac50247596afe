//! `info` as pgBackRest's readers (monitoring plugins, exporters) see it, against a real
//! PostgreSQL 15 cluster: the JSON has every field of pgBackRest 2.59's output
//! (`tests/fixtures/pgbackrest-2.59-info.json`) with the same types, a missing stanza is a
//! status and not an error, and `--type` and `--set` show what pgBackRest shows.

mod common;

use common::pg::{Cluster, Res, as_postgres, cairn_bin};
use serde_json::Value;

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every field of `want` is in `got` with the same JSON type, recursively (arrays element by
/// element, as far as both go); extra fields in `got` are allowed. Returns what differs.
fn same_shape(path: &str, want: &Value, got: &Value, out: &mut Vec<String>) {
    if kind(want) != kind(got) {
        out.push(format!(
            "{path}: {} in pgBackRest's, {} in cairn's ({got})",
            kind(want),
            kind(got)
        ));
        return;
    }
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                match g.get(k) {
                    Some(gv) => same_shape(&format!("{path}.{k}"), wv, gv, out),
                    None => out.push(format!("{path}.{k}: missing")),
                }
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            if w.len() != g.len() {
                out.push(format!(
                    "{path}: {} entries in pgBackRest's, {} in cairn's",
                    w.len(),
                    g.len()
                ));
            }
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                same_shape(&format!("{path}[{i}]"), wv, gv, out);
            }
        }
        _ => {}
    }
}

fn info(c: &Cluster, extra: &[&str]) -> Res<Value> {
    let mut args = vec!["info", "--output", "json"];
    args.extend_from_slice(extra);
    Ok(serde_json::from_slice(&c.cairn_ok(&args)?.stdout)?)
}

#[test]
fn info_json_has_every_field_of_pgbackrest_2_59_with_the_same_types() -> Res<()> {
    let reference: Value =
        serde_json::from_str(include_str!("fixtures/pgbackrest-2.59-info.json"))?;
    let mut c = Cluster::init(None)?;
    c.cairn_ok(&["stanza-create", "--engine", "postgres"])?;
    c.start()?;

    // No backups yet: status 2, and the archive entry is listed with null min and max.
    let empty = info(&c, &[])?;
    assert_eq!(empty[0]["status"]["code"], 2, "{empty:#}");
    assert_eq!(empty[0]["status"]["message"], "no valid backups");
    assert_eq!(empty[0]["repo"][0]["status"]["code"], 2, "{empty:#}");
    assert_eq!(empty[0]["archive"][0]["id"], "15-1", "{empty:#}");
    assert_eq!(empty[0]["archive"][0]["min"], Value::Null, "{empty:#}");
    assert_eq!(empty[0]["archive"][0]["max"], Value::Null, "{empty:#}");

    // The reference's shape: a full, a diff, an incr.
    c.sql("create table t as select g from generate_series(1, 10000) g")?;
    c.cairn_ok(&["backup", "--type", "full"])?;
    c.sql("insert into t select g from generate_series(1, 10000) g")?;
    c.cairn_ok(&["backup", "--type", "diff"])?;
    c.sql("insert into t select g from generate_series(1, 10000) g")?;
    c.cairn_ok(&["backup", "--type", "incr"])?;
    let got = info(&c, &[])?;
    let mut diffs = Vec::new();
    same_shape("", &reference, &got, &mut diffs);
    assert!(
        diffs.is_empty(),
        "cairn's info differs from pgBackRest's:\n{}\n{got:#}",
        diffs.join("\n")
    );
    let s = &got[0];
    assert_eq!(s["status"]["code"], 0);
    assert_eq!(s["archive"][0]["id"], "15-1");
    assert_eq!(s["archive"][0]["database"]["id"], 1);
    let (min, max) = (
        s["archive"][0]["min"].as_str().ok_or("min")?,
        s["archive"][0]["max"].as_str().ok_or("max")?,
    );
    assert!(
        min.len() == 24 && max.len() == 24 && min <= max,
        "{min} {max}"
    );
    // The archive bounds every backup's WAL.
    for b in s["backup"].as_array().ok_or("backups")? {
        let (a, z) = (
            b["archive"]["start"].as_str().ok_or("start")?,
            b["archive"]["stop"].as_str().ok_or("stop")?,
        );
        assert!(min <= a && z <= max, "{a}..{z} outside {min}..{max}");
        assert_eq!(b["database"]["id"], 1);
    }
    assert_eq!(
        s["db"][0]["system-id"],
        c.sql("select system_identifier from pg_control_system()")?
            .parse::<u64>()?
    );

    // --type: only that type, the stanza's status unchanged.
    let fulls = info(&c, &["--type", "full"])?;
    let kinds: Vec<&str> = fulls[0]["backup"]
        .as_array()
        .ok_or("backups")?
        .iter()
        .filter_map(|b| b["type"].as_str())
        .collect();
    assert_eq!(kinds, ["full"], "{fulls:#}");

    // --set: that backup with its databases (not the templates), links and tablespaces.
    let diff = s["backup"][1]["label"].as_str().ok_or("label")?;
    let one = info(&c, &["--set", diff])?;
    let b = &one[0]["backup"];
    assert_eq!(b.as_array().map(Vec::len), Some(1), "{one:#}");
    assert_eq!(b[0]["label"], diff);
    let dbs: Vec<(&str, u64)> = b[0]["database-ref"]
        .as_array()
        .ok_or("database-ref")?
        .iter()
        .filter_map(|d| Some((d["name"].as_str()?, d["oid"].as_u64()?)))
        .collect();
    assert_eq!(dbs, [("postgres", 5)], "{one:#}");
    assert!(
        b[0].get("link").is_some() && b[0].get("tablespace").is_some(),
        "{one:#}"
    );
    let text = String::from_utf8(c.cairn_ok(&["info", "--set", diff])?.stdout)?;
    assert!(text.contains("database list: postgres (5)"), "{text}");

    // --set naming no backup: pgBackRest's status 6.
    let none = info(&c, &["--set", "20200101-000000F"])?;
    assert_eq!(none[0]["status"]["code"], 6, "{none:#}");
    assert_eq!(none[0]["status"]["message"], "requested backup not found");
    c.stop()?;
    Ok(())
}

#[test]
fn info_for_a_stanza_that_does_not_exist_is_json_with_status_1_and_exit_code_0() -> Res<()> {
    let c = Cluster::init(None)?;
    c.cairn_ok(&["stanza-create", "--engine", "postgres"])?;
    let run = |output: &str| {
        as_postgres(&cairn_bin().display().to_string())
            .envs(c.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(&c.repo_args)
            .args([
                "--stanza",
                "mian",
                "--log-level",
                "warn",
                "info",
                "--output",
                output,
            ])
            .output()
    };
    let out = run("json")?;
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v[0]["name"], "mian");
    assert_eq!(v[0]["status"]["code"], 1, "{v:#}");
    assert_eq!(v[0]["status"]["message"], "missing stanza path");
    assert_eq!(v[0]["repo"][0]["status"]["code"], 1, "{v:#}");
    assert_eq!(v[0]["backup"], Value::Array(vec![]));
    let out = run("text")?;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout)?;
    assert!(
        text.contains("status: error (missing stanza path)"),
        "{text}"
    );
    // --set without --stanza is a usage error, not a silent listing.
    let out = as_postgres(&cairn_bin().display().to_string())
        .envs(c.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args(&c.repo_args)
        .args(["info", "--set", "20200101-000000F"])
        .output()?;
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--set needs --stanza"),
        "{out:?}"
    );
    Ok(())
}

#[test]
fn version_prints_text_or_one_number_as_pgbackrest_and_needs_no_repository() -> Res<()> {
    let run = |args: &[&str]| {
        as_postgres(&cairn_bin().display().to_string())
            .args(args)
            .output()
    };
    let text = run(&["version"])?;
    assert!(text.status.success(), "{text:?}");
    assert_eq!(
        String::from_utf8(text.stdout)?.trim(),
        format!("cairn {}", env!("CARGO_PKG_VERSION"))
    );
    let num = run(&["version", "--output", "num"])?;
    assert!(num.status.success(), "{num:?}");
    let n: u64 = String::from_utf8(num.stdout)?.trim().parse()?;
    let parts: Vec<u64> = env!("CARGO_PKG_VERSION")
        .split('.')
        .map(|p| p.parse().unwrap_or(0))
        .collect();
    assert_eq!(n, parts[0] * 1_000_000 + parts[1] * 1_000 + parts[2]);
    let bad = run(&["version", "--output", "json"])?;
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    Ok(())
}
