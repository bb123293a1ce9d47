//! What the engine writes to the outbox and the sinks read: an enriched document (with its
//! OpenSearch `_id` and its S3 partition day) or a dead-letter record.
//!
//! Encoding: one tag byte, then for a document `u32` lengths and the id, the day and the JSON;
//! for a dead letter the JSON of [`DeadLetterRecord`]. Small and cheap to split: the sinks
//! never re-serialise the document, the OpenSearch sink sends the stored JSON as is.

use serde::{Deserialize, Serialize};

use crate::events::{EnrichedSale, EventTime};
use crate::join::DeadLetter;
use crate::source::SourceRecord;
use tributary_crds::document_id::DocumentIdTemplate;

const TAG_DOCUMENT: u8 = b'D';
const TAG_DEAD_LETTER: u8 = b'L';

/// An output as stored in the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputRecord {
    Document(Document),
    DeadLetter(DeadLetterRecord),
}

/// An enriched document ready for the sinks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    /// The OpenSearch `_id` (from the resource's template).
    pub id: String,
    /// `YYYY-MM-DD` of `sale_datetime` in UTC: the S3 partition.
    pub day: String,
    /// The document JSON ([`EnrichedSale::to_json`]).
    pub json: Vec<u8>,
}

/// A record that could not be processed, with where it came from and why. Written as one
/// JSON line to the dead-letter location.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterRecord {
    /// Bounded label: a decode reason (`malformed_json`, ...), a join reason
    /// (`missing_customer`, ...) or a sink reason (`opensearch_rejected`).
    pub reason: String,
    /// Human-readable detail (the decode error, the missing key, the sink's error).
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_key: Option<String>,
    /// The original record (UTF-8, lossy) for a record that could not be decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// The sale, for a sale whose join expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sale: Option<serde_json::Value>,
    /// The document, for a document a sink refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<serde_json::Value>,
    /// Processing time (ms since the epoch) the record was given up at; for an expired join
    /// its deadline, so the record is reproducible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<i64>,
}

/// Errors decoding an outbox entry (only a corrupt state produces them).
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("outbox entry is truncated or has an unknown tag")]
    Malformed,
    #[error("dead-letter JSON: {0}")]
    Json(#[from] serde_json::Error),
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b);
}

fn get_bytes(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = usize::try_from(u32::from_be_bytes(b.get(..4)?.try_into().ok()?)).ok()?;
    Some((b.get(4..4 + len)?, &b[4 + len..]))
}

/// The UTC day of an event time.
pub fn day_of(t: EventTime) -> String {
    if let Some(day) = four_digit_day(t) {
        return day.iter().map(|&b| char::from(b)).collect();
    }
    match t.to_datetime() {
        Some(d) => d.format("%Y-%m-%d").to_string(),
        None => "invalid-date".into(),
    }
}

