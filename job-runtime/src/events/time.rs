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
