//! PostgreSQL byte formats, parsed without I/O so they can be unit-tested and fuzzed:
//! `Lsn`, `pg_control`, WAL file names, page headers and timeline history, page checksums.
//! Names follow PostgreSQL's own (`XLogFileName`, `pg_checksum_page`) so the code can be
//! read beside PostgreSQL's headers.

pub mod archive;
pub mod archive_async;
pub mod backup;
pub mod choose;
pub mod control;
pub mod datadir;
pub mod engine;
pub mod identity;
pub mod layout;
pub mod links;
pub mod lsn;
pub mod options;
pub mod page;
pub mod page_probe;
pub mod reach;
pub mod recovery;
pub mod restore;
pub mod selective;
pub mod session;
pub mod target;
pub mod upgrade;
pub mod verify;
pub mod wal;
