//! The recovery settings a restore writes: the `--type` of recovery and its target, checked
//! before anything is written, then `recovery.signal` (or `standby.signal`) and the settings in
//! `postgresql.auto.conf`, with a `restore_command` that calls this same cairn against the
//! same repository and stanza. `--type preserve` keeps the destination's own settings,
//! `--type none` writes none (PostgreSQL then recovers from the WAL in `pg_wal` alone).

use super::target;
use cairn_repo::{Error, Result};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TargetType {
    /// Recover to the end of the archive.
    Default,
    Immediate,
    Time,
    Lsn,
    Xid,
    Name,
    Standby,
    /// `preserve`: keep the destination's `postgresql.auto.conf` and signal files as they
    /// were before the restore, and write nothing.
    Preserve,
    /// `none`: write no recovery settings and no signal file; PostgreSQL recovers from the
    /// WAL in `pg_wal` alone (which the operator provides).
    NoSettings,
}

impl TargetType {
    pub fn parse(s: &str) -> Result<TargetType> {
        Ok(match s {
            "default" => TargetType::Default,
            "immediate" => TargetType::Immediate,
            "time" => TargetType::Time,
            "lsn" => TargetType::Lsn,
            "xid" => TargetType::Xid,
            "name" => TargetType::Name,
            "standby" => TargetType::Standby,
            "preserve" => TargetType::Preserve,
            "none" => TargetType::NoSettings,
            _ => {
                return Err(Error::Usage(format!(
                    "unknown restore --type '{s}': use default, immediate, time, lsn, xid, name, standby, preserve or none"
                )));
            }
        })
    }

    /// Whether this type writes recovery settings (all but preserve and none).
    pub fn writes_settings(self) -> bool {
        !matches!(self, TargetType::Preserve | TargetType::NoSettings)
    }

    pub fn needs_target(self) -> bool {
        matches!(
            self,
            TargetType::Time | TargetType::Lsn | TargetType::Xid | TargetType::Name
        )
    }
}

#[derive(Clone, Debug)]
pub struct Recovery {
    pub kind: TargetType,
    pub target: Option<String>,
    /// pause (PostgreSQL's default), promote or shutdown.
    pub action: Option<String>,
    pub timeline: Option<String>,
    /// The `restore_command` to write.
    pub restore_command: String,
    /// `--archive-mode off`: write `archive_mode = 'off'`, so a restored copy never archives
    /// into the stanza (pgBackRest's option of the same name; `preserve` leaves it).
    pub archive_off: bool,
    /// `--target-exclusive`: stop just before the target (`recovery_target_inclusive`).
    pub exclusive: bool,
    /// `--recovery-option KEY=VALUE`, keys with `_` for `-` as pgBackRest writes them; a
    /// `restore_command` here replaces cairn's.
    pub options: Vec<(String, String)>,
}

