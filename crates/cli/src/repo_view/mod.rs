//! The repository as `repo-ls` and `repo-get` show it: a read-only view shaped like a
//! pgBackRest repository, so tools that walk one (check_pgbackrest's archive and retention
//! checks) find what they expect. cairn's own layout (format.md, "Layout") holds packs and
//! sealed objects that no such tool could read; the view maps its backups and WAL onto
//! pgBackRest's paths instead:
//!
//! ```text
//! archive/<stanza>/<major>-<history id>/<TTTTTTTT>.history          (postgres stanzas)
//! archive/<stanza>/<major>-<history id>/<first 16 hex>/<wal file>
//! backup/<stanza>/<label>/pg_data/...                                (postgres stanzas)
//! backup/<stanza>/<label>/pg_tblspc/<oid>/...
//! backup/<stanza>/<label>/...                                        (files and stream stanzas)
//! ```
//!
//! Archive ids are pgBackRest's (`15-1`), numbered as `info --output json` numbers them
//! (`info::history::dbs_of`). File names carry no `-<sha1>` suffix and no compression
//! extension, and `repo-get` returns plain bytes: the view is that of an uncompressed,
//! unencrypted pgBackRest repository. There is no `archive.info`, `backup.info` or
//! `backup.manifest`: cairn's metadata is not pgBackRest's INI, and `info --output json` is
//! the interface to it.

mod archive;
mod backup;

use anyhow::Result;
use cairn_repo::manifest::Manifest;
use cairn_repo::{Repository, Stanza, StanzaName};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a name in the view is, as pgBackRest's `repo-ls --output json` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `size` in plain bytes, `time` in seconds since the Unix epoch.
    File {
        size: u64,
        time: i64,
    },
    Path,
    Link {
        destination: String,
    },
    /// A FIFO or a device file of a `files` backup.
    Special,
}

/// Where a file of the view comes from, for `repo-get`.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A path, link or special file: nothing to read.
    Nothing,
    /// An archived WAL file: `stanza/<s>/archive/<repository id>/<timeline>/<name>`.
    Wal {
        stanza: Stanza,
        repository_id: String,
        /// The identity whose WAL it is, to check what is read back (None: one the stanza
        /// does not record).
        identity: Option<cairn_engines::postgres::identity::Identity>,
        timeline: u32,
        name: String,
    },
    /// Entry `entry` of a backup's own manifest (content stored by that backup).
    Backup {
        stanza: Stanza,
        manifest: Arc<Manifest>,
        entry: usize,
    },
}

#[derive(Debug, Clone)]
pub struct Node {
    pub kind: Kind,
    pub origin: Origin,
}

impl Node {
    fn path() -> Node {
        Node {
            kind: Kind::Path,
            origin: Origin::Nothing,
        }
    }
}

/// A subtree of the view: every name beneath its root, relative to it (`a`, `a/b`), each
/// path that holds something listed itself.
type Tree = BTreeMap<String, Node>;

/// What a path of the view names.
#[derive(Debug)]
pub enum Found {
    /// Nothing: pgBackRest lists such a path as empty.
    Missing,
    /// A file (or a link or special file, which `repo-ls` shows as `.` as it does a file).
    File(Node),
    /// A path: its names relative to it, only its children or everything beneath it.
    Dir(Vec<(String, Node)>),
}

/// The path given to `repo-ls` or `repo-get`, relative to the repository, as pgBackRest's
/// `repoPathIsValid` takes it: `//` is refused, a trailing `/` dropped, and an absolute path
/// must lie in the repository (`base`, the repository's path: its directory, or for S3 `/`
/// and its prefix). `.` segments are dropped and `..` refused (the view has no parent).
pub fn relative_path(path: &str, base: &str) -> Result<Vec<String>, String> {
    if path.contains("//") {
        return Err(format!("path '{path}' cannot contain //"));
    }
    let trimmed = match path.strip_suffix('/') {
        Some(p) if !p.is_empty() => p,
        _ => path,
    };
    let rel = if trimmed.starts_with('/') {
        let base = base.trim_end_matches('/');
        if trimmed == base || (base.is_empty() && trimmed == "/") {
            ""
        } else {
            trimmed
                .strip_prefix(base)
                .and_then(|r| r.strip_prefix('/'))
                .ok_or_else(|| {
                    format!(
                        "absolute path '{path}' is not in base path '{}'; give a path inside the repository or one relative to it",
                        if base.is_empty() { "/" } else { base }
                    )
                })?
        }
    } else {
        trimmed
    };
    let mut segs = Vec::new();
    for s in rel.split('/').filter(|s| !s.is_empty() && *s != ".") {
        if s == ".." {
            return Err(format!(
                "path '{path}' cannot contain '..'; give a path inside the repository"
            ));
        }
        segs.push(s.to_string());
    }
    Ok(segs)
}

