//! Annotations: a backup's names and descriptions (`backup --annotation KEY=VALUE`, and
//! `annotate` later), as pgBackRest keeps them. Each is the record meta entry
//! `annotation.<KEY>` (format.md, "Backup record"); `annotate` rewrites the backup's catalog
//! record, compare-and-swap on the catalog generation like every catalog writer.

use crate::catalog::BackupRecord;
use crate::error::{Error, Result};
use crate::ids::BackupLabel;
use crate::repository::Stanza;
use std::collections::BTreeMap;

/// The prefix of an annotation's meta key.
pub const ANNOTATION_PREFIX: &str = "annotation.";

/// How many times `annotate` reads the catalog again when another writer got there first.
const ATTEMPTS: usize = 8;

/// Parse `KEY=VALUE` words (an empty VALUE: remove KEY, for `annotate`).
pub fn parse(words: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for w in words {
        let (k, v) = w.split_once('=').ok_or_else(|| {
            Error::Usage(format!(
                "--annotation '{w}': use KEY=VALUE, e.g. --annotation source=\"nightly job\""
            ))
        })?;
        let k = k.trim();
        if k.is_empty() || k.chars().any(char::is_control) {
            return Err(Error::Usage(format!(
                "--annotation '{w}': the key must be non-empty printable text"
            )));
        }
        if v.chars().any(|c| c.is_control() && c != '\t') {
            return Err(Error::Usage(format!(
                "--annotation {k}: the value must be printable text on one line"
            )));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// The annotations a record carries.
pub fn annotations(meta: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    meta.iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(ANNOTATION_PREFIX)?.to_string(), v.clone())))
        .collect()
}

/// Set each annotation with a value and remove each with an empty one.
pub fn apply(meta: &mut BTreeMap<String, String>, changes: &BTreeMap<String, String>) {
    for (k, v) in changes {
        let key = format!("{ANNOTATION_PREFIX}{k}");
        if v.is_empty() {
            meta.remove(&key);
        } else {
            meta.insert(key, v.clone());
        }
    }
}

/// Change the annotations of backup `label` in the catalog; returns the record written.
pub async fn annotate(
    stanza: &Stanza,
    label: &BackupLabel,
    changes: &BTreeMap<String, String>,
) -> Result<BackupRecord> {
    for _ in 0..ATTEMPTS {
        let at = stanza.catalog_for_write().await?;
        let mut catalog = at.catalog;
        let Some(record) = catalog.backups.iter_mut().find(|b| &b.label == label) else {
            return Err(Error::NotFound(format!(
                "backup {label} does not exist in stanza '{}'; `cairn info` lists the backups",
                stanza.name()
            )));
        };
        apply(&mut record.meta, changes);
        let written = record.clone();
        match stanza.commit_catalog(&catalog, at.generation).await {
            Ok(_) => return Ok(written),
            Err(Error::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::Conflict(format!(
        "the catalog of stanza '{}' kept changing under annotate; run it again",
        stanza.name()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_parse_apply_and_read_back() -> Result<()> {
        let w = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut meta = BTreeMap::from([("engine".to_string(), "files".to_string())]);
        apply(&mut meta, &parse(&w(&["name=nightly", "ticket=OPS-1=2"]))?);
        assert_eq!(
            annotations(&meta),
            BTreeMap::from([
                ("name".to_string(), "nightly".to_string()),
                ("ticket".to_string(), "OPS-1=2".to_string())
            ])
        );
        apply(&mut meta, &parse(&w(&["name="]))?);
        assert_eq!(annotations(&meta).len(), 1);
        assert_eq!(meta.get("engine").map(String::as_str), Some("files"));
        for bad in ["no-equals", "=v", "k=a\nb"] {
            assert!(parse(&w(&[bad])).is_err(), "{bad}");
        }
        Ok(())
    }
}
