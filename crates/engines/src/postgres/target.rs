//! Strict parsing of recovery target values, so an impossible target is refused before the
//! destination is touched instead of being written into `postgresql.auto.conf` for PostgreSQL
//! to reject at start-up. Times follow what PostgreSQL's `timestamptz` input accepts in ISO
//! form: `YYYY-MM-DD[( |T)HH:MM[:SS[.fraction]]][ ][zone]`, with the zone `Z`, `UTC`, `GMT` or
//! a numeric offset `±HH[[:]MM[[:]SS]]` of at most 15:59:59 (PostgreSQL's limit). Hour 24 is
//! allowed only as 24:00:00, second 60 (a leap second) as PostgreSQL allows it. Years are held
//! to 1..=9999: a later year cannot be a point in a real archive. Zone names other than UTC
//! and GMT (`Europe/Paris`, `CET`) need the tz database, which cairn does not carry: they are
//! refused with a hint to give the offset.

use super::lsn::Lsn;
use cairn_repo::{Error, Result};

/// PostgreSQL's largest zone displacement (`MAX_TZDISP_HOUR` 15, minutes and seconds < 60).
pub const MAX_OFFSET: i64 = 15 * 3600 + 59 * 60 + 59;

/// A parsed `--target` time.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TargetTime {
    /// The wall-clock time read as if it were UTC, in Unix seconds (fractions dropped).
    pub wall: i64,
    /// Seconds east of UTC; None when the target names no zone, so PostgreSQL reads it in the
    /// restored cluster's `timezone` setting.
    pub offset: Option<i64>,
}

impl TargetTime {
    /// The earliest and latest instant (Unix seconds) the target can mean: one instant with a
    /// zone, any offset PostgreSQL allows without one.
    pub fn bounds(&self) -> (i64, i64) {
        match self.offset {
            Some(o) => (self.wall - o, self.wall - o),
            None => (self.wall - MAX_OFFSET, self.wall + MAX_OFFSET),
        }
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = y - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn digits(s: &str, min: usize, max: usize) -> Option<i64> {
    if s.len() < min || s.len() > max || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parse a zone: `Z`, `UTC`, `GMT` or `±HH[[:]MM[[:]SS]]`. Err carries what is wrong.
fn parse_zone(z: &str) -> std::result::Result<i64, String> {
    if ["z", "utc", "gmt"].contains(&z.to_ascii_lowercase().as_str()) {
        return Ok(0);
    }
    let (sign, rest) = match z.as_bytes().first() {
        Some(b'+') => (1, &z[1..]),
        Some(b'-') => (-1, &z[1..]),
        _ => {
            return Err(format!(
                "zone '{z}' is not one cairn can resolve: give UTC, Z or a numeric offset such as +01 or -08:00"
            ));
        }
    };
    let parts: Vec<&str> = if rest.contains(':') {
        rest.split(':').collect()
    } else if rest.len() <= 2 {
        vec![rest]
    } else if rest.len() == 4 || rest.len() == 6 {
        vec![&rest[..2], &rest[2..4], rest.get(4..).unwrap_or("")]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect()
    } else {
        return Err(format!("zone offset '{z}' is not ±HH, ±HHMM or ±HH:MM"));
    };
    let bad = || format!("zone offset '{z}' is not ±HH, ±HHMM or ±HH:MM");
    if parts.len() > 3 {
        return Err(bad());
    }
    let h = digits(parts[0], 1, 2).ok_or_else(bad)?;
    let m = match parts.get(1) {
        Some(p) => digits(p, 2, 2).ok_or_else(bad)?,
        None => 0,
    };
    let s = match parts.get(2) {
        Some(p) => digits(p, 2, 2).ok_or_else(bad)?,
        None => 0,
    };
    if h > 15 || m > 59 || s > 59 {
        return Err(format!(
            "zone offset '{z}' is out of range: PostgreSQL accepts offsets up to ±15:59:59"
        ));
    }
    Ok(sign * (h * 3600 + m * 60 + s))
}

/// Parse a `--type time` target the way PostgreSQL will read it.
pub fn parse_time(input: &str) -> Result<TargetTime> {
    let fail = |why: String| {
        Error::Usage(format!(
            "--target '{input}' is not a valid time: {why}; use 'YYYY-MM-DD HH:MM:SS[.fraction][zone]', e.g. '2026-11-23 10:15:00+00'"
        ))
    };
    let s = input.trim();
    let date_len = s.find([' ', 'T']).unwrap_or(s.len());
    let (date, rest) = s.split_at(date_len);
    let d: Vec<&str> = date.split('-').collect();
    let (Some(y), Some(mo), Some(day)) = (
        d.first().and_then(|p| digits(p, 4, 4)),
        d.get(1).and_then(|p| digits(p, 2, 2)),
        d.get(2).and_then(|p| digits(p, 2, 2)),
    ) else {
        return Err(fail(format!(
            "'{date}' is not a date YYYY-MM-DD (4-digit year)"
        )));
    };
    if d.len() != 3 || y < 1 {
        return Err(fail(format!("'{date}' is not a date YYYY-MM-DD")));
    }
    if !(1..=12).contains(&mo) {
        return Err(fail(format!("month {mo} does not exist")));
    }
    if day < 1 || day > days_in_month(y, mo) {
        return Err(fail(format!("{y:04}-{mo:02} has no day {day}")));
    }
    let rest = rest.strip_prefix('T').unwrap_or(rest).trim_start();
    // The clock runs up to the first character that cannot be part of it.
    let clock_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == ':' || c == '.'))
        .unwrap_or(rest.len());
    let (clock, zone) = rest.split_at(clock_len);
    let zone = zone.trim();
    let (hms, frac) = match clock.split_once('.') {
        Some((a, f)) => (a, Some(f)),
        None => (clock, None),
    };
    if frac.is_some_and(|f| f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit())) {
        return Err(fail(format!(
            "'{clock}' has a malformed fraction of a second"
        )));
    }
    let frac_nonzero = frac.is_some_and(|f| f.bytes().any(|b| b != b'0'));
    let (h, mi, sec) = if hms.is_empty() {
        if frac.is_some() {
            return Err(fail(format!("'{clock}' is not a time HH:MM:SS")));
        }
        (0, 0, 0)
    } else {
        let t: Vec<&str> = hms.split(':').collect();
        let field = |i: usize| t.get(i).and_then(|p| digits(p, 1, 2));
        match (t.len(), field(0), field(1), field(2)) {
            (2, Some(h), Some(m), _) if frac.is_none() => (h, m, 0),
            (3, Some(h), Some(m), Some(s)) => (h, m, s),
            _ => return Err(fail(format!("'{clock}' is not a time HH:MM:SS"))),
        }
    };
    if h > 24 || (h == 24 && (mi > 0 || sec > 0 || frac_nonzero)) {
        return Err(fail(format!(
            "hour {h} is out of range (0 to 23, or 24:00:00)"
        )));
    }
    if mi > 59 {
        return Err(fail(format!("minute {mi} is out of range (0 to 59)")));
    }
    if sec > 60 {
        return Err(fail(format!("second {sec} is out of range (0 to 60)")));
    }
    let offset = if zone.is_empty() {
        None
    } else {
        Some(parse_zone(zone).map_err(fail)?)
    };
    Ok(TargetTime {
        wall: days_from_civil(y, mo, day) * 86_400 + h * 3600 + mi * 60 + sec,
        offset,
    })
}

