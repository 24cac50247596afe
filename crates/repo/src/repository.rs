//! The repository and its stanzas: where every object lives (format.md, "Layout"), and the
//! typed reads and writes of sealed objects. Jobs (backup, restore, verify) build on this.

use crate::catalog::{BackupRecord, Catalog};
use crate::codec::{self, magic};
use crate::error::{Error, Result};
use crate::ids::{BackupLabel, PackId, StanzaName};

use crate::keys;
use crate::lock::Lock;
use crate::manifest::{self, FileEntry, Manifest};
use crate::storage::{self, Key, PutMode, Storage, StorageError};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

pub use crate::keys::REPO_MARKER;
/// The backup record's meta key naming the stanza a backup belongs to (format.md).
pub const MANIFEST_STANZA_KEY: &str = "stanza";
/// The backup record's meta key naming the engine that took it (format.md).
pub const RECORD_ENGINE_KEY: &str = "engine";

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

impl Repository {
    /// Open an existing repository.
    pub async fn open(store: Arc<dyn Storage>) -> Result<Repository> {
        let marker = keys::repo_marker()?;
        match store.get(&marker, None).await {
            Ok(b) => match codec::open::<RepoInfo>(REPO_MARKER, magic::REPO, &b) {
                Ok(_) => Ok(Repository { store }),
                Err(Error::Corrupt { object, detail }) => Err(Error::Corrupt {
                    object,
                    detail: format!(
                        "{detail}; if --repo is right, `cairn --stanza=<name> stanza-repair` writes the marker again"
                    ),
                }),
                Err(e) => Err(e),
            },
            Err(StorageError::NotFound { .. }) => {
                if !store.any(&keys::stanzas_prefix()?).await? {
                    Err(Error::NotFound(format!(
                        "{} is not a cairn repository (it has no {REPO_MARKER}); check --repo, or run `cairn stanza-create` to make one",
                        store.location()
                    )))
                } else {
                    Err(Error::corrupt(
                        format!("{}/{REPO_MARKER}", store.location()),
                        format!(
                            "the repository marker is missing but {} holds stanza data; if --repo is right, run `cairn --stanza=<name> stanza-repair` to recreate it",
                            store.location()
                        ),
                    ))
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Open the repository for `stanza-repair`: a lost marker is written again when the store
    /// holds stanza data (and only then: an empty or foreign directory is never adopted).
    /// Returns whether the marker was recreated.
    pub async fn open_repairing_marker(store: Arc<dyn Storage>) -> Result<(Repository, bool)> {
        let marker = keys::repo_marker()?;
        let mode = match Repository::open(store.clone()).await {
            Ok(repo) => return Ok((repo, false)),
            // Missing (open says so as a damaged marker when stanzas remain) or unreadable.
            Err(Error::Corrupt { .. }) => match store.head(&marker).await {
                Ok(_) => PutMode::Overwrite,
                Err(StorageError::NotFound { .. }) => PutMode::Create,
                Err(e) => return Err(e.into()),
            },
            Err(e) => return Err(e),
        };
        let has_stanzas = store
            .list(&keys::stanzas_prefix()?)
            .await?
            .iter()
            .any(|m| keys::parse_stanza_info(&m.key).is_some());
        if !has_stanzas {
            return Err(Error::NotFound(format!(
                "{} holds no stanza, so there is nothing to repair; check --repo",
                store.location()
            )));
        }
        Self::write_marker(&store, mode).await?;
        Ok((Repository::open(store).await?, true))
    }

    async fn write_marker(store: &Arc<dyn Storage>, mode: PutMode) -> Result<()> {
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
                &keys::repo_marker()?,
                Bytes::from(codec::seal(magic::REPO, &info, false)),
                mode,
            )
            .await
        {
            Ok(()) | Err(StorageError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Open the repository, creating it if `store` is empty.
    pub async fn open_or_init(store: Arc<dyn Storage>) -> Result<Repository> {
        let marker = keys::repo_marker()?;
        if store.head(&marker).await.is_err() {
            let root_objects = store.list(&keys::stanzas_prefix()?).await?;
            if !root_objects.is_empty() {
                return Err(Error::corrupt(
                    format!("{}/{REPO_MARKER}", store.location()),
                    format!(
                        "the repository marker is missing but {} holds stanza data; if --repo is right, run `cairn --stanza=<name> stanza-repair` to recreate it",
                        store.location()
                    ),
                ));
            }
            Self::write_marker(&store, PutMode::Create).await?;
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
        keys::stanza_info(name)
    }

    /// Create a stanza; creating one that exists with the same engine and identity is a no-op.
    pub async fn create_stanza(&self, info: StanzaInfo) -> Result<Stanza> {
        let k = Self::stanza_info_key(&info.name)?;
        let damaged = match self.stanza(&info.name).await {
            Ok(existing) => {
                if existing.info.engine != info.engine || existing.info.meta != info.meta {
                    let facts = |i: &StanzaInfo| {
                        let m: Vec<String> =
                            i.meta.iter().map(|(k, v)| format!("{k} {v}")).collect();
                        if m.is_empty() {
                            i.engine.clone()
                        } else {
                            format!("{}: {}", i.engine, m.join(", "))
                        }
                    };
                    return Err(Error::Invalid(format!(
                        "stanza '{}' already exists ({}), which does not match what was given ({}); use another stanza name",
                        info.name,
                        facts(&existing.info),
                        facts(&info)
                    )));
                }
                return Ok(existing);
            }
            Err(e) if e.is_not_found() => false,
            Err(Error::Corrupt { .. }) => true,
            Err(e) => return Err(e),
        };
        // A stanza.info lost or damaged while its backups, catalog and archive remain: write
        // it again, but never an empty catalog over the one that lists those backups.
        let has_data = self.store.any(&keys::stanza_prefix(&info.name)?).await?;
        if has_data {
            self.check_identity_against_backups(&info).await?;
            tracing::warn!(
                "stanza '{}' holds data but its stanza.info was {}; writing it again with engine {}: it must be the engine its backups were made with",
                info.name,
                if damaged { "damaged" } else { "missing" },
                info.engine
            );
        }
        let bytes = Bytes::from(codec::seal(magic::STANZA, &info, false));
        let mode = if damaged {
            PutMode::Overwrite
        } else {
            PutMode::Create
        };
        let created = match self.store.put(&k, bytes, mode).await {
            Ok(()) => true,
            Err(StorageError::AlreadyExists { .. }) => false,
            Err(e) => return Err(e.into()),
        };
        let stanza = self.stanza(&info.name).await?;
        if created && !has_data {
            // An empty catalog from the start: from then on a missing catalog is always damage.
            stanza.save_catalog(&Catalog::default()).await?;
        }
        Ok(stanza)
    }

    /// Refuse to write a stanza identity that the stanza's own backups contradict (their
    /// records carry the identity they were taken with: a postgres system id and version).
    async fn check_identity_against_backups(&self, info: &StanzaInfo) -> Result<()> {
        let probe = Stanza {
            store: self.store.clone(),
            info: info.clone(),
        };
        // The catalog's records, or when the catalog is lost too, the manifests' own.
        let records = match probe.catalog().await {
            Ok(c) if !c.backups.is_empty() => c.backups,
            _ => {
                let mut records = Vec::new();
                for label in probe.manifest_labels().await? {
                    let k = probe.manifest_key(&label)?;
                    if let Ok(b) = self.store.get(&k, None).await
                        && let Ok(m) = Manifest::decode(k.as_str(), &b)
                    {
                        records.push(m.record);
                    }
                }
                records
            }
        };
        for b in &records {
            if let Some(theirs) = b.meta.get(RECORD_ENGINE_KEY)
                && *theirs != info.engine
            {
                return Err(Error::Invalid(format!(
                    "stanza '{}' holds {theirs} backups (such as {}), so its stanza.info is not written again with engine {}: give --engine {theirs}",
                    info.name, b.label, info.engine
                )));
            }
            for (k, v) in &info.meta {
                if let Some(theirs) = b.meta.get(k)
                    && theirs != v
                {
                    return Err(Error::Invalid(format!(
                        "stanza '{}' holds backups whose {k} is {theirs}, but the source given is {v}; its stanza.info is missing and is not written for another source: check --stanza and --pg-path",
                        info.name
                    )));
                }
            }
        }
        Ok(())
    }

    pub async fn stanza(&self, name: &StanzaName) -> Result<Stanza> {
        let k = Self::stanza_info_key(name)?;
        let bytes = match self.store.get(&k, None).await {
            Ok(b) => b,
            Err(StorageError::NotFound { .. }) => {
                if self.store.any(&keys::stanza_prefix(name)?).await? {
                    return Err(Error::NotFound(format!(
                        "stanza '{name}' holds data in {} but its stanza.info is missing; `cairn --stanza={name} stanza-create --engine {}` writes it again (with the engine and, for postgres, the cluster its backups were made with)",
                        self.store.location(),
                        self.engine_of_backups(name)
                            .await
                            .unwrap_or_else(|| "<engine>".into())
                    )));
                }
                return Err(Error::NotFound(format!(
                    "stanza '{name}' does not exist in {}; run `cairn --stanza={name} stanza-create` first, or check --stanza",
                    self.store.location()
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let info: StanzaInfo = match codec::open(k.as_str(), magic::STANZA, &bytes) {
            Ok(info) => info,
            Err(Error::Corrupt { object, detail }) => {
                return Err(Error::Corrupt {
                    object,
                    detail: format!(
                        "{detail}; `cairn --stanza={name} stanza-create --engine {}` writes it again (with the engine and, for postgres, the cluster its backups were made with)",
                        self.engine_of_backups(name)
                            .await
                            .unwrap_or_else(|| "<engine>".into())
                    ),
                });
            }
            Err(e) => return Err(e),
        };
        Ok(Stanza {
            store: self.store.clone(),
            info,
        })
    }

    /// The engine the stanza's listed backups were taken with, as their records say (backups
    /// taken before records named their engine say nothing).
    async fn engine_of_backups(&self, name: &StanzaName) -> Option<String> {
        let probe = Stanza {
            store: self.store.clone(),
            info: StanzaInfo {
                name: name.clone(),
                engine: String::new(),
                created: 0,
                meta: BTreeMap::new(),
            },
        };
        let catalog = probe.catalog().await.ok()?;
        catalog
            .backups
            .iter()
            .find_map(|b| b.meta.get(RECORD_ENGINE_KEY).cloned())
    }

    /// Whether the repository holds anything of the stanza (its info, backups or WAL).
    pub async fn holds_stanza(&self, name: &StanzaName) -> Result<bool> {
        Ok(self.store.any(&keys::stanza_prefix(name)?).await?)
    }

    pub async fn stanzas(&self) -> Result<Vec<StanzaName>> {
        let mut names: Vec<StanzaName> = self
            .store
            .list(&keys::stanzas_prefix()?)
            .await?
            .into_iter()
            .filter_map(|m| keys::parse_stanza_info(&m.key))
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

    pub fn catalog_key(&self) -> Result<Key> {
        keys::catalog(&self.info.name)
    }

    pub fn manifest_key(&self, label: &BackupLabel) -> Result<Key> {
        keys::manifest(&self.info.name, label)
    }

    /// Everything of this stanza is under this prefix.
    pub fn prefix(&self) -> Result<Key> {
        keys::stanza_prefix(&self.info.name)
    }

    pub fn backup_prefix(&self) -> Result<Key> {
        keys::backups_prefix(&self.info.name)
    }

    pub fn pack_key(&self, id: &PackId) -> Result<Key> {
        keys::pack(&self.info.name, id)
    }

    pub fn pack_prefix(&self) -> Result<Key> {
        keys::packs_prefix(&self.info.name)
    }

    pub fn index_prefix(&self) -> Result<Key> {
        keys::index_prefix(&self.info.name)
    }

    /// Where the stanza lock's generations are (format.md, "Lock").
    pub fn lock_prefix(&self) -> Result<Key> {
        keys::lease_prefix(&self.info.name)
    }

    /// Take the stanza's exclusive lock (backup, expire): one writer of catalog and index.
    /// Take the stanza lock for `command` (refused while the stanza is stopped, except to
    /// delete it).
    pub async fn lock(&self, command: &str) -> Result<Lock> {
        if command != "stanza-delete" {
            self.refuse_if_stopped(command).await?;
        }
        Lock::acquire(
            self.store.clone(),
            self.lock_prefix()?,
            &format!("stanza '{}'", self.info.name),
            command,
        )
        .await
    }

    /// Rewrite `stanza.info` with a new identity `meta` (`stanza-upgrade`), everything else as
    /// it was, under the stanza lock (which this takes). Refused when `stanza.info` changed
    /// since this stanza was opened (another upgrade got there first). Returns the stanza as it
    /// now is.
    pub async fn replace_info_meta(&self, meta: BTreeMap<String, String>) -> Result<Stanza> {
        let lock = self.lock("stanza-upgrade").await?;
        let result = async {
            let key = keys::stanza_info(&self.info.name)?;
            let bytes = self.store.get(&key, None).await?;
            let now: StanzaInfo = codec::open(key.as_str(), magic::STANZA, &bytes)?;
            if now != self.info {
                return Err(Error::Conflict(format!(
                    "stanza '{}' changed while stanza-upgrade ran; run it again",
                    self.info.name
                )));
            }
            let info = StanzaInfo {
                meta,
                ..self.info.clone()
            };
            lock.confirm().await?;
            self.store
                .put(
                    &key,
                    Bytes::from(codec::seal(magic::STANZA, &info, false)),
                    PutMode::Overwrite,
                )
                .await?;
            Ok(Stanza {
                store: self.store.clone(),
                info,
            })
        }
        .await;
        lock.release().await?;
        result
    }

    /// The labels of every manifest in the stanza, listed or not, sorted.
    pub async fn manifest_labels(&self) -> Result<Vec<BackupLabel>> {
        let mut labels: Vec<BackupLabel> = self
            .store
            .list(&self.backup_prefix()?)
            .await?
            .into_iter()
            .filter_map(|m| keys::parse_manifest(&m.key))
            .collect();
        labels.sort();
        labels.dedup();
        Ok(labels)
    }

    pub async fn manifest(&self, label: &BackupLabel) -> Result<Manifest> {
        let k = self.manifest_key(label)?;
        match self.store.get(&k, None).await {
            Ok(b) => {
                let m = Manifest::decode(k.as_str(), &b)?;
                self.check_manifest_owner(k.as_str(), label, &m)?;
                Ok(m)
            }
            Err(StorageError::NotFound { .. }) => Err(Error::corrupt(
                k.to_string(),
                format!("the manifest of backup {label} is missing"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// A manifest names its own backup (and, since cairn writes it, its stanza): one read under
    /// another backup's key was moved or swapped, and restoring it would restore the wrong
    /// backup's files with exit 0.
    pub fn check_manifest_owner(
        &self,
        object: &str,
        label: &BackupLabel,
        m: &Manifest,
    ) -> Result<()> {
        if &m.record.label != label {
            return Err(Error::corrupt(
                object,
                format!(
                    "it holds the manifest of backup {}, not of backup {label}: manifests were moved or swapped",
                    m.record.label
                ),
            ));
        }
        if let Some(s) = m.record.meta.get(MANIFEST_STANZA_KEY)
            && s != self.info.name.as_str()
        {
            return Err(Error::corrupt(
                object,
                format!(
                    "it holds a manifest of stanza '{s}', not of stanza '{}'",
                    self.info.name
                ),
            ));
        }
        // Not damage: a stanza.info written again with the wrong engine.
        if let Some(engine) = m.record.meta.get(RECORD_ENGINE_KEY)
            && *engine != self.info.engine
        {
            return Err(Error::Invalid(format!(
                "backup {label} was taken by the {engine} engine, but stanza '{}' is a {} stanza (if its stanza.info was written again with the wrong engine, remove {} and run `cairn --stanza={} stanza-create --engine {engine}`)",
                self.info.name,
                self.info.engine,
                keys::stanza_info(&self.info.name)?,
                self.info.name
            )));
        }
        Ok(())
    }

    /// Write the manifest, encoded as it is uploaded: its encoding is never in memory whole.
    pub async fn put_manifest(&self, m: Arc<Manifest>) -> Result<()> {
        let k = self.manifest_key(&m.record.label)?;
        let body = storage::pieces_from_writer(&k, move |w| m.write_sealed(w));
        self.store.put_stream(&k, body, PutMode::Create).await?;
        Ok(())
    }

    /// The record of backup `label` in `catalog`, or an error that says how to find one.
    fn listed<'a>(&self, catalog: &'a Catalog, label: &BackupLabel) -> Result<&'a BackupRecord> {
        catalog.get(label).ok_or_else(|| {
            Error::NotFound(format!(
                "backup {label} does not exist in stanza '{}'; `cairn info` lists the backups",
                self.info.name
            ))
        })
    }

    /// The files of backup `label` with everything it inherits resolved (format.md,
    /// "Manifest"): its chain's manifests read one at a time, oldest first, so the memory is
    /// that of two manifests however long the chain.
    pub async fn resolved(&self, catalog: &Catalog, label: &BackupLabel) -> Result<Vec<FileEntry>> {
        let rec = self.listed(catalog, label)?;
        let mut current: Option<Vec<FileEntry>> = None;
        for l in rec.references.iter().chain(std::iter::once(label)) {
            let m = self.manifest(l).await?;
            current = Some(match current {
                None => manifest::resolve_first(m)?,
                Some(c) => manifest::resolve_next(c, m)?,
            });
        }
        let entries = current.unwrap_or_default();
        manifest::check_sizes(&entries, label)?;
        Ok(entries)
    }
}
