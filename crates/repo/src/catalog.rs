//! The per-stanza catalog: the list of backups that exist. A backup exists exactly when the
//! catalog lists it; the catalog is written last, after data, index and manifest, so whatever
//! it lists can be restored. Each record is also kept in the backup's own manifest, so a lost
//! catalog can be rebuilt.

use crate::codec::{self, magic};
use crate::error::Result;
use crate::ids::{BackupLabel, BackupType};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct BackupRecord {
    pub label: BackupLabel,
    pub kind: BackupType,
    /// The backup this one is a delta against (None for full).
    pub parent: Option<BackupLabel>,
    /// Every backup whose manifest restore needs, oldest first, excluding this one.
    pub references: Vec<BackupLabel>,
    pub start: i64,
    pub stop: i64,
    /// Logical bytes of the whole backup (every file).
    pub size: u64,
    /// Logical bytes read and stored by this backup (changed files).
    pub delta: u64,
    /// Stored (compressed) bytes of every chunk the whole backup needs.
    pub repo_size: u64,
    /// Stored bytes of the chunks this backup added to the repository.
    pub repo_delta: u64,
    pub file_count: u64,
    pub chunk_count: u64,
    pub new_chunk_count: u64,
    /// Engine facts (source path, PostgreSQL LSNs, WAL range...).
    pub meta: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Catalog {
    /// Oldest first.
    pub backups: Vec<BackupRecord>,
}

impl Catalog {
    pub fn encode(&self) -> Vec<u8> {
        codec::seal(magic::CATALOG, self, true)
    }

    pub fn decode(object: &str, bytes: &[u8]) -> Result<Catalog> {
        codec::open(object, magic::CATALOG, bytes)
    }

    pub fn get(&self, label: &BackupLabel) -> Option<&BackupRecord> {
        self.backups.iter().find(|b| &b.label == label)
    }

    pub fn latest(&self) -> Option<&BackupRecord> {
        self.backups.last()
    }

    pub fn latest_full(&self) -> Option<&BackupRecord> {
        self.backups
            .iter()
            .rev()
            .find(|b| b.kind == BackupType::Full)
    }
}