/// `--type lsn`: `X/Y`, each half 1 to 8 hex digits (`pg_lsn` input).
pub fn parse_lsn(s: &str) -> Result<Lsn> {
    let hex = |p: &str| !p.is_empty() && p.len() <= 8 && p.bytes().all(|b| b.is_ascii_hexdigit());
    match s.split_once('/') {
        Some((a, b)) if hex(a) && hex(b) => Lsn::parse(s),
        _ => None,
    }
    .ok_or_else(|| {
        Error::Usage(format!(
            "--target '{s}' is not an LSN: use two hex numbers like 0/16B3740 (pg_current_wal_lsn() prints them)"
        ))
    })
}

/// `--type xid`: a transaction id in decimal (32-bit, or 64-bit with its epoch, as
/// `txid_current()` prints it); 0 to 2 are never assigned to a transaction.
pub fn parse_xid(s: &str) -> Result<u64> {
    let decimal = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match s.parse::<u64>().ok().filter(|_| decimal) {
        Some(x) if x >= 3 => Ok(x),
        _ => Err(Error::Usage(format!(
            "--target '{s}' is not a transaction id: use the decimal number txid_current() printed (3 or more)"
        ))),
    }
}

/// `--type name`: a restore point name as `pg_create_restore_point` takes it (1 to 63 bytes).
pub fn check_name(s: &str) -> Result<()> {
    if s.is_empty() || s.len() > 63 {
        return Err(Error::Usage(format!(
            "--target '{s}' is not a restore point name: PostgreSQL's names are 1 to 63 bytes"
        )));
    }
    Ok(())
}

