//! `repo-ls [PATH]`: list the repository as pgBackRest's `repo-ls` lists one (`repo_view`),
//! in its text or JSON form, with its `--recurse`, `--filter` and `--sort`.

use crate::exit::usage;
use crate::repo_view::{Found, Kind, Node, View, relative_path};
use crate::settings::Settings;
use anyhow::Result;
use cairn_repo::Repository;
use std::process::ExitCode;

/// `repo-ls`'s options as given on the command line.
#[derive(Debug)]
pub(crate) struct LsArgs {
    pub path: Option<String>,
    pub output: Option<String>,
    pub recurse: bool,
    pub filter: Option<String>,
    pub sort: Option<String>,
}

pub(crate) async fn repo_ls_cmd(s: &Settings, a: LsArgs) -> Result<ExitCode> {
    let output = s
        .string(&a.output, "output")?
        .unwrap_or_else(|| "text".into());
    if output != "text" && output != "json" {
        return Err(usage(format!("--output '{output}': use text or json")));
    }
    let sort = s.string(&a.sort, "sort")?.unwrap_or_else(|| "asc".into());
    if !["asc", "desc", "none"].contains(&sort.as_str()) {
        return Err(usage(format!("--sort '{sort}': use asc, desc or none")));
    }
    let recurse = s.flag(a.recurse, "recurse")?;
    let filter = match s.string(&a.filter, "filter")? {
        Some(f) => Some(regex::Regex::new(&f).map_err(|e| {
            usage(format!(
                "--filter '{f}' is not a valid regular expression: {e}"
            ))
        })?),
        None => None,
    };
    let base = base_path(s)?;
    let given = a.path.unwrap_or_default();
    let segs = relative_path(&given, &base).map_err(usage)?;
    let repo = Repository::open(s.store(false).await?).await?;
    let found = View { repo: &repo }.find(&segs, recurse).await?;
    let json = output == "json";
    let matches = |name: &str| filter.as_ref().is_none_or(|r| r.is_match(name));
    let mut out = String::new();
    if json {
        out.push('{');
    }
    match found {
        Found::File(node) => {
            // pgBackRest matches a file's full path in the repository against the filter.
            if matches(&format!(
                "{}/{}",
                base.trim_end_matches('/'),
                segs.join("/")
            )) {
                render(&mut out, ".", &node, json, true);
            }
        }
        Found::Missing | Found::Dir(_) => {
            let mut first = true;
            if json && matches(".") {
                render(&mut out, ".", &dot(), json, first);
                first = false;
            }
            let mut entries = match found {
                Found::Dir(entries) => entries,
                _ => Vec::new(),
            };
            // Depth first as pgBackRest walks: ascending puts a path before its contents,
            // descending (the exact reverse) its contents before it.
            if sort != "none" {
                entries.sort_by(|x, y| x.0.split('/').cmp(y.0.split('/')));
            }
            if sort == "desc" {
                entries.reverse();
            }
            for (name, node) in entries.iter().filter(|(n, _)| matches(n)) {
                render(&mut out, name, node, json, first);
                first = false;
            }
        }
    }
    if json {
        out.push_str("}\n");
    }
    say_raw!("{out}");
    Ok(ExitCode::SUCCESS)
}

fn dot() -> Node {
    Node {
        kind: Kind::Path,
        origin: crate::repo_view::Origin::Nothing,
    }
}

/// One name as pgBackRest's `storageListRenderInfo` writes it.
fn render(out: &mut String, name: &str, node: &Node, json: bool, first: bool) {
    if !json {
        out.push_str(name);
        out.push('\n');
        return;
    }
    if !first {
        out.push(',');
    }
    let quoted = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    out.push_str(&quoted(name));
    match &node.kind {
        Kind::File { size, time } => {
            out.push_str(&format!(
                ":{{\"type\":\"file\",\"size\":{size},\"time\":{time}}}"
            ));
        }
        Kind::Path => out.push_str(":{\"type\":\"path\"}"),
        Kind::Link { destination } => out.push_str(&format!(
            ":{{\"type\":\"link\",\"destination\":{}}}",
            quoted(destination)
        )),
        Kind::Special => out.push_str(":{\"type\":\"special\"}"),
    }
}

/// The repository's path as pgBackRest's repo-path is (what an absolute path given to
/// `repo-ls` or `repo-get` must lie in): the directory, or for S3 `/` and the prefix.
pub(crate) fn base_path(s: &Settings) -> Result<String> {
    let repo = s.repo.as_deref().ok_or_else(|| {
        usage("no repository given: use --repo, CAIRN_REPO or 'repo' in the config file")
    })?;
    Ok(match repo.strip_prefix("s3://") {
        Some(rest) => format!("/{}", rest.split_once('/').map_or("", |(_, p)| p)),
        None => repo.to_string(),
    })
}
