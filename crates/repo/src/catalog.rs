//! The per-stanza catalog: the list of backups that exist. A backup exists exactly when the
//! catalog lists it; the catalog is written last, after data, index and manifest, so whatever
//! it lists can be restored. Each record is also kept in the backup's own manifest, so a lost
//! catalog can be rebuilt.

use crate::codec::{self, magic};
use crate::error::{Error, Result};
use crate::ids::{BackupLabel, BackupType};
use crate::keys;
use crate::repository::Stanza;
use crate::storage::{Key, PutMode, StorageError};
use bytes::Bytes;
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

/// A stanza's catalog in the repository: `catalog`, then `catalog.copy` (format.md, "Catalog").
impl Stanza {
    /// The copy of the catalog, written after it (pgBackRest keeps `backup.info.copy` for the
    /// same reason): a lost or damaged catalog must not lose every backup.
    pub fn catalog_copy_key(&self) -> Result<Key> {
        keys::catalog_copy(self.name())
    }

    /// The catalog, or its copy when the catalog is missing or damaged. A stanza with no
    /// backup has an empty one; a stanza whose catalog and copy are both gone while backup
    /// manifests exist is damage (never an empty list: the next backup would then write a
    /// fresh catalog and orphan every backup for good).
    /// The catalog for a command that rewrites it (backup, expire): only the catalog itself.
    /// Its copy is written after it, so when the catalog cannot be read the copy may be older
    /// than it was; writing on top of the copy would drop the newer records (and expire would
    /// delete their backups as unlisted). Such commands stop and ask for `stanza-repair`.
    pub async fn catalog_for_write(&self) -> Result<Catalog> {
        match self.read_catalog(&self.catalog_key()?).await {
            Ok(Some(c)) => Ok(c),
            Ok(None) if self.manifest_labels().await?.is_empty() => {
                // Nothing was ever listed (and the copy must agree).
                self.catalog().await
            }
            other => {
                let why = match other {
                    Err(e) => e.to_string(),
                    _ => "it is missing".to_string(),
                };
                Err(Error::Invalid(format!(
                    "the catalog of stanza '{}' cannot be used ({why}), and its copy may be older than it was; run `cairn --stanza={} stanza-repair` (it rebuilds the catalog from the backups' manifests) before backing up or expiring",
                    self.name(),
                    self.name()
                )))
            }
        }
    }

    pub async fn catalog(&self) -> Result<Catalog> {
        let primary = match self.read_catalog(&self.catalog_key()?).await {
            Ok(Some(c)) => return Ok(c),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        let copy_key = self.catalog_copy_key()?;
        match (primary, self.read_catalog(&copy_key).await) {
            (Ok(()), Ok(None)) => {
                let manifests = self.manifest_labels().await?;
                if manifests.is_empty() {
                    Ok(Catalog::default())
                } else {
                    Err(Error::corrupt(
                        self.catalog_key()?.to_string(),
                        format!(
                            "the catalog of stanza '{}' and its copy are missing, but {} backup manifest(s) exist; run `cairn --stanza={} stanza-repair` to rebuild the catalog from them",
                            self.name(),
                            manifests.len(),
                            self.name()
                        ),
                    ))
                }
            }
            (first, Ok(Some(c))) => {
                let why = match first {
                    Err(e) => e.to_string(),
                    _ => "it is missing".to_string(),
                };
                tracing::warn!(
                    "the catalog of stanza '{}' cannot be used ({why}); using its copy {copy_key}. Run `cairn --stanza={} stanza-repair` to rewrite it",
                    self.name(),
                    self.name()
                );
                Ok(c)
            }
            (Err(e), _) => Err(e),
            (Ok(_), Err(e)) => Err(e),
        }
    }

    pub(crate) async fn read_catalog(&self, k: &Key) -> Result<Option<Catalog>> {
        match self.store().get(k, None).await {
            Ok(b) => Catalog::decode(k.as_str(), &b).map(Some),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Write the catalog, then its copy, each an atomic overwrite.
    pub async fn save_catalog(&self, catalog: &Catalog) -> Result<()> {
        let bytes = Bytes::from(catalog.encode());
        self.store()
            .put(&self.catalog_key()?, bytes.clone(), PutMode::Overwrite)
            .await?;
        self.store()
            .put(&self.catalog_copy_key()?, bytes, PutMode::Overwrite)
            .await?;
        Ok(())
    }
}
