//! Event time: a UTC instant in whole microseconds since the Unix epoch.
//!
//! An integer (rather than `chrono::DateTime`) because it is the join's ordering key and will be
//! a big-endian RocksDB key component; conversions to chrono live here only.

use std::fmt;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

/// A UTC instant with microsecond precision (finer input digits are truncated).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventTime(i64);

impl EventTime {
    /// 1970-01-01T00:00:00Z: what the original substituted for an empty birth date.
    pub const EPOCH: Self = Self(0);
    pub const MIN: Self = Self(i64::MIN);
    pub const MAX: Self = Self(i64::MAX);

    pub const fn from_micros(us: i64) -> Self {
        Self(us)
    }

    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// `self - d`, saturating at [`EventTime::MIN`].
    pub fn saturating_sub(self, d: std::time::Duration) -> Self {
        let us = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        Self(self.0.saturating_sub(us))
    }

    /// Parse an ISO-8601 / RFC 3339 datetime that carries a zone (`Z`, `+02:00` or `+0200`).
    /// A datetime without a zone is rejected: guessing one would silently shift event time.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if let Some(t) = parse_common(s.as_bytes()) {
            return Some(t);
        }
        DateTime::parse_from_rfc3339(s)
            .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z"))
            .ok()
            .map(|dt| Self(dt.timestamp_micros()))
    }

    /// Like [`EventTime::parse`], and also a plain date (`1943-03-22`) as midnight UTC: birth
    /// dates are dates in the source data.
    pub fn parse_date_or_datetime(s: &str) -> Option<Self> {
        Self::parse(s).or_else(|| {
            let d = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()?;
            Some(Self(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros()))
        })
    }

    pub fn to_datetime(self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_micros(self.0)
    }

    /// RFC 3339 in UTC with `Z`, with as many fraction digits (0, 3, 6) as the value needs:
    /// a pure function of the value, so documents are byte-identical across replays.
    pub fn to_rfc3339(self) -> Option<String> {
        self.to_datetime()
            .map(|dt| dt.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

/// The common form in one pass: `YYYY-MM-DDTHH:MM:SS[.fraction]` and `Z` or `±HH:MM`, every
/// field in range (no leap second). `None` leaves the text to chrono, which decides; where
/// both give a value it is the same (tested).
fn parse_common(b: &[u8]) -> Option<EventTime> {
    fn num(b: &[u8], at: usize, len: usize) -> Option<i64> {
        let mut v = 0;
        for &c in b.get(at..at + len)? {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Some(v)
    }
    let sep = |at: usize, c: u8| (b.get(at) == Some(&c)).then_some(());
    let year = num(b, 0, 4)?;
    sep(4, b'-')?;
    let month = num(b, 5, 2)?;
    sep(7, b'-')?;
    let day = num(b, 8, 2)?;
    sep(10, b'T')?;
    let hour = num(b, 11, 2)?;
    sep(13, b':')?;
    let minute = num(b, 14, 2)?;
    sep(16, b':')?;
    let second = num(b, 17, 2)?;
    let mut i = 19;
    let mut micros = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 6 {
                micros = micros * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 || digits > 9 {
            return None;
        }
        for _ in digits..6 {
            micros *= 10;
        }
    }
    let offset = match b.get(i..)? {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = num(&[*h1, *h2], 0, 2)?;
            let m = num(&[*m1, *m2], 0, 2)?;
            if h > 23 || m > 59 || (*sign == b'-' && h == 0 && m == 0) {
                return None;
            }
            let secs = h * 3600 + m * 60;
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return None,
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > month_days || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(EventTime(secs * 1_000_000 + micros))
}

impl fmt::Display for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_rfc3339() {
            Some(s) => f.write_str(&s),
            None => write!(f, "{}us", self.0),
        }
    }
}

impl Serialize for EventTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.to_rfc3339() {
            Some(text) => s.serialize_str(&text),
            None => Err(serde::ser::Error::custom(format!(
                "event time {}us is outside the calendar range",
                self.0
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What chrono alone makes of a text (the path before the one-pass parser).
    fn chrono_parse(s: &str) -> Option<EventTime> {
        let s = s.trim();
        DateTime::parse_from_rfc3339(s)
            .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z"))
            .ok()
            .map(|dt| EventTime(dt.timestamp_micros()))
    }

    #[test]
    fn the_one_pass_parser_agrees_with_chrono() {
        let mut texts: Vec<String> = [
            "2020-01-01T13:15:14.852Z",
            "2020-02-29T23:59:59.999999999+23:59",
            "2019-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2000-02-29T00:00:00Z",
            "1969-12-31T23:59:59.5Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999-23:59",
            "2020-01-01T00:00:60Z",
            "2020-01-01T24:00:00Z",
            "2020-13-01T00:00:00Z",
            "2020-00-01T00:00:00Z",
            "2020-01-00T00:00:00Z",
            "2020-01-01T00:00:00-00:00",
            "2020-01-01T00:00:00+24:00",
            "2020-01-01T00:00:00+0200",
            "2020-01-01t00:00:00z",
            "2020-01-01 00:00:00Z",
            "2020-01-01T00:00:00.Z",
            "2020-01-01T00:00:00.1234567891Z",
            "2020-01-01T00:00:00",
            "2020-1-01T00:00:00Z",
        ]
        .iter()
        .map(|s| (*s).to_string())
        .collect();
        // Dates across four centuries, times, fractions and offsets.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..50_000 {
            let year = 1600 + next(800);
            let month = 1 + next(12);
            let day = 1 + next(31);
            let (h, m, s) = (next(25), next(60), next(61));
            let frac = match next(4) {
                0 => String::new(),
                1 => format!(".{:03}", next(1000)),
                2 => format!(".{:06}", next(1_000_000)),
                _ => format!(".{:09}", next(1_000_000_000)),
            };
            let zone = match next(3) {
                0 => "Z".to_string(),
                k => format!(
                    "{}{:02}:{:02}",
                    if k == 1 { '+' } else { '-' },
                    next(24),
                    next(60)
                ),
            };
            texts.push(format!(
                "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}{frac}{zone}"
            ));
        }
        let mut fast = 0;
        for t in &texts {
            let expected = chrono_parse(t);
            if let Some(v) = parse_common(t.as_bytes()) {
                fast += 1;
                assert_eq!(Some(v), expected, "{t}");
            }
            assert_eq!(EventTime::parse(t), expected, "{t}");
        }
        assert!(fast > 40_000, "the one-pass path took only {fast}");
    }

    #[test]
    fn parses_zones_and_renders_utc() {
        let z = EventTime::parse("2020-01-01T13:15:14.852Z").unwrap();
        assert_eq!(z.to_rfc3339().unwrap(), "2020-01-01T13:15:14.852Z");
        let plus = EventTime::parse("2020-01-01T14:15:14.852+01:00").unwrap();
        assert_eq!(plus, z);
        let compact = EventTime::parse("2020-01-01T14:15:14.852+0100").unwrap();
        assert_eq!(compact, z);
        let micros = EventTime::parse("2020-01-01T13:15:14.123456789Z").unwrap();
        assert_eq!(micros.to_rfc3339().unwrap(), "2020-01-01T13:15:14.123456Z");
        assert_eq!(
            EventTime::EPOCH.to_rfc3339().unwrap(),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn rejects_zoneless_and_garbage() {
        assert!(EventTime::parse("2020-01-01T13:15:14").is_none());
        assert!(EventTime::parse("yesterday").is_none());
        assert!(EventTime::parse("").is_none());
        let d = EventTime::parse_date_or_datetime("1943-03-22").unwrap();
        assert_eq!(d.to_rfc3339().unwrap(), "1943-03-22T00:00:00Z");
    }
}
