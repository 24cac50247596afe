//! Rewriting packs that are mostly garbage (format.md, "Condemned packs", repacking): the
//! chunks of such packs that kept backups still need are copied, as stored, into new packs
//! with an index segment of their own; the old packs then hold nothing needed and garbage
//! collection condemns them like dead ones.

use crate::error::{Error, Result};
use crate::ids::{ChunkId, PackId};
use crate::index::{Location, Segment};
use crate::pack::{COMPRESSION_NONE, COMPRESSION_ZSTD, PackBuilder, SealedChunk};
use crate::repository::Stanza;
use crate::storage::{PutMode, StorageError};
use std::sync::Arc;

/// What a repack wrote.
#[derive(Debug, Default)]
pub struct Copied {
    pub new_packs: usize,
    /// The packs written. One may be a pack already present (the same chunks in the same
    /// order make the same pack: an earlier, interrupted repack's), which is now indexed and
    /// needed: garbage collection must not take it for the unindexed leftover it was.
    pub written: Vec<PackId>,
    pub chunks: usize,
    pub bytes: u64,
}

/// Packs of about this many bytes are written.
const PACK_TARGET: usize = 32 << 20;

/// Copy the chunks `wanted` places ((chunk, pack, location), sorted or not) into new packs,
/// checking each against its name first (a damaged copy is never copied: the repack fails and
/// the old pack stays), then index them in one new segment. Durable when it returns.
///
/// A new pack must not be one of `replaced` (the same chunks in the same order make the same
/// pack, and a pack both written and then deleted as replaced would be lost): that is an
/// error, before anything is written.
pub async fn copy_chunks(
    stanza: &Stanza,
    mut wanted: Vec<(ChunkId, PackId, Location)>,
    replaced: &std::collections::HashSet<PackId>,
) -> Result<Copied> {
    use futures_util::{StreamExt, TryStreamExt};
    wanted.sort_by_key(|(id, p, l)| (*p, l.offset, *id));
    wanted.dedup_by_key(|w| w.0);
    let mut copied = Copied::default();
    let mut seg = Segment::default();
    let mut pack = PackBuilder::new();
    let reads = futures_util::stream::iter(wanted.into_iter().map(|(id, p, loc)| async move {
        let key = stanza.pack_key(&p)?;
        let start = loc.offset as u64;
        let bytes = stanza
            .store()
            .get(&key, Some(start..start + loc.stored_len as u64))
            .await?;
        let plain = if loc.compressed() {
            crate::pack::decompress(&bytes, loc.raw_len as usize).map_err(|e| {
                Error::corrupt(
                    key.as_str(),
                    format!("chunk {id} cannot be decompressed: {e}"),
                )
            })?
        } else {
            bytes.to_vec()
        };
        if plain.len() != loc.raw_len as usize || ChunkId::of(&plain) != id {
            return Err(Error::corrupt(
                key.as_str(),
                format!(
                    "chunk {id} does not match its name; the pack is kept (run `cairn verify`)"
                ),
            ));
        }
        Ok::<_, Error>(SealedChunk {
            id,
            raw_len: loc.raw_len,
            compression: if loc.compressed() {
                COMPRESSION_ZSTD
            } else {
                COMPRESSION_NONE
            },
            data: bytes.to_vec(),
        })
    }))
    .buffered(8);
    let mut reads = std::pin::pin!(reads);
    while let Some(chunk) = reads.try_next().await? {
        copied.chunks += 1;
        copied.bytes += chunk.data.len() as u64;
        pack.add(&chunk);
        if pack.len() >= PACK_TARGET {
            copied
                .written
                .push(put_pack(stanza, std::mem::take(&mut pack), &mut seg, replaced).await?);
            copied.new_packs += 1;
        }
    }
    if !pack.is_empty() {
        copied
            .written
            .push(put_pack(stanza, pack, &mut seg, replaced).await?);
        copied.new_packs += 1;
    }
    if !seg.entries.is_empty() {
        seg.entries.sort_by_key(|e| e.0);
        seg.entries.dedup_by(|b, a| a.0 == b.0);
        stanza.put_index_segment(Arc::new(seg)).await?;
    }
    Ok(copied)
}

async fn put_pack(
    stanza: &Stanza,
    pack: PackBuilder,
    seg: &mut Segment,
    replaced: &std::collections::HashSet<PackId>,
) -> Result<PackId> {
    let (id, bytes, entries) = pack.finish();
    if replaced.contains(&id) {
        return Err(Error::Invalid(format!(
            "copying the needed chunks of pack {id} makes the same pack again: it is kept"
        )));
    }
    let key = stanza.pack_key(&id)?;
    let bytes = bytes::Bytes::from(bytes);
    match stanza
        .store()
        .put(&key, bytes.clone(), PutMode::Create)
        .await
    {
        Ok(()) => {}
        // Content-named: the same chunks in the same order make the same pack; the one in
        // place may be damaged, and these bytes are the ones that belong there.
        Err(StorageError::AlreadyExists { .. }) => {
            stanza.store().put(&key, bytes, PutMode::Overwrite).await?;
        }
        Err(e) => return Err(e.into()),
    }
    seg.add_pack(id, entries);
    Ok(id)
}
