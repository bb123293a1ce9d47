//! A container's environment from its Pod spec, resolved the way the kubelet does it: `envFrom`
//! first, then `env` in order (later wins), `$(VAR)` references expanded against what is already
//! defined, `$$` as an escaped `$`.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, Pod};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EnvError {
    #[error("configmap \"{0}\" not found")]
    ConfigMapNotFound(String),
    #[error("secret \"{0}\" not found")]
    SecretNotFound(String),
    #[error("couldn't find key {key} in {kind} {name}")]
    KeyNotFound {
        kind: &'static str,
        name: String,
        key: String,
    },
    #[error("field path {0} is not supported by the node agent")]
    UnsupportedField(String),
    #[error("env var {0}: only value, fieldRef, configMapKeyRef and secretKeyRef are supported")]
    UnsupportedSource(String),
}

/// The ConfigMaps and Secrets a container's environment reads, as fetched: a missing name means
/// "not found".
#[derive(Debug, Default)]
pub struct Sources {
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
}

/// What the agent knows about the pod beyond its object.
pub struct Facts<'a> {
    pub pod: &'a Pod,
    pub pod_ip: &'a str,
    pub host_ip: &'a str,
    pub node_name: &'a str,
}

/// Names of the ConfigMaps and Secrets the container's environment refers to.
pub fn referenced(c: &Container) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut cms = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    for from in c.env_from.iter().flatten() {
        if let Some(r) = &from.config_map_ref {
            cms.insert(r.name.clone());
        }
        if let Some(r) = &from.secret_ref {
            secrets.insert(r.name.clone());
        }
    }
    for v in c.env.iter().flatten() {
        let Some(src) = &v.value_from else { continue };
        if let Some(r) = &src.config_map_key_ref {
            cms.insert(r.name.clone());
        }
        if let Some(r) = &src.secret_key_ref {
            secrets.insert(r.name.clone());
        }
    }
    (cms, secrets)
}

/// A `fieldRef` value (also used by downwardAPI volumes).
pub fn field_value(facts: &Facts<'_>, path: &str) -> Result<String, EnvError> {
    let meta = &facts.pod.metadata;
    let spec = facts.pod.spec.as_ref();
    let map_entry = |m: &Option<BTreeMap<String, String>>, key: &str| {
        m.as_ref()
            .and_then(|m| m.get(key).cloned())
            .unwrap_or_default()
    };
    let quoted_key = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("']"))
            .map(str::to_string)
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "spec.nodeName" => facts.node_name.to_string(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" | "status.podIPs" => facts.pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.to_string(),
        _ => {
            if let Some(k) = quoted_key("metadata.labels['") {
                map_entry(&meta.labels, &k)
            } else if let Some(k) = quoted_key("metadata.annotations['") {
                map_entry(&meta.annotations, &k)
            } else {
                return Err(EnvError::UnsupportedField(path.to_string()));
            }
        }
    })
}

/// `key="value"` lines, sorted, as downwardAPI volumes write labels and annotations.
fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}\n"))
        .collect()
}

/// The container's environment on top of `base` (the variables every container gets).
pub fn resolve(
    c: &Container,
    facts: &Facts<'_>,
    sources: &Sources,
    base: &[(String, String)],
) -> Result<BTreeMap<String, String>, EnvError> {
    let mut vars: BTreeMap<String, String> = base.iter().cloned().collect();
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or_default();
        let data = if let Some(r) = &from.config_map_ref {
            match sources.config_maps.get(&r.name) {
                Some(d) => d,
                None if r.optional == Some(true) => continue,
                None => return Err(EnvError::ConfigMapNotFound(r.name.clone())),
            }
        } else if let Some(r) = &from.secret_ref {
            match sources.secrets.get(&r.name) {
                Some(d) => d,
                None if r.optional == Some(true) => continue,
                None => return Err(EnvError::SecretNotFound(r.name.clone())),
            }
        } else {
            continue;
        };
        for (k, v) in data {
            vars.insert(format!("{prefix}{k}"), v.clone());
        }
    }
    for v in c.env.iter().flatten() {
        let value = match &v.value_from {
            None => expand(v.value.as_deref().unwrap_or_default(), &vars),
            Some(src) => {
                if let Some(f) = &src.field_ref {
                    field_value(facts, &f.field_path)?
                } else if let Some(r) = &src.config_map_key_ref {
                    let found = key_of(&sources.config_maps, "configmap", &r.name, &r.key);
                    match found {
                        Ok(val) => val,
                        Err(_) if r.optional == Some(true) => continue,
                        Err(e) => return Err(e),
                    }
                } else if let Some(r) = &src.secret_key_ref {
                    match key_of(&sources.secrets, "secret", &r.name, &r.key) {
                        Ok(val) => val,
                        Err(_) if r.optional == Some(true) => continue,
                        Err(e) => return Err(e),
                    }
                } else {
                    return Err(EnvError::UnsupportedSource(v.name.clone()));
                }
            }
        };
        vars.insert(v.name.clone(), value);
    }
    Ok(vars)
}

