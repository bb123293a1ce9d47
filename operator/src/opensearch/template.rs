//! The composable index template, built from the document schema in `tributary_crds::document`.
//!
//! `_meta` carries who manages the template, the builder's version and a hash of the normalised
//! body. The operator compares the live template itself with the desired one, both normalised
//! ([`normalised`]: OpenSearch answers with settings as strings and may add empty fields), and
//! writes only when they differ: a hand edit that keeps `_meta` is reverted, while two operators
//! (or restarts) never flap a template. A template someone else made is never overwritten
//! without `adopt`.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tributary_crds::document;
use tributary_crds::{OpenSearchSinkSpec, StreamingEnrichment};

/// Bump when the builder changes what it produces for the same resource.
pub const TEMPLATE_VERSION: u64 = 1;
pub const MANAGED_BY: &str = "tributary-operator";
/// Above the priority of catch-all templates users may have, below nothing we know of.
pub const PRIORITY: u64 = 200;

/// The template's name: one per index prefix (two templates with the same pattern and priority
/// are refused by OpenSearch anyway).
pub fn template_name(os: &OpenSearchSinkSpec) -> String {
    format!("tributary-{}", os.index_prefix)
}

/// `<prefix>-*`
pub fn index_pattern(os: &OpenSearchSinkSpec) -> String {
    format!("{}-*", os.index_prefix)
}

/// `<prefix>-000001`
pub fn first_index(os: &OpenSearchSinkSpec) -> String {
    format!("{}-000001", os.index_prefix)
}

