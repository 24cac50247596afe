//! Object storage: one small, object-safe trait that every backend (local disk now, S3 next)
//! implements, a validated key type, and the error type that knows whether a failure is worth
//! retrying. Everything above this module sees only `Arc<dyn Storage>`.

pub mod conformance;
pub mod local;
pub mod retry;
#[cfg(feature = "s3")]
pub mod s3;

use async_trait::async_trait;
use bytes::Bytes;
use std::fmt;
use std::ops::Range;

/// A relative object key: `/`-separated segments of `[A-Za-z0-9._+=-]`, no empty segment, no
/// `.` or `..`, so it can never escape the repository root on any backend.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Key(String);

impl Key {
    pub fn new(s: impl Into<String>) -> Result<Self, StorageError> {
        let s = s.into();
        let valid_segment = |seg: &str| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '='))
        };
        if s.len() <= 1024 && s.split('/').all(valid_segment) {
            Ok(Key(s))
        } else {
            Err(StorageError::Permanent {
                key: s,
                message: "invalid object key".into(),
            })
        }
    }

    /// This key with `segment` (which may itself contain `/`) appended.
    pub fn join(&self, segment: &str) -> Result<Self, StorageError> {
        Key::new(format!("{}/{segment}", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment.
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a put treats an existing object.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PutMode {
    /// Replace it atomically: readers see the old or the new object, never a mix.
    Overwrite,
    /// Fail with `AlreadyExists` if it exists; used for objects that must never change.
    Create,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ObjectMeta {
    pub key: Key,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object '{key}' not found in the repository")]
    NotFound { key: String },
    #[error("object '{key}' already exists in the repository")]
    AlreadyExists { key: String },
    /// Will fail again: permissions, a full disk, wrong credentials, a bad key.
    #[error("repository object '{key}': {message}")]
    Permanent { key: String, message: String },
    /// May succeed if tried again: timeouts, throttling, dropped connections.
    #[error("repository object '{key}' (temporary failure): {message}")]
    Transient { key: String, message: String },
}

impl StorageError {
    pub fn is_transient(&self) -> bool {
        matches!(self, StorageError::Transient { .. })
    }
}

/// The storage backend contract. Conformance: `conformance::run_all` holds every backend to it.
#[async_trait]
pub trait Storage: Send + Sync + fmt::Debug {
    /// Where this backend is, for messages (`/var/lib/cairn`, `s3://bucket/prefix`).
    fn location(&self) -> String;

    /// Store `data` under `key`. Durable when it returns Ok.
    async fn put(&self, key: &Key, data: Bytes, mode: PutMode) -> Result<(), StorageError>;

    /// Read the whole object, or `range` of it. A range past the end is an error.
    async fn get(&self, key: &Key, range: Option<Range<u64>>) -> Result<Bytes, StorageError>;

    async fn head(&self, key: &Key) -> Result<ObjectMeta, StorageError>;

    /// Every object whose key starts with `prefix/` (recursively), sorted by key.
    async fn list(&self, prefix: &Key) -> Result<Vec<ObjectMeta>, StorageError>;

    /// Remove the object; removing a missing object is not an error.
    async fn delete(&self, key: &Key) -> Result<(), StorageError>;

    /// Remove many objects (missing ones are not an error). Backends with a batch API (S3's
    /// DeleteObjects, 1000 keys a request) override this.
    async fn delete_many(&self, keys: &[Key]) -> Result<(), StorageError> {
        for k in keys {
            self.delete(k).await?;
        }
        Ok(())
    }

    /// The requests this backend has sent so far, for the log (`S3 requests: 12 PUT, ...`);
    /// `None` where counting means nothing (local disk).
    fn request_summary(&self) -> Option<String> {
        None
    }
}
