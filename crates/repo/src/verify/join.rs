//! verify's check of the index against the packs: every index record walked beside the sorted
//! trailer entries of every pack, both in (chunk, pack, offset) order, so that a record whose
//! offset or lengths disagree with its pack's trailer (which would pass every other check and
//! then fail the restore) is found without holding either side.

use super::packs::{PackInfo, TrailerRec, io};
use crate::damage::Damage;
use crate::error::Result;
use crate::external_sort::Sorted;
use crate::ids::{ChunkId, PackId};
use crate::index::Location;
use crate::segment_file::{Merged, SegmentFile};
use std::collections::HashMap;

/// Records that disagree with their pack's trailer kept with their message; more are counted.
pub(super) const BAD_RECORDS_KEPT: usize = 10_000;

/// An index record that disagrees with its pack's trailer.
#[derive(Debug, Clone)]
pub(super) struct BadRecord {
    /// The segment's key.
    pub segment: String,
    pub detail: String,
    pub pack: PackId,
    pub loc: Location,
}

/// Index records that disagree with their pack's trailer, by chunk (not yet in `damage`: the
/// caller checks each chunk where the record places it first); and how many more there were
/// than could be kept (those are in `damage`).
#[derive(Debug, Default)]
pub(super) struct BadRecords {
    pub by_chunk: HashMap<ChunkId, BadRecord>,
    pub more: u64,
}

