//! cairn's repository layer. It knows nothing about databases: it stores byte streams
//! (files, dumps, WAL segments) as deduplicated, compressed chunks in pack objects, records
//! backups as manifests in a per-stanza catalog, and restores and verifies them.
//!
//! Layering: `storage` (objects) <- `pack`/`index`/`manifest`/`catalog` (formats, all through
//! `codec`) <- `repository` (layout, stanzas, locks) <- `backup`/`restore`/`verify` (jobs).

pub mod annotate;
pub mod archive;
pub mod backup;
pub mod catalog;
pub mod chunker;
pub mod codec;
pub mod control;
pub mod damage;
pub mod error;
pub mod expire;
pub mod external_sort;
pub mod failpoint;
pub mod gc;
pub mod ids;
pub mod index;
pub mod index_cache;
pub mod keys;
pub mod lock;
pub mod manifest;
pub mod pack;
pub mod pages;
pub mod pipeline;
pub mod repack;
pub mod repair;
pub mod repository;
pub mod restore;
pub mod retention;
pub mod segment_file;
pub mod stanza_index;
pub mod storage;
pub mod time;
pub mod verify;

pub use error::{Error, Result};
pub use ids::{BackupLabel, BackupType, ChunkId, PackId, StanzaName};
pub use repository::{Repository, Stanza};
