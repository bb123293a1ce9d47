//! The row count of a Parquet file, from its footer alone: xtask does not link arrow/parquet (a
//! fresh clone builds xtask before anything else, so it stays small). A file ends with the
//! footer (a Thrift compact-protocol `FileMetaData`), its length as a little-endian u32, and
//! `PAR1`; `FileMetaData` field 3 is `num_rows: i64`. The reader walks the footer's fields,
//! skipping the others (the schema comes before `num_rows`).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Rows in the Parquet file at `path`.
pub fn rows_in_file(path: &Path) -> Result<i64> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f.metadata()?.len();
    if len < 12 {
        bail!("{} is too short for Parquet", path.display());
    }
    let mut tail = [0u8; 8];
    f.seek(SeekFrom::End(-8))?;
    f.read_exact(&mut tail)?;
    if &tail[4..] != b"PAR1" {
        bail!("{} does not end with PAR1", path.display());
    }
    let footer_len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if footer_len + 12 > len {
        bail!(
            "{}: footer length {footer_len} is past the start",
            path.display()
        );
    }
    let mut footer = vec![0u8; usize::try_from(footer_len)?];
    f.seek(SeekFrom::End(-8 - i64::try_from(footer_len)?))?;
    f.read_exact(&mut footer)?;
    num_rows(&footer).with_context(|| format!("reading the footer of {}", path.display()))
}

/// `num_rows` of a Thrift compact-encoded `FileMetaData`.
pub fn num_rows(footer: &[u8]) -> Result<i64> {
    let mut r = Reader {
        buf: footer,
        pos: 0,
    };
    let mut last_id: i16 = 0;
    loop {
        let Some((id, ty)) = r.field_header(&mut last_id)? else {
            bail!("no num_rows field");
        };
        if id == 3 && ty == I64 {
            return r.zigzag();
        }
        r.skip(ty, 0)?;
    }
}

