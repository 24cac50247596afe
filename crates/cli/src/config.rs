//! Option sources, in order of precedence: command-line flag, `CAIRN_<OPTION>` environment
//! variable (both handled by clap), then the TOML config file (`--config`, `CAIRN_CONFIG`, or
//! `/etc/cairn/cairn.toml` if it exists). As in pgBackRest's config, the file uses the long
//! option names as keys, for every stanza at the top level or under `[global]`, and for one
//! stanza under `[<stanza>]`, which wins:
//!
//! ```toml
//! [global]
//! repo = "/var/lib/cairn"
//! process-max = 4
//! [app]
//! source = "/srv/data"
//! ```

use crate::exit::usage;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG: &str = "/etc/cairn/cairn.toml";

#[derive(Debug, Default)]
pub struct ConfigFile {
    /// Where it was read from, for messages.
    path: Option<PathBuf>,
    global: toml::Table,
    stanza: toml::Table,
}

impl ConfigFile {
    /// Load `explicit`, or the default file if it exists, or nothing.
    pub fn load(explicit: Option<&Path>) -> Result<ConfigFile> {
        let path: PathBuf = match explicit {
            Some(p) => p.to_path_buf(),
            None if Path::new(DEFAULT_CONFIG).exists() => PathBuf::from(DEFAULT_CONFIG),
            None => return Ok(ConfigFile::default()),
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let global: toml::Table = text.parse().map_err(|e| {
            usage(format!(
                "config file {} is not valid TOML: {e}",
                path.display()
            ))
        })?;
        Ok(ConfigFile {
            path: Some(path),
            global,
            stanza: toml::Table::new(),
        })
    }

    /// Narrow to one stanza's section (which then wins over top-level keys).
    pub fn select_stanza(&mut self, stanza: &str) -> Result<()> {
        if stanza == "global" {
            bail!("'global' names the config file's shared section and cannot be a stanza name");
        }
        if let Some(t) = self.global.get(stanza) {
            match t.as_table() {
                Some(t) => self.stanza = t.clone(),
                None => {
                    return Err(usage(format!(
                        "{}: '{stanza}' must be a [{stanza}] section",
                        self.name()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Refuse any key that is not an option cairn knows (`known`: every long option name), in
    /// the top level, `[global]` and every stanza section, naming the closest valid key: an
    /// ignored typo (`proces-max`) is a setting silently not applied.
    pub fn check_keys(&self, path_hint: &str, known: &[String]) -> Result<()> {
        let check = |section: &str, table: &toml::Table| -> Result<()> {
            for key in table.keys() {
                if known.iter().any(|k| k == key) {
                    continue;
                }
                let closest = known
                    .iter()
                    .map(|k| (edit_distance(k, key), k))
                    .min()
                    .filter(|(d, _)| *d <= 3)
                    .map(|(_, k)| format!(" (did you mean '{k}'?)"))
                    .unwrap_or_default();
                bail!(
                    "config file {path_hint}: unknown option '{key}'{section}{closest}; options are the long names of cairn's flags (`cairn help <command>`)"
                );
            }
            Ok(())
        };
        let top: toml::Table = self
            .global
            .iter()
            .filter(|(_, v)| !v.is_table())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        check("", &top)?;
        for (name, v) in &self.global {
            if let Some(t) = v.as_table() {
                check(&format!(" in [{name}]"), t)?;
            }
        }
        Ok(())
    }

    /// "config file /etc/cairn/cairn.toml", for messages.
    fn name(&self) -> String {
        match &self.path {
            Some(p) => format!("config file {}", p.display()),
            None => "config file".into(),
        }
    }

    fn raw(&self, key: &str) -> Option<&toml::Value> {
        let section = self.global.get("global").and_then(|g| g.as_table());
        self.stanza
            .get(key)
            .or_else(|| section.and_then(|g| g.get(key)))
            .or_else(|| match self.global.get(key) {
                Some(toml::Value::Table(_)) => None,
                v => v,
            })
    }

    pub fn string(&self, key: &str) -> Result<Option<String>> {
        match self.raw(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(toml::Value::Integer(i)) => Ok(Some(i.to_string())),
            Some(other) => Err(usage(format!(
                "{}: '{key}' must be a string, not {}",
                self.name(),
                other.type_str()
            ))),
        }
    }

    pub fn integer(&self, key: &str) -> Result<Option<i64>> {
        match self.raw(key) {
            None => Ok(None),
            Some(toml::Value::Integer(i)) => Ok(Some(*i)),
            Some(toml::Value::String(s)) => s.parse().map(Some).map_err(|_| {
                usage(format!(
                    "{}: '{key}' must be a number, not '{s}'",
                    self.name()
                ))
            }),
            Some(other) => Err(usage(format!(
                "{}: '{key}' must be a number, not {}",
                self.name(),
                other.type_str()
            ))),
        }
    }

    pub fn boolean(&self, key: &str) -> Result<Option<bool>> {
        match self.raw(key) {
            None => Ok(None),
            Some(toml::Value::Boolean(b)) => Ok(Some(*b)),
            Some(other) => Err(usage(format!(
                "{}: '{key}' must be true or false, not {}",
                self.name(),
                other.type_str()
            ))),
        }
    }
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanza_sections_win_over_top_level() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "stanza = \"app\"\n[global]\nrepo = \"/a\"\nprocess-max = 3\n[app]\nrepo = \"/b\"\n",
        )?;
        let mut c = ConfigFile::load(Some(&p))?;
        assert_eq!(c.string("repo")?.as_deref(), Some("/a"));
        c.select_stanza("app")?;
        assert_eq!(c.string("repo")?.as_deref(), Some("/b"));
        assert_eq!(c.integer("process-max")?, Some(3));
        assert_eq!(c.string("stanza")?.as_deref(), Some("app"));
        Ok(())
    }

    #[test]
    fn item15_unknown_keys_are_an_error_naming_the_closest_key() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("c.toml");
        let known = vec!["process-max".to_string(), "repo".to_string()];
        std::fs::write(&p, "[global]\nrepo = \"/a\"\n[app]\nproces-max = 2\n")?;
        let err = ConfigFile::load(Some(&p))?
            .check_keys("c.toml", &known)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("'proces-max' in [app]"), "{err}");
        assert!(err.contains("did you mean 'process-max'"), "{err}");
        std::fs::write(&p, "repo = \"/a\"\nprocess-max = 2\n")?;
        ConfigFile::load(Some(&p))?.check_keys("c.toml", &known)?;
        Ok(())
    }

    #[test]
    fn wrong_types_are_named() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "process-max = true\n")?;
        let c = ConfigFile::load(Some(&p))?;
        let err = c
            .integer("process-max")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("process-max"), "{err}");
        Ok(())
    }
}
