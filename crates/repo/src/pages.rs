//! Paged content (manifest version 3, `docs/format.md`, "Manifest version 3: paged content"):
//! a file of fixed-size pages updated in place (PostgreSQL relation files) is stored in units
//! of 128 pages. A unit is one base chunk, compressed and content-addressed whole, plus an
//! optional delta chunk of the pages that differ from the base. The unit of compression,
//! storage and indexing is thus 1 MiB for 8 KiB pages (an index record and about 40 bytes of
//! manifest per MiB, whatever the cluster's size), while an incremental backup stores only the
//! pages that changed.
//!
//! This module holds the unit's rules in one place: the checks a reader applies, how a backup
//! plans a unit from the bytes it read and the parent's unit, and how a restore writes a base
//! or a delta where it belongs without either overwriting the other.

use crate::manifest::ChunkRef;
use serde::{Deserialize, Serialize};

/// Pages per unit.
pub const UNIT_PAGES: u32 = 128;
/// A delta of more pages than this makes the unit a new base (a quarter of the unit).
pub const REBASE_PAGES: u32 = UNIT_PAGES / 4;

/// A set of a unit's pages: bit `i % 64` of word `i / 64`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct PageSet(pub [u64; 2]);

impl PageSet {
    pub fn insert(&mut self, i: u32) {
        self.0[(i / 64) as usize & 1] |= 1 << (i % 64);
    }
    pub fn contains(&self, i: u32) -> bool {
        i < UNIT_PAGES && self.0[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
    pub fn len(&self) -> u32 {
        self.0[0].count_ones() + self.0[1].count_ones()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn union(self, o: PageSet) -> PageSet {
        PageSet([self.0[0] | o.0[0], self.0[1] | o.0[1]])
    }
    /// The set without pages at or past `n`.
    pub fn below(self, n: u32) -> PageSet {
        let mut out = PageSet::default();
        for i in self.iter().filter(|&i| i < n) {
            out.insert(i);
        }
        out
    }
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..UNIT_PAGES).filter(|&i| self.contains(i))
    }
    /// The highest page in the set.
    pub fn last(&self) -> Option<u32> {
        if self.0[1] != 0 {
            Some(127 - self.0[1].leading_zeros())
        } else if self.0[0] != 0 {
            Some(63 - self.0[0].leading_zeros())
        } else {
            None
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Delta {
    pub pages: PageSet,
    pub chunk: ChunkRef,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Unit {
    pub len: u32,
    pub base: ChunkRef,
    pub delta: Option<Delta>,
}

impl Unit {
    /// The chunks the unit needs.
    pub fn chunks(&self) -> impl Iterator<Item = &ChunkRef> {
        std::iter::once(&self.base).chain(self.delta.as_ref().map(|d| &d.chunk))
    }
}

/// Page `i`'s span within a unit of `len` bytes.
fn span(page: u32, len: u32, i: u32) -> (u32, u32) {
    let start = i * page;
    (start, (start + page).min(len))
}

/// Whether `page` is a page size the format allows.
pub fn valid_page_size(page: u32) -> bool {
    page.is_power_of_two() && (512..=32768).contains(&page)
}

/// The rules of `docs/format.md` for one unit; the reason when it breaks one.
pub fn check_unit(page: u32, u: &Unit) -> Result<(), String> {
    let max = page * UNIT_PAGES;
    if u.len == 0 || u.len > max {
        return Err(format!("a unit of {} bytes (1 to {max} allowed)", u.len));
    }
    if u.base.len > max {
        return Err(format!(
            "a unit's base chunk of {} bytes (at most {max} allowed)",
            u.base.len
        ));
    }
    let pages = u.len.div_ceil(page);
    let set = u.delta.map(|d| d.pages).unwrap_or_default();
    if let Some(d) = &u.delta {
        if d.pages.is_empty() {
            return Err("a unit's delta names no page".into());
        }
        if let Some(last) = d.pages.last().filter(|&l| l >= pages) {
            return Err(format!(
                "a unit's delta names page {last} of a {pages}-page unit"
            ));
        }
        let want: u32 = d
            .pages
            .iter()
            .map(|i| {
                let (s, e) = span(page, u.len, i);
                e - s
            })
            .sum();
        if d.chunk.len != want {
            return Err(format!(
                "a unit's delta chunk has {} bytes for pages of {want} bytes",
                d.chunk.len
            ));
        }
    }
    if let Some(i) = (0..pages).find(|&i| !set.contains(i) && span(page, u.len, i).1 > u.base.len) {
        return Err(format!(
            "page {i} of a unit is in neither its base ({} bytes) nor its delta",
            u.base.len
        ));
    }
    Ok(())
}

/// The rules of `docs/format.md` for a file's units.
pub fn check_units(page: u32, units: &[Unit], size: u64) -> Result<(), String> {
    if !valid_page_size(page) {
        return Err(format!(
            "page size {page} (a power of two from 512 to 32768)"
        ));
    }
    let full = page * UNIT_PAGES;
    let mut total = 0u64;
    for (k, u) in units.iter().enumerate() {
        check_unit(page, u).map_err(|why| format!("unit {k}: {why}"))?;
        if k + 1 < units.len() && u.len != full {
            return Err(format!(
                "unit {k} of {} bytes is short and not the last",
                u.len
            ));
        }
        total += u.len as u64;
    }
    if total != size {
        return Err(format!("{total} bytes of units for a {size}-byte file"));
    }
    Ok(())
}

/// What an engine knows about a paged file: whether a page may differ from what the parent
/// backup holds for it. Only asked about pages the parent's unit has.
pub trait PageProbe: Send + Sync + std::fmt::Debug {
    fn may_have_changed(&self, page: &[u8]) -> bool;
}

/// A unit as a backup planned it from the bytes it read.
#[derive(Debug)]
pub enum Planned {
    /// The parent's unit, unchanged.
    Keep(Unit),
    /// A new base: these bytes.
    Base(Vec<u8>),
    /// The parent's base with this delta (the set's pages, in order).
    Delta {
        len: u32,
        base: ChunkRef,
        pages: PageSet,
        bytes: Vec<u8>,
    },
    /// The parent's base alone, cut to `len` (the file shrank and no page changed).
    Cut { len: u32, base: ChunkRef },
}

/// Plan one unit of `data` (read now) against the parent's unit `prior`. `probe` is None when
/// the pages cannot be told apart (not a main fork, or a parent of another timeline): the unit
/// is then a new base. `usable`: whether the repository still holds a chunk.
pub fn plan_unit(
    page: u32,
    data: Vec<u8>,
    prior: Option<&Unit>,
    probe: Option<&dyn PageProbe>,
    usable: &dyn Fn(&ChunkRef) -> bool,
) -> Planned {
    let (Some(p), Some(probe)) = (prior, probe) else {
        return Planned::Base(data);
    };
    let len = data.len() as u32;
    let whole = |n: u32| n.is_multiple_of(page);
    if !whole(len)
        || !whole(p.len)
        || len > page * UNIT_PAGES
        || check_unit(page, p).is_err()
        || !p.chunks().all(usable)
    {
        return Planned::Base(data);
    }
    let (n, prior_n) = (len / page, p.len / page);
    let mut changed = PageSet::default();
    for i in 0..n {
        let (s, e) = span(page, len, i);
        if i >= prior_n || probe.may_have_changed(&data[s as usize..e as usize]) {
            changed.insert(i);
        }
    }
    if changed.is_empty() && n == prior_n {
        return Planned::Keep(*p);
    }
    let set = p
        .delta
        .map(|d| d.pages)
        .unwrap_or_default()
        .below(n)
        .union(changed);
    if set.len() > REBASE_PAGES {
        return Planned::Base(data);
    }
    if set.is_empty() {
        return Planned::Cut { len, base: p.base };
    }
    let mut bytes = Vec::with_capacity((set.len() * page) as usize);
    for i in set.iter() {
        let (s, e) = span(page, len, i);
        bytes.extend_from_slice(&data[s as usize..e as usize]);
    }
    Planned::Delta {
        len,
        base: p.base,
        pages: set,
        bytes,
    }
}

/// How a restore writes a chunk: whole, or as a unit's base or delta.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Shape {
    Whole,
    /// A unit's base: its first `len` bytes, except the pages in `skip` (the delta's).
    Base {
        page: u32,
        len: u32,
        skip: PageSet,
    },
    /// A unit's delta: the pages in `pages`, back to back, each written at its place.
    Delta {
        page: u32,
        len: u32,
        pages: PageSet,
    },
}

impl Shape {
    /// The (offset within the unit, range of `plain`) pieces to write, in order.
    pub fn pieces(&self, plain_len: usize) -> Vec<(u64, std::ops::Range<usize>)> {
        match *self {
            Shape::Whole => vec![(0, 0..plain_len)],
            Shape::Base { page, len, skip } => {
                let end = (len as usize).min(plain_len);
                let mut out: Vec<(u64, std::ops::Range<usize>)> = Vec::new();
                for i in 0..len.div_ceil(page) {
                    if skip.contains(i) {
                        continue;
                    }
                    let (s, e) = span(page, len, i);
                    let (s, e) = (s as usize, (e as usize).min(end));
                    if s >= e {
                        continue;
                    }
                    match out.last_mut() {
                        Some((_, r)) if r.end == s => r.end = e,
                        _ => out.push((s as u64, s..e)),
                    }
                }
                out
            }
            Shape::Delta { page, len, pages } => {
                let mut out: Vec<(u64, std::ops::Range<usize>)> = Vec::new();
                let mut at = 0usize;
                for i in pages.iter() {
                    let (s, e) = span(page, len, i);
                    let n = (e - s) as usize;
                    let end = (at + n).min(plain_len);
                    match out.last_mut() {
                        Some((off, r)) if *off + r.len() as u64 == s as u64 && r.end == at => {
                            r.end = end
                        }
                        _ => out.push((s as u64, at..end)),
                    }
                    at += n;
                }
                out
            }
        }
    }

    /// Bytes written.
    pub fn written(&self, plain_len: usize) -> u64 {
        self.pieces(plain_len)
            .iter()
            .map(|(_, r)| r.len() as u64)
            .sum()
    }
}

/// The chunks a file of `units` needs, each with its offset in the file and shape.
pub fn placements(page: u32, units: &[Unit]) -> Vec<(u64, ChunkRef, Shape)> {
    let mut out = Vec::new();
    let mut offset = 0u64;
    for u in units {
        let skip = u.delta.map(|d| d.pages).unwrap_or_default();
        let base = if u.delta.is_none() && u.base.len == u.len {
            Shape::Whole
        } else {
            Shape::Base {
                page,
                len: u.len,
                skip,
            }
        };
        out.push((offset, u.base, base));
        if let Some(d) = u.delta {
            out.push((
                offset,
                d.chunk,
                Shape::Delta {
                    page,
                    len: u.len,
                    pages: d.pages,
                },
            ));
        }
        offset += u.len as u64;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ChunkId;
    use proptest::prelude::*;

    const P: u32 = 512;

    fn cref(b: &[u8]) -> ChunkRef {
        ChunkRef {
            id: ChunkId::of(b),
            len: b.len() as u32,
        }
    }

    /// Pages whose first byte is their "LSN": changed when above the parent's start.
    #[derive(Debug)]
    struct FirstByte(u8);
    impl PageProbe for FirstByte {
        fn may_have_changed(&self, page: &[u8]) -> bool {
            page[0] > self.0
        }
    }

    /// Build a unit from `plan` the way the backup does, keeping chunks in `store`.
    fn store_plan(
        planned: Planned,
        store: &mut std::collections::HashMap<ChunkId, Vec<u8>>,
    ) -> Unit {
        let mut put = |b: Vec<u8>| {
            let r = cref(&b);
            store.insert(r.id, b);
            r
        };
        match planned {
            Planned::Keep(u) => u,
            Planned::Base(b) => {
                let len = b.len() as u32;
                Unit {
                    len,
                    base: put(b),
                    delta: None,
                }
            }
            Planned::Delta {
                len,
                base,
                pages,
                bytes,
            } => Unit {
                len,
                base,
                delta: Some(Delta {
                    pages,
                    chunk: put(bytes),
                }),
            },
            Planned::Cut { len, base } => Unit {
                len,
                base,
                delta: None,
            },
        }
    }

    /// A restore of `u`: every placement written into a buffer in the given order.
    fn restore(
        u: &Unit,
        store: &std::collections::HashMap<ChunkId, Vec<u8>>,
        reverse: bool,
    ) -> Vec<u8> {
        let mut out = vec![0xEEu8; u.len as usize];
        let mut ps = placements(P, std::slice::from_ref(u));
        if reverse {
            ps.reverse();
        }
        for (off, c, shape) in ps {
            let plain = &store[&c.id];
            for (at, r) in shape.pieces(plain.len()) {
                let at = (off + at) as usize;
                out[at..at + r.len()].copy_from_slice(&plain[r]);
            }
        }
        out
    }

    proptest! {
        /// Any sequence of page edits, growths and truncations, planned backup after backup
        /// against the previous unit, restores the bytes read, in either order of writes.
        #[test]
        fn planned_units_restore_what_was_read(
            steps in prop::collection::vec(
                (prop::collection::vec((0u32..128, any::<u8>()), 0..40), 1u32..=128),
                1..8,
            )
        ) {
            let mut store = std::collections::HashMap::new();
            let mut data = vec![1u8; (P * 64) as usize];
            let mut prior: Option<Unit> = None;
            for (t, (edits, pages)) in steps.into_iter().enumerate() {
                // Backup t starts after LSN 10 * t; edits now are logged at 10 * (t + 1).
                let lsn = 10 * (t as u8 + 1);
                data.resize((pages * P) as usize, 2);
                for (i, v) in edits {
                    if i < pages {
                        let s = (i * P) as usize;
                        data[s] = lsn;
                        data[s + 1] = v;
                    }
                }
                let probe = FirstByte(10 * t as u8);
                let planned = plan_unit(P, data.clone(), prior.as_ref(), Some(&probe), &|_| true);
                let u = store_plan(planned, &mut store);
                prop_assert!(check_unit(P, &u).is_ok(), "{:?}", check_unit(P, &u));
                prop_assert_eq!(&restore(&u, &store, false), &data);
                prop_assert_eq!(&restore(&u, &store, true), &data);
                if let Some(d) = u.delta {
                    prop_assert!(d.pages.len() <= REBASE_PAGES);
                }
                prior = Some(u);
            }
        }
    }

    #[test]
    fn an_unchanged_unit_keeps_the_parents_and_a_missing_chunk_makes_a_new_base() {
        let data = vec![3u8; (P * 10) as usize];
        let mut store = std::collections::HashMap::new();
        let u = store_plan(
            plan_unit(P, data.clone(), None, Some(&FirstByte(5)), &|_| true),
            &mut store,
        );
        assert!(matches!(
            plan_unit(P, data.clone(), Some(&u), Some(&FirstByte(5)), &|_| true),
            Planned::Keep(k) if k == u
        ));
        assert!(matches!(
            plan_unit(P, data.clone(), Some(&u), Some(&FirstByte(5)), &|_| false),
            Planned::Base(_)
        ));
        assert!(matches!(
            plan_unit(P, data, Some(&u), None, &|_| true),
            Planned::Base(_)
        ));
    }

    #[test]
    fn crafted_units_are_refused() {
        let base = cref(&[0u8; 1024]);
        let ok = Unit {
            len: 1024,
            base,
            delta: None,
        };
        assert!(check_unit(P, &ok).is_ok());
        let mut set = PageSet::default();
        set.insert(2);
        let cases = [
            Unit { len: 0, ..ok },
            Unit {
                len: P * UNIT_PAGES + 1,
                ..ok
            },
            // Grows past the base without a delta.
            Unit { len: 1536, ..ok },
            // A delta naming a page past the end.
            Unit {
                delta: Some(Delta {
                    pages: set,
                    chunk: cref(&[0u8; 512]),
                }),
                ..ok
            },
            // A delta of the wrong length.
            Unit {
                len: 1536,
                delta: Some(Delta {
                    pages: set,
                    chunk: cref(&[0u8; 100]),
                }),
                ..ok
            },
            // An empty delta.
            Unit {
                delta: Some(Delta {
                    pages: PageSet::default(),
                    chunk: cref(&[]),
                }),
                ..ok
            },
        ];
        for c in cases {
            assert!(check_unit(P, &c).is_err(), "{c:?} was accepted");
        }
        assert!(check_units(P, &[Unit { len: 512, ..ok }, ok], 1536).is_err());
        assert!(check_units(1000, &[ok], 1024).is_err());
        assert!(check_units(P, &[ok], 1023).is_err());
    }
}