const BOOL_TRUE: u8 = 1;
const BOOL_FALSE: u8 = 2;
const BYTE: u8 = 3;
const I16: u8 = 4;
const I32: u8 = 5;
const I64: u8 = 6;
const DOUBLE: u8 = 7;
const BINARY: u8 = 8;
const LIST: u8 = 9;
const SET: u8 = 10;
const MAP: u8 = 11;
const STRUCT: u8 = 12;
const UUID: u8 = 13;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8> {
        let b = *self.buf.get(self.pos).context("footer ends early")?;
        self.pos += 1;
        Ok(b)
    }

    fn advance(&mut self, n: usize) -> Result<()> {
        if self.pos + n > self.buf.len() {
            bail!("footer ends early");
        }
        self.pos += n;
        Ok(())
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        bail!("varint too long")
    }

    fn zigzag(&mut self) -> Result<i64> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    /// The next field's id and type, `None` at the struct's end.
    fn field_header(&mut self, last_id: &mut i16) -> Result<Option<(i16, u8)>> {
        let b = self.byte()?;
        if b == 0 {
            return Ok(None);
        }
        let (delta, ty) = (b >> 4, b & 0x0f);
        let id = if delta == 0 {
            i16::try_from(self.zigzag()?)?
        } else {
            *last_id + i16::from(delta)
        };
        *last_id = id;
        Ok(Some((id, ty)))
    }

    fn skip(&mut self, ty: u8, depth: u32) -> Result<()> {
        if depth > 64 {
            bail!("footer nests too deep");
        }
        match ty {
            BOOL_TRUE | BOOL_FALSE => Ok(()),
            BYTE => self.advance(1),
            I16 | I32 | I64 => self.varint().map(drop),
            DOUBLE => self.advance(8),
            BINARY => {
                let n = usize::try_from(self.varint()?)?;
                self.advance(n)
            }
            UUID => self.advance(16),
            LIST | SET => {
                let h = self.byte()?;
                let elem = h & 0x0f;
                let n = match h >> 4 {
                    15 => usize::try_from(self.varint()?)?,
                    n => usize::from(n),
                };
                for _ in 0..n {
                    // A bool element is a whole byte in a list.
                    if elem == BOOL_TRUE || elem == BOOL_FALSE {
                        self.advance(1)?;
                    } else {
                        self.skip(elem, depth + 1)?;
                    }
                }
                Ok(())
            }
            MAP => {
                let n = usize::try_from(self.varint()?)?;
                if n == 0 {
                    return Ok(());
                }
                let kv = self.byte()?;
                for _ in 0..n {
                    self.skip(kv >> 4, depth + 1)?;
                    self.skip(kv & 0x0f, depth + 1)?;
                }
                Ok(())
            }
            STRUCT => {
                let mut last = 0;
                while let Some((_, t)) = self.field_header(&mut last)? {
                    self.skip(t, depth + 1)?;
                }
                Ok(())
            }
            other => bail!("unknown Thrift compact type {other}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny Thrift compact writer, enough to build footers.
    #[derive(Default)]
    struct W(Vec<u8>, Vec<i16>);

    impl W {
        fn varint(&mut self, mut v: u64) {
            loop {
                let b = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    self.0.push(b);
                    return;
                }
                self.0.push(b | 0x80);
            }
        }
        fn zigzag(&mut self, v: i64) {
            self.varint(((v << 1) ^ (v >> 63)) as u64);
        }
        fn field(&mut self, id: i16, ty: u8) {
            let last = self.1.last().copied().unwrap_or(0);
            let delta = id - last;
            if (1..=15).contains(&delta) {
                self.0.push(((delta as u8) << 4) | ty);
            } else {
                self.0.push(ty);
                self.zigzag(i64::from(id));
            }
            if let Some(l) = self.1.last_mut() {
                *l = id;
            }
        }
        fn begin(&mut self) {
            self.1.push(0);
        }
        fn end(&mut self) {
            self.0.push(0);
            self.1.pop();
        }
        fn string(&mut self, id: i16, s: &str) {
            self.field(id, BINARY);
            self.varint(s.len() as u64);
            self.0.extend_from_slice(s.as_bytes());
        }
    }

    /// A FileMetaData shaped like arrow-rs writes it: version, a schema list of structs (with
    /// strings, ints, a bool and a nested struct), num_rows, row groups, key-value metadata
    /// (a list of structs), created_by.
    fn footer(rows: i64, long_schema: bool) -> Vec<u8> {
        let mut w = W::default();
        w.begin();
        w.field(1, I32);
        w.zigzag(2);
        w.field(2, LIST);
        let elems = if long_schema { 40 } else { 3 };
        if elems < 15 {
            w.0.push(((elems as u8) << 4) | STRUCT);
        } else {
            w.0.push(0xf0 | STRUCT);
            w.varint(elems);
        }
        for i in 0..elems {
            w.begin();
            w.field(1, I32);
            w.zigzag(6);
            w.field(3, I32);
            w.zigzag(1);
            w.string(4, &format!("column_{i}"));
            w.field(5, I32);
            w.zigzag(i as i64);
            // A field id jump larger than 15 uses the long form.
            w.field(10, STRUCT);
            w.begin();
            w.field(1, BOOL_TRUE);
            w.field(2, DOUBLE);
            w.0.extend_from_slice(&1.5f64.to_le_bytes());
            w.end();
            w.field(30, I64);
            w.zigzag(-7);
            w.end();
        }
        w.field(3, I64);
        w.zigzag(rows);
        w.field(4, LIST);
        w.0.push(STRUCT); // no row groups
        w.field(5, LIST);
        w.0.push((1 << 4) | STRUCT);
        w.begin();
        w.string(1, "ARROW:schema");
        w.string(2, "base64...");
        w.end();
        w.string(6, "parquet-rs version 60.0.0");
        w.end();
        w.0
    }

    #[test]
    fn reads_num_rows_after_the_schema() -> Result<()> {
        assert_eq!(num_rows(&footer(42, false))?, 42);
        assert_eq!(
            num_rows(&footer(1_234_567_890_123, true))?,
            1_234_567_890_123
        );
        assert_eq!(num_rows(&footer(0, false))?, 0);
        Ok(())
    }

    #[test]
    fn refuses_what_is_not_a_footer() {
        assert!(num_rows(&[]).is_err());
        let f = footer(42, true);
        assert!(num_rows(&f[..f.len() / 3]).is_err(), "truncated");
        assert!(num_rows(&[0x0e]).is_err(), "unknown type");
    }

    #[test]
    fn reads_a_file() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("xtask-parquet-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("part.parquet");
        let meta = footer(19_600, true);
        let mut body = b"PAR1 pages would be here".to_vec();
        body.extend_from_slice(&meta);
        body.extend_from_slice(&u32::try_from(meta.len())?.to_le_bytes());
        body.extend_from_slice(b"PAR1");
        std::fs::write(&path, &body)?;
        let rows = rows_in_file(&path);
        std::fs::write(&path, b"not parquet at all")?;
        let bad = rows_in_file(&path);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(rows?, 19_600);
        assert!(bad.is_err());
        Ok(())
    }
}
