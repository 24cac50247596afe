//! Exit codes and how errors are shown:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (also when the reader of `info`'s output closed it early; not for a restore to stdout) |
//! | 1 | not found: unknown stanza or backup, a WAL file the archive lacks (archive-get) |
//! | 2 | usage: a mistake in how cairn was called (option, value, missing argument) |
//! | 3 | the operation failed (repository, database, network, disk, damaged data) |
//! | 4 | `verify` found damage (the list is printed) |
//! | 5 | the stanza is locked by another command |
//! | 6 | completed with warnings: the backup IS listed, but something in it deserves a look (a
//! |   | files backup kept a file that kept changing while it was read; the warnings say which); |
//! |   | `stanza-repair` left backups out of the rebuilt catalog or could not read a pack |
//! | 126 | `archive-get`: the archive holds the file but it is damaged; any status above 125 |
//! |   | makes PostgreSQL stop recovery instead of ending it early and promoting |
//! | 70 | internal error: a bug in cairn (a panic); locks were released |
//! | 130, 143 | interrupted by SIGINT (Ctrl-C) or SIGTERM; locks were released, nothing listed |

use std::process::ExitCode;

/// A mistake in how cairn was called (exit code 2).
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Usage {}

/// `verify` found damage (exit code 4); the report is already printed.
#[derive(Debug)]
pub struct Damaged(pub usize);
impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "verify found {} damaged or missing object(s); see the list above",
            self.0
        )
    }
}
impl std::error::Error for Damaged {}

/// A panic: a bug in cairn, reported as one error line (exit code 70).
#[derive(Debug)]
pub struct Internal(pub String);
impl std::fmt::Display for Internal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "internal error: {}; this is a bug in cairn, please report it with the command that caused it",
            self.0
        )
    }
}
impl std::error::Error for Internal {}

/// Stopped by a signal (exit code 128 + signal number).
#[derive(Debug)]
pub struct Interrupted(pub i32, pub &'static str);
impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = if self.0 == 2 { "SIGINT" } else { "SIGTERM" };
        write!(f, "interrupted by {name}: the command stopped; {}", self.1)
    }
}
impl std::error::Error for Interrupted {}
/// archive-get found the file damaged: a status above 125 makes PostgreSQL stop recovery
/// rather than take the file as missing and promote (exit code 126).
#[derive(Debug)]
pub struct StopRecovery(pub String);
impl std::fmt::Display for StopRecovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for StopRecovery {}
pub const STOP_RECOVERY: u8 = 126;

/// A bad option or value (exit code 2).
pub const USAGE: u8 = 2;

/// A backup that completed and is listed, with warnings (exit code 6).
pub const WARNINGS: u8 = 6;

pub(crate) fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(msg.into()))
}

pub fn exit_code(e: &anyhow::Error) -> ExitCode {
    ExitCode::from(exit_status(e))
}

/// The exit status `e` ends the command with.
pub fn exit_status(e: &anyhow::Error) -> u8 {
    if is_broken_pipe(e) {
        return 0;
    }
    if e.downcast_ref::<Usage>().is_some() {
        return USAGE;
    }
    if e.downcast_ref::<Damaged>().is_some() {
        return 4;
    }
    if e.downcast_ref::<StopRecovery>().is_some() {
        return STOP_RECOVERY;
    }
    if e.downcast_ref::<Internal>().is_some() {
        return 70;
    }
    if let Some(Interrupted(sig, _)) = e.downcast_ref::<Interrupted>() {
        return 128 + *sig as u8;
    }
    match e.downcast_ref::<cairn_repo::Error>() {
        Some(cairn_repo::Error::NotFound(_)) => 1,
        Some(cairn_repo::Error::Usage(_)) => 2,
        Some(cairn_repo::Error::Locked(_) | cairn_repo::Error::Conflict(_)) => 5,
        _ => 3,
    }
}

/// The error and its causes on one line, each cause once: an error whose message already
/// quotes its cause (`cannot read X: the producer failed`) does not repeat it.
pub fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// A closed stdout (`cairn restore --dest - | head`) is the reader's choice, not a failure.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn a_cause_already_quoted_is_not_repeated() {
        let io = std::io::Error::other("the producer failed");
        let e = anyhow::Error::new(cairn_repo::Error::io("cannot read the output of 'sh'", io));
        assert_eq!(
            describe(&e),
            "cannot read the output of 'sh': the producer failed"
        );
        let e = anyhow::anyhow!("inner cause").context("outer");
        assert_eq!(describe(&e), "outer: inner cause");
    }
}
