//! Data page checksums: PostgreSQL's `pg_checksum_page` (`storage/checksum_impl.h`), an
//! FNV-1a variant computed over 32 interleaved lanes, folded with the block number.

/// `N_SUMS`
const N_SUMS: usize = 32;
/// `FNV_PRIME`
const FNV_PRIME: u32 = 16_777_619;

/// `checksumBaseOffsets`
const BASE_OFFSETS: [u32; N_SUMS] = [
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
    0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
    0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
    0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
];

/// Offset of `pd_checksum` in `PageHeaderData`.
const PD_CHECKSUM: usize = 8;

#[inline]
fn comp(sum: &mut u32, value: u32) {
    let tmp = *sum ^ value;
    *sum = tmp.wrapping_mul(FNV_PRIME) ^ (tmp >> 17);
}

/// `pg_checksum_page`: the checksum PostgreSQL stores in `pd_checksum` for block `blkno` (the
/// block number within the relation, across segment files). `page` must be one whole page.
///
/// Every page a backup reads goes through this on one thread, so it is written for the
/// compiler to vectorise (whole rows of 32 lanes, no per-word branch), with an AVX2 build
/// chosen at run time where the CPU has it: it was 30% of a full backup's CPU time as a
/// scalar loop (perf, pgbench scale 40).
pub fn pg_checksum_page(page: &[u8], blkno: u32) -> u16 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { checksum_avx2(page, blkno) };
        }
    }
    checksum_lanes(page, blkno)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn checksum_avx2(page: &[u8], blkno: u32) -> u16 {
    checksum_lanes(page, blkno)
}

#[inline(always)]
fn checksum_lanes(page: &[u8], blkno: u32) -> u16 {
    let mut sums = BASE_OFFSETS;
    for (r, row) in page.chunks_exact(N_SUMS * 4).enumerate() {
        let mut w = [0u32; N_SUMS];
        for (x, b) in w.iter_mut().zip(row.chunks_exact(4)) {
            *x = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        if r == 0 {
            // pd_checksum is computed as if it were zero.
            w[PD_CHECKSUM / 4] &= 0xFFFF_0000;
        }
        for (sum, x) in sums.iter_mut().zip(w) {
            comp(sum, x);
        }
    }
    for _ in 0..2 {
        for sum in sums.iter_mut() {
            comp(sum, 0);
        }
    }
    let checksum = sums.iter().fold(0u32, |acc, s| acc ^ s) ^ blkno;
    ((checksum % 65535) + 1) as u16
}

/// `PageIsNew`: an all-zero page (never written) has no checksum.
pub fn page_is_new(page: &[u8]) -> bool {
    // pd_upper == 0 is PostgreSQL's test; a page that is zero there but not elsewhere is damaged
    // and still gets checked below.
    page.len() >= 16 && page[14] == 0 && page[15] == 0 && page.iter().all(|b| *b == 0)
}

/// Whether `page` (block `blkno`) carries a valid checksum. New (all-zero) pages are valid.
pub fn page_checksum_ok(page: &[u8], blkno: u32) -> bool {
    if page_is_new(page) {
        return true;
    }
    if page.len() < PD_CHECKSUM + 2 {
        return false;
    }
    let stored = u16::from_le_bytes([page[PD_CHECKSUM], page[PD_CHECKSUM + 1]]);
    stored == pg_checksum_page(page, blkno)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PostgreSQL's loop as written in `checksum_impl.h`, word by word.
    fn reference(page: &[u8], blkno: u32) -> u16 {
        let mut sums = BASE_OFFSETS;
        let words = page.len() / 4;
        for row in 0..words / N_SUMS {
            for (j, sum) in sums.iter_mut().enumerate() {
                let at = (row * N_SUMS + j) * 4;
                let mut w =
                    u32::from_le_bytes([page[at], page[at + 1], page[at + 2], page[at + 3]]);
                if at == PD_CHECKSUM {
                    w &= 0xFFFF_0000;
                }
                comp(sum, w);
            }
        }
        for _ in 0..2 {
            for sum in sums.iter_mut() {
                comp(sum, 0);
            }
        }
        let checksum = sums.iter().fold(0u32, |acc, s| acc ^ s) ^ blkno;
        ((checksum % 65535) + 1) as u16
    }

    #[test]
    fn the_fast_checksum_is_postgresqls() {
        for seed in 0..64u64 {
            let page = cairn_repo::chunker::seeded_bytes(seed, 8192);
            let blkno = (seed * 7919) as u32;
            assert_eq!(pg_checksum_page(&page, blkno), reference(&page, blkno));
            assert_eq!(checksum_lanes(&page, blkno), reference(&page, blkno));
        }
    }
}
