//! What a pgBackRest user already types: pgBackRest's option names on the command line
//! (`names`), in `PGBACKREST_*` environment variables (`environment`) and in its INI
//! configuration file (`ini`), read as cairn's options.

pub(crate) mod ini;
pub(crate) mod names;

pub(crate) use names::Notes;

use names::{Name, pgbackrest_name};

/// pgBackRest's default configuration file, read when cairn's own does not exist.
pub(crate) const DEFAULT_CONFIG: &str = "/etc/pgbackrest/pgbackrest.conf";
/// pgBackRest's older default location, read when neither of the others exists.
pub(crate) const OLD_DEFAULT_CONFIG: &str = "/etc/pgbackrest.conf";
/// Where pgBackRest's default configuration includes more `*.conf` files from.
pub(crate) const DEFAULT_INCLUDE_PATH: &str = "/etc/pgbackrest/conf.d";

/// `PGBACKREST_<OPTION>` variables (`PGBACKREST_REPO1_PATH`), keyed by cairn's option names,
/// as one table that wins over the configuration file (as in pgBackRest).
pub(crate) fn environment(notes: &mut Notes) -> Result<toml::Table, String> {
    let mut table = toml::Table::new();
    for (k, v) in std::env::vars_os() {
        let (Some(k), Some(v)) = (k.to_str(), v.to_str()) else {
            continue;
        };
        let Some(name) = k.strip_prefix("PGBACKREST_") else {
            continue;
        };
        let option = name.to_ascii_lowercase().replace('_', "-");
        // Where the configuration is: read by `settings` before the file is.
        if matches!(option.as_str(), "config" | "config-include-path") {
            continue;
        }
        if v.is_empty() {
            return Err(format!(
                "{k} is set but empty; give a value, or unset it to use the default"
            ));
        }
        let key = match pgbackrest_name(&option) {
            None => option,
            Some(Name::Cairn(cairn)) => cairn,
            Some(Name::Inherent(why)) => {
                notes.details.push(format!("{k}: nothing to set ({why})"));
                continue;
            }
            Some(Name::Unsupported(why)) => {
                notes.warnings.push(format!("{k} is ignored: {why}"));
                continue;
            }
            Some(Name::Refused(why)) => return Err(format!("{k}: {why}")),
        };
        // pgBackRest separates the values of a list option with ':' in the environment.
        let value = if matches!(
            key.as_str(),
            "recovery-option" | "tablespace-map" | "db-include" | "link-map" | "annotation"
        ) {
            toml::Value::Array(
                v.split(':')
                    .map(|s| toml::Value::String(s.to_string()))
                    .collect(),
            )
        } else {
            toml::Value::String(v.to_string())
        };
        table.insert(key, value);
    }
    Ok(table)
}
