//! The repository and its stanzas: where every object lives (format.md, "Layout"), and the
//! typed reads and writes of sealed objects. Jobs (backup, restore, verify) build on this.

use crate::catalog::Catalog;
use crate::codec::{self, magic};
use crate::error::{Error, Result};
use crate::ids::{BackupLabel, PackId, StanzaName};
use crate::index::{Index, Segment};
use crate::lock::Lock;
use crate::manifest::Manifest;
use crate::storage::{self, Key, PutMode, Storage, StorageError};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

pub const REPO_MARKER: &str = "cairn.repo";

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RepoInfo {
    pub created: i64,
    /// Random-ish id, so two repositories are never mistaken for each other.
    pub id: String,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct StanzaInfo {
    pub name: StanzaName,
    /// `files`, `stream`, `postgres`...
    pub engine: String,
    pub created: i64,
    /// Engine identity (PostgreSQL system id and version...).
    pub meta: BTreeMap<String, String>,
}

#[derive(Clone, Debug)]
pub struct Repository {
    store: Arc<dyn Storage>,
}

fn key(s: impl Into<String>) -> Result<Key> {
    Ok(Key::new(s)?)
}

impl Repository {
    /// Open an existing repository.
    pub async fn open(store: Arc<dyn Storage>) -> Result<Repository> {
        let marker = key(REPO_MARKER)?;
        match store.get(&marker, None).await {
            Ok(b) => {
                codec::open::<RepoInfo>(REPO_MARKER, magic::REPO, &b)?;
                Ok(Repository { store })
            }
            Err(StorageError::NotFound { .. }) => Err(Error::NotFound(format!(
                "{} is not a cairn repository (it has no {REPO_MARKER}); check --repo, or run `cairn stanza-create` to make one",
                store.location()
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Open the repository, creating it if `store` is empty.
    pub async fn open_or_init(store: Arc<dyn Storage>) -> Result<Repository> {
        let marker = key(REPO_MARKER)?;
        if store.head(&marker).await.is_err() {
            let root_objects = store.list(&key("stanza")?).await?;
            if !root_objects.is_empty() {
                return Err(Error::Invalid(format!(
                    "{} holds stanza objects but no {REPO_MARKER}; it is damaged or not a cairn repository",
                    store.location()
                )));
            }
            let info = RepoInfo {
                created: crate::time::now_unix(),
                id: blake3::hash(
                    format!("{}{:?}", std::process::id(), std::time::SystemTime::now()).as_bytes(),
                )
                .to_hex()[..16]
                    .to_string(),
            };
            match store
                .put(
                    &marker,
                    Bytes::from(codec::seal(magic::REPO, &info, false)),
                    PutMode::Create,
                )
                .await
            {
                Ok(()) | Err(StorageError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Repository::open(store).await
    }

    pub fn store(&self) -> &Arc<dyn Storage> {
        &self.store
    }

    pub fn location(&self) -> String {
        self.store.location()
    }

    fn stanza_info_key(name: &StanzaName) -> Result<Key> {
        key(format!("stanza/{name}/stanza.info"))
    }

    /// Create a stanza; creating one that exists with the same engine and identity is a no-op.
    pub async fn create_stanza(&self, info: StanzaInfo) -> Result<Stanza> {
        let k = Self::stanza_info_key(&info.name)?;
        match self.stanza(&info.name).await {
            Ok(existing) => {
                if existing.info.engine != info.engine || existing.info.meta != info.meta {
                    return Err(Error::Invalid(format!(
                        "stanza '{}' already exists with engine {} ({:?}), which does not match engine {} ({:?}); use another stanza name",
                        info.name, existing.info.engine, existing.info.meta, info.engine, info.meta
                    )));
                }
                return Ok(existing);
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let bytes = Bytes::from(codec::seal(magic::STANZA, &info, false));
        match self.store.put(&k, bytes, PutMode::Create).await {
            Ok(()) | Err(StorageError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.stanza(&info.name).await
    }

    pub async fn stanza(&self, name: &StanzaName) -> Result<Stanza> {
        let k = Self::stanza_info_key(name)?;
        let bytes = match self.store.get(&k, None).await {
            Ok(b) => b,
            Err(StorageError::NotFound { .. }) => {
                return Err(Error::NotFound(format!(
                    "stanza '{name}' does not exist in {}; run `cairn --stanza={name} stanza-create` first, or check --stanza",
                    self.store.location()
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let info: StanzaInfo = codec::open(k.as_str(), magic::STANZA, &bytes)?;
        Ok(Stanza {
            store: self.store.clone(),
            info,
        })
    }

    pub async fn stanzas(&self) -> Result<Vec<StanzaName>> {
        let mut names: Vec<StanzaName> = self
            .store
            .list(&key("stanza")?)
            .await?
            .into_iter()
            .filter(|m| m.key.name() == "stanza.info")
            .filter_map(|m| {
                m.key
                    .as_str()
                    .split('/')
                    .nth(1)
                    .and_then(|s| StanzaName::parse(s).ok())
            })
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }
}

#[derive(Clone, Debug)]
pub struct Stanza {
    store: Arc<dyn Storage>,
    pub info: StanzaInfo,
}

impl Stanza {
    pub fn store(&self) -> &Arc<dyn Storage> {
        &self.store
    }

    pub fn name(&self) -> &StanzaName {
        &self.info.name
    }

    fn prefix(&self) -> String {
        format!("stanza/{}", self.info.name)
    }

    pub fn catalog_key(&self) -> Result<Key> {
        key(format!("{}/catalog", self.prefix()))
    }

    pub fn manifest_key(&self, label: &BackupLabel) -> Result<Key> {
        key(format!("{}/backup/{label}/manifest", self.prefix()))
    }

    pub fn backup_prefix(&self) -> Result<Key> {
        key(format!("{}/backup", self.prefix()))
    }

    pub fn pack_key(&self, id: &PackId) -> Result<Key> {
        let hex = id.to_string();
        key(format!("{}/pack/{}/{hex}", self.prefix(), &hex[..2]))
    }

    pub fn pack_prefix(&self) -> Result<Key> {
        key(format!("{}/pack", self.prefix()))
    }

    pub fn index_prefix(&self) -> Result<Key> {
        key(format!("{}/index", self.prefix()))
    }

    pub fn lock_key(&self) -> Result<Key> {
        key(format!("{}/lock", self.prefix()))
    }

    /// Take the stanza's exclusive lock (backup, expire): one writer of catalog and index.
    pub async fn lock(&self, command: &str) -> Result<Lock> {
        Lock::acquire(
            self.store.clone(),
            self.lock_key()?,
            &format!("stanza '{}'", self.info.name),
            command,
        )
        .await
    }

    /// The catalog; a stanza with no backup yet has an empty one.
    pub async fn catalog(&self) -> Result<Catalog> {
        let k = self.catalog_key()?;
        match self.store.get(&k, None).await {
            Ok(b) => Catalog::decode(k.as_str(), &b),
            Err(StorageError::NotFound { .. }) => Ok(Catalog::default()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn save_catalog(&self, catalog: &Catalog) -> Result<()> {
        let k = self.catalog_key()?;
        self.store
            .put(&k, Bytes::from(catalog.encode()), PutMode::Overwrite)
            .await?;
        Ok(())
    }

    pub async fn manifest(&self, label: &BackupLabel) -> Result<Manifest> {
        let k = self.manifest_key(label)?;
        match self.store.get(&k, None).await {
            Ok(b) => Manifest::decode(k.as_str(), &b),
            Err(StorageError::NotFound { .. }) => Err(Error::corrupt(
                k.to_string(),
                format!("the manifest of backup {label} is missing"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Write the manifest, encoded as it is uploaded: its encoding is never in memory whole.
    pub async fn put_manifest(&self, m: Arc<Manifest>) -> Result<()> {
        let k = self.manifest_key(&m.record.label)?;
        let body = storage::pieces_from_writer(&k, move |w| m.write_sealed(w));
        self.store.put_stream(&k, body, PutMode::Create).await?;
        Ok(())
    }

    /// The manifests restore of `label` needs, oldest (the full) first, fetched at once: on S3
    /// a chain of full + diff + incrs costs one round trip, not one per backup.
    pub async fn chain(&self, catalog: &Catalog, label: &BackupLabel) -> Result<Vec<Manifest>> {
        let rec = catalog.get(label).ok_or_else(|| {
            Error::NotFound(format!(
                "backup {label} does not exist in stanza '{}'; `cairn info` lists the backups",
                self.info.name
            ))
        })?;
        futures_util::future::try_join_all(
            rec.references
                .iter()
                .chain(std::iter::once(label))
                .map(|l| self.manifest(l)),
        )
        .await
    }

    /// Load and merge every index segment, up to 16 fetched at once.
    pub async fn index(&self) -> Result<Index> {
        use futures_util::{StreamExt, TryStreamExt};
        let metas = self.store.list(&self.index_prefix()?).await?;
        let segments: Vec<Segment> = futures_util::stream::iter(metas)
            .map(|meta| async move {
                let b = self.store.get(&meta.key, None).await?;
                Segment::decode(meta.key.as_str(), &b)
            })
            .buffered(16)
            .try_collect()
            .await?;
        Ok(Index::from_segments(segments))
    }

    /// Write an index segment, named by the hash of its bytes: encoded once to learn the name
    /// and again as it is uploaded, never whole in memory.
    pub async fn put_index_segment(&self, seg: Arc<Segment>) -> Result<()> {
        let named = Arc::clone(&seg);
        let name = tokio::task::spawn_blocking(move || named.stream_name())
            .await
            .map_err(|e| Error::Invalid(format!("naming an index segment failed: {e}")))?
            .map_err(|e| Error::Invalid(format!("naming an index segment failed: {e}")))?;
        let k = key(format!("{}/index/{name}", self.prefix()))?;
        let body = storage::pieces_from_writer(&k, move |w| seg.write_sealed(w));
        match self.store.put_stream(&k, body, PutMode::Create).await {
            Ok(()) | Err(StorageError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
