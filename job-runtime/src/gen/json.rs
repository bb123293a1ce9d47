//! A tiny JSON object writer: keys in insertion order, numbers written as their exact text,
//! so a record is a pure function of its fields (byte-identical across runs) and money keeps
//! its digits (`12.30` stays `12.30`; `serde_json::Value` would go through `f64`).

pub(crate) struct Obj {
    buf: String,
    first: bool,
}

fn quote(s: &str) -> String {
    // Serialising a &str cannot fail.
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

impl Obj {
    pub(crate) fn new() -> Self {
        Self {
            buf: String::from("{"),
            first: true,
        }
    }

    fn key(&mut self, k: &str) {
        if !self.first {
            self.buf.push(',');
        }
        self.first = false;
        self.buf.push_str(&quote(k));
        self.buf.push(':');
    }

    /// A JSON string.
    pub(crate) fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        self.buf.push_str(&quote(v));
        self
    }

    /// A JSON string, or `null`.
    pub(crate) fn opt_str(&mut self, k: &str, v: Option<&str>) -> &mut Self {
        match v {
            Some(v) => self.str(k, v),
            None => self.null(k),
        }
    }

    /// Raw JSON text (a number's exact digits, `null`, ...). The caller vouches for validity.
    pub(crate) fn raw(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        self.buf.push_str(v);
        self
    }

    pub(crate) fn null(&mut self, k: &str) -> &mut Self {
        self.raw(k, "null")
    }

    /// A number either as a JSON number or as a JSON string of the same digits.
    pub(crate) fn num(&mut self, k: &str, digits: &str, as_string: bool) -> &mut Self {
        if as_string {
            self.str(k, digits)
        } else {
            self.raw(k, digits)
        }
    }

    pub(crate) fn finish(&mut self) -> Vec<u8> {
        let mut s = std::mem::take(&mut self.buf);
        s.push('}');
        s.into_bytes()
    }
}