fn key_of(
    all: &BTreeMap<String, BTreeMap<String, String>>,
    kind: &'static str,
    name: &str,
    key: &str,
) -> Result<String, EnvError> {
    let Some(data) = all.get(name) else {
        return Err(if kind == "secret" {
            EnvError::SecretNotFound(name.into())
        } else {
            EnvError::ConfigMapNotFound(name.into())
        });
    };
    data.get(key).cloned().ok_or_else(|| EnvError::KeyNotFound {
        kind,
        name: name.into(),
        key: key.into(),
    })
}

/// Kubernetes' `$(VAR)` expansion: a defined name is replaced, an undefined one is left as
/// written, `$$` is a literal `$`.
pub fn expand(input: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match vars.get(name) {
                        Some(v) => out.push_str(v),
                        None => out.push_str(&format!("$({name})")),
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Result<Pod, serde_json::Error> {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "x"}},
            "spec": {"serviceAccountName": "sa", "containers": [{
                "name": "c",
                "envFrom": [
                    {"configMapRef": {"name": "cm"}, "prefix": "CM_"},
                    {"secretRef": {"name": "nope", "optional": true}}
                ],
                "env": [
                    {"name": "A", "value": "a"},
                    {"name": "B", "value": "$(A)-$(MISSING)-$$(A)-$"},
                    {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
                    {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "s", "key": "no", "optional": true}}},
                    {"name": "CMV", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
                    {"name": "CM_k", "value": "overridden"}
                ]
            }]}
        }))
    }

    fn sources() -> Sources {
        let one = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        Sources {
            config_maps: BTreeMap::from([("cm".to_string(), one("k", "cv"))]),
            secrets: BTreeMap::from([("s".to_string(), one("pw", "hunter2"))]),
        }
    }

    #[test]
    fn resolves_every_source() -> Result<(), Box<dyn std::error::Error>> {
        let pod = pod()?;
        let c = &pod.spec.as_ref().ok_or("spec")?.containers[0];
        let facts = Facts {
            pod: &pod,
            pod_ip: "127.0.1.7",
            host_ip: "127.0.0.1",
            node_name: "n1",
        };
        let base = [(
            "KUBERNETES_SERVICE_HOST".to_string(),
            "127.0.0.1".to_string(),
        )];
        let env = resolve(c, &facts, &sources(), &base)?;
        let get = |k: &str| env.get(k).map(String::as_str);
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("127.0.0.1"));
        assert_eq!(get("B"), Some("a-$(MISSING)-$(A)-$"));
        assert_eq!(get("NAME"), Some("p"));
        assert_eq!(get("IP"), Some("127.0.1.7"));
        assert_eq!(get("NODE"), Some("n1"));
        assert_eq!(get("SA"), Some("sa"));
        assert_eq!(get("APP"), Some("x"));
        assert_eq!(get("PW"), Some("hunter2"));
        assert_eq!(get("OPT"), None);
        assert_eq!(get("CMV"), Some("cv"));
        assert_eq!(get("CM_k"), Some("overridden"));
        let (cms, secrets) = referenced(c);
        assert_eq!(cms.into_iter().collect::<Vec<_>>(), ["cm"]);
        assert_eq!(secrets.into_iter().collect::<Vec<_>>(), ["nope", "s"]);
        Ok(())
    }

    #[test]
    fn missing_required_sources_fail() -> Result<(), Box<dyn std::error::Error>> {
        let pod = pod()?;
        let c = &pod.spec.as_ref().ok_or("spec")?.containers[0];
        let facts = Facts {
            pod: &pod,
            pod_ip: "",
            host_ip: "",
            node_name: "",
        };
        let mut s = sources();
        s.secrets.clear();
        assert_eq!(
            resolve(c, &facts, &s, &[]),
            Err(EnvError::SecretNotFound("s".into()))
        );
        let mut s = sources();
        s.config_maps.clear();
        assert_eq!(
            resolve(c, &facts, &s, &[]),
            Err(EnvError::ConfigMapNotFound("cm".into()))
        );
        assert!(matches!(
            field_value(&facts, "spec.bogus"),
            Err(EnvError::UnsupportedField(_))
        ));
        Ok(())
    }

    #[test]
    fn expansion_edge_cases() {
        let vars = BTreeMap::from([("X".to_string(), "1".to_string())]);
        assert_eq!(expand("$(X)$(X)", &vars), "11");
        assert_eq!(expand("$(X", &vars), "$(X");
        assert_eq!(expand("a$b", &vars), "a$b");
        assert_eq!(expand("$$$(X)", &vars), "$1");
        assert_eq!(expand("", &vars), "");
    }
}
