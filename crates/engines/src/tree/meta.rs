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

pub(super) fn remove_path(path: &Path) -> Result<()> {
    let m = fs::symlink_metadata(path)
        .map_err(|e| Error::io(format!("cannot inspect {}", path.display()), e))?;
    let r = if m.is_dir() {
        fs::remove_dir_all(path)
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

/// Remove everything under `dest` that the backup does not list (for `--delta`).
pub(super) fn remove_unlisted(dest: &Path, entries: &[FileEntry]) -> Result<()> {
    let listed: std::collections::HashSet<&[u8]> =
        entries.iter().map(|e| e.path.as_slice()).collect();
    let mut stack = vec![(dest.to_path_buf(), Vec::<u8>::new())];
    while let Some((dir, rel)) = stack.pop() {
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
            } else if item.file_type().is_ok_and(|t| t.is_dir()) {
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