/// The view of one repository.
pub struct View<'a> {
    pub repo: &'a Repository,
}

impl View<'_> {
    /// What `segs` names; `recurse` lists everything beneath a path, not only its children.
    pub async fn find(&self, segs: &[String], recurse: bool) -> Result<Found> {
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        self.find_in(&segs, recurse).await
    }

    async fn find_in(&self, segs: &[&str], recurse: bool) -> Result<Found> {
        match segs {
            [] => {
                self.dir(segs, vec!["archive".into(), "backup".into()], recurse)
                    .await
            }
            ["archive"] => {
                let mut names = Vec::new();
                for s in self.stanzas().await? {
                    if is_postgres(&s) {
                        names.push(s.name().to_string());
                    }
                }
                self.dir(segs, names, recurse).await
            }
            ["backup"] => {
                let names = self.stanzas().await?;
                let names = names.iter().map(|s| s.name().to_string()).collect();
                self.dir(segs, names, recurse).await
            }
            ["archive", s, rest @ ..] => {
                let Some(stanza) = self.stanza(s).await?.filter(is_postgres) else {
                    return Ok(Found::Missing);
                };
                match rest {
                    [] => {
                        let ids = archive::ids(&stanza).await?;
                        let names = ids.into_iter().map(|a| a.view_id).collect();
                        self.dir(segs, names, recurse).await
                    }
                    [id, rest @ ..] => match archive::tree(&stanza, id).await? {
                        Some(tree) => Ok(select(tree, rest, recurse)),
                        None => Ok(Found::Missing),
                    },
                }
            }
            ["backup", s, rest @ ..] => {
                let Some(stanza) = self.stanza(s).await? else {
                    return Ok(Found::Missing);
                };
                match rest {
                    [] => {
                        let labels = stanza.catalog().await?.backups;
                        let names = labels.iter().map(|b| b.label.to_string()).collect();
                        self.dir(segs, names, recurse).await
                    }
                    [label, rest @ ..] => match backup::tree(&stanza, label).await? {
                        Some(tree) => Ok(select(tree, rest, recurse)),
                        None => Ok(Found::Missing),
                    },
                }
            }
            _ => Ok(Found::Missing),
        }
    }

    /// A path of the view above the stanzas' own trees: `children` are paths, and with
    /// `recurse` each brings what is beneath it.
    async fn dir(&self, segs: &[&str], children: Vec<String>, recurse: bool) -> Result<Found> {
        let mut out = Vec::new();
        for c in children {
            out.push((c.clone(), Node::path()));
            if recurse {
                let mut sub = segs.to_vec();
                sub.push(&c);
                if let Found::Dir(beneath) = Box::pin(self.find_in(&sub, true)).await? {
                    out.extend(
                        beneath
                            .into_iter()
                            .map(|(n, node)| (format!("{c}/{n}"), node)),
                    );
                }
            }
        }
        Ok(Found::Dir(out))
    }

    /// Every stanza whose `stanza.info` can be read (one that cannot is left out with a
    /// warning: `info` reports it).
    async fn stanzas(&self) -> Result<Vec<Stanza>> {
        let mut out = Vec::new();
        for name in self.repo.stanzas().await? {
            match self.repo.stanza(&name).await {
                Ok(s) => out.push(s),
                Err(e) => tracing::warn!("stanza '{name}' is left out of the listing: {e}"),
            }
        }
        Ok(out)
    }

    /// The stanza a path segment names, or None when there is none of that name.
    async fn stanza(&self, name: &str) -> Result<Option<Stanza>> {
        let Ok(name) = StanzaName::parse(name) else {
            return Ok(None);
        };
        if !self.repo.holds_stanza(&name).await? {
            return Ok(None);
        }
        Ok(Some(self.repo.stanza(&name).await?))
    }
}

fn is_postgres(s: &Stanza) -> bool {
    s.info.engine == "postgres"
}

/// `path` in `tree` with the view's own links followed (`pg_data/pg_tblspc/<oid>` ->
/// `pg_tblspc/<oid>`), as a file system lists and reads through them: every prefix that is a
/// relative link within the tree is replaced by its destination. None when it leaves the tree.
fn through_links(tree: &Tree, path: &str) -> Option<String> {
    let mut out: Vec<String> = Vec::new();
    for (hops, part) in path.split('/').enumerate() {
        out.push(part.to_string());
        if hops > 64 {
            return None;
        }
        let here = out.join("/");
        if let Some(Node {
            kind: Kind::Link { destination },
            ..
        }) = tree.get(&here)
        {
            if destination.starts_with('/') {
                continue;
            }
            out.pop();
            for d in destination.split('/') {
                match d {
                    "" | "." => {}
                    ".." => {
                        out.pop()?;
                    }
                    d => out.push(d.to_string()),
                }
            }
        }
    }
    let resolved = out.join("/");
    tree.contains_key(&resolved).then_some(resolved)
}

