//! The control Secret: the bearer token the job pods accept on their control API
//! ([`tributary_crds::control`]). The operator computes the token from its key and the
//! resource's UID, so it never needs to read the Secret back.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use tributary_crds::control::CONTROL_SECRET_KEY;

use super::labels::child_meta;
use super::names;

pub fn build(name: &str, namespace: &str, owner: &OwnerReference, token: &str) -> Secret {
    Secret {
        metadata: child_meta(
            names::control_secret(name),
            namespace,
            name,
            "control",
            owner,
        ),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            CONTROL_SECRET_KEY.to_string(),
            ByteString(token.as_bytes().to_vec()),
        )])),
        ..Default::default()
    }
}