/// `--target-timeline`: `current`, `latest` or a timeline number (decimal, or hex with `0x`).
pub fn parse_timeline(s: &str) -> Result<Option<u32>> {
    if s == "latest" || s == "current" {
        return Ok(None);
    }
    let n = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) if !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u32::from_str_radix(h, 16).ok()
        }
        _ => digits(s, 1, 10).and_then(|n| u32::try_from(n).ok()),
    };
    match n {
        Some(n) if n >= 1 => Ok(Some(n)),
        _ => Err(Error::Usage(format!(
            "--target-timeline '{s}': use current, latest or a timeline number (1 or more)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> (i64, i64) {
        parse_time(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .bounds()
    }

    #[test]
    fn postgres_time_forms_are_accepted() {
        let t = 1_795_396_950;
        for s in [
            "2026-11-23 01:22:30+00",
            "2026-11-23 02:22:30.123+01",
            "2026-11-22T20:22:30-05:00",
            "2026-11-23 01:22:30Z",
            "2026-11-23 01:22:30 UTC",
            "2026-11-23 01:22:30 gmt",
            "2026-11-23 06:52:30+05:30",
            "2026-11-23 06:52:30+0530",
            "2026-11-22 17:22:30-08",
            "2026-11-22 17:22:30.999999 -08",
            "2026-11-23 01:22:30.123456789+00",
        ] {
            assert_eq!(at(s), (t, t), "{s}");
        }
        assert_eq!(at("2026-11-23 01:22+00"), (t - 30, t - 30));
        assert_eq!(at("2026-11-23 +00").0, 1_795_392_000);
        assert_eq!(at("2026-11-22 24:00:00+00").0, 1_795_392_000);
        assert_eq!(at("2028-02-29 00:00:00+00").0, 1_835_395_200);
        assert_eq!(at("2026-11-23 01:22:60+00").0, t + 30);
        assert_eq!(
            at("2026-11-23 00:00:00+15:59:59").0,
            1_795_392_000 - MAX_OFFSET
        );
    }

    #[test]
    fn a_time_without_a_zone_spans_every_offset_postgres_allows() {
        let (lo, hi) = at("2026-11-23 01:22:30");
        assert_eq!(
            (lo, hi),
            (1_795_396_950 - MAX_OFFSET, 1_795_396_950 + MAX_OFFSET)
        );
        assert!(parse_time("2026-11-23 01:22:30.5").is_ok_and(|t| t.offset.is_none()));
    }

    #[test]
    fn impossible_times_are_refused_saying_why() {
        for (s, why) in [
            ("2026-13-45 99:99:99+00", "month 13"),
            ("2099-02-30 10:00:00+00", "no day 30"),
            ("2026-02-29 10:00:00+00", "no day 29"),
            ("2100-02-29 10:00:00+00", "no day 29"),
            ("99999-01-01 00:00:00+00", "4-digit year"),
            ("0000-01-01 00:00:00+00", "YYYY-MM-DD"),
            ("2026-11-23 10:00:00+25", "out of range"),
            ("2026-11-23 10:00:00+16", "out of range"),
            ("2026-11-23 10:00:00+05:60", "out of range"),
            ("2026-11-23 25:00:00+00", "hour 25"),
            ("2026-11-23 24:00:01+00", "hour 24"),
            ("2026-11-23 10:60:00+00", "minute 60"),
            ("2026-11-23 10:00:61+00", "second 61"),
            ("2026-11-23 10:00:00 Europe/Paris", "numeric offset"),
            ("2026-11-23 10:00:00 CET", "numeric offset"),
            ("2026-11-23 10:00:00+5:3", "±HH"),
            ("2026-11-23 10:00:00.+00", "fraction"),
            ("2026-11-23 10+00", "HH:MM:SS"),
            ("2026-11-23 10:00:00:00+00", "HH:MM:SS"),
            ("yesterday", "YYYY-MM-DD"),
            ("now", "YYYY-MM-DD"),
            ("", "YYYY-MM-DD"),
            ("2026-1-5 10:00:00+00", "YYYY-MM-DD"),
        ] {
            match parse_time(s) {
                Ok(t) => panic!("{s} was accepted as {t:?}"),
                Err(e) => assert!(e.to_string().contains(why), "{s}: {e}"),
            }
        }
    }

    #[test]
    fn other_targets_are_checked() {
        assert_eq!(parse_lsn("0/16B3740").map(|l| l.0).ok(), Some(0x16B3740));
        for bad in ["nope", "0/", "/1", "+1/2", "123456789/0", "0/1/2", "0x0/1"] {
            assert!(parse_lsn(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_xid("1234").ok(), Some(1234));
        assert_eq!(parse_xid("4294967296123").ok(), Some(4_294_967_296_123));
        for bad in ["", "0", "2", "-5", "12a", "0x10", "99999999999999999999999"] {
            assert!(parse_xid(bad).is_err(), "{bad}");
        }
        assert!(check_name("after_batch_4").is_ok());
        assert!(check_name("").is_err() && check_name(&"x".repeat(64)).is_err());
        assert_eq!(parse_timeline("latest").ok(), Some(None));
        assert_eq!(parse_timeline("current").ok(), Some(None));
        assert_eq!(parse_timeline("2").ok(), Some(Some(2)));
        assert_eq!(parse_timeline("0x1A").ok(), Some(Some(26)));
        for bad in ["0", "-1", "two", "4294967296", ""] {
            assert!(parse_timeline(bad).is_err(), "{bad}");
        }
    }
}
