//! Credentials held in memory. A [`Secret`] prints as `<redacted>` through `Debug` (and has no
//! `Display`), so a configuration that holds one can be logged whole (`?config`) without leaking
//! it; the value is read only where it is used, through [`Secret::expose`].

use std::fmt;
use std::str::FromStr;

#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that sends or compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Config {
            user: String,
            password: Option<Secret>,
        }
        let c = Config {
            user: "job".into(),
            password: Some(Secret::new("hunter2")),
        };
        let printed = format!("{c:?} {c:#?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
        assert_eq!(c.password.unwrap().expose(), "hunter2");
    }
}
