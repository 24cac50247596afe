//! `backup/<stanza>/<label>/...`: one backup as pgBackRest's backup directory would hold it,
//! from the backup's own manifest (no other manifest of its chain is read).
//!
//! - postgres: the data directory under `pg_data/`; a tablespace's files under
//!   `pg_tblspc/<oid>/`, and `pg_data/pg_tblspc/<oid>` a link to `../../pg_tblspc/<oid>`,
//!   as pgBackRest stores them. Other symlinks are links to their recorded target.
//! - files and stream: the backup's entries directly under the label (`stream` for a stream).
//!
//! Directories are paths. A file is listed only when this backup stored its content: like a
//! pgBackRest diff or incr directory, which holds the files that changed, a cairn diff or
//! incr lists the files it read again, not those it inherits from its parent. Sizes and
//! times are the original file's (`size`, `mtime`). Hard links of a `files` backup are left
//! out (another name of a file listed elsewhere); FIFOs and devices are `special`.

use super::{Kind, Node, Origin, Tree, add};
use anyhow::Result;
use cairn_repo::manifest::{Content, EntryKind, FileEntry};
use cairn_repo::{BackupLabel, Stanza};
use std::sync::Arc;

const PG_DATA: &str = "pg_data";
const PG_TBLSPC: &str = "pg_tblspc";

/// Everything under `backup/<stanza>/<label>`, or None when the catalog lists no such backup.
pub async fn tree(stanza: &Stanza, label: &str) -> Result<Option<Tree>> {
    let Ok(label) = BackupLabel::parse(label) else {
        return Ok(None);
    };
    if stanza.catalog().await?.get(&label).is_none() {
        return Ok(None);
    }
    let manifest = Arc::new(stanza.manifest(&label).await?);
    let postgres = stanza.info.engine == "postgres";
    let mut tree = Tree::new();
    if postgres {
        add(&mut tree, PG_DATA.into(), Node::path());
    }
    for (i, e) in manifest.entries.iter().enumerate() {
        let Some(kind) = kind_of(e) else { continue };
        let path = e.display_path();
        let path = if !postgres {
            if path.is_empty() {
                continue;
            }
            path
        } else if let Some(oid) = tablespace_link(e) {
            add(&mut tree, format!("{PG_TBLSPC}/{oid}"), Node::path());
            let link = Node {
                kind: Kind::Link {
                    destination: format!("../../{PG_TBLSPC}/{oid}"),
                },
                origin: Origin::Nothing,
            };
            add(&mut tree, format!("{PG_DATA}/{PG_TBLSPC}/{oid}"), link);
            continue;
        } else if in_tablespace(&path) {
            path
        } else if path.is_empty() {
            continue;
        } else {
            format!("{PG_DATA}/{path}")
        };
        let origin = match kind {
            Kind::File { .. } => Origin::Backup {
                stanza: stanza.clone(),
                manifest: manifest.clone(),
                entry: i,
            },
            _ => Origin::Nothing,
        };
        add(&mut tree, path, Node { kind, origin });
    }
    Ok(Some(tree))
}

/// What the view shows for an entry, or None when it shows nothing (an inherited file, a
/// hard link).
fn kind_of(e: &FileEntry) -> Option<Kind> {
    match e.kind {
        EntryKind::File => (!matches!(e.content, Content::Inherit)).then(|| Kind::File {
            size: e.size,
            time: e.mtime_ns.div_euclid(1_000_000_000),
        }),
        EntryKind::Dir => Some(Kind::Path),
        EntryKind::Symlink => Some(Kind::Link {
            destination: e
                .link_target
                .as_deref()
                .map(|t| String::from_utf8_lossy(t).into_owned())
                .unwrap_or_default(),
        }),
        EntryKind::HardLink => None,
        EntryKind::Fifo | EntryKind::CharDevice { .. } | EntryKind::BlockDevice { .. } => {
            Some(Kind::Special)
        }
    }
}

/// The oid of a tablespace link `pg_tblspc/<oid>` (format.md, "Tablespaces").
fn tablespace_link(e: &FileEntry) -> Option<&str> {
    if e.kind != EntryKind::Symlink {
        return None;
    }
    let path = std::str::from_utf8(&e.path).ok()?;
    let oid = path.strip_prefix("pg_tblspc/")?;
    (!oid.is_empty() && oid.bytes().all(|b| b.is_ascii_digit())).then_some(oid)
}

/// Whether `path` lies beneath a tablespace link (`pg_tblspc/<oid>/...`).
fn in_tablespace(path: &str) -> bool {
    path.strip_prefix("pg_tblspc/")
        .and_then(|r| r.split_once('/'))
        .is_some_and(|(oid, _)| !oid.is_empty() && oid.bytes().all(|b| b.is_ascii_digit()))
}
