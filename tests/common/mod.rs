//! Helpers shared by the integration tests: run the real `cairn` binary against a repository in
//! a temporary directory, generate trees and streams from a seeded generator, compare trees.
#![allow(dead_code)]

pub mod pg;
pub mod proxy;
pub mod s3;

use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

pub struct Env {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
    pub stanza: String,
}

impl Env {
    pub fn new(engine: &str) -> Result<Env, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let env = Env {
            repo: dir.path().join("repo"),
            dir,
            stanza: "main".into(),
        };
        env.ok(&["stanza-create", "--engine", engine])?;
        Ok(env)
    }

    /// Another stanza, `name` of `engine`, created in this environment's repository.
    pub fn stanza_beside(
        &self,
        name: &str,
        engine: &str,
    ) -> Result<Env, Box<dyn std::error::Error>> {
        let mut other = Env::new(engine)?;
        other.stanza = name.into();
        other.repo = self.repo.clone();
        other.ok(&["stanza-create", "--engine", engine])?;
        Ok(other)
    }

    /// This stanza's directory in the repository.
    pub fn stanza_dir(&self) -> PathBuf {
        self.repo.join("stanza").join(&self.stanza)
    }

    /// The catalog's generations (format.md, "Catalog"), newest first.
    pub fn catalog_generations(&self) -> std::io::Result<Vec<PathBuf>> {
        let dir = self.stanza_dir().join("catalogs");
        let mut gens: Vec<PathBuf> = fs::read_dir(dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        gens.sort();
        gens.reverse();
        Ok(gens)
    }

    /// Every object a reader may take the catalog from: each generation and the copy.
    pub fn catalog_objects(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut all = self.catalog_generations()?;
        all.push(self.stanza_dir().join("catalog"));
        Ok(all)
    }

    /// The catalog objects as they are now, to put back with `put_back_catalogs` (the state a
    /// crash before a later catalog write would have left).
    pub fn save_catalogs(&self) -> std::io::Result<Vec<(PathBuf, Vec<u8>)>> {
        self.catalog_objects()?
            .into_iter()
            .map(|p| fs::read(&p).map(|b| (p, b)))
            .collect()
    }

    pub fn put_back_catalogs(&self, saved: &[(PathBuf, Vec<u8>)]) -> std::io::Result<()> {
        for p in self.catalog_generations()? {
            fs::remove_file(p)?;
        }
        for (p, b) in saved {
            fs::write(p, b)?;
        }
        Ok(())
    }

    /// Replace the catalog's list (newest generation and its copy) as a crafted or repaired
    /// repository would hold it.
    pub fn write_catalog(
        &self,
        c: &cairn_repo::catalog::Catalog,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let newest = self
            .catalog_generations()?
            .into_iter()
            .next()
            .ok_or("no catalog")?;
        let name = newest.file_name().and_then(|n| n.to_str()).ok_or("name")?;
        let bytes = c.encode_generation(u64::from_str_radix(name, 16)?);
        fs::write(&newest, &bytes)?;
        fs::write(self.stanza_dir().join("catalog"), &bytes)?;
        Ok(())
    }

    /// The catalog's list as the newest generation holds it.
    pub fn read_catalog(&self) -> Result<cairn_repo::catalog::Catalog, Box<dyn std::error::Error>> {
        let newest = self
            .catalog_generations()?
            .into_iter()
            .next()
            .ok_or("no catalog")?;
        Ok(cairn_repo::catalog::Catalog::decode(
            "catalog",
            &fs::read(newest)?,
        )?)
    }

    /// Where the manifest of backup `label` of this stanza is.
    pub fn manifest_path(&self, label: &str) -> PathBuf {
        self.repo
            .join("stanza")
            .join(&self.stanza)
            .join("backup")
            .join(label)
            .join("manifest")
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
        for (k, _) in std::env::vars() {
            if k.starts_with("CAIRN_") {
                c.env_remove(k);
            }
        }
        c.env("CAIRN_CACHE_PATH", self.dir.path().join("cache"));
        c.arg("--repo")
            .arg(&self.repo)
            .arg("--stanza")
            .arg(&self.stanza)
            .arg("--log-level")
            .arg("warn");
        c.args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> std::io::Result<Output> {
        self.cmd(args).stdin(Stdio::null()).output()
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        let out = self.run(args)?;
        if !out.status.success() {
            return Err(format!(
                "cairn {args:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(out.stdout)
    }

    /// Run with `input` on stdin and require success.
    pub fn ok_stdin(
        &self,
        args: &[&str],
        input: &[u8],
    ) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        let data = input.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&data));
        let out = child.wait_with_output()?;
        writer.join().map_err(|_| "writer panicked")??;
        if !out.status.success() {
            return Err(format!(
                "cairn {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(out.stdout)
    }

    pub fn info(&self) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
        let out = self.ok(&["info", "--output", "json"])?;
        Ok(serde_json::from_slice(&out)?)
    }

    /// The JSON record of the newest backup.
    pub fn last_backup(&self) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
        let info = self.info()?;
        info[0]["backup"]
            .as_array()
            .and_then(|b| b.last())
            .cloned()
            .ok_or_else(|| "no backup listed".into())
    }

    pub fn labels(&self) -> Result<Vec<String>, Box<dyn std::error::Error>> {
        Ok(backup_labels(&self.info()?))
    }
}

/// Every object file under `dir` (recursively, temporary files skipped), sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else if !e.file_name().to_string_lossy().starts_with(".tmp-") {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Invert the byte at `at` of the file (damage as a disk or a careless hand makes it).
pub fn flip_byte(path: &Path, at: usize) -> std::io::Result<()> {
    let mut b = fs::read(path)?;
    let len = b.len();
    let byte = b
        .get_mut(at)
        .ok_or_else(|| std::io::Error::other(format!("{} has only {len} bytes", path.display())))?;
    *byte ^= 0xff;
    fs::write(path, &b)
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A files stanza with a full and an incr backup of a small tree; returns the source.
pub fn two_backups(env: &Env) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let src = env.path("src");
    fs::create_dir_all(&src)?;
    fs::write(src.join("one"), bytes(1, 1_500_000))?;
    fs::write(src.join("two"), text(2, 800_000))?;
    for f in ["one", "two"] {
        set_mtime(&src.join(f), 1_600_000_000, 0);
    }
    let s = src.to_str().ok_or("path")?;
    env.ok(&["backup", "--type", "full", "--source", s])?;
    fs::write(src.join("three"), bytes(3, 700_000))?;
    set_mtime(&src.join("three"), 1_600_000_000, 0);
    env.ok(&["backup", "--type", "incr", "--source", s])?;
    Ok(src)
}

/// The labels of the first stanza's backups in `info --output json`, oldest first.
pub fn backup_labels(info: &serde_json::Value) -> Vec<String> {
    info[0]["backup"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| b["label"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Total bytes of every file under `dir`.
pub fn du(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => total += du(&e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

/// Deterministic bytes (the repository's own seeded generator).
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    cairn_repo::chunker::seeded_bytes(seed, len)
}

/// Deterministic text lines (compressible, like a dump).
pub fn text(seed: u64, len: usize) -> Vec<u8> {
    let words = [
        "alpha", "beta", "gamma", "delta", "insert", "into", "values", "select", "from", "where",
    ];
    let r = bytes(seed, len / 4 + 16);
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0;
    while out.len() < len {
        let n = r[i % r.len()] as usize;
        writeln!(
            out,
            "{} {} {};",
            words[n % 10],
            n * 7919 + i,
            words[(n / 10) % 10]
        )
        .ok();
        i += 1;
    }
    out.truncate(len);
    out
}

/// Set a path's mtime (not following symlinks) to `secs` since the epoch.
pub fn set_mtime(path: &Path, secs: i64, nanos: i64) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap_or_default();
    let ts = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nanos as _,
    };
    // SAFETY: c is a valid NUL-terminated path, the array holds the two timespecs utimensat reads.
    unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            [ts, ts].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
}

/// Every difference between two trees: kinds, contents, modes, owners, mtimes, link targets.
pub fn tree_diff(a: &Path, b: &Path) -> Vec<String> {
    let mut diffs = Vec::new();
    compare(a, b, Path::new(""), &mut diffs);
    diffs
}

fn compare(a: &Path, b: &Path, rel: &Path, diffs: &mut Vec<String>) {
    let (pa, pb) = (a.join(rel), b.join(rel));
    let (ma, mb) = match (fs::symlink_metadata(&pa), fs::symlink_metadata(&pb)) {
        (Ok(x), Ok(y)) => (x, y),
        (x, y) => {
            diffs.push(format!(
                "{}: exists {} vs {}",
                rel.display(),
                x.is_ok(),
                y.is_ok()
            ));
            return;
        }
    };
    let facts = |m: &fs::Metadata| {
        (
            m.file_type().is_dir(),
            m.file_type().is_symlink(),
            m.mode(),
            m.uid(),
            m.gid(),
        )
    };
    if facts(&ma) != facts(&mb) {
        diffs.push(format!(
            "{}: {:?} vs {:?}",
            rel.display(),
            facts(&ma),
            facts(&mb)
        ));
    }
    if (ma.mtime(), ma.mtime_nsec()) != (mb.mtime(), mb.mtime_nsec()) {
        diffs.push(format!(
            "{}: mtime {}.{} vs {}.{}",
            rel.display(),
            ma.mtime(),
            ma.mtime_nsec(),
            mb.mtime(),
            mb.mtime_nsec()
        ));
    }
    if ma.file_type().is_symlink() {
        if fs::read_link(&pa).ok() != fs::read_link(&pb).ok() {
            diffs.push(format!("{}: link target differs", rel.display()));
        }
    } else if ma.is_file() {
        if fs::read(&pa).ok() != fs::read(&pb).ok() {
            diffs.push(format!("{}: contents differ", rel.display()));
        }
    } else if ma.is_dir() {
        let names = |p: &Path| -> Vec<std::ffi::OsString> {
            let mut v: Vec<_> = fs::read_dir(p)
                .map(|r| r.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            v.sort();
            v
        };
        let (na, nb) = (names(&pa), names(&pb));
        if na != nb {
            diffs.push(format!("{}: entries {:?} vs {:?}", rel.display(), na, nb));
        }
        for n in na.iter().filter(|n| nb.contains(n)) {
            compare(a, b, &rel.join(n), diffs);
        }
    }
}

/// A tree with many sizes, empty files and directories, symlinks, odd modes and names.
pub fn make_tree(root: &Path, seed: u64) -> std::io::Result<()> {
    use std::os::unix::fs::{PermissionsExt, symlink};
    fs::create_dir_all(root.join("data/deep/er/still"))?;
    fs::create_dir_all(root.join("empty/nested-empty"))?;
    let sizes = [
        0usize, 1, 100, 4095, 4096, 8193, 65_536, 300_000, 1_048_579, 3_000_001,
    ];
    for (i, size) in sizes.iter().enumerate() {
        fs::write(
            root.join(format!("data/f{i}")),
            bytes(seed + i as u64, *size),
        )?;
    }
    for i in 0..40 {
        fs::write(
            root.join(format!("data/deep/er/small-{i}")),
            bytes(seed * 31 + i, (i * 37) as usize),
        )?;
    }
    fs::write(
        root.join("data/deep/er/still/text.sql"),
        text(seed, 2_500_000),
    )?;
    fs::write(
        root.join(std::ffi::OsStr::from_bytes(b"data/latin1-\xe9t\xe9")),
        b"not utf-8 name",
    )?;
    symlink("deep/er/small-3", root.join("data/rel-link"))?;
    symlink("/nonexistent/target", root.join("data/dangling-link"))?;
    symlink("deep", root.join("data/dir-link"))?;
    fs::write(root.join("data/readonly"), b"ro")?;
    fs::set_permissions(
        root.join("data/readonly"),
        fs::Permissions::from_mode(0o444),
    )?;
    fs::write(root.join("data/script"), b"#!/bin/sh\n")?;
    fs::set_permissions(root.join("data/script"), fs::Permissions::from_mode(0o4755))?;
    fs::create_dir_all(root.join("locked/inside"))?;
    fs::write(root.join("locked/inside/file"), b"x")?;
    fs::set_permissions(
        root.join("locked/inside"),
        fs::Permissions::from_mode(0o555),
    )?;
    fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o700))?;
    // Old, distinct mtimes (with nanoseconds) everywhere, children before parents.
    let mut all = Vec::new();
    collect(root, &mut all);
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in all.iter().enumerate() {
        set_mtime(
            p,
            1_600_000_000 + i as i64 * 3,
            (i as i64 * 7_777_777) % 1_000_000_000,
        );
    }
    Ok(())
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect(&p, out);
            } else {
                out.push(p);
            }
        }
    }
}

/// `cp -a`, for snapshots of a source tree.
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    let st = Command::new("cp").arg("-a").arg(from).arg(to).status()?;
    if st.success() {
        Ok(())
    } else {
        Err(std::io::Error::other("cp -a failed"))
    }
}
