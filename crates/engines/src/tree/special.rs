//! Symlinks, hard links and special files (FIFOs, devices): what a tree restore creates after
//! the data is written, each without following a symlink standing where it goes.

use super::join;
use super::meta::remove_path;
use cairn_repo::manifest::{EntryKind, FileEntry};
use cairn_repo::{Error, Result};
use std::ffi::{CString, OsStr};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Create `e` at `path` when it is a link or special file. Returns whether its mode, owner and
/// mtime are to be set (not for a hard link, which shares its first path's inode, nor for a
/// device that could not be made).
pub(super) fn create(root: &Path, path: &Path, e: &FileEntry, as_root: bool) -> Result<bool> {
    let replace = || -> Result<()> {
        if fs::symlink_metadata(path).is_ok() {
            remove_path(path)?;
        }
        Ok(())
    };
    let target = e.link_target.as_deref().unwrap_or_default();
    match e.kind {
        EntryKind::File | EntryKind::Dir => Ok(true),
        EntryKind::Symlink => {
            replace()?;
            std::os::unix::fs::symlink(OsStr::from_bytes(target), path).map_err(|err| {
                Error::io(format!("cannot create symlink {}", path.display()), err)
            })?;
            Ok(true)
        }
        EntryKind::HardLink => {
            replace()?;
            // link(2) does not follow a symlink at the target; `check_paths` made sure the
            // target is a file of this backup, restored above.
            let first = join(root, target);
            fs::hard_link(&first, path).map_err(|err| {
                Error::io(
                    format!("cannot link {} to {}", path.display(), first.display()),
                    err,
                )
            })?;
            Ok(false)
        }
        EntryKind::Fifo => {
            replace()?;
            mknod(path, libc::S_IFIFO, 0)?;
            Ok(true)
        }
        EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
            let kind = if matches!(e.kind, EntryKind::CharDevice { .. }) {
                libc::S_IFCHR
            } else {
                libc::S_IFBLK
            };
            if !as_root {
                tracing::warn!(
                    "not restoring device file {} ({major}:{minor}): creating devices needs root",
                    path.display()
                );
                return Ok(false);
            }
            replace()?;
            mknod(path, kind, libc::makedev(major, minor))?;
            Ok(true)
        }
    }
}

fn mknod(path: &Path, kind: libc::mode_t, dev: libc::dev_t) -> Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Invalid(format!("path {} contains a NUL byte", path.display())))?;
    // SAFETY: c is a valid NUL-terminated path; mknod does not follow a symlink at it (it
    // fails with EEXIST, and `replace` removed whatever stood there).
    if unsafe { libc::mknod(c.as_ptr(), kind | 0o600, dev) } != 0 {
        return Err(Error::io(
            format!("cannot create {}", path.display()),
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}
