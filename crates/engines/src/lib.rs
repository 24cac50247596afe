//! cairn's engines: what to read for a backup and how to lay it back down, per kind of data.
//! `files` is a directory tree, `stream` is one byte stream (stdin / stdout); the PostgreSQL
//! engine joins them. The repository crate does the storing; an engine only says what.

pub mod durable;
pub mod engine;
pub mod files;
pub mod postgres;
pub mod stream;
pub mod tree;

pub use engine::{Engine, LogArchive, Options, engine, engines};

use cairn_repo::{Error, Result};

/// The engines a stanza can be created with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EngineKind {
    Postgres,
    Files,
    Stream,
}

impl EngineKind {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "postgres" => Ok(EngineKind::Postgres),
            "files" => Ok(EngineKind::Files),
            "stream" => Ok(EngineKind::Stream),
            _ => Err(Error::Usage(format!(
                "unknown engine '{s}': use postgres, files or stream"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Postgres => "postgres",
            EngineKind::Files => "files",
            EngineKind::Stream => "stream",
        }
    }
}
