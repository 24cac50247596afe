//! verify's reading of packs: every pack read whole once and checked (header, trailer, every
//! chunk, name), its trailer entries handed on sorted by chunk id so the index can be walked
//! beside them; a pack whose trailer cannot be read is salvaged where the index places chunks
//! in it. What stays in memory per pack is its summary, never its chunk list.

use super::{Problems, VerifyReport};
use crate::damage::Damage;
use crate::error::{Error, Result};
use crate::external_sort::{Fixed, Sorter};
use crate::ids::{ChunkId, PackId};
use crate::index::Location;
use crate::pack;
use crate::repository::Stanza;
use crate::restore;
use crate::segment_file::{Merged, SegmentFile};
use std::collections::{HashMap, HashSet};

/// Trailer entries held in memory before a sorted run is written (80 bytes each: 20 MiB).
const TRAILER_RUN: usize = 1 << 18;

/// Index records of packs whose trailer is lost, collected per pass to be checked in place
/// (48 bytes and more each); packs are taken a batch at a time.
const SALVAGE_RECORDS: usize = 1 << 20;
const SALVAGE_PACKS: usize = 32;

/// What reading one pack found.
#[derive(Debug, Default)]
pub(super) struct PackInfo {
    pub key: String,
    pub damage: Option<String>,
    /// The pack could not be fetched (a storage error, not its bytes): its damage is not
    /// recorded in the damage register, since the next read may well succeed.
    pub unreadable: bool,
    /// Its header or trailer cannot be read: its chunks are checked where the index places
    /// them (`salvage`).
    pub trailer_lost: bool,
    /// Chunks it should hold that fail their check: those its trailer lists, or (trailer
    /// lost) those the index places in it.
    pub bad: Vec<ChunkId>,
    /// Whether every chunk the index places in it was checked (false: too many to check,
    /// the whole pack counts as damaged).
    pub salvaged_all: bool,
}

/// One trailer entry, ordered by chunk, pack and offset: the order in which the index's
/// records are merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct TrailerRec {
    pub chunk: ChunkId,
    pub pack: PackId,
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
}

impl Fixed for TrailerRec {
    const LEN: usize = 80;
    fn put(&self, out: &mut [u8]) {
        out[..32].copy_from_slice(self.chunk.as_bytes());
        out[32..64].copy_from_slice(self.pack.as_bytes());
        out[64..72].copy_from_slice(&self.offset.to_le_bytes());
        out[72..76].copy_from_slice(&self.stored_len.to_le_bytes());
        out[76..80].copy_from_slice(&self.raw_len.to_le_bytes());
    }
    fn get(b: &[u8]) -> Self {
        let mut chunk = [0u8; 32];
        chunk.copy_from_slice(&b[..32]);
        let mut pack = [0u8; 32];
        pack.copy_from_slice(&b[32..64]);
        TrailerRec {
            chunk: ChunkId(chunk),
            pack: PackId(pack),
            offset: u64::from_le_bytes(crate::codec::le8(&b[64..72])),
            stored_len: u32::from_le_bytes(crate::codec::le4(&b[72..76])),
            raw_len: u32::from_le_bytes(crate::codec::le4(&b[76..80])),
        }
    }
}

pub(super) fn io(what: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |source| Error::Io {
        what: what.to_string(),
        source,
    }
}

/// One pack as checked: its trailer entries, which of them failed, and what is wrong.
struct Checked {
    entries: Vec<pack::PackEntry>,
    bad: Vec<ChunkId>,
    damage: Option<String>,
    trailer_lost: bool,
}

