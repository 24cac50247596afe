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
