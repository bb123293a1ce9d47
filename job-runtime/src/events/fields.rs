//! Field-by-field access to one JSON record.
//!
//! The record is parsed once into `(field name, raw JSON text)` pairs, both borrowed from the
//! record (a key is copied only when it has escapes); each typed accessor then reads one field
//! and fails with the precise [`DecodeError`] (which field, which reason). Doing it by hand
//! rather than with `#[derive(Deserialize)]` keeps the error reasons exact (no matching on
//! serde's messages) and lets money see a number's digits before any float conversion.
//!
//! Speed matters here (every record of every stream passes through it): a flat record is split
//! by the one-pass scanner of [`super::scan`] (serde_json takes every other record, and reports
//! every error), no map is built (a record has a few dozen fields, a linear scan is cheaper
//! than hashing or a tree), and strings without escapes are borrowed, not copied. A repeated
//! key keeps its last value, as a map would.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use rust_decimal::Decimal;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{DecodeError, EventTime, MAX_RECORD_BYTES, money};

/// Pseudo field name for errors about the record as a whole.
pub(crate) const RECORD: &str = "<record>";

pub(crate) struct Fields<'a> {
    pairs: Pairs<'a>,
    /// Look-up mode, see [`Fields::decode`].
    in_order: bool,
    /// In-order mode: where the next look-up starts, and the pairs found so far (a bit each).
    next: Cell<usize>,
    found: Cell<u64>,
}

/// `(key, raw JSON text of the value)`, in record order.
pub(super) type Pairs<'a> = Vec<(Cow<'a, str>, &'a str)>;

/// One JSON value, classified by its first byte (the text is valid JSON: serde_json checked it).
enum Scalar<'a> {
    Null,
    Str(Cow<'a, str>),
    /// A JSON number: its exact text.
    Num(&'a str),
    /// A boolean, object or array: never a valid scalar field.
    Other,
}

/// Collects the top-level pairs of a JSON object, borrowing from the input.
struct PairsVisitor;

impl<'de> Visitor<'de> for PairsVisitor {
    type Value = Pairs<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(32));
        while let Some(key) = map.next_key::<BorrowedKey<'de>>()? {
            let value: &'de RawValue = map.next_value()?;
            pairs.push((key.0, value.get()));
        }
        Ok(pairs)
    }
}

