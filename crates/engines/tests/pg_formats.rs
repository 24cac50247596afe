//! The PostgreSQL parsers against frozen files from a real PostgreSQL 15 cluster (initdb -k),
//! with the values `pg_controldata` printed for it. Fixtures in `tests/fixtures/pg15/`:
//! `pg_control`, the first page of `pg_class` (`base/1/1259`), and the first page of WAL
//! segment `000000010000000000000001`.

use cairn_engines::postgres::control::{ControlError, ControlFile};
use cairn_engines::postgres::page::{page_checksum_ok, pg_checksum_page};
use cairn_engines::postgres::wal::LongPageHeader;

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pg15")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn pg_control_matches_pg_controldata() -> Result<(), ControlError> {
    let c = ControlFile::parse(&fixture("pg_control"))?;
    assert_eq!(c.system_identifier, 7711183642240386058);
    assert_eq!(c.pg_control_version, 1300);
    assert_eq!(c.catalog_version_no, 202209061);
    assert_eq!(c.checkpoint, 0x17414F8);
    assert_eq!(c.redo, 0x17414F8);
    assert_eq!(c.timeline, 1);
    assert_eq!(
        (c.blcksz, c.relseg_size, c.xlog_blcksz, c.xlog_seg_size),
        (8192, 131072, 8192, 16 << 20)
    );
    assert!(c.checksums_enabled());
    Ok(())
}

#[test]
fn a_damaged_pg_control_is_refused_with_its_crc() {
    let mut b = fixture("pg_control");
    b[100] ^= 1;
    let err = ControlFile::parse(&b)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.starts_with("invalid CRC in control file: expected 0x"),
        "{err}"
    );
    assert!(matches!(
        ControlFile::parse(&b[..100]),
        Err(ControlError::Truncated(100))
    ));
}

#[test]
fn real_page_checksums_verify() {
    let page = fixture("pg_class.page0");
    let stored = u16::from_le_bytes([page[8], page[9]]);
    assert_eq!(pg_checksum_page(&page, 0), stored);
    assert!(page_checksum_ok(&page, 0));
    // The block number is part of the checksum, and any flipped bit is caught.
    assert!(!page_checksum_ok(&page, 1));
    let mut bad = page.clone();
    bad[4000] ^= 0x10;
    assert!(!page_checksum_ok(&bad, 0));
    assert!(
        page_checksum_ok(&[0u8; 8192], 7),
        "new (all-zero) pages have no checksum"
    );
}

#[test]
fn real_wal_header_parses() -> Result<(), Box<dyn std::error::Error>> {
    let h = LongPageHeader::parse(&fixture("000000010000000000000001.page0"))?;
    assert_eq!(h.system_identifier, 7711183642240386058);
    assert_eq!(h.version(), Some(15));
    assert_eq!(
        (h.timeline, h.pageaddr, h.seg_size, h.xlog_blcksz),
        (1, 0x1000000, 16 << 20, 8192)
    );
    Ok(())
}
