//! The postgres engine's options, read by key from the binary (`engine::Options`): the data
//! directory and connection (`pg-path`, `pg-host`, `pg-port`, `pg-user`), `archive-timeout`,
//! the recovery target of a restore, and the `restore_command` a restored cluster calls.

use super::backup::PgBackupOptions;
use super::restore::{Recovery, TargetType};
use super::session::Connection;
use crate::engine::Options;
use cairn_repo::{Error, Result};
use std::path::PathBuf;
use std::time::Duration;

/// `--pg-path`, which backup, check and a restore without `--dest` cannot do without.
pub fn pg_path(opts: &dyn Options) -> Result<PathBuf> {
    opts.path("pg-path")?
        .ok_or_else(|| Error::Usage("give --pg-path: the PostgreSQL data directory".into()))
}

/// How to reach the server; unset parts are left to libpq's defaults.
pub fn connection(opts: &dyn Options) -> Result<Connection> {
    let port = match opts.integer("pg-port")? {
        Some(p) => Some(
            u16::try_from(p)
                .map_err(|_| Error::Usage(format!("pg-port {p} is not a port number")))?,
        ),
        None => None,
    };
    Ok(Connection {
        host: opts.string("pg-host")?,
        port,
        user: opts.string("pg-user")?,
    })
}

/// What backup and check need of the cluster.
pub fn backup_options(opts: &dyn Options) -> Result<PgBackupOptions> {
    let timeout = opts.integer("archive-timeout")?.unwrap_or(60);
    Ok(PgBackupOptions {
        pg_path: pg_path(opts)?,
        connection: connection(opts)?,
        archive_timeout: Duration::from_secs(timeout.max(1) as u64),
        // Unlike pgBackRest (n), fast unless told otherwise: a backup that waits up to
        // checkpoint_timeout for its start surprises more than a checkpoint's I/O.
        start_fast: opts.switch("start-fast")?.unwrap_or(true),
    })
}

/// `--tablespace-map NAME=PATH`, repeatable.
pub fn tablespace_map(opts: &dyn Options) -> Result<Vec<(String, PathBuf)>> {
    let mut maps = Vec::new();
    for m in opts.list("tablespace-map")? {
        let (name, path) = m
            .split_once('=')
            .ok_or_else(|| Error::Usage(format!("--tablespace-map '{m}': use NAME=PATH")))?;
        maps.push((name.to_string(), PathBuf::from(path)));
    }
    Ok(maps)
}

/// `--link-all` and `--link-map PATH=TARGET` (repeatable).
pub fn links(opts: &dyn Options) -> Result<super::links::LinkOptions> {
    let mut map = Vec::new();
    for m in opts.list("link-map")? {
        let (name, path) = m.split_once('=').ok_or_else(|| {
            Error::Usage(format!(
                "--link-map '{m}': use PATH=TARGET (pg_wal=/mnt/wal, say)"
            ))
        })?;
        map.push((name.to_string(), PathBuf::from(path)));
    }
    Ok(super::links::LinkOptions {
        all: opts.flag("link-all")?,
        map,
    })
}

/// The recovery settings a restore writes, validated: every mistake in them is a usage error
/// found before anything is chosen or written.
pub fn recovery(opts: &dyn Options) -> Result<Recovery> {
    let usage = |e: Error| Error::Usage(e.to_string());
    let kind = opts.string("type")?;
    let recovery = Recovery {
        kind: TargetType::parse(kind.as_deref().unwrap_or("default")).map_err(usage)?,
        target: opts.string("target")?,
        action: opts.string("target-action")?,
        timeline: opts.string("target-timeline")?,
        restore_command: restore_command(opts)?,
        archive_off: match opts.string("archive-mode")?.as_deref() {
            None | Some("preserve") => false,
            Some("off") => true,
            Some(m) => {
                return Err(Error::Usage(format!(
                    "--archive-mode '{m}': use off or preserve"
                )));
            }
        },
        exclusive: opts.flag("target-exclusive")?,
        options: recovery_options(opts)?,
    };
    recovery.validate().map_err(usage)?;
    Ok(recovery)
}

/// `--recovery-option KEY=VALUE`, repeatable; `-` in a key is `_`, as pgBackRest reads it.
fn recovery_options(opts: &dyn Options) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for o in opts.list("recovery-option")? {
        let (k, v) = o.split_once('=').ok_or_else(|| {
            Error::Usage(format!(
                "--recovery-option '{o}': use KEY=VALUE, e.g. primary_conninfo='host=primary'"
            ))
        })?;
        let k = k.trim().replace('-', "_");
        out.retain(|(old, _)| *old != k);
        out.push((k, v.to_string()));
    }
    Ok(out)
}

/// True when any option only a postgres restore takes was given.
pub fn recovery_given(opts: &dyn Options) -> Result<bool> {
    for key in [
        "type",
        "target",
        "target-action",
        "target-timeline",
        "archive-mode",
    ] {
        if opts.string(key)?.is_some() {
            return Ok(true);
        }
    }
    Ok(opts.flag("ignore-archive-gap")?
        || opts.flag("target-exclusive")?
        || !opts.list("recovery-option")?.is_empty()
        || !opts.list("db-include")?.is_empty()
        || !opts.list("db-exclude")?.is_empty())
}

/// The `restore_command` a restored cluster uses: this cairn, this repository and stanza.
fn restore_command(opts: &dyn Options) -> Result<String> {
    let words = opts.invocation()?;
    let mut cmd: Vec<String> = words.iter().map(|w| shell_word(w)).collect();
    cmd.push("archive-get %f \"%p\"".into());
    Ok(cmd.join(" "))
}

/// `s` as one word of restore_command, which PostgreSQL hands to the shell after expanding
/// `%` escapes: as is when it is plain, else in double quotes (which survive
/// postgresql.auto.conf's single-quoted string), with `%` doubled.
pub fn shell_word(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        return s.to_string();
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' | '$' | '`' => out.extend(['\\', c]),
            '%' => out.push_str("%%"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::shell_word;

    #[test]
    fn restore_command_words_survive_the_shell_and_percent_expansion() {
        assert_eq!(shell_word("/var/lib/cairn"), "/var/lib/cairn");
        assert_eq!(shell_word("s3://bucket/prefix"), "s3://bucket/prefix");
        assert_eq!(shell_word("/srv/my repo"), "\"/srv/my repo\"");
        assert_eq!(
            shell_word("/a/$HOME`x`\"q\""),
            "\"/a/\\$HOME\\`x\\`\\\"q\\\"\""
        );
        assert_eq!(shell_word("/data/100%"), "\"/data/100%%\"");
        assert_eq!(shell_word(""), "\"\"");
    }
}
