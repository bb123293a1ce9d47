//! Reference rows (item, promo) read from CSV/Parquet files. They carry no usable event time
//! (the original dropped `item_datetime` / `promo_datetime`), so the join treats them as
//! current-state tables: the latest loaded row wins.

use rust_decimal::Decimal;
use serde::Serialize;

use super::{DecodeError, ItemId, PromoId, money};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Item {
    pub item_id: ItemId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item_desc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manufact: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub units: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Promo {
    pub promo_id: PromoId,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "money::serialize_opt"
    )]
    pub cost: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_target: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promo_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// The file's `start_datetime`, kept as text: its format is not specified by the source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promo_start_date: Option<String>,
    /// The file's `end_datetime`, kept as text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promo_end_date: Option<String>,
}

/// Column order of the item CSV (and column names of the Parquet file).
pub const ITEM_COLUMNS: [&str; 12] = [
    "item_id",
    "item_desc",
    "brand",
    "class",
    "category",
    "manufact",
    "size",
    "color",
    "units",
    "container",
    "product_name",
    "item_datetime",
];

/// Column order of the promo CSV (and column names of the Parquet file).
pub const PROMO_COLUMNS: [&str; 8] = [
    "promo_id",
    "cost",
    "response_target",
    "promo_name",
    "purpose",
    "start_datetime",
    "end_datetime",
    "promo_datetime",
];

/// Columns of one CSV row, already split by the file reader (which owns quoting).
struct Columns<'a, 'c> {
    cols: &'a [&'c str],
    names: &'static [&'static str],
}

impl Columns<'_, '_> {
    fn text(&self, i: usize) -> Option<String> {
        self.cols
            .get(i)
            .filter(|s| !s.is_empty())
            .map(|s| s.to_string())
    }

    /// An id taken as text, trimmed like every other column read as a value.
    fn id(&self, i: usize) -> Option<String> {
        self.cols
            .get(i)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    fn int(&self, i: usize) -> Result<Option<i64>, DecodeError> {
        match self.cols.get(i).map(|s| s.trim()) {
            None | Some("") => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| DecodeError::WrongType {
                field: self.names[i],
                expected: "an integer",
            }),
        }
    }

    fn decimal(&self, i: usize) -> Result<Option<Decimal>, DecodeError> {
        match self.cols.get(i).map(|s| s.trim()) {
            None | Some("") => Ok(None),
            Some(s) => {
                money::parse_decimal(s)
                    .map(Some)
                    .ok_or_else(|| DecodeError::InvalidDecimal {
                        field: self.names[i],
                        value: s.chars().take(64).collect(),
                    })
            }
        }
    }

    fn check_count(&self) -> Result<(), DecodeError> {
        // The last column (a dropped datetime) may be missing; any other missing column is not.
        let needed = self.names.len() - 1;
        match self.names.get(self.cols.len()) {
            Some(missing) if self.cols.len() < needed => {
                Err(DecodeError::MissingField { field: missing })
            }
            _ => Ok(()),
        }
    }

    fn is_header(&self) -> bool {
        self.cols.first().map(|c| c.trim()) == Some(self.names[0])
    }
}

impl Item {
    /// One row of the item file: `Ok(None)` for the header row; a row whose `item_id` is not
    /// an integer is an error (the loader counts and skips it, as the original dropped it).
    pub fn from_columns(cols: &[&str]) -> Result<Option<Self>, DecodeError> {
        let c = Columns {
            cols,
            names: &ITEM_COLUMNS,
        };
        if c.is_header() {
            return Ok(None);
        }
        c.check_count()?;
        let item_id = c
            .int(0)?
            .ok_or(DecodeError::MissingField { field: "item_id" })?;
        Ok(Some(Self {
            item_id,
            item_desc: c.text(1),
            brand: c.text(2),
            class: c.text(3),
            category: c.text(4),
            manufact: c.text(5),
            size: c.text(6),
            color: c.text(7),
            units: c.text(8),
            container: c.text(9),
            product_name: c.text(10),
        }))
    }
}

impl Promo {
    /// One row of the promo file: `Ok(None)` for the header row. The id is text, as in the
    /// source: `P12` and `12` are both ids, and `12` joins a sale's `12` or `"12"`.
    pub fn from_columns(cols: &[&str]) -> Result<Option<Self>, DecodeError> {
        let c = Columns {
            cols,
            names: &PROMO_COLUMNS,
        };
        if c.is_header() {
            return Ok(None);
        }
        c.check_count()?;
        let promo_id = c
            .id(0)
            .map(PromoId::new)
            .ok_or(DecodeError::MissingField { field: "promo_id" })?;
        Ok(Some(Self {
            promo_id,
            cost: c.decimal(1)?,
            response_target: c.int(2)?,
            promo_name: c.text(3),
            purpose: c.text(4),
            promo_start_date: c.text(5),
            promo_end_date: c.text(6),
        }))
    }
}
