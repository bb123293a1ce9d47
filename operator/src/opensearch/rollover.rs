//! Rollover and retention: the ISM policy when the cluster has the plugin, otherwise the
//! conditions of the core `_rollover` API the operator calls itself, and which old indices to
//! delete.

use serde_json::{Value, json};
use tributary_crds::StreamingEnrichment;
use tributary_crds::quantity;

use super::Error;
use super::template::{MANAGED_BY, index_pattern, owner};

/// `max_size` in bytes and `max_age` in seconds, as OpenSearch's `_rollover` takes them.
/// (OpenSearch 2.x has `max_size`, the primaries' total store size; it has no
/// `max_primary_shard_size`.)
pub fn conditions(se: &StreamingEnrichment) -> Result<Value, Error> {
    let t = &se.spec.sinks.opensearch.template;
    let bytes = quantity::bytes(&t.rollover_size)
        .map_err(|e| Error::Config(format!("template.rolloverSize: {e}")))?;
    let mut c = json!({ "max_size": format!("{bytes}b") });
    if let Some(age) = &t.rollover_age {
        c["max_age"] = json!(format!("{}s", age.std().as_secs().max(1)));
    }
    Ok(json!({ "conditions": c }))
}

/// The ISM policy's name.
pub fn policy_name(se: &StreamingEnrichment) -> String {
    format!(
        "tributary-{}-{}",
        se.metadata.namespace.as_deref().unwrap_or_default(),
        se.metadata.name.as_deref().unwrap_or_default()
    )
}

/// An ISM policy: hot (rollover by size/age), then delete after `deleteAfter` when set; attached
/// to new indices of the pattern by `ism_template`.
pub fn ism_policy(se: &StreamingEnrichment) -> Result<Value, Error> {
    let os = &se.spec.sinks.opensearch;
    let t = &os.template;
    let c = conditions(se)?;
    let mut rollover = json!({ "min_size": c["conditions"]["max_size"] });
    if let Some(age) = c["conditions"].get("max_age") {
        rollover["min_index_age"] = age.clone();
    }
    let mut hot = json!({
        "name": "hot",
        "actions": [{ "rollover": rollover }],
        "transitions": [],
    });
    let mut states = vec![];
    if let Some(after) = &t.delete_after {
        hot["transitions"] = json!([{
            "state_name": "delete",
            "conditions": { "min_index_age": format!("{}s", after.std().as_secs().max(1)) }
        }]);
        states.push(hot);
        states.push(json!({ "name": "delete", "actions": [{ "delete": {} }], "transitions": [] }));
    } else {
        states.push(hot);
    }
    Ok(json!({
        "policy": {
            "description": format!("{MANAGED_BY}: {}", owner(se)),
            "default_state": "hot",
            "states": states,
            "ism_template": [{ "index_patterns": [index_pattern(os)], "priority": 100 }],
        }
    }))
}

/// Whether `_cat/plugins?format=json` lists the index management (ISM) plugin.
pub fn has_ism(cat_plugins: &Value) -> bool {
    cat_plugins.as_array().is_some_and(|a| {
        a.iter()
            .any(|p| p["component"].as_str() == Some("opensearch-index-management"))
    })
}

/// Indices to delete: created more than `delete_after_ms` before `now_ms`, never the write
/// index. `settings` is `GET <pattern>/_settings/index.creation_date`.
pub fn expired(
    settings: &Value,
    write_index: Option<&str>,
    now_ms: i64,
    delete_after_ms: i64,
) -> Vec<String> {
    let mut out: Vec<String> = settings
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(name, _)| Some(name.as_str()) != write_index)
        .filter_map(|(name, v)| {
            let created: i64 = v
                .pointer("/settings/index/creation_date")?
                .as_str()?
                .parse()
                .ok()?;
            (now_ms - created > delete_after_ms).then(|| name.clone())
        })
        .collect();
    out.sort();
    out
}

/// The write index from `GET _alias/<write_alias>`: the one with `is_write_index`, or the only
/// one.
pub fn write_index(aliases: &Value, alias: &str) -> Option<String> {
    let m = aliases.as_object()?;
    m.iter()
        .find(|(_, v)| v["aliases"][alias]["is_write_index"].as_bool() == Some(true))
        .or_else(|| (m.len() == 1).then(|| m.iter().next()).flatten())
        .map(|(k, _)| k.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::build::fixtures::example;

    #[test]
    fn conditions_from_the_resource() {
        let se = example("full.yaml"); // 50Gi, 7d
        assert_eq!(
            conditions(&se).unwrap(),
            json!({"conditions": {"max_size": "53687091200b", "max_age": "604800s"}})
        );
        let min = example("minimal.yaml");
        assert_eq!(
            conditions(&min).unwrap(),
            json!({"conditions": {"max_size": "53687091200b"}})
        );
    }

    #[test]
    fn ism_policy_rolls_over_and_deletes() {
        let se = example("full.yaml"); // deleteAfter 90d
        let p = ism_policy(&se).unwrap();
        let states = p["policy"]["states"].as_array().unwrap();
        assert_eq!(states.len(), 2);
        assert_eq!(
            states[0]["actions"][0]["rollover"]["min_size"],
            "53687091200b"
        );
        assert_eq!(
            states[0]["transitions"][0]["conditions"]["min_index_age"],
            "7776000s"
        );
        assert_eq!(
            p["policy"]["ism_template"][0]["index_patterns"],
            json!(["ara-*"])
        );
        let min = example("minimal.yaml");
        assert_eq!(
            ism_policy(&min).unwrap()["policy"]["states"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(policy_name(&se), "tributary-analytics-sales-enrichment");
    }

    #[test]
    fn plugin_detection() {
        assert!(!has_ism(&json!([{"component": "opensearch-security"}])));
        assert!(has_ism(
            &json!([{"component": "opensearch-index-management"}])
        ));
    }

    #[test]
    fn retention_keeps_the_write_index_and_young_ones() {
        let s = json!({
            "ara-000001": {"settings": {"index": {"creation_date": "1000"}}},
            "ara-000002": {"settings": {"index": {"creation_date": "5000"}}},
            "ara-000003": {"settings": {"index": {"creation_date": "1500"}}},
        });
        assert_eq!(
            expired(&s, Some("ara-000003"), 7000, 3000),
            vec!["ara-000001"]
        );
        assert!(expired(&s, None, 2000, 3000).is_empty());
        let a = json!({
            "ara-000001": {"aliases": {"ara-write": {"is_write_index": false}}},
            "ara-000002": {"aliases": {"ara-write": {"is_write_index": true}}},
        });
        assert_eq!(write_index(&a, "ara-write").as_deref(), Some("ara-000002"));
        let one = json!({"ara-000001": {"aliases": {"ara-write": {}}}});
        assert_eq!(
            write_index(&one, "ara-write").as_deref(),
            Some("ara-000001")
        );
    }
}
