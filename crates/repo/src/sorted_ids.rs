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
            return Ok(SortedIds {
                mem: std::mem::take(&mut self.buf).into_iter(),
                readers: Vec::new(),
                heap: BinaryHeap::new(),
                last: None,
                _dir: None,
            });
        }
        if !self.buf.is_empty() {
            self.spill()?;
        }
        let mut readers = Vec::new();
        for p in &self.runs {
            readers.push(BufReader::with_capacity(256 * 1024, File::open(p)?));
        }
        let mut ids = SortedIds {
            mem: Vec::new().into_iter(),
            readers,
            heap: BinaryHeap::new(),
            last: None,
            _dir: self.dir.take(),
        };
        for i in 0..ids.readers.len() {
            ids.refill(i)?;
        }
        Ok(ids)
    }
}

/// Distinct chunk ids in ascending order.
#[derive(Debug)]
pub struct SortedIds {
    mem: std::vec::IntoIter<ChunkId>,
    readers: Vec<BufReader<File>>,
    heap: BinaryHeap<Reverse<(ChunkId, usize)>>,
    last: Option<ChunkId>,
    _dir: Option<tempfile::TempDir>,
}

impl SortedIds {
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
        if self.readers.is_empty() {
            return self.mem.next().map(Ok);
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
            for i in &ids {
                s.push(ChunkId::of(&i.to_le_bytes())).map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            let got: Vec<ChunkId> = s.finish().map_err(|e| TestCaseError::fail(e.to_string()))?
                .collect::<io::Result<_>>().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut want: Vec<ChunkId> = ids.iter().map(|i| ChunkId::of(&i.to_le_bytes())).collect();
            want.sort_unstable();
            want.dedup();
            prop_assert_eq!(got, want);
        }
    }
}
