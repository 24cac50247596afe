//! `stanza-upgrade` for a postgres stanza: after pg_upgrade, the cluster at `--pg-path` has a
//! new identity, which replaces the stanza's (the old one joins `db-history`). A mistyped
//! `--pg-path` would re-point the stanza at someone else's cluster and stall the real one's
//! archiving, so the new cluster must look like the upgraded one: pg_upgrade starts its WAL
//! after everything the old cluster wrote, while an unrelated or freshly initialised cluster is
//! behind the stanza's archive. And the step can be undone while nothing was stored under the
//! new identity: `stanza-upgrade` against the previous cluster goes back.

use super::identity::Identity;
use super::lsn::Lsn;
use super::wal::{WalFileKind, WalFileName};
use cairn_repo::{Error, Result, Stanza};
use std::collections::BTreeMap;
use std::path::Path;

/// The stanza meta after upgrading to the cluster at `pg_path`, or None when it already is
/// the stanza's.
pub async fn upgrade_identity(
    stanza: &Stanza,
    pg_path: &Path,
) -> Result<Option<BTreeMap<String, String>>> {
    let (new, control) = Identity::read_data_dir(pg_path)?;
    let meta = &stanza.info.meta;
    let current = Identity::from_meta(meta)?;
    if new == current {
        return Ok(None);
    }
    let history = Identity::history(meta)?;
    let catalog = stanza.catalog().await?;
    let mut own_stops = Vec::new();
    for b in &catalog.backups {
        if Identity::of_backup(meta, &b.meta)? == current {
            own_stops.extend(b.meta.get("stop-lsn").and_then(|l| Lsn::parse(l)));
        }
    }
    let archived: Vec<u64> = stanza
        .archive_list(&current.archive_id())
        .await?
        .iter()
        .filter_map(|a| WalFileName::parse(&a.name))
        .filter(|w| w.kind == WalFileKind::Segment)
        .filter_map(|w| w.segno(current.wal_segment_size))
        .collect();
    if history.last() == Some(&new) {
        // Back to the cluster before the last upgrade: only while nothing was stored under
        // the identity that replaced it (a mistaken upgrade), or it would be hidden.
        if !own_stops.is_empty() || !archived.is_empty() {
            return Err(Error::Usage(format!(
                "database system {} was this stanza's before its last stanza-upgrade, and backups or WAL of system {} have been stored since: going back would hide them; create a new stanza for the cluster at --pg-path",
                new.system_id, current.system_id
            )));
        }
        tracing::warn!(
            "going back to database system {} (PostgreSQL {}): undoing the stanza-upgrade to system {}, under which nothing was stored",
            new.system_id,
            new.version,
            current.system_id
        );
        return Ok(Some(new.with_history(&history[..history.len() - 1])));
    }
    let newest_segment = archived
        .iter()
        .max()
        .map(|s| Lsn(s * u64::from(current.wal_segment_size)));
    let needed = own_stops.into_iter().chain(newest_segment).max();
    if let Some(needed) = needed
        && Lsn(control.checkpoint) < needed
    {
        return Err(Error::Usage(format!(
            "the cluster at --pg-path {} (database system {}) has written WAL only up to {}, behind what this stanza holds of system {} ({}): pg_upgrade starts the upgraded cluster's WAL after the old one's, so this is not the upgraded cluster; check --pg-path",
            pg_path.display(),
            new.system_id,
            Lsn(control.checkpoint),
            current.system_id,
            needed
        )));
    }
    Ok(Some(new.upgrade_from(meta)?))
}
