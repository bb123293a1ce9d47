//! The headless Service (stable pod identities for the StatefulSet) and the metrics Service.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tributary_crds::job_config::ADMIN_PORT;

use super::labels::{child_meta, selector_labels};
use super::names;

pub const ADMIN_PORT_NAME: &str = "admin";

fn admin_port(name: &str) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port: i32::from(ADMIN_PORT),
        target_port: Some(IntOrString::String(ADMIN_PORT_NAME.to_string())),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

pub fn headless(name: &str, namespace: &str, owner: &OwnerReference) -> Service {
    Service {
        metadata: child_meta(names::headless_service(name), namespace, name, "job", owner),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector_labels(name)),
            // Peers address each other (and savepoint coordination reaches them) before they
            // are ready.
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![admin_port(ADMIN_PORT_NAME)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn metrics(name: &str, namespace: &str, owner: &OwnerReference) -> Service {
    Service {
        metadata: child_meta(
            names::metrics_service(name),
            namespace,
            name,
            "metrics",
            owner,
        ),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(name)),
            ports: Some(vec![admin_port("metrics")]),
            ..Default::default()
        }),
        ..Default::default()
    }
}
