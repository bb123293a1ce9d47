//! Security plugin bodies: the job's writer role (write only, no search) and the optional reader
//! role with field-level security, and their role mappings.

use serde_json::{Value, json};
use tributary_crds::{ReaderRoleSpec, StreamingEnrichment};

use super::template::index_pattern;

fn base(se: &StreamingEnrichment) -> String {
    format!(
        "tributary-{}-{}",
        se.metadata.namespace.as_deref().unwrap_or_default(),
        se.metadata.name.as_deref().unwrap_or_default()
    )
}

pub fn writer_role_name(se: &StreamingEnrichment) -> String {
    format!("{}-writer", base(se))
}

pub fn reader_role_name(se: &StreamingEnrichment) -> String {
    format!("{}-reader", base(se))
}

/// Bulk-index into the resource's indices (through the write alias) and create its indices;
/// nothing that reads.
pub fn writer_role(se: &StreamingEnrichment) -> Value {
    let os = &se.spec.sinks.opensearch;
    json!({
        "description": format!("tributary writer of {}", index_pattern(os)),
        // A bulk request is authorised at cluster level first, then per index.
        "cluster_permissions": ["indices:data/write/bulk"],
        "index_permissions": [{
            "index_patterns": [index_pattern(os), os.write_alias.clone()],
            "allowed_actions": [
                "indices:data/write/bulk*",
                "indices:data/write/index",
                "indices:admin/create",
            ],
        }],
    })
}

/// Field-level security entries hiding each field and its sub-fields (`.keyword`).
pub fn hidden(fields: &[String]) -> Vec<String> {
    fields
        .iter()
        .flat_map(|f| [format!("~{f}"), format!("~{f}.*")])
        .collect()
}

/// Read (search, get, mget, aggregations) through the read alias, without the hidden fields.
pub fn reader_role(se: &StreamingEnrichment, reader: &ReaderRoleSpec) -> Value {
    let os = &se.spec.sinks.opensearch;
    let mut perm = json!({
        "index_patterns": [index_pattern(os), os.read_alias.clone()],
        "allowed_actions": ["read"],
    });
    if !reader.hidden_fields.is_empty() {
        perm["fls"] = json!(hidden(&reader.hidden_fields));
    }
    json!({
        "description": format!("tributary reader of {}", os.read_alias),
        "cluster_permissions": ["cluster_composite_ops_ro"],
        "index_permissions": [perm],
    })
}

pub fn mapping(users: &[String], backend_roles: &[String]) -> Value {
    json!({ "users": users, "backend_roles": backend_roles })
}

/// Whether the live role (`GET _plugins/_security/api/roles/<name>`'s value) already grants
/// exactly `desired`: compared on the fields the operator sets.
pub fn same(desired: &Value, live: Option<&Value>) -> bool {
    let Some(live) = live else { return false };
    let perms = |v: &Value| -> Vec<Value> {
        v["index_permissions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                json!({
                    "index_patterns": p["index_patterns"],
                    "allowed_actions": p["allowed_actions"],
                    "fls": p.get("fls").cloned().unwrap_or(json!([])),
                })
            })
            .collect()
    };
    desired["cluster_permissions"] == live["cluster_permissions"] && perms(desired) == perms(live)
}

/// Whether the live mapping maps exactly these users and backend roles.
pub fn same_mapping(desired: &Value, live: Option<&Value>) -> bool {
    live.is_some_and(|l| {
        l["users"] == desired["users"] && l["backend_roles"] == desired["backend_roles"]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::build::fixtures::example;

    #[test]
    fn writer_writes_only_to_its_indices() {
        let se = example("full.yaml");
        let r = writer_role(&se);
        assert_eq!(
            writer_role_name(&se),
            "tributary-analytics-sales-enrichment-writer"
        );
        let p = &r["index_permissions"][0];
        assert_eq!(p["index_patterns"], json!(["ara-*", "ara-write"]));
        let actions: Vec<&str> = p["allowed_actions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(actions.contains(&"indices:admin/create"));
        assert!(actions.contains(&"indices:data/write/index"));
        for a in &actions {
            assert!(
                !a.contains("read") && !a.contains("search") && *a != "*",
                "{a}"
            );
        }
        assert_eq!(r["cluster_permissions"], json!(["indices:data/write/bulk"]));
    }

    #[test]
    fn reader_hides_fields_and_their_subfields() {
        let se = example("full.yaml");
        let spec = ReaderRoleSpec {
            hidden_fields: vec![
                "bill_customer.email_address".into(),
                "ship_customer.birth_date".into(),
            ],
            users: vec!["analyst".into()],
            backend_roles: vec![],
        };
        let r = reader_role(&se, &spec);
        let p = &r["index_permissions"][0];
        assert_eq!(p["index_patterns"], json!(["ara-*", "ara-sales"]));
        assert_eq!(p["allowed_actions"], json!(["read"]));
        assert_eq!(
            p["fls"],
            json!([
                "~bill_customer.email_address",
                "~bill_customer.email_address.*",
                "~ship_customer.birth_date",
                "~ship_customer.birth_date.*"
            ])
        );
        let open = reader_role(&se, &ReaderRoleSpec::default());
        assert!(open["index_permissions"][0].get("fls").is_none());
        assert_eq!(
            mapping(&spec.users, &[]),
            json!({"users": ["analyst"], "backend_roles": []})
        );
    }

    #[test]
    fn comparison_ignores_server_added_fields() {
        let se = example("full.yaml");
        let want = writer_role(&se);
        let mut live = want.clone();
        live["reserved"] = json!(false);
        live["index_permissions"][0]["masked_fields"] = json!([]);
        live["index_permissions"][0]["fls"] = json!([]);
        assert!(same(&want, Some(&live)));
        live["cluster_permissions"] = json!(["*"]);
        assert!(!same(&want, Some(&live)));
        assert!(!same(&want, None));
        let m = mapping(&["u".into()], &[]);
        assert!(same_mapping(
            &m,
            Some(&json!({"users": ["u"], "backend_roles": [], "hosts": []}))
        ));
        assert!(!same_mapping(
            &m,
            Some(&json!({"users": [], "backend_roles": []}))
        ));
    }
}
