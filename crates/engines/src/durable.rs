//! Small files written whole and durably: the WAL file archive-get hands PostgreSQL, and the
//! files a PostgreSQL restore writes after the restored tree's final sync (tablespace_map,
//! the signal file, postgresql.auto.conf): a crash right after cairn exits 0 must not leave a
//! cluster that starts without its recovery settings, or half a WAL file.

use std::path::Path;

/// Write `data` to `path` whole and durably: a temporary file beside it is fsynced and renamed
/// into place, then the directory is fsynced. A reader never sees half a file, and the file is
/// on disk before the caller reports success.
pub fn write_durably(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.cairn-tmp"));
    // Keep the replaced file's mode and owner (or give a new one the data directory's owner):
    // a root-run restore must not leave postgresql.auto.conf owned by root.
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let (mode, uid, gid) = match std::fs::metadata(path) {
        Ok(m) => (m.mode() & 0o7777, m.uid(), m.gid()),
        Err(_) => {
            let d = std::fs::metadata(dir)?;
            (0o600, d.uid(), d.gid())
        }
    };
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        // Only root can give a file away; anyone else already owns what they write.
        let _ = std::os::unix::fs::fchown(&f, Some(uid), Some(gid));
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
