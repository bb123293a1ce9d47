use rust_decimal::Decimal;
use serde::Serialize;

use super::fields::Fields;
use super::{AddressId, DecodeError, EventTime, money};

/// One version of an address, valid from `address_datetime` until the next version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Address {
    pub address_id: AddressId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub county: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "money::serialize_opt"
    )]
    pub gmt_offset: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub street: Option<String>,
    pub address_datetime: EventTime,
}

impl Address {
    pub(crate) fn decode(f: &Fields<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            address_id: AddressId::new(f.id("address_id")?),
            city: f.opt_text("city")?,
            county: f.opt_text("county")?,
            state: f.opt_text("state")?,
            zip: f.opt_text("zip")?,
            country: f.opt_text("country")?,
            gmt_offset: f.opt_decimal("gmt_offset")?,
            location_type: f.opt_text("location_type")?,
            street: f.opt_text("street")?,
            address_datetime: f.datetime("address_datetime")?,
        })
    }
}
