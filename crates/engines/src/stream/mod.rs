//! The `stream` engine: one byte stream from stdin (`pg_dump -Fc`, `mongodump --archive`, a
//! DB2 backup through a pipe) stored as a single logical object, content-defined chunked so a
//! daily dump costs only what changed; restored to a file or to stdout. `command` runs the
//! producer or consumer itself, so that its failure fails the backup or restore.

pub mod command;
pub mod engine;

use cairn_repo::backup::SourceEntry;
use cairn_repo::chunker::DEFAULT_CDC;
use cairn_repo::index::Index;
use cairn_repo::manifest::{Content, EntryKind, FileEntry};
use cairn_repo::pipeline::{Opener, Progress};
use cairn_repo::restore::{self, Placement, WriteAt};
use cairn_repo::{Error, Result, Stanza};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The manifest path of the stream.
pub const STREAM_PATH: &[u8] = b"stream";

/// The stream read from `reader` (stdin), as the one entry of the backup.
pub fn source(reader: Box<dyn Read + Send>) -> SourceEntry {
    source_from(reader, "standard input".into())
}

/// The stream read from `reader`, `origin` naming it in messages.
pub fn source_from(reader: Box<dyn Read + Send>, origin: String) -> SourceEntry {
    let now = cairn_repo::time::now_unix();
    let mut slot = Some(reader);
    let open: Opener = Box::new(move || {
        slot.take()
            .ok_or_else(|| io::Error::other("stdin already read"))
    });
    SourceEntry {
        entry: FileEntry {
            path: STREAM_PATH.to_vec(),
            kind: EntryKind::File,
            mode: 0o600,
            uid: 0,
            gid: 0,
            mtime_ns: now * 1_000_000_000,
            size: 0,
            link_target: None,
            content: Content::None,
            meta: BTreeMap::new(),
        },
        policy: DEFAULT_CDC,
        origin,
        open: Some(open),
        watch: None,
    }
}

pub(crate) fn the_stream(entries: &[FileEntry]) -> Result<&FileEntry> {
    entries
        .iter()
        .find(|e| e.path == STREAM_PATH)
        .ok_or_else(|| Error::corrupt("manifest", "a stream backup without its stream entry"))
}

#[derive(Debug)]
struct FileSink {
    path: PathBuf,
    file: File,
}

impl WriteAt for FileSink {
    fn write_at(&self, _target: usize, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }
    fn describe(&self, _target: usize) -> String {
        self.path.display().to_string()
    }
}

/// Standard output as a restore writes it. A reader that closes it early (`| head`) leaves
/// the restored stream incomplete: that is a failed restore, not the reader's choice (as it
/// is for `info`), so a broken pipe becomes an error that says how far the stream got.
struct Stdout {
    written: u64,
    total: u64,
}

impl io::Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match io::stdout().write(buf) {
            Ok(n) => {
                self.written += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(io::Error::other(format!(
                "the reader of standard output closed it after {} of {} bytes; the restored stream is incomplete",
                self.written, self.total
            ))),
            Err(e) => Err(e),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stdout().flush()
    }
}

/// Restore the stream to `consumer`'s stdin when given, else to `dest`: a file path (must
/// not exist), or `-` for stdout.
pub async fn restore(
    stanza: &Stanza,
    index: &Index,
    entries: &[FileEntry],
    dest: &Path,
    consumer: Option<command::Consumer>,
    process_max: usize,
    progress: Arc<dyn Progress>,
) -> Result<()> {
    let e = the_stream(entries)?;
    let Content::Chunks(chunks) = &e.content else {
        return Err(Error::corrupt("manifest", "the stream entry has no chunks"));
    };
    if let Some(mut consumer) = consumer {
        let written = match consumer.stdin.take() {
            Some(stdin) => {
                let mut out = io::BufWriter::with_capacity(1 << 20, stdin);
                let r =
                    restore::fetch_ordered(stanza, index, chunks, process_max, &mut out, progress)
                        .await;
                r.and_then(|()| {
                    io::Write::flush(&mut out)
                        .map_err(|e| Error::io("cannot write to the consumer", e))
                })
            }
            None => Ok(()),
        };
        return consumer.finish(written);
    }
    if dest == Path::new("-") {
        let stdout = Stdout {
            written: 0,
            total: e.size,
        };
        let mut out = io::BufWriter::with_capacity(1 << 20, stdout);
        restore::fetch_ordered(stanza, index, chunks, process_max, &mut out, progress).await?;
        return io::Write::flush(&mut out)
            .map_err(|e| Error::io("cannot write the restored stream to standard output", e));
    }
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(|err| {
            if err.kind() == io::ErrorKind::AlreadyExists {
                return Error::Usage(format!(
                    "restore destination {} already exists; a stream is restored into a new file (or `--dest -` for standard output)",
                    dest.display()
                ));
            }
            Error::io(
                format!("cannot create restore destination {}", dest.display()),
                err,
            )
        })?;
    file.set_len(e.size)
        .map_err(|err| Error::io(format!("cannot size {}", dest.display()), err))?;
    let mut placements = Vec::with_capacity(chunks.len());
    let mut offset = 0;
    for c in chunks {
        placements.push(Placement {
            target: 0,
            offset,
            chunk: *c,
            shape: cairn_repo::pages::Shape::Whole,
        });
        offset += c.len as u64;
    }
    let sink = Arc::new(FileSink {
        path: dest.to_path_buf(),
        file,
    });
    let written = restore::fetch_positioned(
        stanza,
        index,
        placements,
        process_max,
        sink.clone(),
        progress,
    )
    .await
    .and_then(|()| {
        sink.file
            .sync_all()
            .map_err(|err| Error::io(format!("cannot flush {}", dest.display()), err))
    });
    // A file of the full size with holes where chunks failed would look like a restored
    // stream: a failed restore leaves nothing at `dest` (it did not exist before).
    if written.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    written
}
