//! The paged data path (manifest version 3) on a real PostgreSQL 15 cluster: a full, then
//! incrementals taken while pgbench writes, between which tables are rewritten (`VACUUM
//! FULL`), truncated, dropped, created, shrunk by vacuum and extended. After each backup a
//! restore point is made once the load stops and the data is digested; every backup is then
//! restored to its restore point and must hold exactly that data, pass `pg_amcheck
//! --heapallindexed` and, stopped, `pg_checksums --check`.

mod common;

use common::pg::{Cluster, Res, amcheck, checksums};
use std::process::Stdio;

/// One digest per table in `public`, over every row in text form.
fn digest(c: &Cluster) -> Res<String> {
    let tables = c.sql(
        "select string_agg(tablename, ' ' order by tablename) from pg_tables where schemaname = 'public'",
    )?;
    let mut out = String::new();
    for t in tables.split_whitespace() {
        let d = c.sql(&format!(
            "select count(*) || ':' || md5(coalesce(string_agg(t::text, '|' order by t::text), '')) from {t} t"
        ))?;
        out.push_str(&format!("{t}={d}\n"));
    }
    Ok(out)
}

fn load(c: &Cluster, seconds: u32) -> Res<std::process::Child> {
    Ok(c.client(
        "pgbench",
        &["-n", "-c", "2", "-T", &seconds.to_string(), "postgres"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()?)
}

/// The labels of the stanza's backups, oldest first.
fn labels(c: &Cluster) -> Res<Vec<String>> {
    let info: serde_json::Value =
        serde_json::from_slice(&c.cairn_ok(&["info", "--output", "json"])?.stdout)?;
    Ok(info[0]["backup"]
        .as_array()
        .ok_or("no backup list")?
        .iter()
        .filter_map(|b| b["label"].as_str().map(String::from))
        .collect())
}

/// What the first two backups each added to the repository (bytes).
fn stored(c: &Cluster) -> Res<(u64, u64)> {
    let info: serde_json::Value =
        serde_json::from_slice(&c.cairn_ok(&["info", "--output", "json"])?.stdout)?;
    let stored = |i: usize| info[0]["backup"][i]["info"]["repository"]["delta"].as_u64();
    Ok((
        stored(0).ok_or("the first backup's size")?,
        stored(1).ok_or("the second backup's size")?,
    ))
}

/// Restore (with `extra` options) into `dest` up to the restore point `rp`, and start the
/// copy (the source stopped: they share a port) once it has promoted.
fn restore_to_point(c: &Cluster, dest: &std::path::Path, extra: &[&str], rp: &str) -> Res<Cluster> {
    let mut args = vec!["restore", "--dest", dest.to_str().ok_or("path")?];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "--type",
        "name",
        "--target",
        rp,
        "--target-action",
        "promote",
    ]);
    c.cairn_ok(&args)?;
    c.start_copy(dest)
}

#[test]
fn every_backup_of_a_changing_cluster_restores_exactly_and_passes_amcheck_and_checksums() -> Res<()>
{
    let mut c = Cluster::init(None)?;
    c.cairn_ok(&["stanza-create", "--engine", "postgres"])?;
    c.start()?;
    Cluster::check_output(
        "pgbench -i",
        c.client("pgbench", &["-i", "-s", "4", "-q", "postgres"])
            .output()?,
    )?;
    c.sql(
        "create table notes (id int primary key, body text not null);
         insert into notes select g, repeat(md5(g::text), 20) from generate_series(1, 20000) g;
         create table victim as select g as id from generate_series(1, 50000) g;
         create index on pgbench_accounts (abalance);",
    )?;
    // Set every hint bit now: the first scan after the full would otherwise change (and log)
    // every page it reads, and the quiet incremental below would store them.
    c.sql("vacuum freeze")?;
    c.cairn_ok(&["backup", "--type", "full"])?;
    c.sql("select pg_create_restore_point('rp0')")?;
    let mut expected = vec![digest(&c)?];

    let steps: [&[&str]; 7] = [
        // Quiet: a few rows of a large table (the incremental must store little).
        &["update pgbench_accounts set abalance = abalance + 1 where aid % 20000 = 0"],
        // Page splits in the index on abalance, row updates everywhere.
        &["update pgbench_accounts set abalance = abalance + 7 where aid % 13 = 0"],
        // A rewrite: every relation file of the table gets a new relfilenode.
        &["vacuum full pgbench_accounts"],
        &[
            "truncate pgbench_history",
            "create table born (id int, v text)",
            "insert into born select g, md5(g::text) from generate_series(1, 30000) g",
        ],
        // A drop, and a table whose file vacuum shrinks.
        &[
            "drop table victim",
            "delete from notes where id > 15000",
            "vacuum notes",
        ],
        // Extension: the table and its index grow by many units.
        &[
            "insert into notes select g, repeat(md5(g::text), 20) from generate_series(20001, 60000) g",
        ],
        &[
            "update notes set body = upper(body) where id % 97 = 0",
            "checkpoint",
        ],
    ];
    for (i, step) in steps.iter().enumerate() {
        for sql in step.iter() {
            c.sql(sql)?;
        }
        let mut writer = if i > 0 { Some(load(&c, 3)?) } else { None };
        let kind = if i == 4 { "diff" } else { "incr" };
        c.cairn_ok(&["backup", "--type", kind])?;
        if let Some(w) = &mut writer {
            w.wait()?;
        }
        c.sql(&format!("select pg_create_restore_point('rp{}')", i + 1))?;
        expected.push(digest(&c)?);
    }
    let last = c.switch_wal()?;
    c.wait_archived(&last)?;

    let labels = labels(&c)?;
    assert_eq!(labels.len(), expected.len(), "{labels:?}");
    // Incrementals store the pages that changed, not whole files again.
    let (full, first_incr) = stored(&c)?;
    assert!(
        first_incr * 20 < full,
        "the first incremental stored {first_incr} bytes against the full's {full}"
    );

    c.stop()?;
    for (i, (label, want)) in labels.iter().zip(&expected).enumerate() {
        let dest = c.dir.path().join(format!("restore-{i}"));
        let rp = format!("rp{i}");
        let mut r = restore_to_point(&c, &dest, &["--set", label], &rp)?;
        let got = digest(&r)?;
        assert_eq!(&got, want, "backup {label} restored to {rp}");
        amcheck(&r)?;
        r.stop()?;
        checksums(&r)?;
        std::fs::remove_dir_all(&dest)?;
    }
    Ok(())
}

