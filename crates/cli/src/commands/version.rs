//! `version`: cairn's version as text (`cairn 0.1.0`), or with `--output num` as one integer,
//! computed as pgBackRest computes its own (2.59.1 prints 2059001): major * 1,000,000 +
//! minor * 1,000 + patch, so cairn 0.1.0 prints 1000. Needs no repository or configuration.

use crate::exit::usage;
use anyhow::Result;
use std::process::ExitCode;

pub(crate) fn version_cmd(output: Option<&str>) -> Result<ExitCode> {
    let version = env!("CARGO_PKG_VERSION");
    match output.unwrap_or("text") {
        "text" => println!("cairn {version}"),
        "num" => println!("{}", number(version)),
        other => {
            return Err(usage(format!(
                "--output '{other}' for version: use text or num"
            )));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `major.minor.patch` as major * 1,000,000 + minor * 1,000 + patch (missing parts are 0).
fn number(version: &str) -> u64 {
    let mut parts = version
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let (major, minor, patch) = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    major * 1_000_000 + minor * 1_000 + patch
}

#[cfg(test)]
mod tests {
    use super::number;

    #[test]
    fn versions_number_as_pgbackrest_numbers_its_own() {
        assert_eq!(number("2.59.1"), 2_059_001);
        assert_eq!(number("0.1.0"), 1_000);
        assert_eq!(number("1.2.3-rc1"), 1_002_003);
    }
}
