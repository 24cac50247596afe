//! Issue 9, "Nothing silently wrong": failed producers and consumers of stream backups, files
//! that change while they are read, hard links, holes and special files, and restores steered
//! outside their destination by a crafted manifest. Each test is named after the item it pins.

mod common;

use cairn_repo::manifest::{Content, EntryKind, FileEntry, Manifest};
use common::*;
use std::fs;
use std::path::{Path, PathBuf};

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

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
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
