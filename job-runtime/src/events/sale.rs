use std::borrow::Cow;

use rust_decimal::Decimal;
use serde::Serialize;

use super::fields::Fields;
use super::{CustomerId, DecodeError, EventTime, ItemId, PromoId, WarehouseId, money};

/// The natural key of a sale line: `order_id` alone is not unique (one record per order line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct SaleKey {
    pub order_id: i64,
    pub item_id: ItemId,
}

/// One sale line (TPC-DS `web_sales`), joined as of `sale_datetime`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Sale {
    pub order_id: i64,
    pub item_id: ItemId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantity: Option<i64>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "money::serialize_opt"
    )]
    pub wholesale_cost: Option<Decimal>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "money::serialize_opt"
    )]
    pub list_price: Option<Decimal>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "money::serialize_opt"
    )]
    pub sales_price: Option<Decimal>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "money::serialize_opt"
    )]
    pub ext_discount_amt: Option<Decimal>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "money::serialize_opt"
    )]
    pub ext_sales_price: Option<Decimal>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "money::serialize_opt"
    )]
    pub ext_wholesale_cost: Option<Decimal>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "money::serialize_opt"
    )]
    pub ext_list_price: Option<Decimal>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "money::serialize_opt"
    )]
    pub ext_tax: Option<Decimal>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "money::serialize_opt"
    )]
    pub coupon_amt: Option<Decimal>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "money::serialize_opt"
    )]
    pub ext_ship_cost: Option<Decimal>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "money::serialize_opt"
    )]
    pub net_paid: Option<Decimal>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "money::serialize_opt"
    )]
    pub net_paid_inc_tax: Option<Decimal>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "money::serialize_opt"
    )]
    pub net_paid_inc_ship: Option<Decimal>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "money::serialize_opt"
    )]
    pub net_paid_inc_ship_tax: Option<Decimal>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "money::serialize_opt"
    )]
    pub net_profit: Option<Decimal>,
    pub bill_customer_id: CustomerId,
    pub ship_customer_id: CustomerId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warehouse_id: Option<WarehouseId>,
    /// Null when the sale had no promotion: the document then has no `promo`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promo_id: Option<PromoId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ship_delay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ship_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ship_carrier: Option<String>,
    pub sale_datetime: EventTime,
}

impl Sale {
    pub(crate) fn decode(f: &Fields<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            order_id: f.int("order_id")?,
            item_id: f.int("item_id")?,
            quantity: f.opt_int("quantity")?,
            wholesale_cost: f.opt_decimal("wholesale_cost")?,
            list_price: f.opt_decimal("list_price")?,
            sales_price: f.opt_decimal("sales_price")?,
            ext_discount_amt: f.opt_decimal("ext_discount_amt")?,
            ext_sales_price: f.opt_decimal("ext_sales_price")?,
            ext_wholesale_cost: f.opt_decimal("ext_wholesale_cost")?,
            ext_list_price: f.opt_decimal("ext_list_price")?,
            ext_tax: f.opt_decimal("ext_tax")?,
            coupon_amt: f.opt_decimal("coupon_amt")?,
            ext_ship_cost: f.opt_decimal("ext_ship_cost")?,
            net_paid: f.opt_decimal("net_paid")?,
            net_paid_inc_tax: f.opt_decimal("net_paid_inc_tax")?,
            net_paid_inc_ship: f.opt_decimal("net_paid_inc_ship")?,
            net_paid_inc_ship_tax: f.opt_decimal("net_paid_inc_ship_tax")?,
            net_profit: f.opt_decimal("net_profit")?,
            bill_customer_id: CustomerId::new(f.id("bill_customer_id")?),
            ship_customer_id: CustomerId::new(f.id("ship_customer_id")?),
            warehouse_id: f.opt_id("warehouse_id")?.map(WarehouseId::new),
            promo_id: f.opt_id("promo_id")?.map(PromoId::new),
            ship_delay: f.opt_text("ship_delay")?,
            ship_mode: f.opt_text("ship_mode")?,
            ship_carrier: f.opt_text("ship_carrier")?,
            sale_datetime: f.datetime("sale_datetime")?,
        })
    }

    pub fn key(&self) -> SaleKey {
        SaleKey {
            order_id: self.order_id,
            item_id: self.item_id,
        }
    }

    /// The value of a scalar field by its JSON name, as text: what a document id template
    /// (`tributary_crds::document_id::SALE_FIELDS`) renders. `None` for null or unknown fields.
    pub fn field(&self, name: &str) -> Option<Cow<'_, str>> {
        Some(match name {
            "order_id" => self.order_id.to_string().into(),
            "item_id" => self.item_id.to_string().into(),
            "quantity" => self.quantity?.to_string().into(),
            "bill_customer_id" => self.bill_customer_id.as_str().into(),
            "ship_customer_id" => self.ship_customer_id.as_str().into(),
            "warehouse_id" => self.warehouse_id.as_ref()?.as_str().into(),
            "promo_id" => self.promo_id.as_ref()?.as_str().into(),
            "ship_delay" => self.ship_delay.as_deref()?.into(),
            "ship_mode" => self.ship_mode.as_deref()?.into(),
            "ship_carrier" => self.ship_carrier.as_deref()?.into(),
            "sale_datetime" => self.sale_datetime.to_rfc3339()?.into(),
            _ => return None,
        })
    }
}
