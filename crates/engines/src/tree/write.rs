//! Laying resolved entries down into a destination.

use super::join;
use super::meta::{
    chunk_matches, ready_for_delta, remove_path, remove_unlisted, set_meta, unsafe_geteuid,
};
use cairn_repo::manifest::{ChunkRef, EntryKind, FileEntry};
use cairn_repo::pages::Shape;
use cairn_repo::restore::{Placement, WriteAt};
use cairn_repo::{Error, Result};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The destination of a tree restore.
#[derive(Debug)]
pub struct TreeWriter {
    pub(super) root: PathBuf,
    files: Vec<PathBuf>,
    /// Open files by target, so restoring thousands of 8 KiB blocks of one file does not
    /// open it thousands of times; bounded to stay well inside the descriptor limit.
    open: std::sync::Mutex<HashMap<usize, std::sync::Arc<File>>>,
    /// Symlinks with restored contents beneath them (tablespaces), created before the
    /// contents, by path.
    pub(super) links: std::collections::HashSet<Vec<u8>>,
    /// `Dir` and `File` entries restored as symlinks (`--link-all`, `--link-map`), by path:
    /// the directory or file the link points at, where their contents go.
    pub(super) mapped: HashMap<Vec<u8>, PathBuf>,
    /// By target, the size of a file still to be created: a new restore creates each file
    /// when its first chunk arrives (or in `finish` if none does), so the creations, which
    /// ext4 makes slow after a mass deletion (its inode allocator skips recently deleted
    /// inodes one by one: 0.67 ms per file, 0.66 s for a 1,000-file cluster restored right
    /// after `rm -rf` of the last copy), overlap the data instead of preceding it.
    pending: std::sync::Mutex<Vec<Option<u64>>>,
    /// How many files `open` may hold (`max_open_files`).
    max_open: usize,
}

/// Files a restore keeps open at once: at most 256, and a quarter of the open-file limit, so
/// that the repository's files and connections fit beside them (a restore under a limit of
/// 256 failed with "too many open files").
fn max_open_files() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct passed.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
    } else {
        1024
    };
    (soft / 4).clamp(8, 256)
}

/// Open flags for every file a restore creates or rewrites: never through a symlink.
const NOFOLLOW: i32 = libc::O_NOFOLLOW;

impl TreeWriter {
    /// Check `dest` is absent or an empty directory, then create directories and empty files
    /// of the right sizes. Returns the writer and the chunk placements to fetch.
    pub fn prepare(dest: &Path, entries: &[FileEntry]) -> Result<(TreeWriter, Vec<Placement>)> {
        Self::prepare_with(dest, entries, false, &BTreeMap::new(), &[])
    }

    /// `prepare` for `--delta`: `dest` may hold an older copy. Files whose chunks already match
    /// are kept (only differing chunks are fetched), everything not in the backup is removed.
    pub fn prepare_delta(
        dest: &Path,
        entries: &[FileEntry],
    ) -> Result<(TreeWriter, Vec<Placement>)> {
        Self::prepare_with(dest, entries, true, &BTreeMap::new(), &[])
    }

