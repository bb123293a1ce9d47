//! Dimension and reference rows as the join hands them out: shared, with their JSON rendered
//! once.
//!
//! A customer version is used by every sale of that customer (twice when it both bills and
//! ships), an item by every sale of the item. Cloning the row for each document and writing
//! its JSON again was a quarter of the engine's time; a [`Shared`] row is reference-counted,
//! and its object JSON is written when the row is loaded, so a document copies bytes.
//!
//! The rendered bytes are exactly what the row's `Serialize` derive gives (the writer in
//! [`super::json_out`], tested against serde), and `Shared<T>` serialises, compares and
//! prints as `T`, so the document's serde form is unchanged.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Serialize, Serializer};

/// A row type whose document JSON can be written by the direct writer.
pub trait Render {
    /// Append the row's JSON object (`{...}`, the bytes `serde_json::to_vec` gives).
    fn render(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error>;
}

/// A row with its rendered JSON, cheap to clone.
pub struct Shared<T>(Arc<Inner<T>>);

struct Inner<T> {
    value: T,
    json: Box<[u8]>,
}

impl<T: Render> Shared<T> {
    /// Render `value` once. Fails only for an event time outside the calendar (which decoded
    /// input never has), as serialising it would.
    pub fn new(value: T) -> Result<Self, serde_json::Error> {
        let mut json = Vec::with_capacity(512);
        value.render(&mut json)?;
        Ok(Self(Arc::new(Inner {
            value,
            json: json.into_boxed_slice(),
        })))
    }
}

impl<T> Shared<T> {
    /// The row's JSON object.
    pub fn json(&self) -> &[u8] {
        &self.0.json
    }

    pub fn value(&self) -> &T {
        &self.0.value
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T> Deref for Shared<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0.value
    }
}

impl<T: PartialEq> PartialEq for Shared<T> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.value == other.0.value
    }
}

impl<T: Eq> Eq for Shared<T> {}

impl<T: fmt::Debug> fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.value.fmt(f)
    }
}

impl<T: Serialize> Serialize for Shared<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.value.serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures;

    #[test]
    fn rendered_json_is_the_serde_form() {
        let c = test_fixtures::customer("C\"1", "A1", 10, "Zoë \n");
        let a = test_fixtures::address("A1", 0, "Spring\tfield");
        let i = test_fixtures::item(7);
        let p = test_fixtures::promo("5");
        assert_eq!(
            Shared::new(c.clone()).unwrap().json(),
            serde_json::to_vec(&c).unwrap().as_slice()
        );
        assert_eq!(
            Shared::new(a.clone()).unwrap().json(),
            serde_json::to_vec(&a).unwrap().as_slice()
        );
        assert_eq!(
            Shared::new(i.clone()).unwrap().json(),
            serde_json::to_vec(&i).unwrap().as_slice()
        );
        assert_eq!(
            Shared::new(p.clone()).unwrap().json(),
            serde_json::to_vec(&p).unwrap().as_slice()
        );
        let shared = Shared::new(c.clone()).unwrap();
        assert_eq!(*shared, c);
        assert_eq!(format!("{shared:?}"), format!("{c:?}"));
        assert_eq!(
            serde_json::to_vec(&shared).unwrap(),
            serde_json::to_vec(&c).unwrap()
        );
    }
}
