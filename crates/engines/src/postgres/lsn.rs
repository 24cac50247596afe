//! `Lsn`: a WAL position, printed the way PostgreSQL prints it (`0/16960E8`).

use std::fmt;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parse `X/Y` (hex halves), as `pg_backup_start()` and `pg_controldata` print it.
    pub fn parse(s: &str) -> Option<Lsn> {
        let (hi, lo) = s.trim().split_once('/')?;
        let hi = u32::from_str_radix(hi, 16).ok()?;
        let lo = u32::from_str_radix(lo, 16).ok()?;
        Some(Lsn(((hi as u64) << 32) | lo as u64))
    }

    /// The segment number holding this position (`XLByteToSeg`).
    pub fn segment(self, seg_size: u32) -> u64 {
        self.0 / seg_size as u64
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_and_parses_like_postgres() {
        assert_eq!(Lsn(0x16960E8).to_string(), "0/16960E8");
        assert_eq!(Lsn::parse("1/FF000028"), Some(Lsn(0x1_FF00_0028)));
        assert_eq!(
            Lsn::parse("0/17414F8").map(|l| l.segment(16 << 20)),
            Some(1)
        );
        assert_eq!(Lsn::parse("zz"), None);
    }
}