    /// `prepare` (or `prepare_delta`), where symlinks that have contents beneath them
    /// (tablespaces) point at `link_map[path]` instead of their recorded target. Contents
    /// beneath a symlink are allowed only for links directly inside `allow_links_under`.
    ///
    /// Nothing is written outside `dest` (and those links' targets): the paths are checked
    /// first (`manifest::check_paths`), and then every ancestor of every entry is looked at with
    /// `lstat` (or created with `mkdir`) before anything is created in it, in sorted order and
    /// after `--delta` removed what the backup does not list, so each one is a real directory
    /// checked or made by this restore, or a tablespace link it made itself. The last component
    /// is made with `mkdir`, `O_CREAT|O_EXCL`/`O_NOFOLLOW`, `symlink` or `link`, none of which
    /// follow a symlink standing there. So a destination that already holds symlinks (`--delta`
    /// onto an old copy) cannot redirect a write: a symlink where a directory or file belongs is
    /// removed (delta) or refused. Not covered: another process swapping a directory for a link
    /// while the restore runs (that needs openat-style walking); whoever can do that can write
    /// into the destination anyway.
    pub fn prepare_with(
        dest: &Path,
        entries: &[FileEntry],
        delta: bool,
        link_map: &BTreeMap<Vec<u8>, PathBuf>,
        allow_links_under: &[&[u8]],
    ) -> Result<(TreeWriter, Vec<Placement>)> {
        cairn_repo::manifest::check_paths("the backup's manifest", entries, allow_links_under)?;
        super::links::check_targets(dest, entries, delta, link_map)?;
        match fs::read_dir(dest) {
            Ok(rd) => {
                // A fresh file system's mount point holds an empty lost+found: that is empty.
                let fresh_mount = |e: &fs::DirEntry| {
                    e.file_name() == "lost+found"
                        && e.file_type().is_ok_and(|t| t.is_dir())
                        && fs::read_dir(e.path()).is_ok_and(|mut d| d.next().is_none())
                };
                if !delta && rd.flatten().any(|e| !fresh_mount(&e)) {
                    return Err(Error::Usage(format!(
                        "restore destination {} is not empty; restore into an empty or new directory (a postgres stanza can also reuse what is there with --delta)",
                        dest.display(),
                    )));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(dest).map_err(|e| {
                    Error::io(
                        format!("cannot create restore destination {}", dest.display()),
                        e,
                    )
                })?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
                return Err(Error::Usage(format!(
                    "restore destination {} is a file, not a directory; give --dest a new or empty directory",
                    dest.display()
                )));
            }
            Err(e) => {
                return Err(Error::io(
                    format!("cannot open restore destination {}", dest.display()),
                    e,
                ));
            }
        }
        let mut w = TreeWriter {
            root: dest.to_path_buf(),
            files: Vec::new(),
            open: Default::default(),
            links: Default::default(),
            mapped: Default::default(),
            pending: Default::default(),
            max_open: max_open_files(),
        };
        let mut pending = Vec::new();
        let mut placements = Vec::new();
        if delta {
            remove_unlisted(dest, entries, link_map)?;
        }
        let mut checked = HashSet::new();
        w.create_followed_links(entries, link_map, &mut checked)?;
        for e in entries {
            if w.links.contains(&e.path) {
                continue; // created above, before its contents
            }
            w.parents(&e.path, &mut checked)?;
            let path = match link_map.get(&e.path).filter(|_| e.kind == EntryKind::File) {
                Some(target) => w.file_link_target(e, target)?,
                None => join(dest, &e.path),
            };
            if delta {
                // Whatever stands where a different kind of entry belongs goes.
                if let Ok(m) = fs::symlink_metadata(&path) {
                    let same_kind = match e.kind {
                        EntryKind::Dir => m.is_dir(),
                        EntryKind::File => m.is_file(),
                        // Links and special files are recreated in `finish`.
                        _ => false,
                    };
                    if !same_kind {
                        remove_path(&path)?;
                    } else {
                        ready_for_delta(&path, &m)?;
                    }
                }
            }
            match e.kind {
                EntryKind::Dir if e.path.is_empty() => {}
                EntryKind::Dir => match fs::create_dir(&path) {
                    Err(err)
                        if err.kind() == io::ErrorKind::AlreadyExists
                            && fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) => {}
                    r => r.map_err(|err| {
                        Error::io(format!("cannot create directory {}", path.display()), err)
                    })?,
                },
                EntryKind::File => {
                    let existing = if delta {
                        OpenOptions::new()
                            .read(true)
                            .custom_flags(NOFOLLOW)
                            .open(&path)
                            .ok()
                    } else {
                        None
                    };
                    if delta {
                        create(&path, e.size, true).map_err(|err| {
                            Error::io(format!("cannot create {}", path.display()), err)
                        })?;
                    }
                    let target = w.files.len();
                    w.files.push(path);
                    pending.push((!delta).then_some(e.size));
                    // With --delta, a chunk already in place is kept (a unit with a delta
                    // is always written: no name covers its bytes as restored).
                    let keep = |offset: u64, c: &ChunkRef, shape: Shape| {
                        shape == Shape::Whole
                            && existing
                                .as_ref()
                                .is_some_and(|f| chunk_matches(f, offset, c))
                    };
                    let mut push = |offset: u64, c: &ChunkRef, shape: Shape| {
                        if !keep(offset, c, shape) {
                            placements.push(Placement {
                                target,
                                offset,
                                chunk: *c,
                                shape,
                            });
                        }
                    };
                    for (offset, c, shape) in e.content.placements() {
                        push(offset, &c, shape);
                    }
                }
                _ => {} // links and special files: in `finish`
            }
        }
        w.pending = std::sync::Mutex::new(pending);
        Ok((w, placements))
    }

