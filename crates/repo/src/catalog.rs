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

/// The body of a version-2 catalog (format.md, "Catalog"): the list and its generation.
#[derive(Serialize)]
struct GenerationRef<'a> {
    generation: u64,
    backups: &'a [BackupRecord],
}

#[derive(Deserialize)]
struct Generation {
    generation: u64,
    backups: Vec<BackupRecord>,
}

impl Catalog {
    /// Version 1 (no generation): what stanzas written before catalog generations hold.
    pub fn encode(&self) -> Vec<u8> {
        codec::seal(magic::CATALOG, self, true)
    }

    /// Version 2: the catalog as generation `generation`.
    pub fn encode_generation(&self, generation: u64) -> Vec<u8> {
        let body = GenerationRef {
            generation,
            backups: &self.backups,
        };
        let mut out = Vec::new();
        codec::seal_to_version(&mut out, magic::CATALOG, 2, true, &|w| {
            codec::encode_body_to(w, &body)
        })
        .unwrap_or_else(|e| panic!("encoding a catalog failed: {e}"));
        out
    }

    /// Either version; the generation is None for version 1.
    pub fn decode_versioned(object: &str, bytes: &[u8]) -> Result<(Catalog, Option<u64>)> {
        let (version, body) = codec::open_raw_versioned(object, magic::CATALOG, bytes)?;
        if version >= 2 {
            let g: Generation = codec::decode_body(object, &body)?;
            Ok((Catalog { backups: g.backups }, Some(g.generation)))
        } else {
            Ok((codec::decode_body(object, &body)?, None))
        }
    }

