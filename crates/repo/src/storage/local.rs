//! The local filesystem backend. A put writes a uniquely named temporary file beside the
//! target, fsyncs it, then renames it into place (overwrite) or hard-links it (create-only, so
//! an existing object is never replaced), and fsyncs the directory: a reader never sees a
//! half-written object and a returned put survives a power cut.

use super::{Key, Leftover, ObjectMeta, Pieces, PutMode, Storage, StorageError};
use async_trait::async_trait;
use bytes::Bytes;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Temporary files carry this prefix; listings skip them.
const TMP_PREFIX: &str = ".tmp-";

#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

fn classify(key: &Key, e: io::Error) -> StorageError {
    let key = key.to_string();
    match e.kind() {
        io::ErrorKind::NotFound => StorageError::NotFound { key },
        io::ErrorKind::AlreadyExists => StorageError::AlreadyExists { key },
        io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            StorageError::Transient {
                key,
                message: e.to_string(),
            }
        }
        _ => {
            let hint = match e.raw_os_error() {
                Some(libc::ENOSPC) => {
                    "; free space on the repository's filesystem and run the command again"
                }
                Some(libc::EACCES) | Some(libc::EPERM) => {
                    "; make the repository readable and writable by the user running cairn"
                }
                _ => "",
            };
            StorageError::Permanent {
                key,
                message: format!("{e}{hint}"),
            }
        }
    }
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl LocalStorage {
    /// A backend rooted at `root`, which must exist and be a directory.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let root = root.into();
        match fs::metadata(&root) {
            Ok(m) if m.is_dir() => Ok(LocalStorage { root }),
            Ok(_) => Err(StorageError::Permanent {
                key: root.display().to_string(),
                message: "is not a directory".into(),
            }),
            Err(e) => Err(StorageError::Permanent {
                key: root.display().to_string(),
                message: format!("{e}; create the directory or fix --repo"),
            }),
        }
    }

    fn path(&self, key: &Key) -> PathBuf {
        self.root.join(key.as_str())
    }

    /// The directory of `key` (created) and a fresh temporary path in it.
    fn temp_for(&self, key: &Key, mode: PutMode) -> Result<(PathBuf, PathBuf), StorageError> {
        let target = self.path(key);
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| classify(key, e))?;
        if mode == PutMode::Create && target.exists() {
            return Err(StorageError::AlreadyExists {
                key: key.to_string(),
            });
        }
        let tmp = dir.join(format!(
            "{TMP_PREFIX}{}-{}-{}",
            key.name(),
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        Ok((dir, tmp))
    }

    /// Make the fully written and fsynced `tmp` the object `key`, then fsync the directory.
    fn commit(&self, key: &Key, dir: &Path, tmp: &Path, mode: PutMode) -> io::Result<()> {
        let target = self.path(key);
        match mode {
            PutMode::Overwrite => fs::rename(tmp, &target),
            PutMode::Create => {
                let linked = fs::hard_link(tmp, &target);
                let _ = fs::remove_file(tmp);
                linked
            }
        }?;
        fsync_dir(dir)
    }

    fn put_sync(&self, key: &Key, data: &[u8], mode: PutMode) -> Result<(), StorageError> {
        let (dir, tmp) = self.temp_for(key, mode)?;
        let result = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            drop(f);
            self.commit(key, &dir, &tmp, mode)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(|e| classify(key, e))
    }

    async fn put_stream_async(
        &self,
        key: &Key,
        mut body: Pieces,
        mode: PutMode,
    ) -> Result<(), StorageError> {
        use futures_util::StreamExt;
        let (me, k) = (self.clone(), key.clone());
        let (dir, tmp) = blocking(move || me.temp_for(&k, mode)).await?;
        let written = async {
            let mut f = tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .await
                .map_err(|e| classify(key, e))?;
            while let Some(piece) = body.next().await {
                tokio::io::AsyncWriteExt::write_all(&mut f, &piece?)
                    .await
                    .map_err(|e| classify(key, e))?;
            }
            f.sync_all().await.map_err(|e| classify(key, e))
        }
        .await;
        let (me, k, t) = (self.clone(), key.clone(), tmp.clone());
        let result = match written {
            Ok(()) => {
                blocking(move || me.commit(&k, &dir, &t, mode).map_err(|e| classify(&k, e))).await
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    fn get_sync(&self, key: &Key, range: Option<Range<u64>>) -> Result<Bytes, StorageError> {
        let mut f = File::open(self.path(key)).map_err(|e| classify(key, e))?;
        let size = f.metadata().map_err(|e| classify(key, e))?.len();
        let range = range.unwrap_or(0..size);
        if range.start > range.end || range.end > size {
            return Err(StorageError::OutOfRange {
                key: key.to_string(),
                message: format!(
                    "range {}..{} is outside the object's {size} bytes",
                    range.start, range.end
                ),
            });
        }
        f.seek(SeekFrom::Start(range.start))
            .map_err(|e| classify(key, e))?;
        let mut buf = vec![0u8; (range.end - range.start) as usize];
        f.read_exact(&mut buf).map_err(|e| classify(key, e))?;
        Ok(Bytes::from(buf))
    }

    /// Call `f` on every file under `prefix`, recursively.
    fn walk_files(
        &self,
        prefix: &Key,
        mut f: impl FnMut(&fs::DirEntry) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let mut stack = vec![self.path(prefix)];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(classify(prefix, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| classify(prefix, e))?;
                let ft = entry.file_type().map_err(|e| classify(prefix, e))?;
                if ft.is_dir() {
                    stack.push(entry.path());
                } else if ft.is_file() {
                    f(&entry)?;
                }
            }
        }
        Ok(())
    }

    /// The key of a file under the root, if it is a valid key (files that are not were not
    /// written by cairn, and are ignored).
    fn key_of(&self, path: &Path) -> Option<Key> {
        let rel = path.strip_prefix(&self.root).ok()?;
        Key::new(rel.to_string_lossy().into_owned()).ok()
    }

    fn list_sync(&self, prefix: &Key) -> Result<Vec<ObjectMeta>, StorageError> {
        let mut out = Vec::new();
        self.walk_files(prefix, |entry| {
            let name = entry.file_name();
            if name.to_str().is_none_or(|n| n.starts_with(TMP_PREFIX)) {
                return Ok(());
            }
            if let Some(key) = self.key_of(&entry.path()) {
                match entry.metadata() {
                    Ok(m) => out.push(ObjectMeta {
                        key,
                        size: m.len(),
                        modified: m.modified().ok().map(super::epoch_seconds),
                    }),
                    // Deleted since the directory was read: not there any more.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(classify(&key, e)),
                }
            }
            Ok(())
        })?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Temporary files under `prefix`: `.tmp-<name>-<pid>-<seq>` next to the object `name`.
    fn leftovers_sync(&self, prefix: &Key) -> Result<Vec<Leftover>, StorageError> {
        let mut out = Vec::new();
        let now = std::time::SystemTime::now();
        self.walk_files(prefix, |entry| {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TMP_PREFIX)) else {
                return Ok(());
            };
            // The object's name is what precedes `-<pid>-<seq>`.
            let object = rest.rsplitn(3, '-').nth(2).unwrap_or(rest);
            let Some(key) = self.key_of(&entry.path().with_file_name(object)) else {
                return Ok(());
            };
            let meta = match entry.metadata() {
                Ok(m) => m,
                // Renamed into place or removed since the listing.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(classify(&key, e)),
            };
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            out.push(Leftover {
                key,
                size: Some(meta.len()),
                age,
            });
            Ok(())
        })?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete_sync(&self, key: &Key) -> Result<(), StorageError> {
        let path = self.path(key);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(classify(key, e)),
        }
        // Remove directories this left empty, up to (not including) the root.
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Transient {
            key: String::new(),
            message: format!("storage task failed: {e}"),
        })?
}

#[async_trait]
impl Storage for LocalStorage {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    async fn put(&self, key: &Key, data: Bytes, mode: PutMode) -> Result<(), StorageError> {
        let me = self.clone();
        let key = key.clone();
        blocking(move || me.put_sync(&key, &data, mode)).await
    }

    async fn put_stream(&self, key: &Key, body: Pieces, mode: PutMode) -> Result<(), StorageError> {
        self.put_stream_async(key, body, mode).await
    }

    async fn get(&self, key: &Key, range: Option<Range<u64>>) -> Result<Bytes, StorageError> {
        let me = self.clone();
        let key = key.clone();
        blocking(move || me.get_sync(&key, range)).await
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta, StorageError> {
        let path = self.path(key);
        let key = key.clone();
        blocking(move || {
            let m = fs::metadata(&path).map_err(|e| classify(&key, e))?;
            if !m.is_file() {
                return Err(StorageError::NotFound {
                    key: key.to_string(),
                });
            }
            Ok(ObjectMeta {
                key,
                size: m.len(),
                modified: m.modified().ok().map(super::epoch_seconds),
            })
        })
        .await
    }

    async fn list(&self, prefix: &Key) -> Result<Vec<ObjectMeta>, StorageError> {
        let me = self.clone();
        let prefix = prefix.clone();
        blocking(move || me.list_sync(&prefix)).await
    }

    async fn leftovers(&self, prefix: &Key) -> Result<Vec<Leftover>, StorageError> {
        let me = self.clone();
        let prefix = prefix.clone();
        blocking(move || me.leftovers_sync(&prefix)).await
    }

    async fn delete(&self, key: &Key) -> Result<(), StorageError> {
        let me = self.clone();
        let key = key.clone();
        blocking(move || me.delete_sync(&key)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_backend_conforms() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = LocalStorage::new(dir.path())?;
        super::super::conformance::run_all(&store).await;
        Ok(())
    }

    #[tokio::test]
    async fn listing_skips_temporary_files() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        fs::create_dir_all(dir.path().join("a"))?;
        fs::write(dir.path().join("a/.tmp-x-1-1"), b"half")?;
        fs::create_dir_all(dir.path().join("a/b"))?;
        fs::write(dir.path().join("a/b/.tmp-pack-0a-77-3"), b"quarter")?;
        let store = LocalStorage::new(dir.path())?;
        assert!(store.list(&Key::new("a")?).await?.is_empty());
        // But they are leftovers, named after the object they were for.
        let left = store.leftovers(&Key::new("a")?).await?;
        let got: Vec<(&str, Option<u64>)> = left.iter().map(|l| (l.key.as_str(), l.size)).collect();
        assert_eq!(got, [("a/b/pack-0a", Some(7)), ("a/x", Some(4))]);
        Ok(())
    }

    #[test]
    fn missing_root_is_a_clear_error() {
        let err = LocalStorage::new("/nonexistent/cairn-repo").err();
        assert!(
            matches!(err, Some(StorageError::Permanent { ref message, .. }) if message.contains("--repo"))
        );
    }
}