/// Walk every record of `files` beside `trailers`. A record naming a pack that is missing or
/// could not be read is left to the backups' check (its chunks are not usable); one naming a
/// pack whose trailer is lost was checked by salvage. Every other record must match an entry
/// of its pack's trailer exactly; one that does not is returned (past `BAD_RECORDS_KEPT`,
/// only counted and recorded in `damage`).
pub(super) fn check_records(
    files: &[SegmentFile],
    mut trailers: Sorted<TrailerRec>,
    infos: &HashMap<PackId, PackInfo>,
    damage: &mut Damage,
) -> Result<BadRecords> {
    let mut bad = BadRecords::default();
    let refs: Vec<&SegmentFile> = files.iter().collect();
    let mut records = Merged::new(&refs).map_err(io("reading the index"))?;
    let mut next = trailers
        .next()
        .transpose()
        .map_err(io("reading the sorted trailers"))?;
    // The last trailer entry passed over: one of the record's chunk and pack at a smaller
    // offset, when the record's own offset is wrong.
    let mut passed: Option<TrailerRec> = None;
    while let Some(r) = records.next() {
        let (chunk, pack, loc) = r.map_err(io("reading the index"))?;
        let Some(info) = infos.get(&pack) else {
            continue;
        };
        if info.unreadable || info.trailer_lost {
            continue;
        }
        let key = (chunk, pack, loc.offset as u64);
        while let Some(t) = next
            && (t.chunk, t.pack, t.offset) < key
        {
            passed = Some(t);
            next = trailers
                .next()
                .transpose()
                .map_err(io("reading the sorted trailers"))?;
        }
        let same = |t: &TrailerRec| t.chunk == chunk && t.pack == pack;
        let detail = match next.filter(|t| (t.chunk, t.pack, t.offset) == key) {
            Some(t) if t.stored_len == loc.stored_len && t.raw_len == loc.raw_len => continue,
            found => match found.or(passed.filter(same)).or(next.filter(same)) {
                None => format!(
                    "the index places chunk {chunk} in {}, whose trailer does not list it (recorded as damage: the next backup stores the chunk again)",
                    info.key
                ),
                Some(t) => format!(
                    "the index places chunk {chunk} at offset {} ({} stored, {} plain bytes) of {}, but the pack's trailer says offset {} ({} stored, {} plain bytes) (recorded as damage: the next backup stores the chunk again)",
                    loc.offset,
                    loc.stored_len,
                    loc.raw_len,
                    info.key,
                    t.offset,
                    t.stored_len,
                    t.raw_len
                ),
            },
        };
        if bad.by_chunk.len() < BAD_RECORDS_KEPT {
            let segment = files[records.source()].name().to_string();
            bad.by_chunk.insert(
                chunk,
                BadRecord {
                    segment,
                    detail,
                    pack,
                    loc,
                },
            );
        } else {
            damage.chunk(pack, chunk);
            bad.more += 1;
        }
    }
    Ok(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::external_sort::Sorter;
    use crate::index::{Location, Segment};

    fn loc(offset: u32, stored_len: u32) -> Location {
        Location {
            pack: 0,
            offset,
            stored_len,
            raw_len: 100,
        }
    }

    /// Records walked beside trailers sorted in runs of two (so the walk reads merged runs):
    /// a record that matches passes, one at the wrong offset, with the wrong length, or absent
    /// from its trailer is damage with a message naming the trailer's own place when there is
    /// one; records of a missing pack or one whose trailer is lost are not judged here.
    #[test]
    fn each_disagreeing_record_is_found_in_spilled_runs() -> Result<()> {
        let dir = tempfile::tempdir().map_err(io("tempdir"))?;
        let (p, lost, missing) = (PackId::of(b"p"), PackId::of(b"lost"), PackId::of(b"gone"));
        let c: Vec<ChunkId> = (0u8..8).map(|i| ChunkId::of(&[i])).collect();
        let mut trailers = Sorter::new(2);
        for (i, id) in c.iter().enumerate().take(4) {
            trailers
                .push(TrailerRec {
                    chunk: *id,
                    pack: p,
                    offset: i as u64 * 10,
                    stored_len: 10,
                    raw_len: 100,
                })
                .map_err(io("push"))?;
        }
        // c0 right, c1 at the wrong offset, c2 with the wrong length, c3 not indexed,
        // c4 not in the trailer, c5 in a lost-trailer pack, c6 in a missing pack.
        let mut seg = Segment {
            packs: vec![p],
            entries: vec![
                (c[0], loc(0, 10)),
                (c[1], loc(11, 10)),
                (c[2], loc(20, 9)),
                (c[4], loc(40, 10)),
            ],
        };
        seg.entries.sort_by_key(|e| e.0);
        let mut other = Segment {
            packs: vec![lost, missing],
            entries: vec![
                (c[5], loc(0, 10)),
                (
                    c[6],
                    Location {
                        pack: 1,
                        ..loc(0, 10)
                    },
                ),
            ],
        };
        other.entries.sort_by_key(|e| e.0);
        let mut files = Vec::new();
        for (name, s) in [("a", &seg), ("b", &other)] {
            let path = dir.path().join(name);
            std::fs::write(&path, s.encode()).map_err(io("write"))?;
            files.push(SegmentFile::open(name, &path, None)?);
        }
        let infos: HashMap<PackId, PackInfo> = [
            (
                p,
                PackInfo {
                    key: "pack/p".into(),
                    ..Default::default()
                },
            ),
            (
                lost,
                PackInfo {
                    key: "pack/lost".into(),
                    trailer_lost: true,
                    ..Default::default()
                },
            ),
        ]
        .into_iter()
        .collect();
        let mut damage = Damage::default();
        let sorted = trailers.finish().map_err(io("finish"))?;
        let bad = check_records(&files, sorted, &infos, &mut damage)?;
        let mut found: Vec<&ChunkId> = bad.by_chunk.keys().collect();
        found.sort();
        let mut want = vec![&c[1], &c[2], &c[4]];
        want.sort();
        assert_eq!(found, want);
        assert!(
            bad.by_chunk[&c[1]]
                .detail
                .contains("trailer says offset 10"),
            "{:?}",
            bad.by_chunk[&c[1]]
        );
        assert!(
            bad.by_chunk[&c[2]].detail.contains("(9 stored"),
            "{:?}",
            bad.by_chunk[&c[2]]
        );
        assert!(bad.by_chunk[&c[4]].detail.contains("does not list it"));
        assert_eq!(bad.by_chunk[&c[4]].segment, "a");
        assert_eq!(bad.by_chunk[&c[1]].loc.offset, 11);
        // Kept records are left to the caller to check in place: nothing is in `damage`.
        for (pack, id) in [
            (&p, &c[0]),
            (&p, &c[1]),
            (&p, &c[3]),
            (&lost, &c[5]),
            (&missing, &c[6]),
        ] {
            assert!(damage.usable(pack, id));
        }
        Ok(())
    }
}
