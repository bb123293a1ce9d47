//! Exact decimals in and out of JSON.
//!
//! In: the exact text of a JSON number or string is parsed straight into a [`Decimal`]
//! (serde_json's `raw_value` hands us the number's text), never through `f64`.
//!
//! Out: money is written as a JSON *number* whose digits are exactly the decimal's text
//! (`12.30` stays `12.30`). Numbers rather than strings because every consumer (OpenSearch
//! `scaled_float`/`double`, dashboards, `jq`) then sees a number even without the index template
//! (a string would be mapped as `text` by dynamic mapping: the original's defect 6), while
//! `_source` keeps the exact digits for anyone re-reading it as a decimal.

use rust_decimal::Decimal;
use serde::Serializer;
use serde::ser::Error as _;
use serde_json::value::RawValue;

/// Parse the text of a decimal: `-12.34`, `0.1`, `1E+3`, `2.5e-3`. Anything else (`NaN`,
/// `1_000`, ` 1`, more than 28 fractional digits, out of range) is `None`: rounding silently
/// would make two producers disagree.
pub fn parse_decimal(text: &str) -> Option<Decimal> {
    if let Some(d) = parse_plain(text.as_bytes()) {
        return Some(d);
    }
    parse_general(text)
}

/// The common case in one pass: `-?digits(.digits)?` with at most 18 digits (they fit an
/// `i64`), not negative zero. `None` sends the text to [`parse_general`], which decides;
/// where both give a value it is the same, scale included (tested).
fn parse_plain(b: &[u8]) -> Option<Decimal> {
    let (negative, digits) = match b.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut mantissa: i64 = 0;
    let mut count = 0;
    let mut point = None;
    for (i, &c) in digits.iter().enumerate() {
        match c {
            b'0'..=b'9' if count < 18 => {
                mantissa = mantissa * 10 + i64::from(c - b'0');
                count += 1;
            }
            b'.' if point.is_none() && i > 0 && i + 1 < digits.len() => point = Some(i),
            _ => return None,
        }
    }
    if negative && mantissa == 0 {
        return None;
    }
    let scale = point.map_or(0, |p| digits.len() - p - 1);
    let scale = u32::try_from(scale).ok()?;
    Decimal::try_new(if negative { -mantissa } else { mantissa }, scale).ok()
}

/// Any JSON-like number (exponents, more digits).
fn parse_general(text: &str) -> Option<Decimal> {
    if !is_json_like_number(text) {
        return None;
    }
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], Some(&text[i + 1..])),
        None => (text, None),
    };
    let mut value = Decimal::from_str_exact(mantissa).ok()?;
    let Some(exp) = exponent else {
        return Some(value);
    };
    let exp: i64 = exp.parse().ok()?;
    let scale = i64::from(value.scale());
    if exp <= scale {
        let new_scale = u32::try_from(scale - exp).ok()?;
        if new_scale > Decimal::MAX_SCALE {
            return None;
        }
        value.set_scale(new_scale).ok()?;
        Some(value)
    } else {
        value.set_scale(0).ok()?;
        let mut factor = Decimal::ONE;
        for _ in 0..(exp - scale) {
            factor = factor.checked_mul(Decimal::TEN)?;
        }
        value.checked_mul(factor)
    }
}

