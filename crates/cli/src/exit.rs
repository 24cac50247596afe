//! Exit codes and how errors are shown. 0 success; 1 not found; 2 usage (a mistake in how
//! cairn was called); 3 the operation failed; 4 `verify` found damage; 5 the stanza is locked;
//! 6 completed with warnings: the backup IS listed, but something in it deserves a look (a
//! files backup kept a file that kept changing while it was read; the warnings say which).

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

/// A backup that completed and is listed, with warnings (exit code 6).
pub const WARNINGS: u8 = 6;

pub(crate) fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(msg.into()))
}

pub fn exit_code(e: &anyhow::Error) -> ExitCode {
    if is_broken_pipe(e) {
        return ExitCode::SUCCESS;
    }
    if e.downcast_ref::<Usage>().is_some() {
        return ExitCode::from(2);
    }
    if e.downcast_ref::<Damaged>().is_some() {
        return ExitCode::from(4);
    }
    match e.downcast_ref::<cairn_repo::Error>() {
        Some(cairn_repo::Error::NotFound(_)) => ExitCode::from(1),
        Some(cairn_repo::Error::Invalid(_)) => ExitCode::from(2),
        Some(cairn_repo::Error::Locked(_)) => ExitCode::from(5),
        _ => ExitCode::from(3),
    }
}

/// The error and its causes on one line.
pub fn describe(e: &anyhow::Error) -> String {
    format!("{e:#}")
}

/// A closed stdout (`cairn restore --dest - | head`) is the reader's choice, not a failure.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
