//! Helpers for the tests of the operator's OpenSearch side: the operator binary as a local
//! process, a small JSON-over-HTTP OpenSearch client, and documents in the enriched shape.

use std::process::{Child, Command};

use anyhow::{Context, Result};
use opensearch::OpenSearch;
use opensearch::auth::Credentials;
use opensearch::cert::{Certificate, CertificateValidation};
use opensearch::http::headers::HeaderMap;
use opensearch::http::request::JsonBody;
use opensearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use opensearch::http::{Method, Url};
use serde_json::{Value, json};

use crate::cluster::kubeconfig_path;

/// The operator binary (`TRIBUTARY_OPERATOR_BIN`) running with the admin kubeconfig, no leader
/// election, watching one namespace (so tests running side by side do not reconcile each
/// other's resources), and a short OpenSearch check interval; killed when dropped. Its log is
/// `$TMPDIR/operator-<namespace>.log`.
pub struct OperatorProcess {
    child: Child,
    pub log: std::path::PathBuf,
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spawn_operator(namespace: &str, check_interval_secs: u64) -> Result<OperatorProcess> {
    let bin = std::env::var("TRIBUTARY_OPERATOR_BIN")
        .context("TRIBUTARY_OPERATOR_BIN is not set: run through `cargo xtask test`")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log = std::env::temp_dir().join(format!("operator-{namespace}.log"));
    let file = std::fs::File::create(&log)?;
    let child = Command::new(bin)
        .env("KUBECONFIG", kubeconfig_path()?)
        .env("TRIBUTARY_LEADER_ELECT", "false")
        .env("TRIBUTARY_WATCH_NAMESPACES", namespace)
        .env("TRIBUTARY_ADMIN_ADDR", format!("127.0.0.1:{port}"))
        .env("TRIBUTARY_RUNTIME_IMAGE", "tributary-runtime:test")
        .env(
            "TRIBUTARY_OPENSEARCH_CHECK_INTERVAL_SECS",
            check_interval_secs.to_string(),
        )
        .env("RUST_LOG", "info,kube=warn")
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()?;
    Ok(OperatorProcess { child, log })
}

/// A JSON client for one OpenSearch endpoint.
pub struct Os {
    client: OpenSearch,
}

impl Os {
    pub fn new(url: &str, basic: Option<(&str, &str)>, ca_pem: Option<&[u8]>) -> Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = TransportBuilder::new(SingleNodeConnectionPool::new(Url::parse(url)?))
            .disable_proxy()
            .timeout(std::time::Duration::from_secs(30));
        if let Some((u, p)) = basic {
            b = b.auth(Credentials::Basic(u.into(), p.into()));
        }
        if let Some(pem) = ca_pem {
            b = b.cert_validation(CertificateValidation::Full(Certificate::from_pem(pem)?));
        }
        Ok(Self {
            client: OpenSearch::new(b.build()?),
        })
    }

    /// (status, JSON body)
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let resp = self
            .client
            .send(
                method,
                path,
                HeaderMap::new(),
                None::<&()>,
                body.map(JsonBody::new),
                None,
            )
            .await?;
        let status = resp.status_code().as_u16();
        let text = resp.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// Like `call`, failing unless 2xx.
    pub async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let (status, body) = self.call(method, path, body).await?;
        anyhow::ensure!((200..300).contains(&status), "{path}: {status} {body}");
        Ok(body)
    }

    /// Bulk-index documents (`_id` from order_id:item_id) with refresh; returns the response.
    pub async fn bulk(&self, index: &str, docs: &[Value]) -> Result<(u16, Value)> {
        let mut body: Vec<JsonBody<Value>> = Vec::new();
        for d in docs {
            body.push(
                json!({"index": {"_id": format!("{}:{}", d["order_id"], d["item_id"])}}).into(),
            );
            body.push(d.clone().into());
        }
        let resp = self
            .client
            .bulk(opensearch::BulkParts::Index(index))
            .refresh(opensearch::params::Refresh::True)
            .body(body)
            .send()
            .await?;
        let status = resp.status_code().as_u16();
        let text = resp.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }
}

/// A document in the shape of the runtime's `EnrichedSale` (a fixed sample; the runtime's own
/// generator is used by its drift test and by the bench).
pub fn sample_document(i: u64) -> Value {
    let customer = |id: &str, first: &str, last: &str, email: &str, birth: &str| {
        json!({
            "customer_id": id, "salutation": "Ms.", "first_name": first, "last_name": last,
            "birth_country": "NORWAY", "email_address": email, "address_id": format!("A{id}"),
            "gender": "F", "marital_status": "M", "education_status": "College",
            "purchase_estimate": 5000, "credit_rating": "Good", "buy_potential": "1001-5000",
            "vehicle_count": 2, "lower_bound": 10001, "upper_bound": 20000,
            "birth_date": birth, "customer_datetime": "2020-01-01T01:00:00Z",
            "address": {
                "address_id": format!("A{id}"), "city": "Midway", "county": "Williamson County",
                "state": "TN", "zip": "31904", "country": "United States", "gmt_offset": -5.00,
                "location_type": "apartment", "street": "Main", "address_datetime": "2020-01-01T00:00:00Z"
            }
        })
    };
    json!({
        "order_id": 1000 + i, "item_id": 7, "quantity": 3,
        "wholesale_cost": 12.30, "list_price": 20.00, "sales_price": 18.50,
        "ext_discount_amt": 4.50, "ext_sales_price": 55.50, "ext_wholesale_cost": 36.90,
        "ext_list_price": 60.00, "ext_tax": 2.22, "coupon_amt": 0.00, "ext_ship_cost": 5.10,
        "net_paid": 55.50, "net_paid_inc_tax": 57.72, "net_paid_inc_ship": 60.60,
        "net_paid_inc_ship_tax": 62.82, "net_profit": 18.60,
        "bill_customer_id": format!("C{i}"), "ship_customer_id": format!("S{i}"),
        "warehouse_id": "W1", "promo_id": "3", "ship_delay": "2 days", "ship_mode": "EXPRESS",
        "ship_carrier": "UPS", "sale_datetime": "2020-01-01T05:00:00.123Z",
        "item": {
            "item_id": 7, "item_desc": "A sturdy oak table for small kitchens", "brand": "amalgexporti #1",
            "class": "tables", "category": "Home", "manufact": "oughtought", "size": "N/A",
            "color": "brown", "units": "Each", "container": "Unknown", "product_name": "oak table"
        },
        "bill_customer": customer(&format!("C{i}"), "Alice", "Secretname", &format!("alice{i}@example.com"), "1980-02-03T00:00:00Z"),
        "ship_customer": customer(&format!("S{i}"), "Bob", "Hiddenlast", &format!("bob{i}@example.com"), "1975-06-07T00:00:00Z"),
        "promo": {
            "promo_id": "3", "cost": 1000.00, "response_target": 1, "promo_name": "spring sale",
            "purpose": "Unknown", "promo_start_date": "2020-01-01", "promo_end_date": "2020-02-01"
        }
    })
}