/// `-?digits(.digits)?([eE][+-]?digits)?` (a leading `+` is tolerated in strings).
fn is_json_like_number(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    if !digits(&mut i) {
        return false;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

/// Serialise a decimal as a JSON number with exactly its digits.
pub fn serialize<S: Serializer>(value: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    let raw = RawValue::from_string(value.to_string()).map_err(S::Error::custom)?;
    serde::Serialize::serialize(&raw, s)
}

/// Append the decimal's text (what `Display` writes, and so [`serialize`]) without the
/// formatting machinery: the document writer writes 18 of them per sale.
pub fn write_decimal(out: &mut Vec<u8>, value: &Decimal) {
    let mantissa = value.mantissa();
    if mantissa == 0 && value.is_sign_negative() {
        // Negative zero: leave its rendering to `Display`.
        out.extend_from_slice(value.to_string().as_bytes());
        return;
    }
    if mantissa < 0 {
        out.push(b'-');
    }
    let mut buf = itoa::Buffer::new();
    // Money fits 64 bits; the 128-bit formatting is several times slower.
    let magnitude = mantissa.unsigned_abs();
    let digits = match u64::try_from(magnitude) {
        Ok(small) => buf.format(small),
        Err(_) => buf.format(magnitude),
    }
    .as_bytes();
    let scale = value.scale() as usize;
    if scale == 0 {
        out.extend_from_slice(digits);
    } else if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.extend_from_slice(int);
        out.push(b'.');
        out.extend_from_slice(frac);
    } else {
        out.extend_from_slice(b"0.");
        out.resize(out.len() + scale - digits.len(), b'0');
        out.extend_from_slice(digits);
    }
}

/// [`serialize`] for optional fields (callers skip `None`).
pub fn serialize_opt<S: Serializer>(value: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => serialize(v, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly() {
        assert_eq!(parse_decimal("0.1").unwrap().to_string(), "0.1");
        assert_eq!(
            parse_decimal("123456789.123456789").unwrap().to_string(),
            "123456789.123456789"
        );
        assert_eq!(parse_decimal("1E+3").unwrap().to_string(), "1000");
        assert_eq!(parse_decimal("2.5e-3").unwrap().to_string(), "0.0025");
        assert_eq!(parse_decimal("-12.30").unwrap().to_string(), "-12.30");
        for bad in [
            "", "NaN", "1_000", " 1", "1.", ".5", "0x10", "1e", "1e99999", "1e-40",
        ] {
            assert!(parse_decimal(bad).is_none(), "{bad:?} must be rejected");
        }
        // 29 fractional digits cannot be held exactly: rejected, not rounded.
        assert!(parse_decimal("0.00000000000000000000000000001").is_none());
    }

    /// The one-pass path gives exactly what the general one gives (value, scale and sign:
    /// `Decimal::serialize` is the representation), and declines what it cannot decide.
    #[test]
    fn the_plain_path_agrees_with_the_general_one() {
        let mut texts: Vec<String> = [
            "0",
            "-0",
            "0.0",
            "-0.00",
            "00",
            "007.50",
            "1",
            "-1",
            "12.30",
            "-12.30",
            "1.",
            ".5",
            "-",
            "-.",
            "1..2",
            "1.2.3",
            "+1",
            "1e3",
            " 1",
            "1 ",
            "9223372036854775807",
            "999999999999999999",
            "-999999999999999999",
            "9999999999999999999",
            "0.000000000000000001",
            "123456789.123456789",
            "1234567890123456789.5",
        ]
        .iter()
        .map(|s| (*s).to_string())
        .collect();
        // Every short string over the characters that matter, and random longer ones.
        let alphabet = ['0', '1', '9', '.', '-', 'e'];
        let mut frontier = vec![String::new()];
        for _ in 0..5 {
            let mut next = Vec::new();
            for t in &frontier {
                for c in alphabet {
                    next.push(format!("{t}{c}"));
                }
            }
            texts.extend(next.iter().cloned());
            frontier = next;
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = 1 + (x % 22) as usize;
            let mut t = String::new();
            let mut y = x;
            for k in 0..len {
                let c = match y % 13 {
                    0 if k == 0 => '-',
                    1 => '.',
                    _ => char::from(b'0' + (y % 10) as u8),
                };
                t.push(c);
                y = y.rotate_right(5).wrapping_mul(0x2545_f491_4f6c_dd1d);
            }
            texts.push(t);
        }
        let mut plain = 0;
        for t in &texts {
            let general = parse_general(t).map(|d| d.serialize());
            match parse_plain(t.as_bytes()) {
                Some(d) => {
                    plain += 1;
                    assert_eq!(Some(d.serialize()), general, "{t:?}");
                }
                None => {
                    // Declined: the general path decides (it may accept: exponents, long).
                }
            }
            assert_eq!(parse_decimal(t).map(|d| d.serialize()), general, "{t:?}");
        }
        assert!(plain > 5_000, "the plain path took only {plain} texts");
    }

    #[test]
    fn writes_what_display_writes() {
        let mut values: Vec<Decimal> = [
            "0",
            "0.00",
            "-0.00",
            "-0",
            "1",
            "-1",
            "0.5",
            "-0.005",
            "12.30",
            "100",
            "1E+2",
            "0.0000000000000000000000000001",
            "79228162514264337593543950335",
            "-79228162514264337593543950335",
            "7.9228162514264337593543950335",
        ]
        .iter()
        .map(|t| parse_decimal(t).unwrap())
        .collect();
        // Every scale with a spread of mantissas.
        let mut m: i64 = 1;
        for scale in 0..=28 {
            values.push(Decimal::new(m, scale));
            values.push(Decimal::new(-m / 7, scale));
            m = m.wrapping_mul(31).wrapping_add(17) % 1_000_000_000_000_000;
        }
        for v in values {
            let mut out = Vec::new();
            write_decimal(&mut out, &v);
            assert_eq!(String::from_utf8(out).unwrap(), v.to_string(), "{v:?}");
        }
    }

    #[test]
    fn serialises_as_an_exact_number() {
        #[derive(serde::Serialize)]
        struct M {
            #[serde(serialize_with = "serialize")]
            v: Decimal,
        }
        let v = parse_decimal("123456789.123456789").unwrap();
        assert_eq!(
            serde_json::to_string(&M { v }).unwrap(),
            r#"{"v":123456789.123456789}"#
        );
    }
}
