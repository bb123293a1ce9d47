//! Field-by-field access to one JSON record.
//!
//! The record is parsed once into `field name -> raw JSON text`; each typed accessor then reads
//! one field and fails with the precise [`DecodeError`] (which field, which reason). Doing it by
//! hand rather than with `#[derive(Deserialize)]` keeps the error reasons exact (no matching on
//! serde's messages) and lets money see a number's digits before any float conversion.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde_json::value::RawValue;

use super::{DecodeError, EventTime, MAX_RECORD_BYTES, money};

/// Pseudo field name for errors about the record as a whole.
pub(crate) const RECORD: &str = "<record>";

pub(crate) struct Fields<'a> {
    map: BTreeMap<String, &'a RawValue>,
}

/// One JSON value, classified by its first byte (the text is valid JSON: serde_json checked it).
enum Scalar<'a> {
    Null,
    Str(String),
    /// A JSON number: its exact text.
    Num(&'a str),
    /// A boolean, object or array: never a valid scalar field.
    Other,
}

impl<'a> Fields<'a> {
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(DecodeError::Oversized {
                size: bytes.len(),
                limit: MAX_RECORD_BYTES,
            });
        }
        let map =
            serde_json::from_slice::<BTreeMap<String, &'a RawValue>>(bytes).map_err(|e| match e
                .classify()
            {
                serde_json::error::Category::Data => DecodeError::WrongType {
                    field: RECORD,
                    expected: "a JSON object",
                },
                _ => DecodeError::MalformedJson(e.to_string()),
            })?;
        Ok(Self { map })
    }

    fn scalar(&self, field: &'static str) -> Result<Scalar<'a>, DecodeError> {
        let Some(raw) = self.map.get(field) else {
            return Ok(Scalar::Null);
        };
        let text = raw.get();
        Ok(match text.as_bytes().first() {
            None | Some(b'n') => Scalar::Null,
            Some(b'"') => Scalar::Str(
                serde_json::from_str::<String>(text)
                    .map_err(|e| DecodeError::MalformedJson(e.to_string()))?,
            ),
            Some(b't' | b'f' | b'{' | b'[') => Scalar::Other,
            Some(_) => Scalar::Num(text),
        })
    }

    /// A free-text attribute; a JSON number is accepted as its text (zip codes, ship_delay).
    pub(crate) fn opt_text(&self, field: &'static str) -> Result<Option<String>, DecodeError> {
        match self.scalar(field)? {
            Scalar::Null => Ok(None),
            Scalar::Str(s) => Ok(Some(s)),
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
            Scalar::Str(s) => Ok(Some(s)),
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
            Scalar::Str(s) if s.trim().is_empty() => return Ok(None),
            Scalar::Str(s) => s,
            Scalar::Num(n) => n.to_string(),
            Scalar::Other => return Err(wrong),
        };
        let text = text.trim();
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
            Scalar::Str(s) if s.trim().is_empty() => return Ok(None),
            Scalar::Str(s) => s,
            Scalar::Num(n) => n.to_string(),
            Scalar::Other => {
                return Err(DecodeError::WrongType {
                    field,
                    expected: "a decimal number or string",
                });
            }
        };
        money::parse_decimal(text.trim())
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
            Scalar::Str(s) if s.trim().is_empty() => Err(DecodeError::MissingField { field }),
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
            Scalar::Str(s) if s.trim().is_empty() => Ok(EventTime::EPOCH),
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

/// At most 64 characters of an offending value: enough to debug, bounded in dead-letter records.
fn excerpt(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
