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

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG: &str = "/etc/cairn/cairn.toml";

#[derive(Debug, Default)]
pub struct ConfigFile {
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
        let global: toml::Table = text
            .parse()
            .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
        Ok(ConfigFile {
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
                None => bail!("config file: '{stanza}' must be a [{stanza}] section"),
            }
        }
        Ok(())
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
            Some(other) => bail!(
                "config file: '{key}' must be a string, not {}",
                other.type_str()
            ),
        }
    }

    pub fn integer(&self, key: &str) -> Result<Option<i64>> {
        match self.raw(key) {
            None => Ok(None),
            Some(toml::Value::Integer(i)) => Ok(Some(*i)),
            Some(toml::Value::String(s)) => s
                .parse()
                .map(Some)
                .with_context(|| format!("config file: '{key}' must be a number, not '{s}'")),
            Some(other) => bail!(
                "config file: '{key}' must be a number, not {}",
                other.type_str()
            ),
        }
    }

    pub fn boolean(&self, key: &str) -> Result<Option<bool>> {
        match self.raw(key) {
            None => Ok(None),
            Some(toml::Value::Boolean(b)) => Ok(Some(*b)),
            Some(other) => bail!(
                "config file: '{key}' must be true or false, not {}",
                other.type_str()
            ),
        }
    }
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
