//! The WAL (log) archive of a stanza. Each archived file is one sealed object (magic
//! `CAIRNWAL`, zstd-compressed) at `stanza/<stanza>/archive/<archive id>/<timeline>/<name>`,
//! written create-only: pushing the same name again with the same bytes succeeds, with other
//! bytes fails and keeps the original. The repository does not interpret the bytes; the engine
//! checks them (PostgreSQL: system id, version, segment position) before pushing.

use crate::codec::{self, magic};
use crate::error::{Error, Result};
use crate::repository::Stanza;
use crate::storage::{Key, PutMode, StorageError};
use bytes::Bytes;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PushOutcome {
    Stored,
    /// An identical copy was already archived.
    AlreadyArchived,
}

/// One archived file, as listed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Archived {
    pub timeline: u32,
    pub name: String,
    /// The stored object's size (sealed, compressed), not the file's.
    pub size: u64,
    /// When it was stored, in seconds since the Unix epoch, where the listing says.
    pub modified: Option<i64>,
}

impl Stanza {
    pub fn archive_prefix(&self, archive_id: &str) -> Result<Key> {
        crate::keys::archive_prefix(self.name(), archive_id)
    }

    pub fn archive_key(&self, archive_id: &str, timeline: u32, name: &str) -> Result<Key> {
        crate::keys::archived(self.name(), archive_id, timeline, name)
    }

    /// Store `data` as `name`; durable when this returns. Compression runs on the blocking
    /// pool, so several pushes in flight (asynchronous archiving) use every core.
    pub async fn archive_push(
        &self,
        archive_id: &str,
        timeline: u32,
        name: &str,
        data: Vec<u8>,
        level: i32,
    ) -> Result<PushOutcome> {
        self.refuse_if_stopped("archive-push").await?;
        let key = self.archive_key(archive_id, timeline, name)?;
        let (sealed, data) = tokio::task::spawn_blocking(move || {
            (codec::seal_raw_level(magic::WAL, &data, Some(level)), data)
        })
        .await
        .map_err(|e| Error::Invalid(format!("compressing {name} failed: {e}")))?;
        match self
            .store()
            .put(&key, Bytes::from(sealed), PutMode::Create)
            .await
        {
            Ok(()) => Ok(PushOutcome::Stored),
            Err(StorageError::AlreadyExists { .. }) => {
                let existing = self.archive_get(archive_id, timeline, name).await?;
                if existing.as_deref() == Some(&data[..]) {
                    Ok(PushOutcome::AlreadyArchived)
                } else {
                    Err(Error::Invalid(format!(
                        "{name} is already in the archive of stanza '{}' with different content; the archived copy is kept. Two clusters may be archiving to the same stanza: check archive_command and --stanza",
                        self.name()
                    )))
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The archived bytes of `name`, or None if the archive does not have it.
    pub async fn archive_get(
        &self,
        archive_id: &str,
        timeline: u32,
        name: &str,
    ) -> Result<Option<Vec<u8>>> {
        let key = self.archive_key(archive_id, timeline, name)?;
        match self.store().get(&key, None).await {
            Ok(b) => Ok(Some(codec::open_raw(key.as_str(), magic::WAL, &b)?)),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Everything archived under `archive_id`, sorted by timeline then name.
    pub async fn archive_list(&self, archive_id: &str) -> Result<Vec<Archived>> {
        let mut out = Vec::new();
        for m in self.store().list(&self.archive_prefix(archive_id)?).await? {
            let Some((timeline, name)) = crate::keys::parse_archived(&m.key) else {
                continue;
            };
            out.push(Archived {
                timeline,
                name: name.to_string(),
                size: m.size,
                modified: m.modified,
            });
        }
        out.sort_by(|a, b| (a.timeline, &a.name).cmp(&(b.timeline, &b.name)));
        Ok(out)
    }

    /// Archive ids present (one per database system the stanza has seen).
    pub async fn archive_ids(&self) -> Result<Vec<String>> {
        let prefix = crate::keys::archives_prefix(self.name())?;
        let mut ids: Vec<String> = self
            .store()
            .list(&prefix)
            .await?
            .iter()
            .filter_map(|m| crate::keys::parse_archive_id(&m.key).map(String::from))
            .collect();
        ids.dedup();
        Ok(ids)
    }
}
