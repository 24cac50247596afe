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
use futures_util::stream::BoxStream;
use std::fmt;
use std::io;
use std::ops::Range;

/// An object's bytes produced piece by piece, for `Storage::put_stream`.
pub type Pieces = BoxStream<'static, Result<Bytes, StorageError>>;

/// Below this size a streamed put is gathered and sent as one retried `put`; above it the
/// backend streams (S3: multipart, each part retried on its own).
pub const STREAM_GATHER: usize = 16 * 1024 * 1024;

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
    /// When the object was last written, in whole seconds since the Unix epoch, where the
    /// listing gives it at no extra request (local disk: the file's mtime; S3: LastModified).
    pub modified: Option<i64>,
}

/// Seconds since the Unix epoch of `t` (negative before it).
pub fn epoch_seconds(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs().min(i64::MAX as u64) as i64,
        Err(e) => -(e.duration().as_secs().min(i64::MAX as u64) as i64),
    }
}

/// Something an interrupted write left behind (see `Storage::leftovers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// The object the write was for.
    pub key: Key,
    /// Bytes it holds, where the backend can tell without more requests.
    pub size: Option<u64>,
    /// Time since it was last written (local disk) or started (S3).
    pub age: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object '{key}' not found in the repository")]
    NotFound { key: String },
    #[error("object '{key}' already exists in the repository")]
    AlreadyExists { key: String },
    /// A ranged read reaches past the object's end: the object is shorter than whoever asked
    /// believed (for a pack, the index or its trailer disagrees with it: damage).
    #[error("repository object '{key}': {message}")]
    OutOfRange { key: String, message: String },
    /// The store does not implement the request (S3-compatible servers answer 501 to some).
    #[error("repository object '{key}': {message} (not implemented by this store)")]
    Unsupported { key: String, message: String },
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

    /// Whether any object's key starts with `prefix/`. Backends whose listing pages (S3)
    /// override this to ask for one key, not list a whole repository to learn it is not empty.
    async fn any(&self, prefix: &Key) -> Result<bool, StorageError> {
        Ok(!self.list(prefix).await?.is_empty())
    }

    /// Store the object `body` produces, without holding all of it in memory: a backend keeps
    /// at most a bounded number of pieces or parts at once (local disk: one piece; S3: a few
    /// multipart parts). Durable when it returns Ok; an error from `body` fails the put and
    /// leaves no object behind. The stream cannot be replayed, so a backend retries the parts
    /// it holds, not the whole put. The default gathers everything and calls `put`.
    async fn put_stream(&self, key: &Key, body: Pieces, mode: PutMode) -> Result<(), StorageError> {
        use futures_util::TryStreamExt;
        let pieces: Vec<Bytes> = body.try_collect().await?;
        self.put(key, Bytes::from(pieces.concat()), mode).await
    }

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

    /// What interrupted writes left under `prefix/`: temporary files of puts that never
    /// finished (local disk) or multipart uploads never completed or aborted (S3). They are not
    /// objects (listings skip them) but they hold space. A writer that is still running has one
    /// too, so whoever removes them must leave young ones alone (`Leftover::age`).
    async fn leftovers(&self, prefix: &Key) -> Result<Vec<Leftover>, StorageError>;

    /// The requests this backend has sent so far, for the log (`S3 requests: 12 PUT, ...`);
    /// `None` where counting means nothing (local disk).
    fn request_summary(&self) -> Option<String> {
        None
    }
}

/// Run `produce` on a blocking thread and hand what it writes over as `Pieces` of about
/// `PIECE` bytes, at most a few ahead of the consumer: for objects encoded from a large
/// in-memory structure (manifests, index segments), so the encoded bytes are never all in
/// memory at once. If the consumer stops early, `produce`'s writes fail and it returns.
pub fn pieces_from_writer<F>(key: &Key, produce: F) -> Pieces
where
    F: FnOnce(&mut dyn io::Write) -> io::Result<()> + Send + 'static,
{
    const PIECE: usize = 1024 * 1024;
    const AHEAD: usize = 2;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, StorageError>>(AHEAD);
    let name = key.to_string();
    let panicked_key = name.clone();
    let producer = tokio::task::spawn_blocking(move || {
        struct ChannelWriter {
            buf: Vec<u8>,
            tx: tokio::sync::mpsc::Sender<Result<Bytes, StorageError>>,
            closed: bool,
        }
        impl ChannelWriter {
            fn send(&mut self) -> io::Result<()> {
                let piece = std::mem::replace(&mut self.buf, Vec::with_capacity(PIECE));
                if self.tx.blocking_send(Ok(Bytes::from(piece))).is_err() {
                    self.closed = true;
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the upload stopped",
                    ));
                }
                Ok(())
            }
        }
        impl io::Write for ChannelWriter {
            fn write(&mut self, data: &[u8]) -> io::Result<usize> {
                let n = data.len().min(PIECE - self.buf.len());
                self.buf.extend_from_slice(&data[..n]);
                if self.buf.len() == PIECE {
                    self.send()?;
                }
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = ChannelWriter {
            buf: Vec::with_capacity(PIECE),
            tx,
            closed: false,
        };
        let result =
            produce(&mut w).and_then(|()| if w.buf.is_empty() { Ok(()) } else { w.send() });
        if let Err(e) = result
            && !w.closed
        {
            let _ = w.tx.blocking_send(Err(StorageError::Permanent {
                key: name,
                message: format!("encoding the object failed: {e}"),
            }));
        }
    });
    // The channel closing is the end of the object only if the producer returned: one that
    // panicked must fail the put, not truncate the object.
    let state = (rx, Some(producer), panicked_key);
    Box::pin(futures_util::stream::unfold(
        state,
        |(mut rx, producer, key)| async move {
            if let Some(item) = rx.recv().await {
                return Some((item, (rx, producer, key)));
            }
            match producer?.await {
                Ok(()) => None,
                Err(e) => Some((
                    Err(StorageError::Permanent {
                        key: key.clone(),
                        message: format!("encoding the object stopped: {e}"),
                    }),
                    (rx, None, key),
                )),
            }
        },
    ))
}