/// What `rest` names in `tree`.
fn select(tree: Tree, rest: &[&str], recurse: bool) -> Found {
    let asked = rest.join("/");
    let wanted = if asked.is_empty() {
        asked
    } else {
        match through_links(&tree, &asked) {
            Some(w) => w,
            None => return Found::Missing,
        }
    };
    let prefix = if wanted.is_empty() {
        String::new()
    } else {
        match tree.get(&wanted) {
            None => return Found::Missing,
            Some(node) if node.kind != Kind::Path => return Found::File(node.clone()),
            Some(_) => format!("{wanted}/"),
        }
    };
    let entries = tree
        .into_iter()
        .filter_map(|(name, node)| {
            let rel = name.strip_prefix(&prefix)?.to_string();
            (recurse || !rel.contains('/')).then_some((rel, node))
        })
        .collect();
    Found::Dir(entries)
}

/// Add `path` and every path above it (as paths) to `tree`.
fn add(tree: &mut Tree, path: String, node: Node) {
    let mut at = 0;
    while let Some(i) = path[at..].find('/') {
        let dir = &path[..at + i];
        tree.entry(dir.to_string()).or_insert_with(Node::path);
        at += i + 1;
    }
    tree.insert(path, node);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_taken_as_pgbackrest_takes_them() {
        let rel = |p: &str| relative_path(p, "/var/lib/cairn");
        assert_eq!(
            rel("archive/main/"),
            Ok(vec!["archive".into(), "main".into()])
        );
        assert_eq!(rel("/var/lib/cairn"), Ok(vec![]));
        assert_eq!(rel("/var/lib/cairn/"), Ok(vec![]));
        assert_eq!(rel("/var/lib/cairn/backup"), Ok(vec!["backup".into()]));
        assert_eq!(rel(""), Ok(vec![]));
        assert_eq!(rel("./backup/."), Ok(vec!["backup".into()]));
        assert!(rel("archive//main").is_err_and(|e| e.contains("cannot contain //")));
        assert!(rel("/var/lib/cairnx/backup").is_err_and(|e| e.contains("not in base path")));
        assert!(rel("/etc/passwd").is_err_and(|e| e.contains("'/var/lib/cairn'")));
        assert!(rel("backup/../..").is_err());
        assert_eq!(relative_path("/x/y", "/"), Ok(vec!["x".into(), "y".into()]));
    }

    #[test]
    fn a_tree_answers_for_files_paths_and_what_is_missing() {
        let mut t = Tree::new();
        let file = Node {
            kind: Kind::File { size: 3, time: 7 },
            origin: Origin::Nothing,
        };
        add(&mut t, "a/b/c".into(), file.clone());
        add(&mut t, "a/d".into(), file);
        assert!(matches!(
            select(t.clone(), &["a", "b", "c"], false),
            Found::File(_)
        ));
        assert!(matches!(
            select(t.clone(), &["a", "x"], false),
            Found::Missing
        ));
        let names = |f: Found| match f {
            Found::Dir(d) => d.into_iter().map(|(n, _)| n).collect::<Vec<_>>(),
            _ => vec!["not a dir".into()],
        };
        assert_eq!(names(select(t.clone(), &["a"], false)), ["b", "d"]);
        assert_eq!(names(select(t.clone(), &["a"], true)), ["b", "b/c", "d"]);
        assert_eq!(names(select(t.clone(), &[], false)), ["a"]);
        // A link of the view is listed and read through, as a file system does.
        let link = |d: &str| Node {
            kind: Kind::Link {
                destination: d.into(),
            },
            origin: Origin::Nothing,
        };
        add(&mut t, "p/l".into(), link("../a/b"));
        add(&mut t, "p/out".into(), link("../../x"));
        add(&mut t, "p/abs".into(), link("/etc"));
        assert_eq!(names(select(t.clone(), &["p", "l"], false)), ["c"]);
        assert!(matches!(
            select(t.clone(), &["p", "l", "c"], false),
            Found::File(_)
        ));
        assert!(matches!(
            select(t.clone(), &["p", "out"], false),
            Found::Missing
        ));
        assert!(matches!(select(t, &["p", "abs"], false), Found::File(_)));
    }
}
