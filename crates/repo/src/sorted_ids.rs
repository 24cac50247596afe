//! A set of chunk ids too large to hold, built by external sorting: ids gather in a buffer of
//! fixed size; a full buffer is sorted and written to a run file; the runs are merged into one
//! ascending stream of distinct ids. Garbage collection streams its mark phase through it
//! (format.md, "Condemned packs"): the ids every kept backup needs, read once from the
//! manifests, then walked beside the index in the same order.

use crate::ids::ChunkId;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};

/// Ids held in memory before a run is written: 32 MiB.
pub const RUN_IDS: usize = 1 << 20;

#[derive(Debug)]
pub struct IdSorter {
    buf: Vec<ChunkId>,
    cap: usize,
    dir: Option<tempfile::TempDir>,
    runs: Vec<std::path::PathBuf>,
}

impl IdSorter {
    pub fn new(cap: usize) -> IdSorter {
        IdSorter {
            buf: Vec::new(),
            cap: cap.max(1),
            dir: None,
            runs: Vec::new(),
        }
    }

    pub fn push(&mut self, id: ChunkId) -> io::Result<()> {
        self.buf.push(id);
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
                .insert(tempfile::Builder::new().prefix("cairn-gc-").tempdir()?),
        };
        let path = dir.path().join(format!("run-{}", self.runs.len()));
        let mut w = BufWriter::with_capacity(1 << 20, File::create(&path)?);
        for id in &self.buf {
            w.write_all(id.as_bytes())?;
        }
        w.flush()?;
        self.runs.push(path);
        self.buf.clear();
        Ok(())
    }

    /// The distinct ids pushed, ascending.
    pub fn finish(mut self) -> io::Result<SortedIds> {
        if self.runs.is_empty() {
            self.buf.sort_unstable();
            self.buf.dedup();
            return SortedIds::start(
                std::sync::Arc::new(std::mem::take(&mut self.buf)),
                Vec::new(),
                None,
            );
        }
        if !self.buf.is_empty() {
            self.spill()?;
        }
        SortedIds::start(
            Default::default(),
            std::mem::take(&mut self.runs),
            self.dir.take().map(std::sync::Arc::new),
        )
    }
}

/// Distinct chunk ids in ascending order; `again` walks them once more.
#[derive(Debug)]
pub struct SortedIds {
    mem: std::sync::Arc<Vec<ChunkId>>,
    at: usize,
    runs: Vec<std::path::PathBuf>,
    readers: Vec<BufReader<File>>,
    heap: BinaryHeap<Reverse<(ChunkId, usize)>>,
    last: Option<ChunkId>,
    dir: Option<std::sync::Arc<tempfile::TempDir>>,
}

impl SortedIds {
    fn start(
        mem: std::sync::Arc<Vec<ChunkId>>,
        runs: Vec<std::path::PathBuf>,
        dir: Option<std::sync::Arc<tempfile::TempDir>>,
    ) -> io::Result<SortedIds> {
        let mut readers = Vec::new();
        for p in &runs {
            readers.push(BufReader::with_capacity(256 * 1024, File::open(p)?));
        }
        let mut ids = SortedIds {
            mem,
            at: 0,
            runs,
            readers,
            heap: BinaryHeap::new(),
            last: None,
            dir,
        };
        for i in 0..ids.readers.len() {
            ids.refill(i)?;
        }
        Ok(ids)
    }

    /// The same ids from the start.
    pub fn again(&self) -> io::Result<SortedIds> {
        SortedIds::start(self.mem.clone(), self.runs.clone(), self.dir.clone())
    }

    fn refill(&mut self, i: usize) -> io::Result<()> {
        let mut b = [0u8; 32];
        match self.readers[i].read_exact(&mut b) {
            Ok(()) => {
                self.heap.push(Reverse((ChunkId(b), i)));
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Iterator for SortedIds {
    type Item = io::Result<ChunkId>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.runs.is_empty() {
            let id = self.mem.get(self.at).copied()?;
            self.at += 1;
            return Some(Ok(id));
        }
        loop {
            let Reverse((id, i)) = self.heap.pop()?;
            if let Err(e) = self.refill(i) {
                return Some(Err(e));
            }
            if self.last != Some(id) {
                self.last = Some(id);
                return Some(Ok(id));
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