    pub fn decode(object: &str, bytes: &[u8]) -> Result<Catalog> {
        Self::decode_versioned(object, bytes).map(|(c, _)| c)
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

/// A catalog as read for rewriting: the list and the generation it was read at (0: a
/// version-1 stanza, or one with no catalog yet). `Stanza::commit_catalog` writes the next.
#[derive(Clone, Debug, Default)]
pub struct CatalogAt {
    pub catalog: Catalog,
    pub generation: u64,
}

/// How many generations stay after a write: the newest and two it can fall back to.
const KEEP_GENERATIONS: u64 = 3;

/// Above this, a generation was not written by cairn (2^48 catalog writes would take a
/// backup a second for nine million years); stanza-repair removes it, verify reports it.
pub const MAX_PLAUSIBLE_GENERATION: u64 = 1 << 48;

/// A stanza's catalog in the repository: `catalogs/<gen>` (version 2) or, on a stanza not yet
/// upgraded, `catalog` then `catalog.copy` (format.md, "Catalog").
impl Stanza {
    /// Version 1's copy of the catalog (pgBackRest keeps `backup.info.copy` for the same
    /// reason); version 2 keeps older generations instead.
    pub fn catalog_copy_key(&self) -> Result<Key> {
        keys::catalog_copy(self.name())
    }

    pub fn catalog_generations_prefix(&self) -> Result<Key> {
        keys::catalog_generations(self.name())
    }

    /// The catalog generations present, newest first.
    pub async fn catalog_generations(&self) -> Result<Vec<(u64, Key)>> {
        crate::lock::generations(self.store(), &self.catalog_generations_prefix()?).await
    }

    /// Generation `generation` at `key`: None when it is gone (removed since the listing).
    async fn read_generation(&self, generation: u64, key: &Key) -> Result<Option<Catalog>> {
        let bytes = match self.store().get(key, None).await {
            Ok(b) => b,
            Err(StorageError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        match Catalog::decode_versioned(key.as_str(), &bytes)? {
            (c, Some(g)) if g == generation => Ok(Some(c)),
            (_, found) => Err(Error::corrupt(
                key.as_str(),
                format!(
                    "it holds generation {}, not the {generation} its name says (a catalog copied or moved here)",
                    found.map_or("none".to_string(), |g| g.to_string())
                ),
            )),
        }
    }

    /// `catalog` as version 2 keeps it: a copy of the newest generation, written after it
    /// (format.md, "Catalog"). None when it is missing, damaged or a version-1 catalog.
    async fn mirror(&self) -> Result<Option<(Catalog, u64)>> {
        let key = self.catalog_key()?;
        match self.store().get(&key, None).await {
            Ok(b) => match Catalog::decode_versioned(key.as_str(), &b) {
                Ok((c, Some(g))) => Ok(Some((c, g))),
                _ => Ok(None),
            },
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Manifests that `newest` does not list and no older catalog (the copy `mirror`, the
    /// older generations `older`) lists either. A lost newer generation could only have added
    /// such a backup; one an older catalog lists was removed by a newer one (an expire
    /// interrupted before it deleted the manifest, or before it updated the copy: defect of
    /// 2026-11-24, after which every backup was refused until a repair that brought the
    /// expired backups back).
    pub async fn unexplained_manifests(
        &self,
        newest: &Catalog,
        mirror: Option<&(Catalog, u64)>,
        older: &[(u64, Key)],
    ) -> Result<Vec<BackupLabel>> {
        let mut out: Vec<BackupLabel> = self
            .manifest_labels()
            .await?
            .into_iter()
            .filter(|l| newest.get(l).is_none())
            .filter(|l| mirror.is_none_or(|(c, _)| c.get(l).is_none()))
            .collect();
        for (generation, key) in older {
            if out.is_empty() {
                break;
            }
            if let Ok(Some(c)) = self.read_generation(*generation, key).await {
                out.retain(|l| c.get(l).is_none());
            }
        }
        Ok(out)
    }

    /// Manifests that may be the record of a lost generation: none when the copy in
    /// `catalog` holds the newest generation (always so for a version-1 stanza, whose copy is
    /// `catalog.copy`); otherwise those `unexplained_manifests` finds against `newest`.
    pub async fn possibly_lost_records(&self, newest: &Catalog) -> Result<Vec<BackupLabel>> {
        let mirror = self.mirror().await?;
        let gens = self.catalog_generations().await?;
        match gens.first() {
            None => Ok(Vec::new()),
            Some((g, _)) if mirror.as_ref().map(|m| m.1) == Some(*g) => Ok(Vec::new()),
            Some(_) => {
                self.unexplained_manifests(newest, mirror.as_ref(), &gens[1..])
                    .await
            }
        }
    }

    /// The catalog for a command that rewrites it (backup, expire), with its generation. Only
    /// the newest: when it cannot be read, the one before may lack its newest record, and
    /// writing on top of that would drop the record (and expire would delete that backup as
    /// unlisted). Such commands stop and ask for `stanza-repair`.
    pub async fn catalog_for_write(&self) -> Result<CatalogAt> {
        self.catalog_for_write_by(None).await
    }

    /// `catalog_for_write` for a backup about to list `own` (its manifest, written already,
    /// is not a sign of a lost generation).
    ///
    /// When the copy does not hold the newest generation (missing, damaged, or older after a
    /// crash between the two writes), nothing vouches that the newest generation listed is
    /// the newest written: if manifests exist that it does not list, one of them may be the
    /// record of a lost generation, and writing on would drop it for good (and expire would
    /// delete it as unlisted). Then the command refuses and asks for `stanza-repair`.
    pub async fn catalog_for_write_by(&self, own: Option<&BackupLabel>) -> Result<CatalogAt> {
        // The copy before the listing: it is written after its generation, so a copy newer
        // than every generation listed after it means that generation is gone (read the other
        // way round, a writer committing in between would look like a lost generation).
        let mirror = self.mirror().await?;
        let gens = self.catalog_generations().await?;
        let refuse = |why: String| {
            Error::Invalid(format!(
                "the catalog of stanza '{}' cannot be used ({why}), and the one before it may be older than it was; run `cairn --stanza={} stanza-repair` (it rebuilds the catalog from the backups' manifests) before backing up or expiring",
                self.name(),
                self.name()
            ))
        };
        if let Some((generation, key)) = gens.first() {
            if *generation > MAX_PLAUSIBLE_GENERATION {
                return Err(refuse(format!(
                    "{key} has a generation cairn never reaches, so it was not written by cairn"
                )));
            }
            if let Some((_, m)) = &mirror
                && m > generation
            {
                return Err(refuse(format!(
                    "its generation {m} is missing from {}",
                    self.catalog_generations_prefix()?
                )));
            }
            return match self.read_generation(*generation, key).await {
                Ok(Some(catalog)) => {
                    if mirror.as_ref().is_none_or(|(_, m)| m != generation) {
                        let mut unlisted: Vec<String> = Vec::new();
                        for l in self
                            .unexplained_manifests(&catalog, mirror.as_ref(), &gens[1..])
                            .await?
                        {
                            if Some(&l) != own {
                                unlisted.push(l.to_string());
                            }
                        }
                        if !unlisted.is_empty() {
                            return Err(refuse(format!(
                                "its copy {} does not hold its newest generation {generation} (missing, damaged or older), and the manifest(s) of {} are not listed: a newer generation may be lost",
                                self.catalog_key()?,
                                unlisted.join(", ")
                            )));
                        }
                    }
                    Ok(CatalogAt {
                        catalog,
                        generation: *generation,
                    })
                }
                // Pruned between listing and reading: a newer one exists.
                Ok(None) => Err(Error::Conflict(format!(
                    "the catalog of stanza '{}' changed while it was read; run the command again",
                    self.name()
                ))),
                Err(e) => Err(refuse(e.to_string())),
            };
        }
        if let Some((_, m)) = mirror {
            return Err(refuse(format!(
                "its generations are missing from {}, the newest was {m}",
                self.catalog_generations_prefix()?
            )));
        }
        match self.read_catalog(&self.catalog_key()?).await {
            Ok(Some(catalog)) => Ok(CatalogAt {
                catalog,
                generation: 0,
            }),
            Ok(None) if self.manifest_labels().await?.is_empty() => Ok(CatalogAt {
                // Nothing was ever listed (and the copy must agree).
                catalog: self.catalog().await?,
                generation: 0,
            }),
            Ok(None) => Err(refuse("it is missing".to_string())),
            Err(e) => Err(refuse(e.to_string())),
        }
    }

    /// The catalog: the newest generation, or its copy in `catalog` when the newest cannot be
    /// read or is missing, or else the newest older generation that can be read (each with a
    /// warning); on a version-1 stanza `catalog` or else its copy. A stanza with no backup has
    /// an empty one; a stanza whose catalogs are all gone while backup manifests exist is
    /// damage (never an empty list: the next backup would then write a fresh catalog and
    /// orphan every backup for good).
    pub async fn catalog(&self) -> Result<Catalog> {
        Ok(self.catalog_with_health().await?.0)
    }

    /// `catalog`, and why the newest catalog could not be used when it could not (the list
    /// then comes from a copy or an older generation, and may lack the newest backup): what
    /// `info` reports as damage.
    pub async fn catalog_with_health(&self) -> Result<(Catalog, Option<String>)> {
        // The copy first, for the reason `catalog_for_write` gives.
        let mirror = self.mirror().await?;
        let gens = self.catalog_generations().await?;
        let problem = std::sync::Mutex::new(None::<String>);
        let warn = |why: &str| {
            tracing::warn!(
                "the newest catalog of stanza '{}' cannot be used ({why}); run `cairn --stanza={} stanza-repair` to write it again",
                self.name(),
                self.name()
            );
            if let Ok(mut p) = problem.lock() {
                *p = Some(why.to_string());
            }
        };
        let health = |c: Catalog| -> (Catalog, Option<String>) {
            (c, problem.lock().ok().and_then(|mut p| p.take()))
        };
        let newest = gens.first().map(|g| g.0);
        if let Some((c, m)) = &mirror
            && newest.is_none_or(|g| *m > g)
        {
            warn(&format!(
                "generation {m} is missing from {}; using its copy {}",
                self.catalog_generations_prefix()?,
                self.catalog_key()?
            ));
            return Ok(health(c.clone()));
        }
        let mut first_error = None;
        for (generation, key) in &gens {
            match self.read_generation(*generation, key).await {
                Ok(Some(c)) => {
                    if let Some(e) = &first_error {
                        warn(&format!(
                            "{e}; using generation {generation}, which may lack the newest backup"
                        ));
                    }
                    return Ok(health(c));
                }
                Ok(None) => continue,
                Err(e) => {
                    if let Some((c, m)) = &mirror
                        && Some(*m) == newest
                    {
                        warn(&format!("{e}; using its copy {}", self.catalog_key()?));
                        return Ok(health(c.clone()));
                    }
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        if !gens.is_empty() {
            // Every generation listed was removed before it was read: a writer moved on.
            return Box::pin(self.catalog_with_health()).await;
        }
        Ok((self.catalog_v1().await?, None))
    }

    /// A version-1 stanza's catalog: `catalog`, or its copy.
    async fn catalog_v1(&self) -> Result<Catalog> {
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
                            "the catalog of stanza '{}' is missing, but {} backup manifest(s) exist; run `cairn --stanza={} stanza-repair` to rebuild the catalog from them",
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

    /// A catalog object of either version at `k` (the version-1 keys).
    pub(crate) async fn read_catalog(&self, k: &Key) -> Result<Option<Catalog>> {
        match self.store().get(k, None).await {
            Ok(b) => Catalog::decode(k.as_str(), &b).map(Some),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Write `catalog` as the generation after `read_at` (the one it was built from),
    /// create-only: `Error::Conflict` when another writer wrote that generation first (the
    /// caller reads again, or gives up), so no writer ever loses another's record. Returns the
    /// generation written. The first write to a version-1 stanza upgrades it.
    pub async fn commit_catalog(&self, catalog: &Catalog, read_at: u64) -> Result<u64> {
        let next = read_at.checked_add(1).ok_or_else(|| {
            Error::Invalid(format!(
                "the catalog of stanza '{}' has the last possible generation, so it was not written by cairn; run `cairn --stanza={} stanza-repair`",
                self.name(),
                self.name()
            ))
        })?;
        let prefix = self.catalog_generations_prefix()?;
        let key = prefix.join(&format!("{next:016x}"))?;
        let bytes = Bytes::from(catalog.encode_generation(next));
        match self.store().put(&key, bytes.clone(), PutMode::Create).await {
            Ok(()) => {}
            Err(StorageError::AlreadyExists { .. }) => {
                return Err(Error::Conflict(format!(
                    "another process wrote generation {next} of the catalog of stanza '{}' first",
                    self.name()
                )));
            }
            Err(e) => return Err(e.into()),
        }
        // Create-only cannot tell a generation never written from one written and since
        // pruned: a writer that read generation g long ago may create g+1 again after newer
        // ones pruned it. Generation g+1 is pruned only once g+1+KEEP exists, so a newest
        // that far ahead means this write may be such a ghost: it counts as lost (a backup
        // then finds its record listed or appends it again; expire stops). Nearer newer
        // generations were built on this one.
        let gens = self.catalog_generations().await?;
        if gens
            .first()
            .is_some_and(|g| g.0 >= next.saturating_add(KEEP_GENERATIONS))
        {
            return Err(Error::Conflict(format!(
                "other processes wrote newer generations of the catalog of stanza '{}' while this one wrote generation {next}",
                self.name()
            )));
        }
        // Its copy, which also makes an older cairn refuse the stanza's catalog as newer
        // rather than read a version-1 list no longer kept up to date (format.md, "Catalog").
        // A writer that lost the race to a newer generation must not put its older copy
        // over the newer one's: written only when this is still the newest.
        crate::failpoint::hit("catalog-before-copy");
        if gens.first().is_none_or(|g| g.0 == next) {
            self.store()
                .put(&self.catalog_key()?, bytes, PutMode::Overwrite)
                .await?;
        }
        if read_at == 0 {
            match self.store().delete(&self.catalog_copy_key()?).await {
                Ok(()) | Err(StorageError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // Older generations are history: keep the newest and two to fall back to.
        for (g, k) in gens {
            if g.saturating_add(KEEP_GENERATIONS) <= next {
                match self.store().delete(&k).await {
                    Ok(()) | Err(StorageError::NotFound { .. }) => {}
                    Err(e) => tracing::warn!("removing an old catalog generation failed: {e}"),
                }
            }
        }
        Ok(next)
    }

    /// Write `catalog` as the next generation whatever the newest holds (stanza-create,
    /// stanza-repair: they build the list from scratch, under the lock), and remove older
    /// generations that cannot be read.
    pub async fn save_catalog(&self, catalog: &Catalog) -> Result<u64> {
        // A generation cairn cannot have reached (one write each) was put there by hand or
        // by damage; it would block every later write.
        for (g, k) in self.catalog_generations().await? {
            if g > MAX_PLAUSIBLE_GENERATION {
                tracing::warn!("removing catalog generation {k}: cairn never writes one that high");
                self.store().delete(&k).await?;
            }
        }
        let mut attempts = 0;
        loop {
            let listed = self.catalog_generations().await?.first().map_or(0, |g| g.0);
            // The copy may be newer than every generation left (the newest lost).
            // One cairn never reaches is no base to write on (it would make the next
            // generation one too: defect of 2026-11-24, repaired again and again).
            let copy = self
                .mirror()
                .await?
                .map(|m| m.1)
                .filter(|g| *g <= MAX_PLAUSIBLE_GENERATION)
                .unwrap_or(0);
            let newest = listed.max(copy);
            match self.commit_catalog(catalog, newest).await {
                Err(Error::Conflict(_)) if attempts < 10 => attempts += 1,
                Ok(written) => {
                    // A damaged older generation is no fallback; what verify reported goes.
                    for (g, k) in self.catalog_generations().await? {
                        if g < written && !matches!(self.read_generation(g, &k).await, Ok(Some(_)))
                        {
                            match self.store().delete(&k).await {
                                Ok(()) | Err(StorageError::NotFound { .. }) => {}
                                Err(e) => return Err(e.into()),
                            }
                        }
                    }
                    return Ok(written);
                }
                other => return other,
            }
        }
    }
}
