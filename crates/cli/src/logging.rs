//! Console logging on stderr.

use crate::exit::usage;
use anyhow::Result;
use std::io::IsTerminal;

pub(crate) fn init_logging(level: &str) -> Result<()> {
    let filter = match level {
        "off" | "error" | "warn" | "info" | "debug" | "trace" => level,
        other => {
            return Err(usage(format!(
                "--log-level '{other}': use off, error, warn, info, debug or trace"
            )));
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .try_init();
    Ok(())
}