/// Read and check every pack, `process_max` at a time. Returns each pack's summary and the
/// trailer entries of all, to be sorted.
pub(super) async fn read_packs(
    stanza: &Stanza,
    process_max: usize,
    report: &mut VerifyReport,
    problems: &mut Problems,
) -> Result<(HashMap<PackId, PackInfo>, Sorter<TrailerRec>)> {
    let store = stanza.store().clone();
    let pack_objects = store.list(&stanza.pack_prefix()?).await?;
    let mut tasks = tokio::task::JoinSet::new();
    let mut infos = HashMap::new();
    let mut trailers = Sorter::new(TRAILER_RUN);
    let mut done = |r: std::result::Result<_, tokio::task::JoinError>,
                    report: &mut VerifyReport,
                    problems: &mut Problems|
     -> Result<()> {
        let (key, id, checked, unreadable, len): (String, Option<PackId>, Checked, bool, u64) =
            r.map_err(|e| Error::Invalid(format!("verify task failed: {e}")))?;
        report.packs += 1;
        report.bytes += len;
        let Some(id) = id else {
            if let Some(d) = &checked.damage {
                problems.add(&key, d.clone(), None);
            }
            return Ok(());
        };
        report.chunks += checked.entries.len() - checked.bad.len();
        for e in &checked.entries {
            trailers
                .push(TrailerRec {
                    chunk: e.id,
                    pack: id,
                    offset: e.offset,
                    stored_len: e.stored_len,
                    raw_len: e.raw_len,
                })
                .map_err(io("sorting the packs' trailers"))?;
        }
        // Chunks whose trailer entry fails go into `damage` once the index has been read
        // (`settle_bad_entries`): the trailer may be what is wrong.
        infos.insert(
            id,
            PackInfo {
                key,
                damage: checked.damage,
                unreadable,
                trailer_lost: checked.trailer_lost,
                bad: checked.bad,
                salvaged_all: false,
            },
        );
        Ok(())
    };
    for meta in pack_objects {
        // At most `process_max` packs are read and held at once.
        while tasks.len() >= process_max.max(1) {
            if let Some(r) = tasks.join_next().await {
                done(r, report, problems)?;
            }
        }
        let store = store.clone();
        let stanza2 = stanza.clone();
        tasks.spawn(async move {
            let key = meta.key.to_string();
            let failed = |d: String| Checked {
                entries: Vec::new(),
                bad: Vec::new(),
                damage: Some(d),
                trailer_lost: false,
            };
            let Some(id) = crate::keys::parse_pack(&meta.key) else {
                let why = match PackId::parse(meta.key.name()) {
                    Ok(id) => format!(
                        "a pack in the wrong directory: restore looks for pack {id} only at {}; move it there",
                        stanza2.pack_key(&id).map(|k| k.to_string()).unwrap_or_default()
                    ),
                    Err(_) => "not named by a pack id".into(),
                };
                return (key, None, failed(why), false, 0);
            };
            let bytes = match store.get(&meta.key, None).await {
                Ok(b) => b,
                Err(e) => return (key, Some(id), failed(e.to_string()), true, 0),
            };
            let len = bytes.len() as u64;
            let k2 = key.clone();
            let checked = tokio::task::spawn_blocking(move || check_pack(&k2, &id, &bytes))
                .await
                .unwrap_or_else(|e| failed(format!("check failed: {e}")));
            (key, Some(id), checked, false, len)
        });
    }
    while let Some(r) = tasks.join_next().await {
        done(r, report, problems)?;
    }
    Ok((infos, trailers))
}

/// Check a pack: trailer first, then every chunk on its own (CRC, decompression, BLAKE3), so
/// one damaged chunk does not condemn its neighbours; then the pack's own name.
fn check_pack(object: &str, id: &PackId, bytes: &[u8]) -> Checked {
    let n = bytes.len();
    let entries = (|| {
        if n < pack::PACK_HEADER_LEN + pack::PACK_FOOTER_LEN || &bytes[..8] != pack::PACK_MAGIC {
            return Err(Error::corrupt(object, "not a pack: bad magic or truncated"));
        }
        let (at, _) = pack::parse_footer(object, &bytes[n - pack::PACK_FOOTER_LEN..], n as u64)?;
        pack::parse_trailer(object, &bytes[at as usize..], at)
    })();
    let entries = match entries {
        Ok(e) => e,
        Err(e) => {
            return Checked {
                entries: Vec::new(),
                bad: Vec::new(),
                damage: Some(e.to_string()),
                trailer_lost: true,
            };
        }
    };
    let mut bad = Vec::new();
    let mut first = None;
    for e in &entries {
        let stored = &bytes[e.offset as usize..(e.offset + e.stored_len as u64) as usize];
        if let Err(err) = pack::open_blob(object, e, stored) {
            bad.push(e.id);
            first.get_or_insert(err.to_string());
        }
    }
    let damage = if let Some(first) = first {
        Some(format!("{} damaged chunk(s), first: {first}", bad.len()))
    } else if PackId::of(bytes) != *id {
        Some(format!(
            "{object} is damaged: content hash does not match its name"
        ))
    } else {
        None
    };
    Checked {
        entries,
        bad,
        damage,
        trailer_lost: false,
    }
}

