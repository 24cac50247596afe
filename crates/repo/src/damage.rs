//! The damage register (`stanza/<s>/damaged`, format.md "Damage register"): the chunks that the
//! last `verify` found unusable in packs that are present. Backup and restore merge the index
//! without them, so a new backup stores such a chunk again instead of deduplicating against
//! bytes that cannot be read (a new full after a flipped byte in a pack otherwise wrote "0 new
//! chunks" and could not be restored), and older backups that need the chunk are then restored
//! from the new copy.

use crate::codec::{self, magic};
use crate::error::{Error, Result};
use crate::ids::{ChunkId, PackId};
use crate::keys;
use crate::repository::Stanza;
use crate::storage::{PutMode, StorageError};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DamageRegister {
    pub written: i64,
    /// The problems that verify reported (0: every listed backup was restorable).
    pub problems: u64,
    pub packs: Vec<DamagedPack>,
    /// Keys of other objects found present but unreadable (archived WAL files).
    pub objects: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DamagedPack {
    pub pack: PackId,
    /// The pack's header or trailer cannot be read: every record naming it is unusable.
    pub whole: bool,
    /// The unusable chunks (empty when `whole`).
    pub chunks: Vec<ChunkId>,
}

/// Unusable records, as verify collects them: pack -> None (whole pack) or the chunks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Damage(
    BTreeMap<PackId, Option<BTreeSet<ChunkId>>>,
    /// Other unreadable objects, by key.
    BTreeSet<String>,
);

impl Damage {
    pub fn whole_pack(&mut self, pack: PackId) {
        self.0.insert(pack, None);
    }

    pub fn chunk(&mut self, pack: PackId, chunk: ChunkId) {
        if let Some(chunks) = self.0.entry(pack).or_insert_with(|| Some(BTreeSet::new())) {
            chunks.insert(chunk);
        }
    }

    /// An object other than a pack that is present but unreadable (an archived WAL file).
    pub fn object(&mut self, key: impl Into<String>) {
        self.1.insert(key.into());
    }

    pub fn objects(&self) -> &BTreeSet<String> {
        &self.1
    }

    /// How many of the unusable records are chunks or packs (not other objects).
    pub fn pack_count(&self) -> usize {
        self.count() - self.1.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty() && self.1.is_empty()
    }

    /// Whether the record placing `chunk` in `pack` may be used.
    pub fn usable(&self, pack: &PackId, chunk: &ChunkId) -> bool {
        match self.0.get(pack) {
            None => true,
            Some(None) => false,
            Some(Some(chunks)) => !chunks.contains(chunk),
        }
    }

    /// How many unusable records this names (a whole pack or an object counts once).
    pub fn count(&self) -> usize {
        self.0
            .values()
            .map(|c| c.as_ref().map_or(1, |c| c.len()))
            .sum::<usize>()
            + self.1.len()
    }

    pub fn to_register(&self, written: i64, problems: u64) -> DamageRegister {
        DamageRegister {
            written,
            problems,
            packs: self
                .0
                .iter()
                .map(|(pack, chunks)| DamagedPack {
                    pack: *pack,
                    whole: chunks.is_none(),
                    chunks: chunks.iter().flatten().copied().collect(),
                })
                .collect(),
            objects: self.1.iter().cloned().collect(),
        }
    }

    pub fn from_register(reg: &DamageRegister) -> Damage {
        let mut d = Damage::default();
        for p in &reg.packs {
            if p.whole {
                d.whole_pack(p.pack);
            } else {
                for c in &p.chunks {
                    d.chunk(p.pack, *c);
                }
            }
        }
        d.1 = reg.objects.iter().cloned().collect();
        d
    }

    /// A lookup for the hot path of an index merge (one hash probe per record).
    pub fn lookup(&self) -> DamageLookup {
        let mut whole = HashSet::new();
        let mut chunks: HashMap<PackId, HashSet<ChunkId>> = HashMap::new();
        for (pack, c) in &self.0 {
            match c {
                None => {
                    whole.insert(*pack);
                }
                Some(c) => {
                    chunks.insert(*pack, c.iter().copied().collect());
                }
            }
        }
        DamageLookup { whole, chunks }
    }
}