impl Recovery {
    pub fn validate(&self) -> Result<()> {
        match (self.kind.needs_target(), &self.target) {
            (true, None) => {
                return Err(Error::Usage(
                    format!("restore --type {:?} needs --target", self.kind).to_lowercase(),
                ));
            }
            (false, Some(_)) => {
                return Err(Error::Usage(
                    "--target applies to --type time, lsn, xid or name".to_string(),
                ));
            }
            _ => {}
        }
        if let Some(a) = &self.action {
            if !matches!(a.as_str(), "pause" | "promote" | "shutdown") {
                return Err(Error::Usage(format!(
                    "--target-action '{a}': use pause, promote or shutdown"
                )));
            }
            if !self.kind.needs_target() && self.kind != TargetType::Immediate {
                return Err(Error::Usage(
                    "--target-action applies only with a recovery target".into(),
                ));
            }
        }
        if self.exclusive
            && !matches!(
                self.kind,
                TargetType::Time | TargetType::Lsn | TargetType::Xid
            )
        {
            return Err(Error::Usage(
                "--target-exclusive applies to --type time, lsn or xid".into(),
            ));
        }
        if !self.kind.writes_settings() {
            let kind = if self.kind == TargetType::Preserve {
                "preserve"
            } else {
                "none"
            };
            let given = [
                ("--target-timeline", self.timeline.is_some()),
                ("--recovery-option", !self.options.is_empty()),
                ("--archive-mode off", self.archive_off),
            ];
            if let Some((option, _)) = given.iter().find(|(_, g)| *g) {
                return Err(Error::Usage(format!(
                    "{option} is a recovery setting, and --type {kind} writes none; leave it out or choose another --type"
                )));
            }
        }
        for (key, value) in &self.options {
            if key == "standby_mode" {
                return Err(Error::Usage(
                    "--recovery-option standby_mode is not a setting of PostgreSQL 12 and later: use --type standby".into(),
                ));
            }
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(Error::Usage(format!(
                    "--recovery-option '{key}={value}': the name must be a PostgreSQL setting (letters, digits and _)"
                )));
            }
            if value.contains(['\n', '\r']) {
                return Err(Error::Usage(format!(
                    "--recovery-option {key}: a value cannot span lines"
                )));
            }
        }
        let target = self.target.as_deref().unwrap_or_default();
        match self.kind {
            TargetType::Time => {
                target::parse_time(target)?;
            }
            TargetType::Lsn => {
                target::parse_lsn(target)?;
            }
            TargetType::Xid => {
                target::parse_xid(target)?;
            }
            TargetType::Name => target::check_name(target)?,
            _ => {}
        }
        if let Some(t) = &self.timeline {
            target::parse_timeline(t)?;
        }
        Ok(())
    }
}

/// `s` as a quoted value of postgresql.auto.conf: PostgreSQL's configuration parser reads
/// backslash escapes inside quotes, so a backslash is doubled as a quote is.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// The setting a line of postgresql.auto.conf sets, if any.
fn setting_of(line: &str) -> Option<&str> {
    let line = line.trim_start();
    let name = line
        .split(|c: char| c == '=' || c.is_whitespace())
        .next()
        .filter(|n| !n.is_empty() && !n.starts_with('#'))?;
    line[name.len()..]
        .trim_start()
        .starts_with('=')
        .then_some(name)
}