/// `YYYY-MM-DD` of a year in 0..=9999 (every real one), without `fmt`.
fn four_digit_day(t: EventTime) -> Option<[u8; 10]> {
    use chrono::Datelike;
    let d = t.to_datetime()?;
    let year = u32::try_from(d.year()).ok().filter(|y| *y <= 9999)?;
    let mut out = *b"0000-00-00";
    for (at, value, width) in [(0, year, 4), (5, d.month(), 2), (8, d.day(), 2)] {
        let mut v = value;
        for k in (at..at + width).rev() {
            // A digit: `v % 10` is below 10.
            out[k] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    Some(out)
}

impl Document {
    pub fn from_sale(doc: &EnrichedSale, ids: &DocumentIdTemplate) -> Result<Self, OutputError> {
        Ok(Self {
            id: doc.document_id(ids),
            day: day_of(doc.sale.sale_datetime),
            json: doc.to_json()?,
        })
    }

    /// The sale's `sale_datetime`, read from the document's JSON (for the sinks' freshness
    /// metric; the outbox entry does not carry it apart). The key's quotes cannot occur
    /// unescaped inside a JSON string, so the first match is the member itself.
    pub fn sale_time(&self) -> Option<EventTime> {
        const KEY: &[u8] = br#""sale_datetime":""#;
        let at = memchr::memmem::find(&self.json, KEY)? + KEY.len();
        let rest = &self.json[at..];
        let end = memchr::memchr(b'"', rest)?;
        EventTime::parse(std::str::from_utf8(&rest[..end]).ok()?)
    }
}

impl DeadLetterRecord {
    /// A source record that could not be decoded.
    pub fn undecodable(
        stream: &str,
        shard: &str,
        record: &SourceRecord,
        reason: &str,
        detail: String,
    ) -> Self {
        // Keep the dead-letter entry bounded even for an oversized record.
        const KEEP: usize = 64 * 1024;
        let data = &record.data[..record.data.len().min(KEEP)];
        Self {
            reason: reason.into(),
            detail,
            stream: Some(stream.into()),
            shard: Some(shard.into()),
            sequence: Some(record.sequence.clone()),
            partition_key: Some(record.partition_key.clone()),
            record: Some(String::from_utf8_lossy(data).into_owned()),
            at_ms: record.arrival_ms,
            ..Self::default()
        }
    }

    /// A sale whose join expired.
    pub fn expired(dl: &DeadLetter) -> Self {
        Self {
            reason: dl.reason.as_str().into(),
            detail: format!("{:?} did not arrive within join.maxWait", dl.missing),
            sale: serde_json::to_value(&dl.sale).ok(),
            at_ms: Some(dl.expired_at.as_millis()),
            ..Self::default()
        }
    }
}

impl OutputRecord {
    /// The outbox entry of an enriched sale: what `OutputRecord::Document(Document::from_sale(
    /// ..)).encode()` gives, written in one buffer (the document is the bulk of the bytes, and
    /// this runs once per sale).
    pub fn encode_sale(
        doc: &EnrichedSale,
        ids: &DocumentIdTemplate,
    ) -> Result<Vec<u8>, OutputError> {
        let mut out = Vec::with_capacity(4096);
        Self::write_sale(&mut out, doc, ids)?;
        Ok(out)
    }

    /// [`OutputRecord::encode_sale`], appended to `out`.
    pub fn write_sale(
        out: &mut Vec<u8>,
        doc: &EnrichedSale,
        ids: &DocumentIdTemplate,
    ) -> Result<(), OutputError> {
        let id = doc.document_id(ids);
        out.push(TAG_DOCUMENT);
        put_bytes(out, id.as_bytes());
        match four_digit_day(doc.sale.sale_datetime) {
            Some(day) => put_bytes(out, &day),
            None => put_bytes(out, day_of(doc.sale.sale_datetime).as_bytes()),
        }
        doc.write_json(out)?;
        Ok(())
    }

    pub fn encode(&self) -> Result<Vec<u8>, OutputError> {
        match self {
            Self::Document(d) => {
                let mut out = Vec::with_capacity(13 + d.id.len() + d.day.len() + d.json.len());
                out.push(TAG_DOCUMENT);
                put_bytes(&mut out, d.id.as_bytes());
                put_bytes(&mut out, d.day.as_bytes());
                out.extend_from_slice(&d.json);
                Ok(out)
            }
            Self::DeadLetter(r) => {
                let mut out = vec![TAG_DEAD_LETTER];
                serde_json::to_writer(&mut out, r)?;
                Ok(out)
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, OutputError> {
        match bytes.split_first() {
            Some((&TAG_DOCUMENT, rest)) => {
                let (id, rest) = get_bytes(rest).ok_or(OutputError::Malformed)?;
                let (day, json) = get_bytes(rest).ok_or(OutputError::Malformed)?;
                Ok(Self::Document(Document {
                    id: String::from_utf8(id.to_vec()).map_err(|_| OutputError::Malformed)?,
                    day: String::from_utf8(day.to_vec()).map_err(|_| OutputError::Malformed)?,
                    json: json.to_vec(),
                }))
            }
            Some((&TAG_DEAD_LETTER, rest)) => Ok(Self::DeadLetter(serde_json::from_slice(rest)?)),
            _ => Err(OutputError::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let doc = OutputRecord::Document(Document {
            id: "1:2".into(),
            day: "2020-01-01".into(),
            json: br#"{"order_id":1}"#.to_vec(),
        });
        assert_eq!(OutputRecord::decode(&doc.encode().unwrap()).unwrap(), doc);
        let dl = OutputRecord::DeadLetter(DeadLetterRecord {
            reason: "malformed_json".into(),
            detail: "x".into(),
            stream: Some("sales".into()),
            ..Default::default()
        });
        assert_eq!(OutputRecord::decode(&dl.encode().unwrap()).unwrap(), dl);
        assert!(OutputRecord::decode(b"").is_err());
        assert!(OutputRecord::decode(b"D\0\0\0\x09ab").is_err());
        assert!(OutputRecord::decode(b"X").is_err());
    }

    #[test]
    fn a_sale_encodes_as_its_document() {
        let doc = crate::events::json_out::tests::sample_document();
        let ids = DocumentIdTemplate::parse("{order_id}:{item_id}").unwrap();
        let direct = OutputRecord::encode_sale(&doc, &ids).unwrap();
        let via = OutputRecord::Document(Document::from_sale(&doc, &ids).unwrap())
            .encode()
            .unwrap();
        assert_eq!(direct, via);
        let OutputRecord::Document(d) = OutputRecord::decode(&direct).unwrap() else {
            panic!("not a document")
        };
        assert_eq!(d.json, serde_json::to_vec(&doc).unwrap());
        assert_eq!(d.sale_time(), Some(doc.sale.sale_datetime));
        let no_time = Document {
            json: br#"{"order_id":1,"note":"\"sale_datetime\":\"x"}"#.to_vec(),
            ..d
        };
        assert_eq!(no_time.sale_time(), None);
    }

    #[test]
    fn day_is_the_utc_date() {
        let t = EventTime::parse("2020-01-01T23:30:00-02:00").unwrap();
        assert_eq!(day_of(t), "2020-01-02");
        // The digit writer against chrono's formatting, from year -50 to 10,050.
        let micros = |y| {
            chrono::NaiveDate::from_ymd_opt(y, 1, 1)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap()
                .and_utc()
                .timestamp_micros()
        };
        let (first, last) = (micros(-50), micros(10_050));
        let step = 3_600_000_000 * 37 + 123_456;
        let mut at = first;
        while at <= last {
            let t = EventTime::from_micros(at);
            let d = t.to_datetime().unwrap();
            assert_eq!(day_of(t), d.format("%Y-%m-%d").to_string(), "{at}");
            at += step;
        }
    }
}
