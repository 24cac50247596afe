//! A backup and an expire started together from two processes, as two hosts would, at many
//! relative timings, on local disk and on S3 (moto, and s3s-fs, which has no conditional
//! writes): each either runs or is refused by the stanza lock (exit 5), nothing a listed backup
//! needs is ever deleted, and every listed backup restores to exactly what was backed up.

mod common;

use common::s3::{ACCESS_KEY, SECRET_KEY, aws_env, create_bucket, start_moto, start_s3s_fs};
use common::{TestResult, bytes};
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

struct Repo {
    args: Vec<String>,
    env: Vec<(&'static str, &'static str)>,
}

impl Repo {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
        c.envs(self.env.iter().copied())
            .args(&self.args)
            .args(["--stanza", "main", "--log-level", "warn"])
            .args(args);
        c
    }

    fn ok(&self, args: &[&str]) -> Result<Output, Box<dyn std::error::Error>> {
        let out = self.cmd(args).stdin(Stdio::null()).output()?;
        if !out.status.success() {
            return Err(format!("{args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        Ok(out)
    }

    fn labels(&self) -> Result<Vec<String>, Box<dyn std::error::Error>> {
        let info: serde_json::Value =
            serde_json::from_slice(&self.ok(&["info", "--output", "json"])?.stdout)?;
        Ok(common::backup_labels(&info))
    }
}

fn race(repo: &Repo, rounds: u64, margin: &str) -> TestResult {
    repo.ok(&["stanza-create", "--engine", "stream"])?;
    let mut datas: Vec<Vec<u8>> = Vec::new();
    for round in 0..rounds {
        // Part of each round's data is new, part repeats an earlier round's (reuse).
        let mut data = bytes(round, 600_000);
        data.extend(bytes(round / 2, 600_000));
        datas.push(data.clone());
        let mut backup = repo
            .cmd(&["backup", "--type", "full"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let input = backup.stdin.take();
        let feeder = std::thread::spawn(move || {
            if let Some(mut i) = input {
                let _ = i.write_all(&data);
            }
        });
        // The expire starts at a different moment of the backup each round.
        std::thread::sleep(Duration::from_millis((round * 37) % 250));
        let expire = repo
            .cmd(&["expire", "--retention-full", "2", "--gc-margin", margin])
            .stdin(Stdio::null())
            .output()?;
        let backup = backup.wait_with_output()?;
        let _ = feeder.join();
        for (what, out) in [("backup", &backup), ("expire", &expire)] {
            assert!(
                out.status.success() || out.status.code() == Some(5),
                "round {round}: {what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for label in repo.labels()? {
            let out = repo.ok(&["restore", "--set", &label, "--dest", "-"])?;
            assert!(
                datas.contains(&out.stdout),
                "round {round}: backup {label} restored to bytes no backup had"
            );
        }
    }
    let v = repo.cmd(&["verify"]).output()?;
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    Ok(())
}

#[test]
fn backup_and_expire_together_on_local_disk_lose_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let repo = Repo {
        args: vec![
            "--repo".into(),
            dir.path().join("repo").display().to_string(),
        ],
        env: vec![],
    };
    race(&repo, 12, "0")
}

#[test]
fn backup_and_expire_together_on_s3_lose_nothing() -> TestResult {
    let moto = start_moto()?;
    create_bucket(moto.port, "race")?;
    let repo = Repo {
        args: moto.repo_args("race", "cairn"),
        env: aws_env(),
    };
    race(&repo, 8, "0")
}

/// s3s-fs answers 501 to `If-None-Match`, so create-only writes are a HEAD then a PUT and the
/// stanza lock can be raced (cairn warns). What keeps a backup's reused chunks then is the
/// deletion margin (format.md, "Condemned packs"), so this race runs with the default one:
/// packs are condemned, a backup that reuses one takes it back, and nothing listed is lost.
#[test]
fn backup_and_expire_together_on_s3_without_conditional_writes_lose_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("s3");
    std::fs::create_dir_all(root.join("race"))?;
    let server = start_s3s_fs(&root, ACCESS_KEY, SECRET_KEY)?;
    let repo = Repo {
        args: server.repo_args("race", "cairn"),
        env: aws_env(),
    };
    race(&repo, 6, "3600")?;
    // The expires may all have met a running backup (the race starts each during one); one
    // more on its own condemns what the kept backups do not need.
    repo.ok(&["expire", "--retention-full", "2"])?;
    for label in repo.labels()? {
        repo.ok(&["restore", "--set", &label, "--dest", "-"])?;
    }
    let info: serde_json::Value =
        serde_json::from_slice(&repo.ok(&["info", "--output", "json"])?.stdout)?;
    let condemned = &info[0]["cairn"]["repository"]["condemned"]["packs"];
    assert!(
        condemned.as_u64().is_some_and(|n| n > 0),
        "expire condemned nothing: {info}"
    );
    Ok(())
}
