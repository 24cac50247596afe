//! Filesystem helpers of a tree restore: metadata, removal for `--delta`.

use cairn_repo::manifest::{EntryKind, FileEntry};
use cairn_repo::{Error, Result};
use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;

/// Whether `f` already holds chunk `c` at `offset` (for `--delta`), reading only that range.
pub(super) fn chunk_matches(f: &File, offset: u64, c: &cairn_repo::manifest::ChunkRef) -> bool {
    let mut buf = vec![0u8; c.len as usize];
    f.read_exact_at(&mut buf, offset).is_ok() && cairn_repo::ChunkId::of(&buf) == c.id
}

/// Make what `--delta` reuses at `path` (metadata `m`) safe and possible to rewrite: a file
/// with more than one hard link is removed (writing it in place would change the other
/// paths too: the bytes of a file the backup does not own), and a file or directory whose
/// recorded mode is read-only (a `server.key` of mode 0400, restored as such) is made
/// writable by its owner; `finish` sets the recorded mode again.
pub(super) fn ready_for_delta(path: &Path, m: &fs::Metadata) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if m.is_file() && m.nlink() > 1 {
        return fs::remove_file(path).map_err(|e| {
            Error::io(
                format!(
                    "cannot remove {} (hard-linked elsewhere, so not rewritten in place)",
                    path.display()
                ),
                e,
            )
        });
    }
    let need = if m.is_dir() { 0o700 } else { 0o600 };
    if m.mode() & need != need {
        fs::set_permissions(path, fs::Permissions::from_mode((m.mode() & 0o7777) | need))
            .map_err(|e| Error::io(format!("cannot make {} writable", path.display()), e))?;
    }
    Ok(())
}

/// Give the owner full access to every directory under `path`, so that it can be removed.
fn open_up(path: &Path) {
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
        for item in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if item.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(item.path());
            }
        }
    }
}

pub(super) fn remove_path(path: &Path) -> Result<()> {
    let m = fs::symlink_metadata(path)
        .map_err(|e| Error::io(format!("cannot inspect {}", path.display()), e))?;
    let r = if m.is_dir() {
        fs::remove_dir_all(path).or_else(|e| {
            if e.kind() != io::ErrorKind::PermissionDenied {
                return Err(e);
            }
            // A read-only directory inside (restored so, then left out of this backup).
            open_up(path);
            fs::remove_dir_all(path)
        })
    } else {
        fs::remove_file(path)
    };
    r.map_err(|e| {
        Error::io(
            format!("cannot remove {} (not in the backup)", path.display()),
            e,
        )
    })
}

/// Remove everything under `dest` that the backup does not list (for `--delta`), also inside
/// the directories that a symlink of `links` points at when the link already points at its
/// mapped target (the copy being refreshed owns it).
pub(super) fn remove_unlisted(
    dest: &Path,
    entries: &[FileEntry],
    links: &std::collections::BTreeMap<Vec<u8>, std::path::PathBuf>,
) -> Result<()> {
    let listed: std::collections::HashSet<&[u8]> =
        entries.iter().map(|e| e.path.as_slice()).collect();
    let mut stack = vec![(dest.to_path_buf(), Vec::<u8>::new())];
    while let Some((dir, rel)) = stack.pop() {
        if let Ok(m) = fs::symlink_metadata(&dir) {
            ready_for_delta(&dir, &m)?;
        }
        let rd = fs::read_dir(&dir)
            .map_err(|e| Error::io(format!("cannot list {}", dir.display()), e))?;
        for item in rd.flatten() {
            let mut r = rel.clone();
            if !r.is_empty() {
                r.push(b'/');
            }
            r.extend_from_slice(item.file_name().as_bytes());
            let path = item.path();
            if !listed.contains(r.as_slice()) {
                remove_path(&path)?;
            } else if item.file_type().is_ok_and(|t| t.is_dir())
                || (item.file_type().is_ok_and(|t| t.is_symlink())
                    && links
                        .get(&r)
                        .is_some_and(|t| super::links::owned(true, &path, t) && t.is_dir()))
            {
                stack.push((path, r));
            }
        }
    }
    Ok(())
}

pub(super) fn unsafe_geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

pub(super) fn set_meta(path: &Path, e: &FileEntry, as_root: bool) -> Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Invalid(format!("path {} contains a NUL byte", path.display())))?;
    let fail = |what: &str| {
        Error::io(
            format!("cannot set {what} of {}", path.display()),
            io::Error::last_os_error(),
        )
    };
    if as_root {
        // SAFETY: c is a valid NUL-terminated path; lchown does not follow symlinks.
        if unsafe { libc::lchown(c.as_ptr(), e.uid, e.gid) } != 0 {
            return Err(fail("owner"));
        }
    }
    if e.kind != EntryKind::Symlink {
        fs::set_permissions(path, fs::Permissions::from_mode(e.mode))
            .map_err(|err| Error::io(format!("cannot set mode of {}", path.display()), err))?;
    }
    let ts = libc::timespec {
        tv_sec: e.mtime_ns.div_euclid(1_000_000_000) as libc::time_t,
        tv_nsec: e.mtime_ns.rem_euclid(1_000_000_000) as _,
    };
    let times = [ts, ts];
    // SAFETY: c is a valid path, times points at two timespecs as utimensat requires.
    if unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } != 0
    {
        return Err(fail("mtime"));
    }
    Ok(())
}