/// Who owns the template: `namespace/name`, stable across re-creations of the resource.
pub fn owner(se: &StreamingEnrichment) -> String {
    format!(
        "{}/{}",
        se.metadata.namespace.as_deref().unwrap_or_default(),
        se.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The index mappings: generated from the document schema (`tributary_crds::document`).
pub fn mappings() -> Value {
    document::mappings()
}

/// The template body without `_meta` (what the hash covers).
fn body_without_meta(se: &StreamingEnrichment) -> Value {
    let os = &se.spec.sinks.opensearch;
    let t = &os.template;
    json!({
        "index_patterns": [index_pattern(os)],
        "priority": PRIORITY,
        "version": TEMPLATE_VERSION,
        "template": {
            "settings": {
                "index": {
                    "number_of_shards": t.shards,
                    "number_of_replicas": t.replicas,
                    // A value of the wrong type is kept in _source instead of refusing the
                    // whole document.
                    "mapping": {"ignore_malformed": true},
                }
            },
            "mappings": mappings(),
            // Every index (the first and each rollover) joins the read alias; the write alias
            // moves with rollover instead.
            "aliases": {os.read_alias.clone(): {}},
        }
    })
}

/// Keys sorted at every level, no whitespace: the same value always gives the same text.
pub fn canonical(v: &Value) -> String {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(keys.into_iter().map(|k| (k.clone(), sort(&m[k]))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    sort(v).to_string()
}

pub fn hash(v: &Value) -> String {
    hex::encode(Sha256::digest(canonical(v).as_bytes()))
}

/// The complete `_index_template` body with its `_meta`.
pub fn build(se: &StreamingEnrichment) -> Value {
    let mut body = body_without_meta(se);
    let h = hash(&body);
    body["_meta"] = json!({
        "managed_by": MANAGED_BY,
        "owner": owner(se),
        "template_version": TEMPLATE_VERSION,
        "hash": h,
    });
    body
}

/// What to do about the template found in the cluster (`GET _index_template/<name>`'s
/// `index_template`, or `None`).
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Create,
    Update,
    UpToDate,
    /// Someone else's template: leave it.
    Foreign {
        owner: String,
    },
}

pub fn decide(se: &StreamingEnrichment, desired: &Value, live: Option<&Value>) -> Decision {
    let Some(live) = live else {
        return Decision::Create;
    };
    let meta = live.get("_meta");
    let managed_by = meta
        .and_then(|m| m.get("managed_by"))
        .and_then(Value::as_str);
    let live_owner = meta.and_then(|m| m.get("owner")).and_then(Value::as_str);
    let ours = managed_by == Some(MANAGED_BY) && live_owner == Some(owner(se).as_str());
    if !ours && !se.spec.sinks.opensearch.template.adopt {
        return Decision::Foreign {
            owner: match (managed_by, live_owner) {
                (Some(m), Some(o)) => format!("managed by {m} for {o}"),
                _ => "not managed by tributary".into(),
            },
        };
    }
    if ours && normalised(live) == normalised(desired) {
        Decision::UpToDate
    } else {
        Decision::Update
    }
}

/// A template body as comparable text: every scalar as a string (OpenSearch returns `"1"` for `1` and `"true"` for `true` in settings), settings
/// flattened to dotted keys (`index.number_of_shards`, however they were nested), and empty
/// `composed_of` dropped (OpenSearch adds it).
pub fn normalised(body: &Value) -> String {
    fn scalars(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                Value::Object(m.iter().map(|(k, v)| (k.clone(), scalars(v))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(scalars).collect()),
            Value::Number(n) => Value::String(n.to_string()),
            Value::Bool(b) => Value::String(b.to_string()),
            other => other.clone(),
        }
    }
    fn flatten(prefix: &str, v: &Value, out: &mut serde_json::Map<String, Value>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.clone());
            }
        }
    }
    let mut b = body.clone();
    if b["composed_of"].as_array().is_some_and(Vec::is_empty)
        && let Some(m) = b.as_object_mut()
    {
        m.remove("composed_of");
    }
    let mut b = scalars(&b);
    if let Some(settings) = b.pointer("/template/settings").cloned() {
        let mut flat = serde_json::Map::new();
        flatten("", &settings, &mut flat);
        b["template"]["settings"] = Value::Object(flat);
    }
    canonical(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::build::fixtures::example;
    use tributary_crds::document::{ENRICHED_SALE, FieldKind};

    #[test]
    fn mapping_types_follow_the_schema() {
        let se = example("full.yaml");
        let b = build(&se);
        let p = &b["template"]["mappings"]["properties"];
        assert_eq!(b["template"]["mappings"]["dynamic"], false);
        assert_eq!(p["order_id"]["type"], "keyword");
        assert_eq!(p["bill_customer_id"]["type"], "keyword");
        assert_eq!(p["ship_mode"]["type"], "keyword");
        assert_eq!(p["net_paid"]["type"], "scaled_float");
        assert_eq!(p["net_paid"]["scaling_factor"], 100);
        assert_eq!(p["quantity"]["type"], "long");
        assert_eq!(p["sale_datetime"]["type"], "date");
        assert_eq!(p["item"]["properties"]["item_desc"]["type"], "text");
        assert_eq!(
            p["item"]["properties"]["item_desc"]["fields"]["keyword"]["type"],
            "keyword"
        );
        assert_eq!(p["item"]["properties"]["brand"]["type"], "keyword");
        let bc = &p["bill_customer"]["properties"];
        assert_eq!(bc["first_name"]["type"], "text");
        assert_eq!(bc["email_address"]["type"], "keyword");
        assert_eq!(bc["birth_date"]["type"], "date");
        assert_eq!(
            bc["address"]["properties"]["gmt_offset"]["type"],
            "scaled_float"
        );
        assert_eq!(p["promo"]["properties"]["cost"]["type"], "scaled_float");
        // text only for names and descriptions
        let text: Vec<String> = tributary_crds::document::leaf_paths(ENRICHED_SALE)
            .into_iter()
            .filter(|(_, k)| *k == FieldKind::Text)
            .map(|(p, _)| p)
            .collect();
        assert!(
            text.iter()
                .all(|p| p.ends_with("_name") || p.ends_with("_desc")),
            "{text:?}"
        );
    }

    #[test]
    fn settings_patterns_and_aliases_come_from_the_resource() {
        let mut se = example("full.yaml");
        se.spec.sinks.opensearch.template.shards = 3;
        se.spec.sinks.opensearch.template.replicas = 0;
        let b = build(&se);
        assert_eq!(b["index_patterns"], json!(["ara-*"]));
        assert_eq!(b["template"]["settings"]["index"]["number_of_shards"], 3);
        assert_eq!(b["template"]["settings"]["index"]["number_of_replicas"], 0);
        assert_eq!(b["template"]["aliases"], json!({"ara-sales": {}}));
        assert_eq!(b["_meta"]["owner"], "analytics/sales-enrichment");
        assert_eq!(b["_meta"]["template_version"], TEMPLATE_VERSION);
        assert_eq!(template_name(&se.spec.sinks.opensearch), "tributary-ara");
        assert_eq!(first_index(&se.spec.sinks.opensearch), "ara-000001");
    }

    #[test]
    fn hash_is_stable_and_follows_the_spec() {
        let se = example("full.yaml");
        let a = build(&se);
        assert_eq!(a, build(&se));
        let h = a["_meta"]["hash"].as_str().unwrap().to_string();
        assert_eq!(h.len(), 64);
        let mut more = se.clone();
        more.spec.sinks.opensearch.template.replicas = 2;
        assert_ne!(build(&more)["_meta"]["hash"], h.as_str());
        // key order does not matter
        assert_eq!(
            canonical(&json!({"b": 1, "a": {"d": 2, "c": 3}})),
            r#"{"a":{"c":3,"d":2},"b":1}"#
        );
    }

    #[test]
    fn decisions_create_update_skip_and_refuse() {
        let se = example("full.yaml");
        let desired = build(&se);
        assert_eq!(decide(&se, &desired, None), Decision::Create);
        assert_eq!(decide(&se, &desired, Some(&desired)), Decision::UpToDate);
        let mut stale = desired.clone();
        stale["_meta"]["hash"] = json!("old");
        assert_eq!(decide(&se, &desired, Some(&stale)), Decision::Update);
        let foreign = json!({"index_patterns": ["ara-*"], "template": {}});
        assert!(matches!(
            decide(&se, &desired, Some(&foreign)),
            Decision::Foreign { .. }
        ));
        let mut other = desired.clone();
        other["_meta"]["owner"] = json!("other/ns");
        assert!(matches!(
            decide(&se, &desired, Some(&other)),
            Decision::Foreign { .. }
        ));
        let mut adopt = se.clone();
        adopt.spec.sinks.opensearch.template.adopt = true;
        assert_eq!(decide(&adopt, &desired, Some(&foreign)), Decision::Update);
        assert_eq!(decide(&adopt, &desired, Some(&other)), Decision::Update);
    }

    #[test]
    fn the_live_body_is_judged_not_its_recorded_hash() {
        let se = example("full.yaml");
        let desired = build(&se);
        // What OpenSearch answers for the same template: settings as strings, flattened or
        // not, and an empty composed_of.
        let mut answered = desired.clone();
        answered["composed_of"] = json!([]);
        answered["template"]["settings"] = json!({"index": {
            "number_of_shards": desired["template"]["settings"]["index"]["number_of_shards"].to_string(),
            "number_of_replicas": desired["template"]["settings"]["index"]["number_of_replicas"].to_string(),
            "mapping.ignore_malformed": "true",
        }});
        assert_eq!(decide(&se, &desired, Some(&answered)), Decision::UpToDate);
        // A hand edit that keeps _meta (and so its hash) is drift.
        let mut edited = answered.clone();
        edited["priority"] = json!(201);
        assert_eq!(decide(&se, &desired, Some(&edited)), Decision::Update);
        let mut edited = answered;
        edited["template"]["settings"]["index"]["number_of_replicas"] = json!("5");
        assert_eq!(decide(&se, &desired, Some(&edited)), Decision::Update);
    }
}
