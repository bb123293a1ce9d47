use serde::Serialize;

use super::fields::Fields;
use super::{AddressId, CustomerId, DecodeError, EventTime};

/// One version of a customer, valid from `customer_datetime` until the next version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Customer {
    pub customer_id: CustomerId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub salutation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub birth_country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_address: Option<String>,
    /// Null in TPC-DS for some customers: the document then has no nested address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_id: Option<AddressId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gender: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marital_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub education_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purchase_estimate: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credit_rating: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buy_potential: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vehicle_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lower_bound: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upper_bound: Option<i64>,
    /// Empty or null in the source becomes 1970-01-01T00:00:00Z, as in the original.
    pub birth_date: EventTime,
    pub customer_datetime: EventTime,
}

impl Customer {
    pub(crate) fn decode(f: &Fields<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            customer_id: CustomerId::new(f.id("customer_id")?),
            salutation: f.opt_text("salutation")?,
            first_name: f.opt_text("first_name")?,
            last_name: f.opt_text("last_name")?,
            birth_country: f.opt_text("birth_country")?,
            email_address: f.opt_text("email_address")?,
            address_id: f.opt_id("address_id")?.map(AddressId::new),
            gender: f.opt_text("gender")?,
            marital_status: f.opt_text("marital_status")?,
            education_status: f.opt_text("education_status")?,
            purchase_estimate: f.opt_int("purchase_estimate")?,
            credit_rating: f.opt_text("credit_rating")?,
            buy_potential: f.opt_text("buy_potential")?,
            vehicle_count: f.opt_int("vehicle_count")?,
            lower_bound: f.opt_int("lower_bound")?,
            upper_bound: f.opt_int("upper_bound")?,
            birth_date: f.date_or_epoch("birth_date")?,
            customer_datetime: f.datetime("customer_datetime")?,
        })
    }
}
