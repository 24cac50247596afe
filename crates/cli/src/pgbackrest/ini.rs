//! pgBackRest's INI configuration file (`/etc/pgbackrest/pgbackrest.conf` and the `*.conf`
//! files of `/etc/pgbackrest/conf.d`), read into the same shape as cairn's TOML file: one table
//! per section (`global`, `global:<command>`, `<stanza>`, `<stanza>:<command>`), keyed by
//! cairn's option names, every value a string (pgBackRest's `y`/`n` for switches), an option
//! given more than once (`recovery-option`, `tablespace-map`) an array in file order.
//!
//! As pgBackRest reads it: blank lines and lines starting with `#` are skipped, a line is a
//! `[section]` or `key=value` with spaces around either side trimmed, and every key belongs to
//! a section. An option cairn does not support is reported (a warning) and ignored, one that
//! cairn cannot ignore without changing what is protected (encryption) is refused.

use super::names::{Name, Notes, pgbackrest_name};
use std::path::Path;

/// Parse `text` (read from `path`, for messages) into `doc`, adding to what earlier files put
/// there. Err names the file and line of what cannot be read.
pub(crate) fn parse_into(
    doc: &mut toml::Table,
    text: &str,
    path: &Path,
    notes: &mut Notes,
) -> Result<(), String> {
    let mut section: Option<String> = None;
    for (n, raw) in text.lines().enumerate() {
        let at = || format!("{}, line {}", path.display(), n + 1);
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            let name = name
                .strip_suffix(']')
                .map(str::trim)
                .ok_or_else(|| format!("{}: '{line}' is not a section header [name]", at()))?;
            if name.is_empty() {
                return Err(format!("{}: empty section name", at()));
            }
            doc.entry(name.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            section = Some(name.to_string());
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!(
                "{}: '{line}' is neither a [section] nor key=value",
                at()
            ));
        };
        let (key, value) = (key.trim(), value.trim());
        let Some(section) = &section else {
            return Err(format!(
                "{}: '{key}' comes before any section; put it under [global] or [<stanza>]",
                at()
            ));
        };
        if key.is_empty() {
            return Err(format!("{}: a value without an option name", at()));
        }
        if value.is_empty() {
            return Err(format!(
                "{}: '{key}' has no value; give one, or remove the line to use the default",
                at()
            ));
        }
        let key = match pgbackrest_name(key) {
            None => key.to_string(),
            Some(Name::Cairn(cairn)) => cairn,
            Some(Name::Inherent(why)) => {
                notes
                    .details
                    .push(format!("{}: {key} needs nothing from cairn ({why})", at()));
                continue;
            }
            Some(Name::Unsupported(why)) => {
                notes
                    .warnings
                    .push(format!("{}: {key} is ignored: {why}", at()));
                continue;
            }
            Some(Name::Refused(why)) => return Err(format!("{}: {key}: {why}", at())),
        };
        let Some(toml::Value::Table(table)) = doc.get_mut(section) else {
            continue;
        };
        let value = toml::Value::String(value.to_string());
        match table.get_mut(&key) {
            None => {
                table.insert(key, value);
            }
            Some(toml::Value::Array(list)) => list.push(value),
            Some(first) => {
                let first = std::mem::replace(first, toml::Value::Boolean(false));
                table.insert(key, toml::Value::Array(vec![first, value]));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbackrest_documentation_example_is_read() -> Result<(), String> {
        // From pgBackRest's user guide ("Configure Cluster Stanza", S3 and retention).
        let text = "[demo]\npg1-path=/var/lib/postgresql/15/demo\n\n[global]\nrepo1-path=/var/lib/pgbackrest\nrepo1-retention-full=2\nstart-fast=y\nlog-level-console=info\nrepo1-bundle=y\n\n[global:archive-push]\ncompress-level=3\n\n[demo:restore]\nrecovery-option=primary_conninfo=host=x\nrecovery-option=recovery_min_apply_delay=1min\n";
        let mut doc = toml::Table::new();
        let mut notes = Notes::default();
        parse_into(&mut doc, text, Path::new("pgbackrest.conf"), &mut notes)?;
        let get = |s: &str, k: &str| doc.get(s).and_then(|t| t.get(k)).cloned();
        let s = |v: &str| Some(toml::Value::String(v.into()));
        assert_eq!(get("demo", "pg-path"), s("/var/lib/postgresql/15/demo"));
        assert_eq!(get("global", "repo1-path"), s("/var/lib/pgbackrest"));
        assert_eq!(get("global", "retention-full"), s("2"));
        assert_eq!(get("global", "start-fast"), s("y"));
        assert_eq!(get("global", "log-level"), s("info"));
        assert_eq!(get("global", "repo1-bundle"), None);
        assert_eq!(get("global:archive-push", "compress-level"), s("3"));
        assert_eq!(
            get("demo:restore", "recovery-option"),
            Some(toml::Value::Array(vec![
                toml::Value::String("primary_conninfo=host=x".into()),
                toml::Value::String("recovery_min_apply_delay=1min".into()),
            ]))
        );
        assert!(notes.warnings.is_empty(), "{notes:?}");
        assert_eq!(notes.details.len(), 1);
        Ok(())
    }

    #[test]
    fn malformed_lines_are_named() {
        for (text, why) in [
            ("repo1-path=/x\n", "before any section"),
            ("[global\nx=1\n", "section header"),
            ("[global]\njust-a-word\n", "key=value"),
            ("[global]\nrepo1-cipher-pass=secret\n", "unencrypted"),
        ] {
            let mut doc = toml::Table::new();
            let err = parse_into(&mut doc, text, Path::new("p.conf"), &mut Notes::default())
                .err()
                .unwrap_or_default();
            assert!(err.contains(why) && err.contains("p.conf"), "{text}: {err}");
        }
    }
}
