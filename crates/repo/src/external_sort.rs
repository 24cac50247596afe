//! Sets of fixed-size records too large to hold, built by external sorting: records gather in a
//! buffer of fixed size; a full buffer is sorted and written to a run file; the runs are merged
//! into one ascending stream of distinct records. Garbage collection streams its mark phase
//! through it (format.md, "Condemned packs": the ids every kept backup needs, read once from
//! the manifests, then walked beside the index in the same order), and verify sorts the
//! trailers of every pack to walk them beside the index.

use crate::ids::ChunkId;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::sync::Arc;

/// Chunk ids held in memory before a run is written: 32 MiB.
pub const RUN_IDS: usize = 1 << 20;

/// A record of `LEN` bytes on disk, ordered as in memory.
pub trait Fixed: Ord + Copy {
    const LEN: usize;
    fn put(&self, out: &mut [u8]);
    fn get(bytes: &[u8]) -> Self;
}

impl Fixed for ChunkId {
    const LEN: usize = 32;
    fn put(&self, out: &mut [u8]) {
        out.copy_from_slice(self.as_bytes());
    }
    fn get(bytes: &[u8]) -> Self {
        let mut a = [0u8; 32];
        a.copy_from_slice(bytes);
        ChunkId(a)
    }
}

/// Distinct chunk ids in ascending order, built in bounded memory.
pub type IdSorter = Sorter<ChunkId>;
pub type SortedIds = Sorted<ChunkId>;

#[derive(Debug)]
pub struct Sorter<T> {
    buf: Vec<T>,
    cap: usize,
    dir: Option<tempfile::TempDir>,
    runs: Vec<std::path::PathBuf>,
}

impl<T: Fixed> Sorter<T> {
    /// A sorter holding at most `cap` records in memory.
    pub fn new(cap: usize) -> Sorter<T> {
        Sorter {
            buf: Vec::new(),
            cap: cap.max(1),
            dir: None,
            runs: Vec::new(),
        }
    }

    pub fn push(&mut self, record: T) -> io::Result<()> {
        self.buf.push(record);
        if self.buf.len() >= self.cap {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> io::Result<()> {
        self.buf.sort_unstable();
        self.buf.dedup();
        let dir = match &self.dir {
            Some(d) => d,
            None => self
                .dir
                .insert(tempfile::Builder::new().prefix("cairn-sort-").tempdir()?),
        };
        let path = dir.path().join(format!("run-{}", self.runs.len()));
        let mut w = BufWriter::with_capacity(1 << 20, File::create(&path)?);
        let mut rec = vec![0u8; T::LEN];
        for r in &self.buf {
            r.put(&mut rec);
            w.write_all(&rec)?;
        }
        w.flush()?;
        self.runs.push(path);
        self.buf.clear();
        Ok(())
    }

    /// The distinct records pushed, ascending.
    pub fn finish(mut self) -> io::Result<Sorted<T>> {
        if self.runs.is_empty() {
            self.buf.sort_unstable();
            self.buf.dedup();
            return Sorted::start(Arc::new(std::mem::take(&mut self.buf)), Vec::new(), None);
        }
        if !self.buf.is_empty() {
            self.spill()?;
        }
        self.buf = Vec::new();
        Sorted::start(
            Default::default(),
            std::mem::take(&mut self.runs),
            self.dir.take().map(Arc::new),
        )
    }
}

/// Distinct records in ascending order; `again` walks them once more.
#[derive(Debug)]
pub struct Sorted<T> {
    mem: Arc<Vec<T>>,
    at: usize,
    runs: Vec<std::path::PathBuf>,
    readers: Vec<BufReader<File>>,
    heap: BinaryHeap<Reverse<(T, usize)>>,
    last: Option<T>,
    dir: Option<Arc<tempfile::TempDir>>,
}

impl<T: Fixed> Sorted<T> {
    fn start(
        mem: Arc<Vec<T>>,
        runs: Vec<std::path::PathBuf>,
        dir: Option<Arc<tempfile::TempDir>>,
    ) -> io::Result<Sorted<T>> {
        let mut readers = Vec::new();
        for p in &runs {
            readers.push(BufReader::with_capacity(64 * 1024, File::open(p)?));
        }
        let mut sorted = Sorted {
            mem,
            at: 0,
            runs,
            readers,
            heap: BinaryHeap::new(),
            last: None,
            dir,
        };
        for i in 0..sorted.readers.len() {
            sorted.refill(i)?;
        }
        Ok(sorted)
    }

    /// The same records from the start.
    pub fn again(&self) -> io::Result<Sorted<T>> {
        Sorted::start(self.mem.clone(), self.runs.clone(), self.dir.clone())
    }

    fn refill(&mut self, i: usize) -> io::Result<()> {
        let mut b = [0u8; 256];
        let b = &mut b[..T::LEN];
        match self.readers[i].read_exact(b) {
            Ok(()) => {
                self.heap.push(Reverse((T::get(b), i)));
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl<T: Fixed> Iterator for Sorted<T> {
    type Item = io::Result<T>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.runs.is_empty() {
            let r = self.mem.get(self.at).copied()?;
            self.at += 1;
            return Some(Ok(r));
        }
        loop {
            let Reverse((r, i)) = self.heap.pop()?;
            if let Err(e) = self.refill(i) {
                return Some(Err(e));
            }
            if self.last != Some(r) {
                self.last = Some(r);
                return Some(Ok(r));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn sorted_distinct_whatever_the_run_size(ids in proptest::collection::vec(0u16..500, 0..2000), cap in 1usize..300) {
            let mut s = IdSorter::new(cap);
            let mut s2 = IdSorter::new(cap);
            for i in &ids {
                s.push(ChunkId::of(&i.to_le_bytes())).map_err(|e| TestCaseError::fail(e.to_string()))?;
                s2.push(ChunkId::of(&i.to_le_bytes())).map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            let got: Vec<ChunkId> = s.finish().map_err(|e| TestCaseError::fail(e.to_string()))?
                .collect::<io::Result<_>>().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut want: Vec<ChunkId> = ids.iter().map(|i| ChunkId::of(&i.to_le_bytes())).collect();
            want.sort_unstable();
            want.dedup();
            prop_assert_eq!(&got, &want);
            let ids = s2.finish().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let twice: Vec<ChunkId> = ids.again().map_err(|e| TestCaseError::fail(e.to_string()))?
                .collect::<io::Result<_>>().map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(twice, want);
        }
    }
}
