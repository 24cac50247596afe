//! `archive/<stanza>/<id>/...`: a postgres stanza's WAL archive as pgBackRest lays it out.
//! cairn keeps it under `<version>-<system id>/<timeline>/<name>` (format.md, "WAL archive");
//! the view names each identity by pgBackRest's archive id (`15-1`, as `info` does) and puts
//! segments, `.partial` segments and `.backup` files under the first 16 hex digits of their
//! name, timeline history files directly under the id.
//!
//! Sizes are the plain files' sizes without reading the WAL: a segment or `.partial` segment
//! is exactly its cluster's `wal-segment-size` long (archive-push refuses any other length),
//! taken from the stanza's identities (`stanza.info`); only for an identity the stanza does
//! not record is one segment read to learn it. History and `.backup` files are small and
//! read. Times are the stored objects' modification times from the listing itself.

use super::{Kind, Node, Origin, Tree, add};
use crate::info::history::{Db, dbs_of};
use anyhow::Result;
use cairn_engines::postgres::identity::Identity;
use cairn_repo::Stanza;

/// One archive id of the view.
#[derive(Debug)]
pub struct ArchiveDir {
    /// pgBackRest's (`15-1`), or the repository's for WAL no identity explains.
    pub view_id: String,
    /// cairn's (`15-<system id>`).
    pub repository_id: String,
    /// The identity, when the stanza records it (its segment size, and the checks of what is
    /// read back).
    pub identity: Option<Identity>,
}

/// Every archive id of the stanza: one per identity, as `info`'s `archive` list gives them,
/// then any archive id of the repository no identity explains.
pub async fn ids(stanza: &Stanza) -> Result<Vec<ArchiveDir>> {
    let catalog = stanza.catalog().await?;
    let stored = stanza.archive_ids().await?;
    let stored_refs: Vec<&str> = stored.iter().map(String::as_str).collect();
    let dbs = dbs_of(&stanza.info.meta, &catalog.backups, &stored_refs);
    let known = Identity::all(&stanza.info.meta).unwrap_or_default();
    let identity_of = |db: &Db| {
        known
            .iter()
            .find(|i| i.system_id == db.system_id && i.version.to_string() == db.version)
            .copied()
    };
    let mut out: Vec<ArchiveDir> = dbs
        .iter()
        .map(|db| ArchiveDir {
            view_id: db.archive_id(),
            repository_id: db.repository_archive_id(),
            identity: identity_of(db),
        })
        .collect();
    for id in stored {
        if !out.iter().any(|a| a.repository_id == id) {
            out.push(ArchiveDir {
                view_id: id.clone(),
                repository_id: id,
                identity: None,
            });
        }
    }
    Ok(out)
}

/// Everything under `archive/<stanza>/<view_id>`, or None when the stanza has no such id.
pub async fn tree(stanza: &Stanza, view_id: &str) -> Result<Option<Tree>> {
    let Some(dir) = ids(stanza)
        .await?
        .into_iter()
        .find(|a| a.view_id == view_id)
    else {
        return Ok(None);
    };
    let mut segment_size = dir.identity.map(|i| u64::from(i.wal_segment_size));
    let mut tree = Tree::new();
    for a in stanza.archive_list(&dir.repository_id).await? {
        let whole = a.name.len() == 24 || a.name.ends_with(".partial");
        let size = if whole && let Some(s) = segment_size {
            s
        } else {
            let plain = stanza
                .archive_get(&dir.repository_id, a.timeline, &a.name)
                .await?
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{} was removed from the archive while it was listed; list again",
                        a.name
                    )
                })?;
            let len = plain.len() as u64;
            if whole {
                segment_size = Some(len);
            }
            len
        };
        let path = if a.name.ends_with(".history") {
            a.name.clone()
        } else {
            match a.name.get(..16) {
                Some(dir16) => format!("{dir16}/{}", a.name),
                None => continue,
            }
        };
        let node = Node {
            kind: Kind::File {
                size,
                time: a.modified.unwrap_or(0),
            },
            origin: Origin::Wal {
                stanza: stanza.clone(),
                repository_id: dir.repository_id.clone(),
                identity: dir.identity,
                timeline: a.timeline,
                name: a.name,
            },
        };
        add(&mut tree, path, node);
    }
    Ok(Some(tree))
}