/// Write the signal file and the recovery settings (replacing any earlier ones). With
/// `--type preserve` nothing is written (`keep_recovery_files` put the destination's back);
/// with `--type none` earlier recovery targets are removed and no signal file is left, so
/// PostgreSQL recovers from `pg_wal` alone.
pub fn write_recovery(dest: &Path, r: &Recovery) -> Result<()> {
    let io = |what: &str, p: &Path| {
        let p: PathBuf = p.to_path_buf();
        let what = what.to_string();
        move |e| Error::io(format!("cannot {what} {}", p.display()), e)
    };
    let auto = dest.join("postgresql.auto.conf");
    if r.kind == TargetType::Preserve {
        if !auto.exists() {
            tracing::warn!(
                "recovery type is preserve but {} does not exist: the restored cluster has no recovery settings",
                auto.display()
            );
        }
        if !dest.join("recovery.signal").exists() && !dest.join("standby.signal").exists() {
            tracing::warn!(
                "recovery type is preserve but {} has no recovery.signal or standby.signal: PostgreSQL will replay only the WAL in pg_wal, which must hold every segment from the backup's start to its end",
                dest.display()
            );
        }
        return Ok(());
    }
    let old = std::fs::read_to_string(&auto).unwrap_or_default();
    // Settings an earlier restore left that would steer this recovery are removed (with
    // --type none, restore_command stays: without a signal file PostgreSQL does not run it).
    let replaced = |name: &str| {
        name.starts_with("recovery_target")
            || (r.kind.writes_settings() && name == "restore_command")
            || (r.archive_off && name == "archive_mode")
            || r.options.iter().any(|(k, _)| k == name)
    };
    let mut text: String = old
        .lines()
        .filter(|l| !setting_of(l).is_some_and(replaced))
        .map(|l| format!("{l}\n"))
        .collect();
    if !r.kind.writes_settings() {
        for signal in ["recovery.signal", "standby.signal"] {
            let path = dest.join(signal);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("remove", &path)(e)),
            }
        }
        tracing::warn!(
            "recovery type is none: no recovery settings written; PostgreSQL will replay only the WAL in {}, which must hold every segment from the backup's start to its end (cairn archive-get fetches them)",
            dest.join("pg_wal").display()
        );
        return crate::durable::write_durably(&auto, text.as_bytes()).map_err(io("write", &auto));
    }
    let signal = if r.kind == TargetType::Standby {
        "standby.signal"
    } else {
        "recovery.signal"
    };
    let sig = dest.join(signal);
    crate::durable::write_durably(&sig, b"").map_err(io("write", &sig))?;
    text.push_str(&format!(
        "\n# Recovery settings written by cairn restore ({})\n",
        cairn_repo::time::display(cairn_repo::time::now_unix()),
    ));
    if !r.options.iter().any(|(k, _)| k == "restore_command") {
        text.push_str(&format!(
            "restore_command = {}\n",
            quote(&r.restore_command)
        ));
    }
    let target = r.target.as_deref().unwrap_or_default();
    match r.kind {
        TargetType::Immediate => text.push_str("recovery_target = 'immediate'\n"),
        TargetType::Time => text.push_str(&format!("recovery_target_time = {}\n", quote(target))),
        TargetType::Lsn => text.push_str(&format!("recovery_target_lsn = {}\n", quote(target))),
        TargetType::Xid => text.push_str(&format!("recovery_target_xid = {}\n", quote(target))),
        TargetType::Name => text.push_str(&format!("recovery_target_name = {}\n", quote(target))),
        _ => {}
    }
    if r.exclusive {
        text.push_str("recovery_target_inclusive = 'false'\n");
    }
    if let Some(a) = &r.action {
        text.push_str(&format!("recovery_target_action = {}\n", quote(a)));
    }
    match &r.timeline {
        Some(t) => text.push_str(&format!("recovery_target_timeline = {}\n", quote(t))),
        // As pgBackRest: an immediate recovery stays on the backup's timeline; the default,
        // latest, fails when a later timeline in the archive does not fork from it.
        None if r.kind == TargetType::Immediate => {
            text.push_str("recovery_target_timeline = 'current'\n")
        }
        None => {}
    }
    if r.archive_off {
        // postgresql.auto.conf is read after postgresql.conf, so this wins over the copy's
        // restored archive_mode: a restored copy never archives into the stanza.
        text.push_str("archive_mode = 'off'\n");
    }
    for (k, v) in &r.options {
        text.push_str(&format!("{k} = {}\n", quote(v)));
    }
    crate::durable::write_durably(&auto, text.as_bytes()).map_err(io("write", &auto))?;
    Ok(())
}

/// `--type preserve`: the destination's recovery files as they were before the restore, to
/// put back after it (`put_back`): postgresql.auto.conf, recovery.signal and standby.signal.
#[derive(Debug)]
pub struct KeptRecoveryFiles(Vec<(PathBuf, Option<Vec<u8>>)>);

impl KeptRecoveryFiles {
    pub fn read(dest: &Path) -> Result<KeptRecoveryFiles> {
        let mut kept = Vec::new();
        for name in ["postgresql.auto.conf", "recovery.signal", "standby.signal"] {
            let path = dest.join(name);
            let bytes = match std::fs::read(&path) {
                Ok(b) => Some(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    return Err(Error::io(
                        format!("cannot read {} to preserve it", path.display()),
                        e,
                    ));
                }
            };
            kept.push((path, bytes));
        }
        Ok(KeptRecoveryFiles(kept))
    }

