//! Reference data (items, promos): files under an S3 prefix, CSV (raw layer) or Parquet (clean
//! layer), loaded into an immutable snapshot that replaces the previous one atomically.
//!
//! Two kinds of trouble are told apart:
//! - a **bad row** (an item id that is not an integer, a missing id, a malformed decimal): the
//!   row is rejected with its reason and location, for a metric and a dead-letter entry; the
//!   rest of the file loads;
//! - a **bad file** (not UTF-8, broken CSV quoting, an unreadable Parquet file, a missing column):
//!   the whole load fails and the caller keeps the snapshot it had.
//!
//! Several files under one prefix form one snapshot. They are applied in key order and a later
//! file's row replaces an earlier one with the same id, so the result does not depend on listing
//! order.

mod csv_file;
pub mod loader;
mod parquet_file;

use std::collections::BTreeMap;
use std::sync::Arc;

use tributary_crds::ReferenceFormat;

use crate::events::{DecodeError, Item, ItemId, Promo, PromoId};

pub use csv_file::parse_csv;
pub use parquet_file::parse_parquet;

/// A reference row type: its id and how to build it from text columns.
pub trait ReferenceRow: Sized + Clone {
    /// Column names in file order (CSV) and by name (Parquet).
    const COLUMNS: &'static [&'static str];
    /// The data set's name, for logs, metrics and dead-letter keys.
    const NAME: &'static str;
    /// The row's key: an integer for items, text for promos.
    type Id: Ord + Clone + std::fmt::Debug;
    fn id(&self) -> Self::Id;
    /// `Ok(None)` for a header row.
    fn from_columns(cols: &[&str]) -> Result<Option<Self>, DecodeError>;
}

impl ReferenceRow for Item {
    const COLUMNS: &'static [&'static str] = &crate::events::ITEM_COLUMNS;
    const NAME: &'static str = "items";
    type Id = ItemId;
    fn id(&self) -> ItemId {
        self.item_id
    }
    fn from_columns(cols: &[&str]) -> Result<Option<Self>, DecodeError> {
        Item::from_columns(cols)
    }
}

impl ReferenceRow for Promo {
    const COLUMNS: &'static [&'static str] = &crate::events::PROMO_COLUMNS;
    const NAME: &'static str = "promos";
    type Id = PromoId;
    fn id(&self) -> PromoId {
        self.promo_id.clone()
    }
    fn from_columns(cols: &[&str]) -> Result<Option<Self>, DecodeError> {
        Promo::from_columns(cols)
    }
}

/// A row refused while loading a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedRow {
    /// The file's key under the prefix.
    pub file: String,
    /// 1-based line (CSV) or row (Parquet) number.
    pub row: u64,
    pub error: DecodeError,
}

/// What one file gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileLoad<T> {
    pub rows: Vec<T>,
    pub rejected: Vec<RejectedRow>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("{file}: not valid CSV: {message}")]
    Csv { file: String, message: String },
    #[error("{file}: not a readable Parquet file: {message}")]
    Parquet { file: String, message: String },
    #[error("{file}: column {column:?} is missing")]
    MissingColumn { file: String, column: &'static str },
}

impl ReferenceError {
    /// Bounded label for metrics.
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::Csv { .. } => "bad_csv",
            Self::Parquet { .. } => "bad_parquet",
            Self::MissingColumn { .. } => "missing_column",
        }
    }
}

/// Parse one file in the given format.
pub fn parse_file<T: ReferenceRow>(
    format: ReferenceFormat,
    file: &str,
    bytes: bytes::Bytes,
) -> Result<FileLoad<T>, ReferenceError> {
    match format {
        ReferenceFormat::Csv => parse_csv(file, &bytes),
        ReferenceFormat::Parquet => parse_parquet(file, bytes),
    }
}

/// An immutable set of rows by id. Cheap to share (`Arc`); a refresh builds a new one and swaps.
#[derive(Clone, Debug)]
pub struct Snapshot<T: ReferenceRow> {
    rows: Arc<BTreeMap<T::Id, T>>,
}

impl<T: ReferenceRow> Default for Snapshot<T> {
    fn default() -> Self {
        Self {
            rows: Arc::new(BTreeMap::new()),
        }
    }
}

impl<T: ReferenceRow> Snapshot<T> {
    /// Build a snapshot from the loads of every file under the prefix, given as (key, load).
    /// Files are applied in key order; a later file's row replaces an earlier one's.
    pub fn from_files(mut files: Vec<(String, FileLoad<T>)>) -> Self {
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let mut rows = BTreeMap::new();
        for (_, load) in files {
            for row in load.rows {
                rows.insert(row.id(), row);
            }
        }
        Self {
            rows: Arc::new(rows),
        }
    }

    pub fn get(&self, id: &T::Id) -> Option<&T> {
        self.rows.get(id)
    }

    /// Every row by id.
    pub fn rows(&self) -> &BTreeMap<T::Id, T> {
        &self.rows
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

#[cfg(test)]
mod tests;
