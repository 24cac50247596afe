//! The repository's error type. Every variant names the object or path involved, and the
//! message says what to do where there is something to do.

use crate::storage::StorageError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Storage(#[from] StorageError),

    /// An object's bytes are not what they must be (bad magic, checksum, truncated).
    #[error("{object} is damaged: {detail}; run `cairn verify` to see what it affects")]
    Corrupt { object: String, detail: String },

    /// An object was written by a newer cairn.
    #[error(
        "{object} has format version {found}, newer than this cairn understands (up to {supported}); upgrade cairn"
    )]
    NewerFormat {
        object: String,
        found: u16,
        supported: u16,
    },

    #[error("{0}")]
    NotFound(String),

    /// Something is not as it must be for the operation (a WAL file of another cluster, an
    /// unexpected answer): the operation fails (exit 3).
    #[error("{0}")]
    Invalid(String),

    /// A mistake in what the user asked for, found by a library (an impossible recovery
    /// target, a --pg-path that is not the server's data directory): exit 2.
    #[error("{0}")]
    Usage(String),

    /// The database server could not be reached or refused a request; the message keeps the
    /// server's own words (`role "x" does not exist`).
    #[error("{0}")]
    Database(String),

    /// Waited for something that did not happen in time (WAL reaching the archive).
    #[error("{0}")]
    Timeout(String),

    #[error("{0}")]
    Locked(String),

    /// Another process changed an object between this one reading and rewriting it (a
    /// catalog generation written first): nothing of either was lost; run again.
    #[error("{0}")]
    Conflict(String),

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn corrupt(object: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            object: object.into(),
            detail: detail.into(),
        }
    }

    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// True when the thing asked for does not exist (as opposed to being unreadable).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::NotFound(_) | Error::Storage(StorageError::NotFound { .. })
        )
    }
}
