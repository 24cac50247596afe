//! verify's check of the catalog objects, each on its own (format.md, "Catalog").

use super::Problems;
use crate::catalog::Catalog;
use crate::error::Result;
use crate::repository::Stanza;

/// Each catalog object on its own (format.md, "Catalog"): commands fall back to an older
/// generation (or version 1's copy) quietly enough that losing one would otherwise go
/// unnoticed until the other goes too.
pub(super) async fn check_catalogs(
    stanza: &Stanza,
    catalog: &Catalog,
    problems: &mut Problems,
) -> Result<()> {
    let repair = format!(
        "`cairn --stanza={} stanza-repair` writes it again",
        stanza.name()
    );
    let gens = stanza.catalog_generations().await?;
    if !gens.is_empty() {
        for (i, (generation, key)) in gens.iter().enumerate() {
            let what = if i == 0 {
                "the newest catalog generation"
            } else {
                "an older catalog generation, kept to fall back to"
            };
            let bytes = match stanza.store().get(key, None).await {
                Ok(b) => b,
                Err(crate::storage::StorageError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            match Catalog::decode_versioned(key.as_str(), &bytes) {
                _ if *generation > crate::catalog::MAX_PLAUSIBLE_GENERATION => problems.add(
                    key.as_str(),
                    format!("{what} has a generation cairn never reaches, so it was not written by cairn and blocks every catalog write; {repair} (it removes it)"),
                    None,
                ),
                Ok((_, Some(g))) if g == *generation => {}
                Ok(_) => problems.add(
                    key.as_str(),
                    format!("{what} holds another generation than its name says; {repair}"),
                    None,
                ),
                Err(e) => problems.add(key.as_str(), format!("{what}: {e}; {repair}"), None),
            }
        }
        let key = stanza.catalog_key()?;
        match stanza.store().get(&key, None).await {
            Ok(b) => match Catalog::decode_versioned(key.as_str(), &b) {
                Ok((_, Some(m))) if m > gens[0].0 => problems.add(
                    key.as_str(),
                    format!(
                        "the catalog's copy is generation {m}, newer than any in {}: the newest generation is missing; {repair}",
                        stanza.catalog_generations_prefix()?
                    ),
                    None,
                ),
                Ok((_, Some(_))) => {}
                Ok((_, None)) => problems.add(
                    key.as_str(),
                    format!("the catalog's copy is a version-1 catalog; {repair}"),
                    None,
                ),
                Err(e) => problems.add(key.as_str(), format!("the catalog's copy: {e}; {repair}"), None),
            },
            Err(crate::storage::StorageError::NotFound { .. }) => problems.add(
                key.as_str(),
                format!("the catalog's copy is missing; {repair}"),
                None,
            ),
            Err(e) => return Err(e.into()),
        }
        return Ok(());
    }
    // No generation, but a version-2 copy: the generations were lost, not a version-1
    // stanza's copy.
    let key = stanza.catalog_key()?;
    if let Ok(b) = stanza.store().get(&key, None).await
        && let Ok((_, Some(g))) = Catalog::decode_versioned(key.as_str(), &b)
    {
        problems.add(
            stanza.catalog_generations_prefix()?.as_str(),
            format!(
                "every catalog generation is missing; the copy {key} holds generation {g}; {repair}"
            ),
            None,
        );
        return Ok(());
    }
    for (key, what) in [
        (stanza.catalog_key()?, "the catalog"),
        (stanza.catalog_copy_key()?, "the catalog's copy"),
    ] {
        match stanza.read_catalog(&key).await {
            Ok(Some(_)) => {}
            Ok(None) if !catalog.backups.is_empty() => {
                problems.add(key.as_str(), format!("{what} is missing; {repair}"), None)
            }
            Ok(None) => {}
            Err(e) => problems.add(key.as_str(), format!("{e}; {repair}"), None),
        }
    }
    Ok(())
}