/// A digest of `big` that does not build one string of the whole table (it is over 1 GiB).
fn big_digest(c: &Cluster) -> Res<String> {
    c.sql("select count(*) || ':' || sum(id::bigint) || ':' || sum(hashtext(pad)::bigint) from big")
}

/// A table that grows across its 1 GiB segment boundary between a full and an incremental
/// (its `.1` file appears) while the end of its first segment changes: the incremental stores
/// what changed, and the restore holds exactly the data and passes amcheck and checksums.
#[test]
fn a_table_extended_across_its_1_gib_segment_boundary_restores_exactly() -> Res<()> {
    // 4 rows of about 1.9 KB per page: 130,610 pages, 3.6 MiB short of the 1 GiB boundary,
    // the last 128-page unit of the first segment part full.
    const ROWS: u32 = 4 * 130_610;
    let mut c = Cluster::init(None)?;
    c.cairn_ok(&["stanza-create", "--engine", "postgres"])?;
    // No backup needs the WAL that builds the table: archive it to nowhere, then to cairn.
    c.set("archive_command = '/bin/true'")?;
    c.start()?;
    c.sql(&format!(
        "create table big (id int, pad text) with (autovacuum_enabled = off);
         alter table big alter column pad set storage plain;
         insert into big select g, lpad(g::text, 1900, 'x') from generate_series(1, {ROWS}) g;
         create index on big (id)"
    ))?;
    c.sql("vacuum freeze big")?;
    let file = c.data.join(c.sql("select pg_relation_filepath('big')")?);
    let first = std::fs::metadata(&file)?.len();
    assert!(
        first < 1 << 30 && first > (1 << 30) - (16 << 20),
        "the table's first segment holds {first} bytes, not just under 1 GiB"
    );
    let second = file.with_extension("1");
    assert!(
        !second.exists(),
        "{} exists before the full",
        second.display()
    );
    c.set(&format!("archive_command = '{}'", c.archive_command()))?;
    c.sql("select pg_reload_conf()")?;
    c.cairn_ok(&["backup", "--type", "full"])?;

    // Across the boundary: 2,000 new pages, and the last rows of the first segment updated
    // (their old pages change in place, their new versions land in the second segment).
    c.sql(&format!(
        "insert into big select g, lpad(g::text, 1900, 'y') from generate_series({}, {}) g;
         update big set pad = lpad(id::text, 1900, 'z') where id > {} and id <= {ROWS}",
        ROWS + 1,
        ROWS + 8_000,
        ROWS - 400
    ))?;
    assert!(second.exists(), "{} was not created", second.display());
    c.cairn_ok(&["backup", "--type", "incr"])?;
    c.sql("select pg_create_restore_point('grown')")?;
    let want = big_digest(&c)?;
    let last = c.switch_wal()?;
    c.wait_archived(&last)?;

    let (full, incr) = stored(&c)?;
    assert!(
        incr * 4 < full,
        "the incremental stored {incr} bytes against the full's {full}"
    );
    c.stop()?;
    let mut r = restore_to_point(&c, &c.dir.path().join("restore"), &[], "grown")?;
    assert_eq!(big_digest(&r)?, want, "the restored table");
    amcheck(&r)?;
    r.stop()?;
    checksums(&r)?;
    Ok(())
}
