//! The steps against a cluster, in order: template, ISM policy (when ISM is there), first index
//! and aliases, rollover and retention (when it is not), roles (when the security plugin is on).
//! Each step reads before it writes and writes only what differs.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use opensearch::http::Method;
use serde_json::{Value, json};
use tributary_crds::{OpenSearchAuthKind, SecretKeyRef, StreamingEnrichment};

use super::Error;
use super::client::{Client, ClientConfig, reason_of};
use super::{roles, rollover, template};

/// What one pass changed, for events and the condition's message.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// `Created` / `Updated` / `UpToDate`.
    pub template: &'static str,
    pub ism: bool,
    pub security: bool,
    /// The first index, when this pass created it.
    pub bootstrapped: Option<String>,
    /// (old, new) when this pass rolled the write alias over.
    pub rolled_over: Option<(String, String)>,
    /// Indices deleted by retention in this pass.
    pub deleted: Vec<String>,
    /// The index the write alias points to.
    pub write_index: Option<String>,
}

async fn secret_value(kube: &kube::Client, ns: &str, r: &SecretKeyRef) -> Result<Vec<u8>, Error> {
    let api: Api<Secret> = Api::namespaced(kube.clone(), ns);
    let secret = api
        .get(&r.name)
        .await
        .map_err(|e| Error::Credentials(format!("reading Secret {ns}/{}: {e}", r.name)))?;
    secret
        .data
        .and_then(|mut d| d.remove(&r.key))
        .map(|b| b.0)
        .ok_or_else(|| Error::Credentials(format!("Secret {ns}/{} has no key {}", r.name, r.key)))
}

async fn secret_string(kube: &kube::Client, ns: &str, r: &SecretKeyRef) -> Result<String, Error> {
    String::from_utf8(secret_value(kube, ns, r).await?)
        .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
        .map_err(|_| {
            Error::Credentials(format!("Secret {ns}/{} key {} is not UTF-8", r.name, r.key))
        })
}

/// The operator's client for this resource: the endpoint, `template.adminCredentials` and the
/// CA from the resource's Secrets.
pub async fn client_for(kube: &kube::Client, se: &StreamingEnrichment) -> Result<Client, Error> {
    let ns = se.metadata.namespace.as_deref().unwrap_or_default();
    let os = &se.spec.sinks.opensearch;
    let basic = match &os.template.admin_credentials {
        Some(c) => Some((
            secret_string(kube, ns, &c.username).await?,
            secret_string(kube, ns, &c.password).await?,
        )),
        None => None,
    };
    let ca_pem = match &os.ca_cert {
        Some(r) => Some(secret_value(kube, ns, r).await?),
        None => None,
    };
    Client::new(&ClientConfig {
        endpoint: os.endpoint.clone(),
        basic,
        ca_pem,
    })
}

/// The job's username (the writer role is mapped to it), when it authenticates with Basic.
async fn job_user(kube: &kube::Client, se: &StreamingEnrichment) -> Result<Option<String>, Error> {
    let auth = &se.spec.sinks.opensearch.auth;
    match (auth.kind, &auth.username) {
        (OpenSearchAuthKind::Basic, Some(u)) => {
            let ns = se.metadata.namespace.as_deref().unwrap_or_default();
            Ok(Some(secret_string(kube, ns, u).await?))
        }
        _ => Ok(None),
    }
}

fn api_error(what: String, reply: &super::client::Reply) -> Error {
    Error::Api {
        status: reply.status,
        what,
        message: reason_of(&reply.body),
    }
}

async fn security_enabled(os: &Client) -> Result<bool, Error> {
    // Not registered (400) when the plugin is absent or disabled.
    Ok(os
        .call(Method::Get, "/_plugins/_security/health", None)
        .await?
        .ok())
}

async fn has_ism(os: &Client) -> Result<bool, Error> {
    let plugins = os
        .ok(Method::Get, "/_cat/plugins?format=json", None)
        .await?;
    Ok(rollover::has_ism(&plugins))
}