    /// Create `target` if it is still to be created (`O_EXCL`, never through a symlink, at
    /// its size); returns the new file, or None when it already exists.
    fn create_pending(&self, target: usize) -> io::Result<Option<File>> {
        let mut pending = self
            .pending
            .lock()
            .map_err(|_| io::Error::other("a restore thread panicked"))?;
        let Some(size) = pending.get(target).copied().flatten() else {
            return Ok(None);
        };
        let path = self
            .files
            .get(target)
            .ok_or_else(|| io::Error::other("unknown restore target"))?;
        let f = create(path, size, false)?;
        pending[target] = None;
        Ok(Some(f))
    }

    /// After the data is written: symlinks, then modes, owners and mtimes, directories last and
    /// deepest first so restoring a read-only directory's contents is not blocked.
    pub fn finish(&self, entries: &[FileEntry]) -> Result<()> {
        if let Ok(mut m) = self.open.lock() {
            m.clear();
        }
        // Files no chunk was written to (empty, or all holes).
        for target in 0..self.files.len() {
            self.create_pending(target).map_err(|err| {
                Error::io(
                    format!("cannot create {}", self.files[target].display()),
                    err,
                )
            })?;
        }
        let as_root = unsafe_geteuid() == 0;
        for e in entries
            .iter()
            .filter(|e| e.kind != EntryKind::Dir && !self.links.contains(&e.path))
        {
            if let Some(target) = self.mapped.get(&e.path) {
                self.link_to_file(e, target)?;
                set_meta(target, e, as_root)?;
                continue;
            }
            let path = join(&self.root, &e.path);
            if super::special::create(&self.root, &path, e, as_root)? {
                set_meta(&path, e, as_root)?;
            }
        }
        let mut dirs: Vec<&FileEntry> = entries
            .iter()
            .filter(|e| e.kind == EntryKind::Dir)
            .collect();
        dirs.sort_by_key(|e| {
            std::cmp::Reverse(
                e.path.iter().filter(|b| **b == b'/').count() + usize::from(!e.path.is_empty()),
            )
        });
        for e in dirs {
            match self.mapped.get(&e.path) {
                Some(target) => set_meta(target, e, as_root)?,
                None => set_meta(&join(&self.root, &e.path), e, as_root)?,
            }
        }
        self.sync()
    }

    /// Make the restored tree durable before reporting success: one `syncfs` of the
    /// destination's filesystem (and of each followed link's, for tablespaces).
    fn sync(&self) -> Result<()> {
        let mut roots = vec![self.root.clone()];
        roots.extend(self.links.iter().map(|l| join(&self.root, l)));
        roots.extend(self.mapped.values().cloned());
        for r in roots {
            let f = File::open(&r)
                .map_err(|e| Error::io(format!("cannot open {} to sync it", r.display()), e))?;
            // SAFETY: f is an open descriptor for the duration of the call.
            if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)) } != 0 {
                return Err(Error::io(
                    format!("cannot sync {}", r.display()),
                    io::Error::last_os_error(),
                ));
            }
        }
        Ok(())
    }
}

impl TreeWriter {
    /// Make sure every ancestor of `rel` inside the destination is a real directory (creating
    /// missing ones) or a tablespace link this restore made; `checked` remembers the ones seen.
    pub(super) fn parents(&self, rel: &[u8], checked: &mut HashSet<Vec<u8>>) -> Result<()> {
        for (i, _) in rel.iter().enumerate().filter(|(_, b)| **b == b'/') {
            let dir = &rel[..i];
            if checked.contains(dir) || self.links.contains(dir) {
                continue;
            }
            let path = join(&self.root, dir);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(Error::Invalid(format!(
                        "{} is not a directory (a symlink or file stands where the backup has a directory); refusing to restore through it: remove it or restore into an empty directory",
                        path.display()
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&path)
                    .map_err(|err| Error::io(format!("cannot create {}", path.display()), err))?,
                Err(e) => {
                    return Err(Error::io(format!("cannot inspect {}", path.display()), e));
                }
            }
            checked.insert(dir.to_vec());
        }
        Ok(())
    }

    /// The path written for `target`.
    pub fn describe_path(&self, target: usize) -> Option<&Path> {
        self.files.get(target).map(PathBuf::as_path)
    }
}

impl WriteAt for TreeWriter {
    fn write_at(&self, target: usize, offset: u64, data: &[u8]) -> io::Result<()> {
        let cached = self.open.lock().ok().and_then(|m| m.get(&target).cloned());
        let f = match cached {
            Some(f) => f,
            None => {
                let path = self
                    .files
                    .get(target)
                    .ok_or_else(|| io::Error::other("unknown restore target"))?;
                let f = std::sync::Arc::new(match self.create_pending(target)? {
                    Some(f) => f,
                    None => OpenOptions::new()
                        .write(true)
                        .custom_flags(NOFOLLOW)
                        .open(path)?,
                });
                if let Ok(mut m) = self.open.lock() {
                    if m.len() >= self.max_open {
                        m.clear();
                    }
                    m.insert(target, f.clone());
                }
                f
            }
        };
        write_sparse(&f, offset, data)?;
        start_writeback(&f, offset, data.len());
        Ok(())
    }

