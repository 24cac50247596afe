//! pgBackRest's option names, as cairn reads them from the command line, from `PGBACKREST_*`
//! environment variables and from pgBackRest's INI configuration file.
//!
//! pgBackRest numbers the clusters and repositories it knows (`pg1-path`, `repo1-path`); cairn
//! has one of each, so index 1 names cairn's, and any other index is reported and ignored
//! (unindexed, `pg-path` and `pg-host` are cairn's own options). Names that differ are renamed to
//! cairn's (`pg1-socket-path` is `pg-host`, `repo1-retention-full` is `retention-full`,
//! `log-level-console` is `log-level`); the rest are the same in both.

/// What one pgBackRest option name is to cairn.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Name {
    /// cairn's option of this name (the same one, or cairn's spelling of it).
    Cairn(String),
    /// A pgBackRest option for what cairn always does: accepted, and nothing to set.
    Inherent(&'static str),
    /// A pgBackRest option that cairn cannot honour and that would change what is protected
    /// if ignored: refused.
    Refused(&'static str),
    /// A pgBackRest option that cairn does not support: warned about and ignored.
    Unsupported(String),
}

/// Split `pg1-path` into ("pg", 1, "path"). Only the indexed form is pgBackRest's here:
/// `pg-host`, `pg-path` and the rest without an index are cairn's own options (and
/// `pg-host` means the server's host to cairn, a remote SSH host to pgBackRest).
fn indexed(name: &str) -> Option<(&'static str, u32, &str)> {
    for group in ["pg", "repo"] {
        let Some(rest) = name.strip_prefix(group) else {
            continue;
        };
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let Some(tail) = rest[digits..].strip_prefix('-') else {
            continue;
        };
        if digits == 0 {
            return None;
        }
        return Some((group, rest[..digits].parse().ok()?, tail));
    }
    None
}

/// What pgBackRest's option `name` (without dashes in front) is to cairn, or None when it is
/// not a pgBackRest spelling (cairn's own names, and typos, are left to cairn's checks).
pub(crate) fn pgbackrest_name(name: &str) -> Option<Name> {
    if let Some((group, index, tail)) = indexed(name) {
        return indexed_name(group, index, tail);
    }
    let cairn = |n: &str| Some(Name::Cairn(n.to_string()));
    match name {
        "log-level-console" => cairn("log-level"),
        "compress" | "compress-type" | "compress-level-network" => {
            Some(Name::Inherent("cairn compresses every chunk with zstd"))
        }
        "buffer-size" | "manifest-save-threshold" | "resume" | "stop-auto" => Some(Name::Inherent(
            "cairn sizes its buffers, resumes and locks on its own",
        )),
        "checksum-page" | "page-header-check" | "archive-header-check" | "archive-check" => Some(
            Name::Inherent("cairn always checks page checksums and WAL headers"),
        ),
        "tablespace-map-all" => Some(Name::Refused(
            "cairn has no --tablespace-map-all (ignoring it would restore every tablespace to its original path): give --tablespace-map NAME=PATH for each tablespace",
        )),
        "expire-auto" => Some(Name::Inherent(
            "cairn expires after a backup whenever a retention is set (--no-expire skips it)",
        )),
        "log-level-stderr"
        | "log-timestamp"
        | "log-subprocess"
        | "neutral-umask"
        | "protocol-timeout"
        | "db-timeout"
        | "exclude"
        | "archive-copy"
        | "archive-mode-check"
        | "cmd"
        | "cmd-ssh"
        | "priority"
        | "job-retry"
        | "job-retry-interval"
        | "sck-block"
        | "sck-keep-alive"
        | "tcp-keep-alive-count"
        | "tcp-keep-alive-idle"
        | "tcp-keep-alive-interval"
        | "tls-cipher-12"
        | "tls-cipher-13"
        | "archive-missing-retry"
        | "archive-push-batch-size"
        | "archive-expire-before"
        | "detail-level"
        | "beta"
        | "allow-root"
        | "online"
        | "report"
        | "verbose"
        | "oldest"
        | "reference"
        | "config-path"
        | "backup-standby" => Some(Name::Unsupported(format!(
            "cairn does not support pgBackRest's option '{name}'"
        ))),
        _ if name.starts_with("tls-server-") => Some(Name::Unsupported(
            "cairn has no TLS server: it runs on the database host".into(),
        )),
        _ => None,
    }
}

fn indexed_name(group: &str, index: u32, tail: &str) -> Option<Name> {
    let known = match group {
        "pg" => pg_name(tail),
        _ => repo_name(tail),
    }?;
    match index {
        1 => Some(known),
        n => Some(Name::Unsupported(format!(
            "cairn uses one {} ({group}1), not {group}{n}",
            if group == "pg" {
                "PostgreSQL cluster"
            } else {
                "repository"
            }
        ))),
    }
}

fn pg_name(tail: &str) -> Option<Name> {
    let cairn = |n: &str| Some(Name::Cairn(n.to_string()));
    match tail {
        "path" => cairn("pg-path"),
        "port" => cairn("pg-port"),
        "socket-path" => cairn("pg-host"),
        "user" => cairn("pg-user"),
        "database" | "version-force" | "local" => Some(Name::Unsupported(format!(
            "cairn does not support pgBackRest's option 'pg1-{tail}'"
        ))),
        t if t == "host" || t.starts_with("host-") => Some(Name::Unsupported(format!(
            "cairn runs on the database host and reaches PostgreSQL through its socket or --pg-host; pg1-{t} (a remote host) is ignored"
        ))),
        _ => None,
    }
}

fn repo_name(tail: &str) -> Option<Name> {
    let cairn = |n: &str| Some(Name::Cairn(n.to_string()));
    // cairn's own repository options, spelled as pgBackRest's (repo1-*): resolved into --repo
    // and the S3 settings by `settings`.
    let repo1 = |n: &str| Some(Name::Cairn(format!("repo1-{n}")));
    match tail {
        "path" | "type" | "s3-bucket" | "s3-uri-style" | "s3-key" | "s3-key-secret"
        | "s3-token" | "storage-port" | "storage-host" | "cipher-type" => repo1(tail),
        "s3-endpoint" => cairn("s3-endpoint"),
        "s3-region" => cairn("s3-region"),
        "s3-kms-key-id" => cairn("s3-kms-key-id"),
        "s3-ca-file" | "storage-ca-file" => cairn("s3-ca-file"),
        "retention-full"
        | "retention-full-type"
        | "retention-diff"
        | "retention-archive"
        | "retention-archive-type" => cairn(tail),
        "s3-key-type" => Some(Name::Inherent(
            "cairn takes S3 credentials from repo1-s3-key, or else the AWS chain (environment, profile, web identity, instance role)",
        )),
        "bundle"
        | "bundle-size"
        | "bundle-limit"
        | "block"
        | "block-size-map"
        | "block-age-map"
        | "block-checksum-size-map"
        | "block-size-super"
        | "block-size-super-full"
        | "hardlink"
        | "symlink" => Some(Name::Inherent(
            "cairn's repository always packs small files and stores only changed blocks",
        )),
        "cipher-pass" => Some(Name::Refused(
            "cairn does not encrypt repositories: with a cipher passphrase set, backups would be stored unencrypted; use an encrypted file system or S3 server-side encryption (--s3-sse) and remove repo1-cipher-*",
        )),
        t if t.starts_with("s3-")
            || t.starts_with("storage-")
            || t.starts_with("azure-")
            || t.starts_with("gcs-")
            || t.starts_with("sftp-")
            || t.starts_with("host")
            || t == "retention-history"
            || t == "local"
            || t == "target-time" =>
        {
            Some(Name::Unsupported(format!(
                "cairn does not support pgBackRest's option 'repo1-{t}'"
            )))
        }
        _ => None,
    }
}

/// pgBackRest's options that take no value on its command line (`build/config.yaml`, type
/// boolean), so that a dropped one does not take the next word with it.
fn is_pgbackrest_switch(name: &str) -> bool {
    const SWITCHES: &[&str] = &[
        "dry-run",
        "force",
        "help",
        "oldest",
        "online",
        "report",
        "target-exclusive",
        "verbose",
        "version",
        "ignore-missing",
        "raw",
        "recurse",
        "allow-root",
        "beta",
        "compress",
        "delta",
        "neutral-umask",
        "sck-block",
        "sck-keep-alive",
        "log-subprocess",
        "log-timestamp",
        "archive-async",
        "archive-header-check",
        "archive-missing-retry",
        "archive-check",
        "archive-copy",
        "archive-mode-check",
        "checksum-page",
        "page-header-check",
        "expire-auto",
        "resume",
        "start-fast",
        "stop-auto",
        "link-all",
        "pg-local",
        "repo-hardlink",
        "repo-symlink",
        "repo-bundle",
        "repo-block",
        "repo-local",
        "repo-storage-verify-tls",
        "repo-s3-requester-pays",
    ];
    let unindexed = match indexed(name) {
        Some((group, _, tail)) => format!("{group}-{tail}"),
        None => name.to_string(),
    };
    SWITCHES.contains(&unindexed.as_str())
}

/// A message the command line or configuration produced before logging was set up.
#[derive(Debug, Default, Clone)]
pub(crate) struct Notes {
    pub(crate) warnings: Vec<String>,
    pub(crate) details: Vec<String>,
}

/// Rewrite pgBackRest's spellings on the command line to cairn's: `--pg1-path=/x` and
/// `--pg1-path /x` become `--pg-path ...`; options cairn does not support are dropped with a
/// warning; `--no-<switch>` (pgBackRest's negation) is collected into `negated`. Words after
/// `--` (a stream's command) are left alone. Err for an option that cannot be ignored.
pub(crate) fn translate_args(
    args: Vec<std::ffi::OsString>,
    is_switch: impl Fn(&str) -> bool,
    negated: &mut Vec<String>,
    notes: &mut Notes,
) -> Result<Vec<std::ffi::OsString>, String> {
    let mut out = Vec::with_capacity(args.len());
    let mut words = args.into_iter();
    if let Some(first) = words.next() {
        out.push(first);
    }
    // Set when the previous option was dropped and its value follows as its own word.
    let mut drop_value = false;
    while let Some(word) = words.next() {
        let Some(text) = word.to_str().map(str::to_string) else {
            out.push(word);
            continue;
        };
        if std::mem::take(&mut drop_value) && !text.starts_with("--") {
            continue;
        }
        if text == "--" {
            out.push(word);
            out.extend(words.by_ref());
            break;
        }
        let Some(option) = text.strip_prefix("--") else {
            out.push(word);
            continue;
        };
        let (name, value) = match option.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (option, None),
        };
        if let Some(base) = name.strip_prefix("no-")
            && value.is_none()
        {
            if is_switch(base) {
                negated.push(base.to_string());
                continue;
            }
            match pgbackrest_name(base) {
                Some(Name::Cairn(cairn)) if is_switch(&cairn) => {
                    negated.push(cairn);
                    continue;
                }
                Some(Name::Inherent(why)) => {
                    notes
                        .details
                        .push(format!("--{name}: nothing to set ({why})"));
                    continue;
                }
                Some(Name::Unsupported(why)) => {
                    notes.warnings.push(format!("--{name} is ignored: {why}"));
                    continue;
                }
                Some(Name::Refused(why)) => return Err(format!("--{name}: {why}")),
                _ => {}
            }
        }
        let takes_value =
            |name: &str| !is_pgbackrest_switch(name.strip_prefix("no-").unwrap_or(name));
        match pgbackrest_name(name) {
            None => out.push(word),
            Some(Name::Cairn(cairn)) => {
                out.push(match value {
                    Some(v) => format!("--{cairn}={v}").into(),
                    None => format!("--{cairn}").into(),
                });
            }
            Some(Name::Inherent(why)) => {
                notes
                    .details
                    .push(format!("--{name}: nothing to set ({why})"));
                drop_value = value.is_none() && takes_value(name);
            }
            Some(Name::Unsupported(why)) => {
                notes.warnings.push(format!("--{name} is ignored: {why}"));
                drop_value = value.is_none() && takes_value(name);
            }
            Some(Name::Refused(why)) => return Err(format!("--{name}: {why}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cairn(n: &str) -> Option<Name> {
        Some(Name::Cairn(n.to_string()))
    }

    #[test]
    fn indexed_names_map_to_cairns() {
        assert_eq!(pgbackrest_name("pg1-path"), cairn("pg-path"));
        assert_eq!(pgbackrest_name("pg-path"), None, "cairn's own");
        assert_eq!(
            pgbackrest_name("pg-host"),
            None,
            "cairn's own, not a remote host"
        );
        assert_eq!(pgbackrest_name("pg1-socket-path"), cairn("pg-host"));
        assert_eq!(pgbackrest_name("repo1-path"), cairn("repo1-path"));
        assert_eq!(
            pgbackrest_name("repo1-retention-full"),
            cairn("retention-full")
        );
        assert_eq!(pgbackrest_name("repo1-s3-ca-file"), cairn("s3-ca-file"));
        assert_eq!(pgbackrest_name("log-level-console"), cairn("log-level"));
        assert!(matches!(
            pgbackrest_name("repo2-path"),
            Some(Name::Unsupported(w)) if w.contains("one repository")
        ));
        assert!(matches!(
            pgbackrest_name("pg1-host"),
            Some(Name::Unsupported(_))
        ));
        assert!(matches!(
            pgbackrest_name("repo1-cipher-pass"),
            Some(Name::Refused(_))
        ));
        // Defect: dropped with a warning, so tablespaces went back to their original paths.
        assert!(matches!(
            pgbackrest_name("tablespace-map-all"),
            Some(Name::Refused(_))
        ));
        // Defect: dropped as unsupported although cairn has it.
        assert_eq!(pgbackrest_name("db-exclude"), None);
        assert_eq!(pgbackrest_name("process-max"), None);
        assert_eq!(pgbackrest_name("repo"), None);
        assert_eq!(pgbackrest_name("pgx-path"), None);
    }

    #[test]
    fn the_command_line_is_rewritten_with_either_value_form() {
        let words = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        let mut negated = Vec::new();
        let mut notes = Notes::default();
        let out = translate_args(
            words(&[
                "cairn",
                "--pg1-path=/pg",
                "--repo1-retention-full",
                "2",
                "--log-level-stderr",
                "off",
                "--no-start-fast",
                "--no-archive-copy",
                "--repo1-bundle",
                "--type=full",
                "backup",
                "--",
                "--pg1-path",
            ]),
            |n| n == "start-fast",
            &mut negated,
            &mut notes,
        );
        assert_eq!(
            out.ok(),
            Some(words(&[
                "cairn",
                "--pg-path=/pg",
                "--retention-full",
                "2",
                "--type=full",
                "backup",
                "--",
                "--pg1-path",
            ]))
        );
        assert_eq!(negated, ["start-fast"]);
        assert_eq!(notes.warnings.len(), 2, "{notes:?}");
        assert!(notes.warnings[1].contains("--no-archive-copy"), "{notes:?}");
        let refused = translate_args(
            words(&["cairn", "--repo1-cipher-pass=x"]),
            |_| false,
            &mut negated,
            &mut notes,
        );
        assert!(refused.is_err());
    }
}
