//! Identifier newtypes. Producers send ids as JSON strings (`"AAAAAAAABCMDBAAA"`) or numbers
//! (`42`); both are normalised to the text, so `42` and `"42"` join. Text is kept as sent
//! (no trimming of leading zeros): two distinct string ids must never collapse into one.

use std::fmt;

use serde::Serialize;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_string())
            }
        }
    };
}

string_id!(
    /// `customer_id` of a customer; `bill_customer_id` / `ship_customer_id` of a sale.
    CustomerId
);
string_id!(
    /// `address_id` of an address and of the customer living there.
    AddressId
);
string_id!(
    /// `warehouse_id` of a sale (not joined: there is no warehouse stream).
    WarehouseId
);
string_id!(
    /// `promo_id` of a promo row (the promo file's first column) and of a sale, where it may
    /// be null (no promotion). Text in the source (`"1"` is the text "1"), so `P12` is as
    /// valid as `12`.
    PromoId
);

/// `item_id`: an integer in the source (TPC-DS surrogate key); non-numeric rows are rejected.
pub type ItemId = i64;