#[derive(Debug)]
pub struct DamageLookup {
    whole: HashSet<PackId>,
    chunks: HashMap<PackId, HashSet<ChunkId>>,
}

impl DamageLookup {
    pub fn usable(&self, pack: &PackId, chunk: &ChunkId) -> bool {
        !self.whole.contains(pack) && !self.chunks.get(pack).is_some_and(|c| c.contains(chunk))
    }
}

impl DamageRegister {
    pub fn encode(&self) -> Vec<u8> {
        codec::seal(magic::DAMAGE, self, true)
    }

    pub fn decode(object: &str, bytes: &[u8]) -> Result<DamageRegister> {
        codec::open(object, magic::DAMAGE, bytes)
    }
}

impl Stanza {
    pub fn damage_key(&self) -> Result<crate::storage::Key> {
        keys::damage_register(&self.info.name)
    }

    /// The register the last verify wrote, if any.
    pub async fn damage_register(&self) -> Result<Option<DamageRegister>> {
        let k = self.damage_key()?;
        match self.store().get(&k, None).await {
            Ok(b) => Ok(Some(DamageRegister::decode(k.as_str(), &b)?)),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The unusable records the last verify found (empty when none is recorded).
    pub async fn damage(&self) -> Result<Damage> {
        Ok(self
            .damage_register()
            .await?
            .map(|r| Damage::from_register(&r))
            .unwrap_or_default())
    }

    /// Drop the register's records of `packs`, which a backup has just written again in full
    /// (same name, so the same bytes, now intact). A register that cannot be read is left for
    /// verify to rewrite.
    pub async fn forget_damaged_packs(&self, packs: &[PackId]) -> Result<()> {
        let Ok(Some(mut reg)) = self.damage_register().await else {
            return Ok(());
        };
        let before = reg.packs.len();
        reg.packs.retain(|d| !packs.contains(&d.pack));
        if reg.packs.len() == before {
            return Ok(());
        }
        let bytes = Bytes::from(reg.encode());
        self.store()
            .put(&self.damage_key()?, bytes, PutMode::Overwrite)
            .await?;
        Ok(())
    }

    /// Record what a verify found as the stanza's register (removing it when there is
    /// nothing to record). Returns whether anything changed.
    pub async fn save_damage(&self, damage: &Damage, problems: u64) -> Result<bool> {
        let k = self.damage_key()?;
        let current = match self.damage_register().await {
            Ok(r) => r.map(|r| (Damage::from_register(&r), r.problems)),
            Err(Error::Corrupt { .. }) => Some((Damage::default(), u64::MAX)),
            Err(e) => return Err(e),
        };
        let found = (damage.clone(), problems);
        let nothing = damage.is_empty() && problems == 0;
        if current.as_ref() == Some(&found) || (current.is_none() && nothing) {
            return Ok(false);
        }
        if nothing {
            match self.store().delete(&k).await {
                Ok(()) | Err(StorageError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        } else {
            let reg = damage.to_register(crate::time::now_unix(), problems);
            let bytes = Bytes::from(reg.encode());
            self.store().put(&k, bytes, PutMode::Overwrite).await?;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_register_round_trips_and_names_exactly_its_records() -> Result<()> {
        let (p1, p2) = (PackId::of(b"p1"), PackId::of(b"p2"));
        let (c1, c2) = (ChunkId::of(b"c1"), ChunkId::of(b"c2"));
        let mut d = Damage::default();
        d.chunk(p1, c1);
        d.whole_pack(p2);
        d.chunk(p2, c2); // a whole pack stays whole
        d.object("stanza/s/archive/x/00000001/000000010000000000000003");
        let reg = d.to_register(7, 3);
        let back = DamageRegister::decode("damaged", &reg.encode())?;
        assert_eq!(back, reg);
        let d2 = Damage::from_register(&back);
        assert_eq!(d2, d);
        let l = d2.lookup();
        assert!(!l.usable(&p1, &c1));
        assert!(l.usable(&p1, &c2));
        assert!(!l.usable(&p2, &c2));
        assert!(!l.usable(&p2, &c1));
        assert!(l.usable(&PackId::of(b"p3"), &c1));
        assert_eq!(d2.count(), 3);
        assert_eq!(d2.objects().len(), 1);
        Ok(())
    }
}
