//! The catalog's compare-and-swap (format.md, "Catalog"): writers that race never lose each
//! other's record, a writer that planned from an older generation is refused, and a version-1
//! stanza is read unchanged and upgraded by its first write.

use cairn_repo::catalog::{BackupRecord, Catalog};
use cairn_repo::ids::{BackupLabel, BackupType, StanzaName};
use cairn_repo::repository::{Repository, Stanza, StanzaInfo};
use cairn_repo::storage::Storage;
use cairn_repo::storage::local::LocalStorage;
use cairn_repo::{Error, keys};
use std::collections::BTreeMap;
use std::sync::Arc;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn full(n: u32) -> Result<BackupRecord, Box<dyn std::error::Error>> {
    Ok(BackupRecord {
        label: BackupLabel::parse(&format!("20261124-{:06}F", 100000 + n))?,
        kind: BackupType::Full,
        parent: None,
        references: vec![],
        start: 1_795_515_300 + n as i64,
        stop: 1_795_515_360 + n as i64,
        size: 1,
        delta: 1,
        repo_size: 1,
        repo_delta: 1,
        file_count: 1,
        chunk_count: 1,
        new_chunk_count: 1,
        meta: BTreeMap::new(),
    })
}

async fn stanza(
    dir: &std::path::Path,
) -> Result<(Arc<dyn Storage>, Stanza), Box<dyn std::error::Error>> {
    let store: Arc<dyn Storage> = Arc::new(LocalStorage::new(dir)?);
    let repo = Repository::open_or_init(store.clone()).await?;
    let s = repo
        .create_stanza(StanzaInfo {
            name: StanzaName::parse("main")?,
            engine: "stream".into(),
            created: 1,
            meta: BTreeMap::new(),
        })
        .await?;
    Ok((store, s))
}

/// The lost record: writers that each believe they may write (two backups that both
/// took over a stale lock) append at once; every record ends up listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_never_lose_a_record() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (_, s) = stanza(dir.path()).await?;
    let s = Arc::new(s);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..8 {
        let s = Arc::clone(&s);
        let record = full(n)?;
        tasks.spawn(async move {
            let mut conflicts = 0;
            loop {
                let at = s.catalog_for_write().await?;
                let mut c = at.catalog;
                c.backups.push(record.clone());
                match s.commit_catalog(&c, at.generation).await {
                    Ok(_) => return Ok::<u32, Error>(conflicts),
                    // As backup does: a write that looked lost may have been built on.
                    Err(Error::Conflict(_)) => {
                        conflicts += 1;
                        if s.catalog().await?.get(&record.label).is_some() {
                            return Ok(conflicts);
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        });
    }
    let mut conflicts = 0;
    while let Some(r) = tasks.join_next().await {
        conflicts += r??;
    }
    // The writers did race (else this proves nothing): some found their generation taken.
    assert!(conflicts > 0, "no writer ever met another");
    let listed = s.catalog().await?;
    assert_eq!(listed.backups.len(), 8, "{listed:?}");
    for n in 0..8 {
        assert!(listed.get(&full(n)?.label).is_some(), "record {n} lost");
    }
    // Three generations stay: the newest and two to fall back to.
    let gens = s.catalog_generations().await?;
    assert!(gens.len() >= 3, "{gens:?}");
    assert!(
        gens[0].0 >= 9,
        "stanza-create wrote 1, each append at least one more"
    );
    Ok(())
}

/// Two writers that read the same generation: exactly one commits, the other is told, and
/// what the first wrote stays.
#[tokio::test]
async fn a_writer_that_planned_from_an_older_generation_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (_, s) = stanza(dir.path()).await?;
    let at = s.catalog_for_write().await?;
    let mut a = at.catalog.clone();
    a.backups.push(full(1)?);
    let mut b = at.catalog.clone();
    b.backups.push(full(2)?);
    s.commit_catalog(&a, at.generation).await?;
    let second = s.commit_catalog(&b, at.generation).await;
    assert!(matches!(second, Err(Error::Conflict(_))), "{second:?}");
    assert_eq!(s.catalog().await?, a);
    Ok(())
}

/// A newest generation that is damaged: readers fall back to the one before (with a warning);
/// writers refuse; a generation copied under another name is damage, not an old list revived.
#[tokio::test]
async fn a_damaged_or_moved_newest_generation_is_not_written_on() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, s) = stanza(dir.path()).await?;
    let one = Catalog {
        backups: vec![full(1)?],
    };
    let g = s.save_catalog(&one).await?;
    assert_eq!(g, 2);
    // An old generation's bytes put under the next name.
    let old = store
        .get(
            &keys::catalog_generations(s.name())?.join("0000000000000001")?,
            None,
        )
        .await?;
    let moved = keys::catalog_generations(s.name())?.join("0000000000000003")?;
    std::fs::write(dir.path().join(moved.as_str()), &old)?;
    assert_eq!(
        s.catalog().await?,
        one,
        "readers take the last good generation"
    );
    let refused = s.catalog_for_write().await;
    assert!(
        matches!(&refused, Err(Error::Invalid(m)) if m.contains("stanza-repair")),
        "{refused:?}"
    );
    Ok(())
}

/// A stanza written before generations: read as it is; its first write upgrades it so that an
/// older cairn refuses the catalog as newer instead of reading a list no longer kept.
#[tokio::test]
async fn a_version_1_stanza_is_read_and_upgraded_by_its_first_write() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, s) = stanza(dir.path()).await?;
    // Make it look like version 1: no generations, `catalog` and its copy.
    for (_, k) in s.catalog_generations().await? {
        store.delete(&k).await?;
    }
    let v1 = Catalog {
        backups: vec![full(1)?],
    };
    let root = dir.path().join("stanza/main");
    std::fs::write(root.join("catalog"), v1.encode())?;
    std::fs::write(root.join("catalog.copy"), v1.encode())?;
    assert_eq!(s.catalog().await?, v1);
    let at = s.catalog_for_write().await?;
    assert_eq!(at.generation, 0);
    let mut two = at.catalog;
    two.backups.push(full(2)?);
    assert_eq!(s.commit_catalog(&two, 0).await?, 1);
    assert_eq!(s.catalog().await?, two);
    let stub = std::fs::read(root.join("catalog"))?;
    assert_eq!(&stub[8..10], &[2, 0], "an older cairn sees a newer format");
    assert!(!root.join("catalog.copy").exists());
    Ok(())
}

/// The newest generation deleted: readers use its copy in `catalog` (a lost object must not
/// silently take the newest backup off the list), writers refuse, and a rebuild writes after
/// the copy's generation so the copy does not shadow it.
#[tokio::test]
async fn a_lost_newest_generation_is_read_from_its_copy_and_not_written_on() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, s) = stanza(dir.path()).await?;
    let two = Catalog {
        backups: vec![full(1)?, full(2)?],
    };
    assert_eq!(s.save_catalog(&two).await?, 2);
    let gens = s.catalog_generations().await?;
    store.delete(&gens[0].1).await?;
    assert_eq!(s.catalog().await?, two, "the copy lists both");
    let refused = s.catalog_for_write().await;
    assert!(
        matches!(&refused, Err(Error::Invalid(m)) if m.contains("stanza-repair")),
        "{refused:?}"
    );
    assert_eq!(s.save_catalog(&two).await?, 3);
    assert_eq!(s.catalog_for_write().await?.generation, 3);
    Ok(())
}