/// Bring the cluster to what the resource describes.
pub async fn ensure(
    kube: &kube::Client,
    se: &StreamingEnrichment,
    now_ms: i64,
) -> Result<Report, Error> {
    let os = client_for(kube, se).await?;
    let spec = &se.spec.sinks.opensearch;
    let mut report = Report {
        ism: has_ism(&os).await?,
        ..Default::default()
    };

    // 1. The index template.
    let name = template::template_name(spec);
    let path = format!("/_index_template/{name}");
    let desired = template::build(se);
    let reply = os.call(Method::Get, &path, None).await?;
    let live = match reply.status {
        404 => None,
        _ if reply.ok() => reply.body["index_templates"][0]
            .get("index_template")
            .cloned(),
        _ => return Err(api_error(format!("GET {path}"), &reply)),
    };
    report.template = match template::decide(se, &desired, live.as_ref()) {
        template::Decision::UpToDate => "UpToDate",
        template::Decision::Foreign { owner } => return Err(Error::NotOwned { name, owner }),
        d => {
            os.ok(Method::Put, &path, Some(&desired)).await?;
            if d == template::Decision::Create {
                "Created"
            } else {
                "Updated"
            }
        }
    };

    // 2. The ISM policy, when the cluster has ISM.
    if report.ism {
        ensure_policy(&os, se).await?;
    }

    // 3. The first index with both aliases.
    let alias_path = format!("/_alias/{}", spec.write_alias);
    let reply = os.call(Method::Get, &alias_path, None).await?;
    let mut write_index = match reply.status {
        404 => None,
        _ if reply.ok() => rollover::write_index(&reply.body, &spec.write_alias),
        _ => return Err(api_error(format!("GET {alias_path}"), &reply)),
    };
    if write_index.is_none() {
        let first = template::first_index(spec);
        let body = json!({
            "aliases": {
                spec.write_alias.clone(): {"is_write_index": true},
                spec.read_alias.clone(): {},
            }
        });
        let reply = os
            .call(Method::Put, &format!("/{first}"), Some(&body))
            .await?;
        if reply.body.pointer("/error/type").and_then(Value::as_str)
            == Some("resource_already_exists_exception")
        {
            return Err(Error::Orphan {
                index: first,
                alias: spec.write_alias.clone(),
            });
        }
        if !reply.ok() {
            return Err(api_error(format!("PUT /{first}"), &reply));
        }
        report.bootstrapped = Some(first.clone());
        write_index = Some(first);
    }

    // 4. Rollover and retention by the operator, when ISM does not do them.
    if !report.ism {
        let conditions = rollover::conditions(se)?;
        let r = os
            .ok(
                Method::Post,
                &format!("/{}/_rollover", spec.write_alias),
                Some(&conditions),
            )
            .await?;
        if r["rolled_over"].as_bool() == Some(true) {
            let old = r["old_index"].as_str().unwrap_or_default().to_string();
            let new = r["new_index"].as_str().unwrap_or_default().to_string();
            write_index = Some(new.clone());
            report.rolled_over = Some((old, new));
        }
        if let Some(after) = &spec.template.delete_after {
            let settings = os
                .ok(
                    Method::Get,
                    &format!(
                        "/{}/_settings/index.creation_date",
                        template::index_pattern(spec)
                    ),
                    None,
                )
                .await?;
            let after_ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
            for index in rollover::expired(&settings, write_index.as_deref(), now_ms, after_ms) {
                os.ok(Method::Delete, &format!("/{index}"), None).await?;
                report.deleted.push(index);
            }
        }
    }
    report.write_index = write_index;

    // 5. Roles, when the security plugin is on.
    if security_enabled(&os).await? {
        report.security = true;
        let users: Vec<String> = job_user(kube, se).await?.into_iter().collect();
        ensure_role(&os, &roles::writer_role_name(se), &roles::writer_role(se)).await?;
        ensure_mapping(
            &os,
            &roles::writer_role_name(se),
            &roles::mapping(&users, &[]),
        )
        .await?;
        if let Some(reader) = &spec.template.reader {
            let name = roles::reader_role_name(se);
            ensure_role(&os, &name, &roles::reader_role(se, reader)).await?;
            ensure_mapping(
                &os,
                &name,
                &roles::mapping(&reader.users, &reader.backend_roles),
            )
            .await?;
        }
    }
    Ok(report)
}