    /// Write back each file that existed (the backup's postgresql.auto.conf stays where the
    /// destination had none).
    pub fn put_back(&self) -> Result<()> {
        for (path, bytes) in &self.0 {
            if let Some(b) = bytes {
                crate::durable::write_durably(path, b)
                    .map_err(|e| Error::io(format!("cannot restore {}", path.display()), e))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod recovery_tests {
    use super::*;

    fn recovery(kind: TargetType, target: Option<&str>, action: Option<&str>) -> Recovery {
        Recovery {
            kind,
            target: target.map(String::from),
            action: action.map(String::from),
            timeline: None,
            restore_command: "cairn --repo /r --stanza main archive-get %f \"%p\"".into(),
            archive_off: false,
            exclusive: false,
            options: Vec::new(),
        }
    }

    fn read(p: &Path) -> Result<String> {
        std::fs::read_to_string(p).map_err(|e| Error::io("read", e))
    }

    #[test]
    fn recovery_options_exclusive_targets_and_type_none() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let auto = dir.path().join("postgresql.auto.conf");
        std::fs::write(
            &auto,
            "primary_conninfo = 'old'\nprimary_conninfo_extra = 'kept'\n# recovery_target_xid = '5' (a comment)\n",
        )
        .map_err(|e| Error::io("write", e))?;
        let mut r = recovery(TargetType::Xid, Some("1234"), None);
        r.exclusive = true;
        r.options = vec![
            ("primary_conninfo".into(), "host=p user='rep'".into()),
            ("restore_command".into(), "cp /arch/%f %p".into()),
        ];
        r.validate()?;
        write_recovery(dir.path(), &r)?;
        let text = read(&auto)?;
        assert!(
            text.contains("recovery_target_inclusive = 'false'"),
            "{text}"
        );
        assert!(
            text.contains("primary_conninfo = 'host=p user=''rep'''"),
            "{text}"
        );
        assert!(!text.contains("'old'") && text.contains("'kept'"), "{text}");
        assert!(
            text.contains("# recovery_target_xid = '5' (a comment)"),
            "{text}"
        );
        assert_eq!(text.matches("restore_command").count(), 1, "{text}");
        assert!(
            text.contains("restore_command = 'cp /arch/%f %p'"),
            "{text}"
        );

        // none: earlier targets go, no signal file stays, nothing new is written.
        let none = recovery(TargetType::NoSettings, None, None);
        none.validate()?;
        write_recovery(dir.path(), &none)?;
        let text = read(&auto)?;
        assert!(!dir.path().join("recovery.signal").exists());
        assert!(!text.contains("recovery_target_xid = '1234'"), "{text}");
        assert!(
            text.contains("restore_command = 'cp /arch/%f %p'"),
            "{text}"
        );

        // preserve writes nothing at all.
        std::fs::write(&auto, "mine = 1\n").map_err(|e| Error::io("write", e))?;
        write_recovery(dir.path(), &recovery(TargetType::Preserve, None, None))?;
        assert_eq!(read(&auto)?, "mine = 1\n");

        // Immediate stays on the backup's timeline unless told otherwise.
        write_recovery(dir.path(), &recovery(TargetType::Immediate, None, None))?;
        assert!(read(&auto)?.contains("recovery_target_timeline = 'current'"));
        Ok(())
    }

    /// Defect: a backslash in a recovery setting was written as is, and PostgreSQL's
    /// configuration parser read it as an escape: `x='a\' ; y=1` broke postgresql.auto.conf
    /// (the cluster did not start) and a password `a\b` would have changed.
    #[test]
    fn defect_a_backslash_in_a_recovery_option_broke_postgresql_auto_conf() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let mut r = recovery(TargetType::Default, None, None);
        r.options = vec![
            ("primary_conninfo".into(), r"password=a\b".into()),
            ("x".into(), r"a\' ; y=1".into()),
        ];
        write_recovery(dir.path(), &r)?;
        let text = read(&dir.path().join("postgresql.auto.conf"))?;
        assert!(
            text.contains(r"primary_conninfo = 'password=a\\b'"),
            "{text}"
        );
        assert!(text.contains(r"x = 'a\\'' ; y=1'"), "{text}");
        Ok(())
    }

    #[test]
    fn options_that_cannot_apply_are_refused() {
        let mut r = recovery(TargetType::Name, Some("rp"), None);
        r.exclusive = true;
        assert!(r.validate().is_err(), "exclusive with a name target");
        let mut r = recovery(TargetType::Preserve, None, None);
        r.options = vec![("primary_conninfo".into(), "x".into())];
        assert!(r.validate().is_err(), "recovery-option with preserve");
        let mut r = recovery(TargetType::NoSettings, None, None);
        r.timeline = Some("latest".into());
        assert!(r.validate().is_err(), "target-timeline with none");
        let mut r = recovery(TargetType::Default, None, None);
        r.options = vec![("standby_mode".into(), "on".into())];
        assert!(r.validate().is_err(), "standby_mode");
        r.options = vec![("bad key".into(), "on".into())];
        assert!(r.validate().is_err(), "a key with a space");
        r.options = vec![("x".into(), "a\nrestore_command='rm -rf /'".into())];
        assert!(r.validate().is_err(), "a value with a newline");
    }

    #[test]
    fn settings_replace_earlier_ones_and_signal_files_match_the_type() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        std::fs::write(
            dir.path().join("postgresql.auto.conf"),
            "work_mem = '8MB'\nrestore_command = 'old'\nrecovery_target_time = 'x'\n",
        )
        .map_err(|e| Error::io("write", e))?;
        write_recovery(
            dir.path(),
            &recovery(
                TargetType::Time,
                Some("2026-11-23 10:00:00+00"),
                Some("promote"),
            ),
        )?;
        let text = std::fs::read_to_string(dir.path().join("postgresql.auto.conf"))
            .map_err(|e| Error::io("read", e))?;
        assert!(text.contains("work_mem = '8MB'"));
        assert!(!text.contains("'old'") && !text.contains("'x'"));
        assert!(
            text.contains(
                "restore_command = 'cairn --repo /r --stanza main archive-get %f \"%p\"'"
            )
        );
        assert!(text.contains("recovery_target_time = '2026-11-23 10:00:00+00'"));
        assert!(text.contains("recovery_target_action = 'promote'"));
        assert!(dir.path().join("recovery.signal").exists());
        assert!(
            !text.contains("archive_mode"),
            "preserve leaves archive_mode alone"
        );

        let mut off = recovery(TargetType::Default, None, None);
        off.archive_off = true;
        std::fs::write(
            dir.path().join("postgresql.auto.conf"),
            "archive_mode = 'on'\n",
        )
        .map_err(|e| Error::io("write", e))?;
        write_recovery(dir.path(), &off)?;
        let text = std::fs::read_to_string(dir.path().join("postgresql.auto.conf"))
            .map_err(|e| Error::io("read", e))?;
        assert!(
            text.contains("archive_mode = 'off'") && !text.contains("'on'"),
            "{text}"
        );

        let standby = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        write_recovery(standby.path(), &recovery(TargetType::Standby, None, None))?;
        assert!(standby.path().join("standby.signal").exists());
        assert!(!standby.path().join("recovery.signal").exists());
        Ok(())
    }

    #[test]
    fn targets_are_validated() {
        assert!(
            recovery(TargetType::Time, None, None).validate().is_err(),
            "time needs --target"
        );
        assert!(
            recovery(TargetType::Default, Some("x"), None)
                .validate()
                .is_err()
        );
        assert!(
            recovery(TargetType::Lsn, Some("nope"), None)
                .validate()
                .is_err()
        );
        assert!(
            recovery(TargetType::Name, Some("rp"), Some("explode"))
                .validate()
                .is_err()
        );
        assert!(
            recovery(TargetType::Xid, Some("1234"), Some("promote"))
                .validate()
                .is_ok()
        );
    }
}