/// A map key, borrowed unless it has escapes.
struct BorrowedKey<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for BorrowedKey<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = BorrowedKey<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(BorrowedKey(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(BorrowedKey(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(BorrowedKey(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// The members of a JSON object through serde_json (any record; its errors classified).
pub(super) fn serde_pairs(bytes: &[u8]) -> Result<Pairs<'_>, DecodeError> {
    let classify = |e: serde_json::Error| match e.classify() {
        serde_json::error::Category::Data => DecodeError::WrongType {
            field: RECORD,
            expected: "a JSON object",
        },
        _ => DecodeError::MalformedJson(e.to_string()),
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let pairs = de.deserialize_map(PairsVisitor).map_err(classify)?;
    de.end().map_err(classify)?;
    Ok(pairs)
}

/// The text of a JSON string literal (`"..."`, already validated), borrowed when it has no
/// escapes.
fn string_literal(text: &str) -> Result<Cow<'_, str>, DecodeError> {
    let inner = &text[1..text.len() - 1];
    if !inner.contains('\\') {
        return Ok(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(text)
        .map(Cow::Owned)
        .map_err(|e| DecodeError::MalformedJson(e.to_string()))
}

impl<'a> Fields<'a> {
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(DecodeError::Oversized {
                size: bytes.len(),
                limit: MAX_RECORD_BYTES,
            });
        }
        // The common record in one pass; anything else (and every error) through serde_json.
        let pairs = match super::scan::flat_object(bytes) {
            Some(pairs) => pairs,
            None => serde_pairs(bytes)?,
        };
        Ok(Self {
            pairs,
            in_order: false,
            next: Cell::new(0),
            found: Cell::new(0),
        })
    }

    /// Parse `bytes` and build a value with `decode`, which reads each field once.
    ///
    /// Records usually list their fields in the order the decoders read them, so each look-up
    /// first tries the pairs after the previous hit (**in-order** mode): one comparison per
    /// field instead of a scan. A scan from the end is what makes a repeated key keep its last
    /// value; the in-order search finds the first. The two agree when no key repeats, which is
    /// known for sure when every pair was found by a look-up (the decoders read distinct
    /// fields). Otherwise (an unknown or repeated key, an early error, more than 64 fields)
    /// `decode` runs again with scans, and that result stands.
    pub(crate) fn decode<T>(
        bytes: &'a [u8],
        decode: impl Fn(&Self) -> Result<T, DecodeError>,
    ) -> Result<T, DecodeError> {
        let mut fields = Self::parse(bytes)?;
        if fields.pairs.len() <= 64 {
            fields.in_order = true;
            let result = decode(&fields);
            if fields.found.get().count_ones() as usize == fields.pairs.len() {
                return result;
            }
            fields.in_order = false;
        }
        decode(&fields)
    }

    /// The raw text of `field`'s value.
    fn find(&self, field: &str) -> Option<&'a str> {
        if !self.in_order {
            return self
                .pairs
                .iter()
                .rev()
                .find(|(k, _)| k == field)
                .map(|&(_, v)| v);
        }
        let n = self.pairs.len();
        let from = self.next.get().min(n);
        let i = (from..n)
            .chain(0..from)
            .find(|&i| self.pairs[i].0 == field)?;
        self.next.set(i + 1);
        self.found.set(self.found.get() | 1 << i);
        Some(self.pairs[i].1)
    }

    fn scalar(&self, field: &'static str) -> Result<Scalar<'a>, DecodeError> {
        let Some(text) = self.find(field) else {
            return Ok(Scalar::Null);
        };
        Ok(match text.as_bytes().first() {
            None | Some(b'n') => Scalar::Null,
            Some(b'"') => Scalar::Str(string_literal(text)?),
            Some(b't' | b'f' | b'{' | b'[') => Scalar::Other,
            Some(_) => Scalar::Num(text),
        })
    }

    /// A free-text attribute; a JSON number is accepted as its text (zip codes, ship_delay).
    pub(crate) fn opt_text(&self, field: &'static str) -> Result<Option<String>, DecodeError> {
        match self.scalar(field)? {
            Scalar::Null => Ok(None),
            Scalar::Str(s) => Ok(Some(s.into_owned())),
            Scalar::Num(n) => Ok(Some(n.to_string())),
            Scalar::Other => Err(DecodeError::WrongType {
                field,
                expected: "a string",
            }),
        }
    }

    /// An optional id: a string, or an integer number taken as its digits. Empty is absent.
    pub(crate) fn opt_id(&self, field: &'static str) -> Result<Option<String>, DecodeError> {
        let wrong = DecodeError::WrongType {
            field,
            expected: "a string or integer id",
        };
        match self.scalar(field)? {
            Scalar::Null => Ok(None),
            Scalar::Str(s) if s.is_empty() => Ok(None),
            Scalar::Str(s) => Ok(Some(s.into_owned())),
            Scalar::Num(n) if n.bytes().all(|b| b.is_ascii_digit() || b == b'-') => {
                Ok(Some(n.to_string()))
            }
            Scalar::Num(_) | Scalar::Other => Err(wrong),
        }
    }

    pub(crate) fn id(&self, field: &'static str) -> Result<String, DecodeError> {
        self.opt_id(field)?
            .ok_or(DecodeError::MissingField { field })
    }

    /// An optional integer: a JSON number or a numeric string (`"42"`); an integral decimal
    /// (`42.0`, `4.2e1`) is accepted, a fractional one is not.
    pub(crate) fn opt_int(&self, field: &'static str) -> Result<Option<i64>, DecodeError> {
        let wrong = DecodeError::WrongType {
            field,
            expected: "an integer",
        };
        let text = match self.scalar(field)? {
            Scalar::Null => return Ok(None),
            Scalar::Str(s) if trim(&s).is_empty() => return Ok(None),
            Scalar::Str(s) => s,
            Scalar::Num(n) => Cow::Borrowed(n),
            Scalar::Other => return Err(wrong),
        };
        let text = trim(&text);
        if let Ok(v) = text.parse::<i64>() {
            return Ok(Some(v));
        }
        let d = money::parse_decimal(text).ok_or(wrong.clone())?;
        if !d.fract().is_zero() {
            return Err(wrong);
        }
        i64::try_from(d).map(Some).map_err(|_| wrong)
    }

    pub(crate) fn int(&self, field: &'static str) -> Result<i64, DecodeError> {
        self.opt_int(field)?
            .ok_or(DecodeError::MissingField { field })
    }

    /// An optional decimal from a JSON string or number, exactly. Empty string is absent.
    pub(crate) fn opt_decimal(&self, field: &'static str) -> Result<Option<Decimal>, DecodeError> {
        let text = match self.scalar(field)? {
            Scalar::Null => return Ok(None),
            Scalar::Str(s) if trim(&s).is_empty() => return Ok(None),
            Scalar::Str(s) => s,
            Scalar::Num(n) => Cow::Borrowed(n),
            Scalar::Other => {
                return Err(DecodeError::WrongType {
                    field,
                    expected: "a decimal number or string",
                });
            }
        };
        money::parse_decimal(trim(&text))
            .map(Some)
            .ok_or_else(|| DecodeError::InvalidDecimal {
                field,
                value: excerpt(&text),
            })
    }

    /// A required ISO-8601 datetime with zone.
    pub(crate) fn datetime(&self, field: &'static str) -> Result<EventTime, DecodeError> {
        match self.scalar(field)? {
            Scalar::Null => Err(DecodeError::MissingField { field }),
            Scalar::Str(s) if trim(&s).is_empty() => Err(DecodeError::MissingField { field }),
            Scalar::Str(s) => EventTime::parse(&s).ok_or_else(|| DecodeError::InvalidDatetime {
                field,
                value: excerpt(&s),
            }),
            Scalar::Num(_) | Scalar::Other => Err(DecodeError::WrongType {
                field,
                expected: "an ISO-8601 datetime string with zone",
            }),
        }
    }

    /// A date or datetime where empty or null means 1970-01-01T00:00:00Z (the original's rule
    /// for birth dates).
    pub(crate) fn date_or_epoch(&self, field: &'static str) -> Result<EventTime, DecodeError> {
        match self.scalar(field)? {
            Scalar::Null => Ok(EventTime::EPOCH),
            Scalar::Str(s) if trim(&s).is_empty() => Ok(EventTime::EPOCH),
            Scalar::Str(s) => {
                EventTime::parse_date_or_datetime(&s).ok_or_else(|| DecodeError::InvalidDatetime {
                    field,
                    value: excerpt(&s),
                })
            }
            Scalar::Num(_) | Scalar::Other => Err(DecodeError::WrongType {
                field,
                expected: "a date or datetime string",
            }),
        }
    }
}

/// `str::trim`, skipping its Unicode scan when both ends are printable ASCII (a whitespace
/// character is either at most `b' '` or not ASCII).
pub(super) fn trim(s: &str) -> &str {
    match (s.as_bytes().first(), s.as_bytes().last()) {
        (Some(&a), Some(&b)) if (b'!'..0x80).contains(&a) && (b'!'..0x80).contains(&b) => s,
        _ => s.trim(),
    }
}

/// At most 64 characters of an offending value: enough to debug, bounded in dead-letter records.
fn excerpt(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