    fn describe(&self, target: usize) -> String {
        self.files
            .get(target)
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }
}

/// Create the regular file `path` at `size` (mode 0600 until `finish` sets the recorded one),
/// never through a symlink: `O_EXCL` for a new restore, or reusing what is there for `--delta`.
fn create(path: &Path, size: u64, delta: bool) -> io::Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create(delta)
        .create_new(!delta)
        .truncate(false)
        .mode(0o600)
        .custom_flags(NOFOLLOW)
        .open(path)?;
    f.set_len(size)?;
    Ok(f)
}

/// The most one `pwrite` carries. A 1 MiB write makes the kernel back the page cache with
/// large folios, taken from the high-order free blocks a virtual machine's balloon has handed
/// back to the host, and the first touch of each faults on the host: on this project's
/// machines that made copying into the page cache 40% of a restore's time. 64 KiB writes get
/// small pages, which the host still backs (bench/README.md).
const WRITE_SIZE: usize = 64 << 10;

/// Filesystem blocks assumed for holes: a hole smaller than this never saves space.
const HOLE_BLOCK: u64 = 4096;

/// Write `data` at `offset`, leaving its all-zero blocks (aligned in the file) as holes.
/// Ask the kernel to start writing a large range back now (`sync_file_range` with
/// `SYNC_FILE_RANGE_WRITE` does not wait), so the disk works while the restore decompresses
/// and the final `syncfs` finds little left to write. Advisory: a failure changes nothing.
fn start_writeback(f: &File, offset: u64, len: usize) {
    #[cfg(target_os = "linux")]
    if len >= 256 * 1024 {
        // SAFETY: f is an open descriptor for the duration of the call; the call only
        // schedules writeback of the file's own pages.
        unsafe {
            libc::sync_file_range(
                std::os::fd::AsRawFd::as_raw_fd(f),
                offset as i64,
                len as i64,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
}

fn write_sparse(f: &File, offset: u64, data: &[u8]) -> io::Result<()> {
    let end = offset + data.len() as u64;
    let mut at = offset;
    while at < end {
        let block_end = ((at / HOLE_BLOCK) + 1) * HOLE_BLOCK;
        let next = block_end.min(end);
        // A run of blocks of one kind (all zero, or not).
        let zero = |a: u64, b: u64| {
            data[(a - offset) as usize..(b - offset) as usize]
                .iter()
                .all(|x| *x == 0)
        };
        let kind = zero(at, next);
        let mut run_end = next;
        while run_end < end {
            let n = (run_end + HOLE_BLOCK).min(end);
            if zero(run_end, n) != kind {
                break;
            }
            run_end = n;
        }
        let slice = &data[(at - offset) as usize..(run_end - offset) as usize];
        if !(kind && punch_hole(f, at, slice.len())) {
            for (i, piece) in slice.chunks(WRITE_SIZE).enumerate() {
                f.write_all_at(piece, at + (i * WRITE_SIZE) as u64)?;
            }
        }
        at = run_end;
    }
    Ok(())
}

/// Leave an all-zero range of a restored file as a hole, so sparse files (VM images,
/// database files with holes) come back sparse. The file was sized with `set_len`, so a range
/// never written is already a hole reading as zeros (a file ending in a hole has its length);
/// punching also clears what an older copy held there (`--delta`). False when the filesystem
/// cannot punch holes: then the zeros are written.
fn punch_hole(f: &File, offset: u64, len: usize) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: f is an open descriptor for the duration of the call; fallocate reads no memory.
    let r = unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    r == 0
}