async fn ensure_policy(os: &Client, se: &StreamingEnrichment) -> Result<(), Error> {
    let path = format!("/_plugins/_ism/policies/{}", rollover::policy_name(se));
    let desired = rollover::ism_policy(se)?;
    let reply = os.call(Method::Get, &path, None).await?;
    if reply.status == 404 {
        os.ok(Method::Put, &path, Some(&desired)).await?;
    } else if reply.ok() {
        let live = &reply.body["policy"];
        if live["states"] != desired["policy"]["states"]
            || live["ism_template"][0]["index_patterns"]
                != desired["policy"]["ism_template"][0]["index_patterns"]
        {
            let (seq, term) = (&reply.body["_seq_no"], &reply.body["_primary_term"]);
            os.ok(
                Method::Put,
                &format!("{path}?if_seq_no={seq}&if_primary_term={term}"),
                Some(&desired),
            )
            .await?;
        }
    } else {
        return Err(api_error(format!("GET {path}"), &reply));
    }
    Ok(())
}

async fn ensure_role(os: &Client, name: &str, desired: &Value) -> Result<(), Error> {
    let path = format!("/_plugins/_security/api/roles/{name}");
    let reply = os.call(Method::Get, &path, None).await?;
    let live = reply.ok().then(|| reply.body.get(name).cloned()).flatten();
    if !roles::same(desired, live.as_ref()) {
        os.ok(Method::Put, &path, Some(desired)).await?;
    }
    Ok(())
}

async fn ensure_mapping(os: &Client, role: &str, desired: &Value) -> Result<(), Error> {
    let path = format!("/_plugins/_security/api/rolesmapping/{role}");
    let reply = os.call(Method::Get, &path, None).await?;
    let live = reply.ok().then(|| reply.body.get(role).cloned()).flatten();
    if !roles::same_mapping(desired, live.as_ref()) {
        os.ok(Method::Put, &path, Some(desired)).await?;
    }
    Ok(())
}

/// `deletionPolicy: Delete`: remove the indices, the template (if ours), the ISM policy and the
/// roles. Missing pieces are fine.
pub async fn cleanup(kube: &kube::Client, se: &StreamingEnrichment) -> Result<Vec<String>, Error> {
    let os = client_for(kube, se).await?;
    let spec = &se.spec.sinks.opensearch;
    let mut removed = Vec::new();
    let pattern = template::index_pattern(spec);
    let indices = os
        .ok(
            Method::Get,
            &format!("/_cat/indices/{pattern}?format=json&h=index"),
            None,
        )
        .await?;
    let mut names: Vec<String> = indices
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["index"].as_str().map(str::to_string))
        .collect();
    names.sort();
    for index in names {
        delete(&os, &format!("/{index}")).await?;
        removed.push(index);
    }
    let name = template::template_name(spec);
    let path = format!("/_index_template/{name}");
    let reply = os.call(Method::Get, &path, None).await?;
    if reply.ok() {
        let live = reply.body["index_templates"][0].get("index_template");
        if matches!(
            template::decide(se, &template::build(se), live),
            template::Decision::UpToDate | template::Decision::Update
        ) {
            delete(&os, &path).await?;
            removed.push(format!("template {name}"));
        }
    }
    if has_ism(&os).await? {
        delete(
            &os,
            &format!("/_plugins/_ism/policies/{}", rollover::policy_name(se)),
        )
        .await?;
    }
    if security_enabled(&os).await? {
        for role in [roles::writer_role_name(se), roles::reader_role_name(se)] {
            delete(&os, &format!("/_plugins/_security/api/rolesmapping/{role}")).await?;
            delete(&os, &format!("/_plugins/_security/api/roles/{role}")).await?;
        }
    }
    Ok(removed)
}

async fn delete(os: &Client, path: &str) -> Result<(), Error> {
    let reply = os.call(Method::Delete, path, None).await?;
    if reply.ok() || reply.status == 404 {
        Ok(())
    } else {
        Err(api_error(format!("DELETE {path}"), &reply))
    }
}