/// A pack whose trailer cannot be read still holds chunks that restore reaches through the
/// index: check each where the index places it (length, decompression, BLAKE3), so that a
/// damaged trailer alone does not make intact chunks unusable. The intact ones join the
/// trailer entries (at the place the index gives); a pack none of whose chunks pass, or one
/// with more records than can be checked at once, is unusable whole. Packs are taken a
/// batch at a time, each batch one walk of the index.
pub(super) async fn salvage(
    stanza: &Stanza,
    files: &[SegmentFile],
    infos: &mut HashMap<PackId, PackInfo>,
    damage: &mut Damage,
    report: &mut VerifyReport,
    trailers: &mut Sorter<TrailerRec>,
) -> Result<()> {
    let mut lost: Vec<PackId> = infos
        .iter()
        .filter(|(_, i)| i.trailer_lost)
        .map(|(p, _)| *p)
        .collect();
    lost.sort();
    let refs: Vec<&SegmentFile> = files.iter().collect();
    for batch in lost.chunks(SALVAGE_PACKS) {
        let wanted: HashSet<PackId> = batch.iter().copied().collect();
        let mut records: HashMap<PackId, Vec<(ChunkId, Location)>> = HashMap::new();
        let mut held = 0usize;
        let mut overflow = false;
        for r in Merged::new(&refs).map_err(io("reading the index"))? {
            let (chunk, pack, loc) = r.map_err(io("reading the index"))?;
            if !wanted.contains(&pack) {
                continue;
            }
            held += 1;
            if held > SALVAGE_RECORDS {
                overflow = true;
                break;
            }
            records.entry(pack).or_default().push((chunk, loc));
        }
        for pack in batch {
            let Some(info) = infos.get_mut(pack) else {
                continue;
            };
            let recs = if overflow {
                Vec::new()
            } else {
                records.remove(pack).unwrap_or_default()
            };
            let bytes = if recs.is_empty() {
                None
            } else {
                stanza.store().get(&stanza.pack_key(pack)?, None).await.ok()
            };
            let mut good = 0u64;
            if let Some(bytes) = &bytes {
                for (chunk, loc) in &recs {
                    let (start, end) = (
                        loc.offset as usize,
                        loc.offset as usize + loc.stored_len as usize,
                    );
                    let intact = bytes.get(start..end).is_some_and(|stored| {
                        restore::open_chunk(&info.key, chunk, loc, stored).is_ok()
                    });
                    if intact {
                        good += 1;
                        trailers
                            .push(TrailerRec {
                                chunk: *chunk,
                                pack: *pack,
                                offset: loc.offset as u64,
                                stored_len: loc.stored_len,
                                raw_len: loc.raw_len,
                            })
                            .map_err(io("sorting the packs' trailers"))?;
                    } else {
                        info.bad.push(*chunk);
                    }
                }
                info.salvaged_all = !overflow;
            }
            if good == 0 {
                damage.whole_pack(*pack);
                continue;
            }
            report.chunks += good as usize;
            for chunk in &info.bad {
                damage.chunk(*pack, *chunk);
            }
            if let Some(d) = &mut info.damage {
                d.push_str(&format!(
                    " ({good} chunk(s) the index places in it are intact and stay usable)"
                ));
            }
        }
    }
    Ok(())
}

/// The trailer entries of present packs whose chunk failed its check: each is checked again
/// where the index places it in that pack. A chunk intact there is usable, and the pack's
/// trailer is what is damaged (defect of 2026-11-24: a trailer entry moved by one byte made
/// verify register an intact chunk as damaged, and restore then refused it). The others go
/// into `damage`.
pub(super) async fn settle_bad_entries(
    stanza: &Stanza,
    files: &[SegmentFile],
    infos: &mut HashMap<PackId, PackInfo>,
    damage: &mut Damage,
) -> Result<()> {
    for (pack, info) in infos.iter_mut() {
        if info.unreadable || info.trailer_lost || info.bad.is_empty() {
            continue;
        }
        let mut still_bad = Vec::new();
        let mut intact = 0usize;
        for chunk in std::mem::take(&mut info.bad) {
            let place = files.iter().find_map(|f| match f.get(&chunk) {
                Ok(Some((p, loc))) if p == *pack => Some(loc),
                _ => None,
            });
            let ok = match place {
                Some(loc) => intact_at(stanza, pack, &chunk, &loc).await?,
                None => false,
            };
            if ok {
                intact += 1;
            } else {
                damage.chunk(*pack, chunk);
                still_bad.push(chunk);
            }
        }
        if intact > 0 && still_bad.is_empty() {
            info.damage = Some(format!(
                "its trailer is damaged: it places {intact} chunk(s) where they are not, but they are intact where the index places them and stay usable (`stanza-repair` cannot index this pack from its trailer)"
            ));
        }
        info.bad = still_bad;
    }
    Ok(())
}

/// Whether `chunk` is intact at `loc` in `pack` (one ranged read, then length, decompression
/// and BLAKE3); a read that fails counts as not intact.
pub(super) async fn intact_at(
    stanza: &Stanza,
    pack: &PackId,
    chunk: &ChunkId,
    loc: &Location,
) -> Result<bool> {
    let key = stanza.pack_key(pack)?;
    let start = loc.offset as u64;
    Ok(
        match stanza
            .store()
            .get(&key, Some(start..start + loc.stored_len as u64))
            .await
        {
            Ok(stored) => restore::open_chunk(key.as_str(), chunk, loc, &stored).is_ok(),
            Err(_) => false,
        },
    )
}
