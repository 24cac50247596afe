//! Logging: the console on stderr (`--log-level`, pgBackRest's `--log-level-console`) and,
//! with `--log-path`, a file per stanza and command as pgBackRest writes it
//! (`<log-path>/<stanza>-<command>.log`, `all-<command>.log` without a stanza, appended to,
//! at `--log-level-file`, default info), each run between a begin line that shows the
//! effective options (secrets masked) and an end line that shows how it ended.

use crate::exit::usage;
use anyhow::{Context, Result};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Events with this target go to the log file only (the begin and end lines).
pub(crate) const FILE_ONLY: &str = "logfile";

/// `level` as tracing names it: pgBackRest's `detail` (between info and debug) is info.
fn check_level(option: &str, level: &str) -> Result<&'static str> {
    match level {
        "off" => Ok("off"),
        "error" => Ok("error"),
        "warn" => Ok("warn"),
        "info" | "detail" => Ok("info"),
        "debug" => Ok("debug"),
        "trace" => Ok("trace"),
        other => Err(usage(format!(
            "--{option} '{other}': use off, error, warn, info, detail, debug or trace"
        ))),
    }
}

/// Where the log file goes and at what level.
pub(crate) struct LogFile {
    pub(crate) path: PathBuf,
    pub(crate) level: String,
}

impl LogFile {
    /// `<dir>/<stanza>-<command>.log`, as pgBackRest names it.
    pub(crate) fn new(dir: &Path, stanza: Option<&str>, command: &str, level: String) -> Self {
        LogFile {
            path: dir.join(format!("{}-{command}.log", stanza.unwrap_or("all"))),
            level,
        }
    }
}

/// The AWS SDK's own spans and events, which at debug name the access key id: never below info.
const QUIET_DEPENDENCIES: &str = "aws_config=info,aws_sdk_s3=info,aws_sdk_sts=info,aws_sdk_sso=info,aws_sdk_ssooidc=info,aws_smithy_runtime=info,aws_smithy_runtime_api=info,aws_smithy_http_client=info,aws_runtime=info,aws_sigv4=info,aws_credential_types=info,hyper=info,hyper_util=info,h2=info,rustls=info";

/// Set up logging. A log file that cannot be opened is a warning, not a failure, as in
/// pgBackRest: an archive-push that failed for want of its log would stall WAL archiving.
pub(crate) fn init_logging(level: &str, file: Option<&LogFile>) -> Result<()> {
    let level = check_level("log-level", level)?;
    let console = tracing_subscriber::fmt::layer()
        .with_writer(|| ConsoleWriter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(tracing_subscriber::EnvFilter::new(format!(
            "{level},{QUIET_DEPENDENCIES},{FILE_ONLY}=off"
        )));
    let mut file_problem: Option<String> = None;
    let mut opened: Option<(std::fs::File, &'static str)> = None;
    if let Some(f) = file
        && f.level != "off"
    {
        let file_level = check_level("log-level-file", &f.level)?;
        let open = || -> Result<std::fs::File> {
            if let Some(dir) = f.path.parent() {
                std::fs::create_dir_all(dir).with_context(|| {
                    format!(
                        "cannot create the log directory {} (--log-path)",
                        dir.display()
                    )
                })?;
            }
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&f.path)
                .with_context(|| {
                    format!("cannot open the log file {} (--log-path)", f.path.display())
                })
        };
        match open() {
            Ok(out) => opened = Some((out, file_level)),
            Err(e) => file_problem = Some(format!("{e:#}; logging to the console only")),
        }
    }
    let file_layer = opened.map(|(out, file_level)| {
        {
            use std::io::Write as _;
            let mut w = &out;
            let _ = writeln!(w, "-------------------PROCESS START-------------------");
        }
        tracing_subscriber::fmt::layer()
            .with_writer(std::sync::Mutex::new(out))
            .with_ansi(false)
            .with_target(false)
            .with_filter(tracing_subscriber::EnvFilter::new(format!(
                "{file_level},{QUIET_DEPENDENCIES},{FILE_ONLY}=info"
            )))
    });
    let _ = tracing_subscriber::registry()
        .with(console)
        .with(file_layer)
        .try_init();
    if let Some(why) = file_problem {
        tracing::warn!("{why}");
    }
    Ok(())
}

/// stderr, with a progress bar on screen lifted out of the way of each line.
struct ConsoleWriter;

impl std::io::Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        crate::progress::above_bar(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Whether an option's value is a secret the log must not show.
fn is_secret(option: &str) -> bool {
    ["secret", "token", "pass", "s3-key", "kms-key"]
        .iter()
        .any(|s| option.contains(s))
}

/// The options as the begin line shows them: `--name=value`, secrets as `<redacted>`.
pub(crate) fn show_options(options: &[(String, Option<String>)]) -> String {
    options
        .iter()
        .map(|(k, v)| match v {
            None => format!("--{k}"),
            Some(_) if is_secret(k) => format!("--{k}=<redacted>"),
            Some(v) if v.contains(char::is_whitespace) => format!("--{k}=\"{v}\""),
            Some(v) => format!("--{k}={v}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_in_the_begin_line() {
        let shown = show_options(&[
            ("repo1-s3-key".into(), Some("AKIA".into())),
            ("repo1-s3-key-secret".into(), Some("hunter2".into())),
            ("stanza".into(), Some("demo".into())),
            ("start-fast".into(), None),
        ]);
        assert_eq!(
            shown,
            "--repo1-s3-key=<redacted> --repo1-s3-key-secret=<redacted> --stanza=demo --start-fast"
        );
    }
}
