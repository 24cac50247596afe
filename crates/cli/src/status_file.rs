//! Local status files of running backups and restores, as pgBackRest keeps lock files in its
//! lock-path: `<lock-path>/<stanza>-<command>.status` (default lock-path `/tmp/cairn`), JSON
//! `{"pid", "command", "size", "size-cplt"}`, written by the running command as it progresses
//! (at most once a second) and removed when it ends. `info` on the same host reads them for
//! `status.lock.backup` (its size and size-cplt; whether a backup holds the stanza comes from
//! the repository's lock, which every host sees) and `status.lock.restore` (a restore takes no
//! repository lock: a living pid is what makes it held). They are not repository bytes.
//!
//! The directory is shared by users (a backup as postgres, `info` as root), so the file is
//! written as a fresh temporary file renamed into place (never through a planted link), and
//! read with a size bound; what it says is only ever shown.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(crate) const DEFAULT_LOCK_PATH: &str = "/tmp/cairn";

/// The most bytes of a status file read.
const MAX_BYTES: u64 = 4096;

#[derive(Debug, Serialize, Deserialize)]
struct Body {
    pid: u32,
    command: String,
    size: u64,
    #[serde(rename = "size-cplt")]
    size_cplt: u64,
}

fn path_of(dir: &Path, stanza: &str, command: &str) -> PathBuf {
    dir.join(format!("{stanza}-{command}.status"))
}

/// The status file of this running command.
#[derive(Debug)]
pub(crate) struct StatusFile {
    path: PathBuf,
    command: &'static str,
    last: Mutex<Option<Instant>>,
}

impl StatusFile {
    /// Start one (best effort: a status file is for display only, and a command never fails
    /// for want of one).
    pub(crate) fn start(dir: &Path, stanza: &str, command: &'static str) -> Option<StatusFile> {
        if !dir.exists() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::create_dir_all(dir).ok()?;
            // Shared like /tmp: anyone may add a file, only its owner replace or remove it.
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777));
        }
        let f = StatusFile {
            path: path_of(dir, stanza, command),
            command,
            last: Mutex::new(None),
        };
        f.write(0, 0);
        Some(f)
    }

    /// Record progress: `done` of `size` bytes (at most once a second unless `done == size`).
    pub(crate) fn update(&self, size: u64, done: u64) {
        if let Ok(mut last) = self.last.lock() {
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) && done < size {
                return;
            }
            *last = Some(Instant::now());
        }
        self.write(size, done);
    }

    fn write(&self, size: u64, done: u64) {
        let body = Body {
            pid: std::process::id(),
            command: self.command.to_string(),
            size,
            size_cplt: done.min(size),
        };
        let Some(dir) = self.path.parent() else {
            return;
        };
        let Ok(json) = serde_json::to_vec(&body) else {
            return;
        };
        // A new file of a name no one else chose, then an atomic rename over the old one.
        let tmp = dir.join(format!(
            ".{}.{}.{}",
            self.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let written = (|| -> std::io::Result<()> {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            f.write_all(&json)?;
            std::fs::rename(&tmp, &self.path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

impl Drop for StatusFile {
    fn drop(&mut self) {
        // Only our own: another process's file of the same name is left alone.
        if read_body(&self.path).is_some_and(|b| b.pid == std::process::id()) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn read_body(path: &Path) -> Option<Body> {
    use std::io::Read as _;
    let f = std::fs::File::open(path).ok()?;
    let mut text = Vec::new();
    f.take(MAX_BYTES).read_to_end(&mut text).ok()?;
    serde_json::from_slice(&text).ok()
}

/// What `info` shows of a command's status file.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    /// A process that is still running wrote it.
    pub(crate) held: bool,
    pub(crate) size: u64,
    pub(crate) size_cplt: u64,
}

/// The status of `command` on `stanza` as its file says, if a living process wrote it.
pub(crate) fn read(dir: &Path, stanza: &str, command: &str) -> Seen {
    match read_body(&path_of(dir, stanza, command)) {
        Some(b) if b.command == command && Path::new(&format!("/proc/{}", b.pid)).exists() => {
            Seen {
                held: true,
                size: b.size,
                size_cplt: b.size_cplt.min(b.size),
            }
        }
        _ => Seen::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_file_is_seen_while_its_command_runs_and_gone_after() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let lock_path = dir.path().join("locks");
        {
            let f = StatusFile::start(&lock_path, "main", "restore")
                .ok_or_else(|| std::io::Error::other("no status file"))?;
            f.update(1000, 250);
            assert_eq!(
                read(&lock_path, "main", "restore"),
                Seen {
                    held: true,
                    size: 1000,
                    size_cplt: 250
                }
            );
            assert!(!read(&lock_path, "main", "backup").held);
        }
        assert!(
            !read(&lock_path, "main", "restore").held,
            "removed at the end"
        );
        // A file a dead process left, or one that is not a status file, is not held.
        std::fs::write(
            lock_path.join("main-backup.status"),
            br#"{"pid":4000000,"command":"backup","size":1,"size-cplt":1}"#,
        )?;
        assert!(!read(&lock_path, "main", "backup").held);
        std::fs::write(lock_path.join("main-backup.status"), vec![b'{'; 100_000])?;
        assert!(!read(&lock_path, "main", "backup").held);
        Ok(())
    }
}
