//! A fast path for the common record: one flat JSON object of scalar members.
//!
//! [`flat_object`] splits such a record into `(key, raw value text)` pairs in one pass over
//! the bytes. It accepts only what it can check completely (string keys without escapes;
//! values that are strings, numbers, `true`, `false` or `null`; the JSON grammar of each) and
//! returns `None` for everything else: nested values, escaped keys, `\u` escapes, invalid
//! UTF-8 and every malformed record. The caller then takes serde_json's path, which decides,
//! and whose errors name the problem. So the fast path can change speed, never a result: what
//! it accepts, serde_json accepts with the same pairs (tested below on mutated records).

use std::borrow::Cow;

/// The members of `bytes` if it is a flat object this scanner fully validates.
pub(super) fn flat_object(bytes: &[u8]) -> Option<Vec<(Cow<'_, str>, &str)>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let b = text.as_bytes();
    let mut i = ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = ws(b, i + 1);
    let mut pairs = Vec::with_capacity(32);
    if b.get(i) == Some(&b'}') {
        return (ws(b, i + 1) == b.len()).then_some(pairs);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let (end, escaped) = string_end(b, i)?;
        if escaped {
            return None;
        }
        let key = text.get(i + 1..end - 1)?;
        i = ws(b, end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = ws(b, i + 1);
        let start = i;
        i = match *b.get(i)? {
            b'"' => string_end(b, i)?.0,
            b'-' | b'0'..=b'9' => number_end(b, i)?,
            b't' => literal_end(b, i, b"true")?,
            b'f' => literal_end(b, i, b"false")?,
            b'n' => literal_end(b, i, b"null")?,
            _ => return None,
        };
        pairs.push((Cow::Borrowed(key), text.get(start..i)?));
        i = ws(b, i);
        match *b.get(i)? {
            b',' => i = ws(b, i + 1),
            b'}' => return (ws(b, i + 1) == b.len()).then_some(pairs),
            _ => return None,
        }
    }
}

fn ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// The index after the closing quote of the string starting at `start`, and whether it has
/// escapes. Control characters and `\u` escapes are left to serde_json (`None`).
pub(super) fn string_end(b: &[u8], start: usize) -> Option<(usize, bool)> {
    let mut i = start + 1;
    let mut escaped = false;
    loop {
        // Eight bytes at a time to the next byte that needs a look: most strings of a record
        // (keys, codes, amounts) have none before their closing quote.
        while let Some(word) = b.get(i..i + 8) {
            let stop = stops(u64::from_le_bytes(word.try_into().ok()?));
            if stop != 0 {
                i += (stop.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        match *b.get(i)? {
            b'"' => return Some((i + 1, escaped)),
            b'\\' => match *b.get(i + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                    escaped = true;
                    i += 2;
                }
                _ => return None,
            },
            0..0x20 => return None,
            _ => i += 1,
        }
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `w` (little-endian) that is a quote, a backslash or a control
/// character, exact up to and including the lowest such byte (above it, a borrow may mark more
/// bytes: only the lowest is used). `x - 1` borrows into bit 7 of a byte only from a zero byte;
/// `v - 0x20` sets it for `v < 0x20` and `v >= 0xa0`, and `!w` keeps only bytes below `0x80`.
fn stops(w: u64) -> u64 {
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    ((quote.wrapping_sub(ONES) & !quote)
        | (backslash.wrapping_sub(ONES) & !backslash)
        | (w.wrapping_sub(ONES * 0x20) & !w))
        & HIGHS
}

/// The index after the number starting at `start`:
/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
pub(super) fn number_end(b: &[u8], start: usize) -> Option<usize> {
    let digits = |mut i: usize| {
        let from = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > from).then_some(i)
    };
    let mut i = start;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match b.get(i)? {
        b'0' => i + 1,
        b'1'..=b'9' => digits(i)?,
        _ => return None,
    };
    if b.get(i) == Some(&b'.') {
        i = digits(i + 1)?;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        i = digits(i)?;
    }
    Some(i)
}

pub(super) fn literal_end(b: &[u8], start: usize, word: &[u8]) -> Option<usize> {
    let end = start + word.len();
    (b.get(start..end)? == word).then_some(end)
}

/// Every record one byte away from `record`: each position replaced by, preceded by a byte of
/// JSON's structure, digits, literals, a control byte and a UTF-8 lead byte, or removed.
#[cfg(test)]
pub(super) fn for_each_mutation(record: &[u8], mut f: impl FnMut(&[u8])) {
    let replacements = b"{}[]\":,\\ -+.0123456789eEtfnulx\x01\xc3";
    for pos in 0..record.len() {
        for &r in replacements {
            let mut m = record.to_vec();
            m[pos] = r;
            f(&m);
            let mut cut = record.to_vec();
            cut.remove(pos);
            f(&cut);
            let mut grown = record.to_vec();
            grown.insert(pos, r);
            f(&grown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::fields::serde_pairs;

    fn agrees(input: &[u8]) {
        if let Some(fast) = flat_object(input) {
            let slow = serde_pairs(input).unwrap_or_else(|e| {
                panic!(
                    "fast path accepted what serde_json rejects ({e:?}): {:?}",
                    String::from_utf8_lossy(input)
                )
            });
            assert_eq!(fast, slow, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn accepts_flat_records_as_serde_json_does() {
        for ok in [
            r#"{}"#,
            r#" { } "#,
            r#"{"a":1}"#,
            r#"{"a" : -0.5e+3 , "b":"x\"y\\z\/\n", "c":null,"d":true,"e":false}"#,
            "{\"a\":\"é ü 日本\",\"a\":2}\n",
            r#"{"order_id":1,"price":"12.30","when":"2020-01-01T00:00:00Z"}"#,
        ] {
            assert!(flat_object(ok.as_bytes()).is_some(), "{ok}");
            agrees(ok.as_bytes());
        }
    }

    #[test]
    fn leaves_everything_else_to_serde_json() {
        for other in [
            "",
            "[]",
            "1",
            "{",
            "}",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{\"a\":1 \"b\":2}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":.5}",
            "{\"a\":1e}",
            "{\"a\":-}",
            "{\"a\":+1}",
            "{\"a\":tru}",
            "{\"a\":nul}",
            "{\"a\":{}}",
            "{\"a\":[1]}",
            "{\"a\\n\":1}",
            "{\"a\":\"\\u0041\"}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\t\"}",
            "{\"a\":1}x",
            "{\"a\":\"unterminated}",
            "{'a':1}",
        ] {
            assert!(flat_object(other.as_bytes()).is_none(), "{other:?}");
        }
        assert!(flat_object(b"{\"a\":\"\xff\"}").is_none());
    }

    /// The word-at-a-time search stops where a byte-by-byte one does, for every byte value at
    /// every position of a word and after every other byte value.
    #[test]
    fn stops_at_the_first_quote_backslash_or_control_byte() {
        let first_stop = |w: &[u8; 8]| w.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
        for lead in 0..=255u8 {
            for v in 0..=255u8 {
                for pos in 0..8 {
                    let mut w = [b'a'; 8];
                    w[pos] = v;
                    if pos > 0 {
                        w[pos - 1] = lead;
                    }
                    let m = stops(u64::from_le_bytes(w));
                    let found = (m != 0).then(|| (m.trailing_zeros() / 8) as usize);
                    assert_eq!(found, first_stop(&w), "{w:?}");
                }
            }
        }
        // Strings across word boundaries, with escapes and multi-byte characters.
        for len in 0..40 {
            for stop in [b'"', b'\\', 0x01] {
                let mut s = vec![b'"'];
                s.extend((0..len).map(|k| {
                    if k % 5 == 4 {
                        0xc3
                    } else {
                        b'a' + (k % 26) as u8
                    }
                }));
                s.push(stop);
                s.extend_from_slice(b"n\"");
                let expected = match stop {
                    b'"' => Some((len + 2, false)),
                    b'\\' => Some((len + 4, true)),
                    _ => None,
                };
                assert_eq!(string_end(&s, 0), expected, "{len} {stop}");
            }
        }
    }

    /// Every single-byte change of a real record, at every position: whatever the fast path
    /// accepts, serde_json accepts with the same pairs.
    #[test]
    fn mutated_records_agree_with_serde_json() {
        let record = br#"{"order_id":7,"item_id":42,"quantity":"3","list_price":1E+2,"sales_price":-0.005,"bill_customer_id":"C\"1","warehouse_id":"W\\1","promo_id":null,"ship_mode":"x y","flag":true,"sale_datetime":"2020-01-01T13:15:14.852+01:00"}"#;
        agrees(record);
        for_each_mutation(record, agrees);
    }
}
