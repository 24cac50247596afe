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
use crate::pgbackrest::{self, Notes};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG: &str = "/etc/cairn/cairn.toml";

/// How a configuration file is written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// cairn's own: TOML, unknown keys refused.
    #[default]
    Toml,
    /// pgBackRest's INI file: unknown and unsupported options warned about and ignored, as
    /// pgBackRest does.
    Ini,
}

#[derive(Debug, Default)]
pub struct ConfigFile {
    /// Where it was read from, for messages.
    path: Option<PathBuf>,
    format: Format,
    /// The whole file: top-level keys, and a table per section.
    doc: toml::Table,
    /// `PGBACKREST_*` variables, which win over the file.
    env: toml::Table,
    /// The command running (`backup`), whose `[global:backup]` and `[<stanza>:backup]`
    /// sections apply.
    command: String,
    /// The stanza selected, whose sections win over `[global]` ones.
    stanza: Option<String>,
    /// Switches negated on the command line (`--no-archive-async`), which win over the file.
    negated: Vec<String>,
    /// What reading produced that the log should say, once it is set up.
    pub notes: Notes,
}

impl ConfigFile {
    /// Load `explicit`, or the default file if one exists (cairn's, else pgBackRest's), or
    /// nothing; `command` is the command running, `include` an explicit
    /// `--config-include-path`.
    pub fn load(
        explicit: Option<&Path>,
        include: Option<&Path>,
        command: &str,
        negated: Vec<String>,
        mut notes: Notes,
    ) -> Result<ConfigFile> {
        let env = pgbackrest::environment(&mut notes).map_err(usage)?;
        let path: Option<PathBuf> = match explicit {
            Some(p) => Some(p.to_path_buf()),
            None => [
                DEFAULT_CONFIG,
                pgbackrest::DEFAULT_CONFIG,
                pgbackrest::OLD_DEFAULT_CONFIG,
            ]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists()),
        };
        let mut config = ConfigFile {
            env,
            command: command.to_string(),
            negated,
            notes,
            ..ConfigFile::default()
        };
        if let Some(path) = &path {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            if path.extension().is_some_and(|e| e == "toml") {
                config.doc = text.parse().map_err(|e| {
                    usage(format!(
                        "config file {} is not valid TOML: {e}",
                        path.display()
                    ))
                })?;
            } else {
                config.format = Format::Ini;
                pgbackrest::ini::parse_into(&mut config.doc, &text, path, &mut config.notes)
                    .map_err(|e| usage(format!("config file {e}")))?;
            }
        }
        // As pgBackRest: the include directory is read with its default configuration file,
        // or when named; an explicit --config alone reads only that file.
        let include = match include {
            Some(dir) => Some(dir.to_path_buf()),
            None if explicit.is_none() && config.format == Format::Ini => {
                Some(PathBuf::from(pgbackrest::DEFAULT_INCLUDE_PATH)).filter(|d| d.is_dir())
            }
            None => None,
        };
        if let Some(dir) = include {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .with_context(|| format!("cannot read config include path {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "conf"))
                .collect();
            files.sort();
            for file in files {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read config file {}", file.display()))?;
                config.format = Format::Ini;
                pgbackrest::ini::parse_into(&mut config.doc, &text, &file, &mut config.notes)
                    .map_err(|e| usage(format!("config file {e}")))?;
            }
        }
        config.path = path;
        Ok(config)
    }

    /// Narrow to one stanza's sections (which then win over `[global]` ones).
    pub fn select_stanza(&mut self, stanza: &str) -> Result<()> {
        if stanza == "global" || stanza.starts_with("global:") {
            bail!("'global' names the config file's shared section and cannot be a stanza name");
        }
        if let Some(t) = self.doc.get(stanza)
            && !t.is_table()
        {
            return Err(usage(format!(
                "{}: '{stanza}' must be a [{stanza}] section",
                self.name()
            )));
        }
        self.stanza = Some(stanza.to_string());
        Ok(())
    }

    /// Check every key against the options cairn knows (`known`: every long option name), in
    /// the top level and every section, naming the closest valid key: in cairn's TOML file an
    /// unknown key is an error (an ignored typo, `proces-max`, is a setting silently not
    /// applied); in pgBackRest's INI file and environment it is a warning, as pgBackRest
    /// gives.
    pub fn check_keys(&mut self, known: &[String]) -> Result<()> {
        let name = self.name();
        let unknown = |key: &str, section: &str| -> Option<String> {
            if known.iter().any(|k| k == key) {
                return None;
            }
            let closest = known
                .iter()
                .map(|k| (edit_distance(k, key), k))
                .min()
                .filter(|(d, _)| *d <= 3)
                .map(|(_, k)| format!(" (did you mean '{k}'?)"))
                .unwrap_or_default();
            Some(format!(
                "unknown option '{key}'{section}{closest}; options are the long names of cairn's flags (`cairn help <command>`) or pgBackRest's"
            ))
        };
        // pgBackRest's file is shared by every stanza and command: only the sections that
        // apply to this one are worth a warning. cairn's own is checked whole (an error).
        let command = &self.command;
        let applies = |section: &str| {
            self.format == Format::Toml
                || section == "global"
                || section == format!("global:{command}")
                || self
                    .stanza
                    .as_ref()
                    .is_some_and(|s| section == s.as_str() || section == format!("{s}:{command}"))
        };
        let mut found = Vec::new();
        for (key, v) in &self.doc {
            match v.as_table() {
                None => found.extend(unknown(key, "")),
                Some(t) if applies(key) => {
                    for k in t.keys() {
                        found.extend(unknown(k, &format!(" in [{key}]")));
                    }
                }
                Some(_) => {}
            }
        }
        if let Some(first) = found.first()
            && self.format == Format::Toml
        {
            bail!("{name}: {first}");
        }
        for f in found {
            self.notes.warnings.push(format!("{name}: {f}; ignored"));
        }
        for key in self.env.keys() {
            if let Some(f) = unknown(key, "") {
                self.notes.warnings.push(format!(
                    "environment variable PGBACKREST_{}: {f}; ignored",
                    key.to_ascii_uppercase().replace('-', "_")
                ));
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

    /// The value `key` has, from the first of: the environment (`PGBACKREST_*`),
    /// `[<stanza>:<command>]`, `[<stanza>]`, `[global:<command>]`, `[global]`, the top level.
    fn raw(&self, key: &str) -> Option<&toml::Value> {
        const FALSE: toml::Value = toml::Value::Boolean(false);
        if self.negated.iter().any(|n| n == key) {
            return Some(&FALSE);
        }
        if let Some(v) = self.env.get(key) {
            return Some(v);
        }
        let section = |name: String| self.doc.get(&name).and_then(|t| t.as_table());
        let command = &self.command;
        let mut sections = Vec::with_capacity(4);
        if let Some(s) = &self.stanza {
            sections.push(section(format!("{s}:{command}")));
            sections.push(section(s.clone()));
        }
        sections.push(section(format!("global:{command}")));
        sections.push(section("global".into()));
        sections
            .into_iter()
            .flatten()
            .find_map(|t| t.get(key))
            .or_else(|| match self.doc.get(key) {
                Some(toml::Value::Table(_)) => None,
                v => v,
            })
    }

    /// Every option the environment and the file set for this stanza and command, with its
    /// value as text, in name order (for the log file's begin line).
    pub fn applicable(&self) -> Vec<(String, String)> {
        let mut keys: Vec<&String> = self.env.keys().collect();
        for v in self.doc.values() {
            if let Some(t) = v.as_table() {
                keys.extend(t.keys());
            }
        }
        keys.extend(
            self.doc
                .iter()
                .filter(|(_, v)| !v.is_table())
                .map(|(k, _)| k),
        );
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter_map(|k| {
                let v = self.raw(k)?;
                let text = match v {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Array(a) => a
                        .iter()
                        .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                        .collect::<Vec<_>>()
                        .join(","),
                    other => other.to_string(),
                };
                Some((k.clone(), text))
            })
            .collect()
    }

    /// A repeatable option: a TOML array, an INI option given on several lines, or one value.
    /// Whether `key` is set by a `PGBACKREST_*` variable.
    pub fn set_by_env(&self, key: &str) -> bool {
        self.env.contains_key(key)
    }

    /// Where `key`'s value comes from, for messages: `PGBACKREST_<KEY>` or the file.
    pub fn source_of(&self, key: &str) -> String {
        if self.env.contains_key(key) {
            format!(
                "environment variable PGBACKREST_{}",
                key.to_ascii_uppercase().replace('-', "_")
            )
        } else {
            self.name()
        }
    }

    /// A single-valued option given several times (pgBackRest's INI file and its conf.d).
    fn set_twice(&self, key: &str) -> anyhow::Error {
        usage(format!(
            "{}: '{key}' is set more than once for this stanza and command (in one section, or in pgbackrest.conf and a conf.d file); keep one",
            self.source_of(key)
        ))
    }

    pub fn list(&self, key: &str) -> Result<Vec<String>> {
        match self.raw(key) {
            None => Ok(Vec::new()),
            Some(toml::Value::String(s)) => Ok(vec![s.clone()]),
            Some(toml::Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s.clone()),
                    other => Err(usage(format!(
                        "{}: '{key}' must be a list of strings, not of {}",
                        self.source_of(key),
                        other.type_str()
                    ))),
                })
                .collect(),
            Some(other) => Err(usage(format!(
                "{}: '{key}' must be a string or a list of strings, not {}",
                self.source_of(key),
                other.type_str()
            ))),
        }
    }

    pub fn string(&self, key: &str) -> Result<Option<String>> {
        match self.raw(key) {
            None => Ok(None),
            Some(toml::Value::Array(_)) if self.format == Format::Ini => Err(self.set_twice(key)),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(toml::Value::Integer(i)) => Ok(Some(i.to_string())),
            Some(other) => Err(usage(format!(
                "{}: '{key}' must be a string, not {}",
                self.source_of(key),
                other.type_str()
            ))),
        }
    }

    pub fn integer(&self, key: &str) -> Result<Option<i64>> {
        match self.raw(key) {
            None => Ok(None),
            Some(toml::Value::Array(_)) if self.format == Format::Ini => Err(self.set_twice(key)),
            Some(toml::Value::Integer(i)) => Ok(Some(*i)),
            Some(toml::Value::String(s)) => s.parse().map(Some).map_err(|_| {
                usage(format!(
                    "{}: '{key}' must be a number, not '{s}'",
                    self.name()
                ))
            }),
            Some(other) => Err(usage(format!(
                "{}: '{key}' must be a number, not {}",
                self.source_of(key),
                other.type_str()
            ))),
        }
    }

    pub fn boolean(&self, key: &str) -> Result<Option<bool>> {
        match self.raw(key) {
            None => Ok(None),
            Some(toml::Value::Array(_)) if self.format == Format::Ini => Err(self.set_twice(key)),
            Some(toml::Value::Boolean(b)) => Ok(Some(*b)),
            // pgBackRest's spelling, in its INI file and environment.
            Some(toml::Value::String(s)) if s == "y" => Ok(Some(true)),
            Some(toml::Value::String(s)) if s == "n" => Ok(Some(false)),
            Some(other) => Err(usage(format!(
                "{}: '{key}' must be true or false (y or n in pgBackRest's file), not {}",
                self.source_of(key),
                match other {
                    toml::Value::String(s) => format!("'{s}'"),
                    other => other.type_str().to_string(),
                }
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

    fn load(p: &Path) -> Result<ConfigFile> {
        ConfigFile::load(Some(p), None, "backup", Vec::new(), Notes::default())
    }

    #[test]
    fn stanza_sections_win_over_top_level() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "stanza = \"app\"\n[global]\nrepo = \"/a\"\nprocess-max = 3\n[app]\nrepo = \"/b\"\n",
        )?;
        let mut c = load(&p)?;
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
        let err = load(&p)?
            .check_keys(&known)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("'proces-max' in [app]"), "{err}");
        assert!(err.contains("did you mean 'process-max'"), "{err}");
        std::fs::write(&p, "repo = \"/a\"\nprocess-max = 2\n")?;
        load(&p)?.check_keys(&known)?;
        Ok(())
    }

    #[test]
    fn wrong_types_are_named() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "process-max = true\n")?;
        let c = load(&p)?;
        let err = c
            .integer("process-max")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("process-max"), "{err}");
        Ok(())
    }

    #[test]
    fn ini_sections_apply_in_pgbackrest_order() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("pgbackrest.conf");
        std::fs::write(
            &p,
            "[global]\nprocess-max=1\ncompress-level=1\ndelta=n\n[global:backup]\nprocess-max=2\ncompress-level=2\n[demo]\nprocess-max=3\ndelta=y\n[demo:backup]\nprocess-max=4\n[demo:restore]\nprocess-max=5\n",
        )?;
        let mut c = load(&p)?;
        assert_eq!(c.integer("process-max")?, Some(2));
        assert_eq!(c.boolean("delta")?, Some(false));
        c.select_stanza("demo")?;
        assert_eq!(c.integer("process-max")?, Some(4));
        assert_eq!(c.integer("compress-level")?, Some(2));
        assert_eq!(c.boolean("delta")?, Some(true));
        let mut other = ConfigFile::load(
            Some(&p),
            None,
            "backup",
            vec!["delta".into()],
            Notes::default(),
        )?;
        other.select_stanza("demo")?;
        assert_eq!(other.boolean("delta")?, Some(false), "--no-delta wins");
        let known: Vec<String> = ["process-max", "compress-level", "delta"]
            .map(String::from)
            .to_vec();
        std::fs::write(&p, "[global]\nproces-max=2\n")?;
        let mut typo = load(&p)?;
        typo.check_keys(&known)?;
        assert!(
            typo.notes
                .warnings
                .iter()
                .any(|w| w.contains("did you mean 'process-max'")),
            "{:?}",
            typo.notes
        );
        Ok(())
    }
}
