//! Pure builders of every child object a `StreamingEnrichment` owns. No client here: each builder
//! takes the resource (and resolved facts such as the replica count) and returns the object to
//! server-side apply. Unit-tested from the resources in `examples/`.

mod config_map;
pub mod labels;
mod pdb;
mod services;
mod statefulset;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use tributary_crds::StreamingEnrichment;
use tributary_crds::job_config::JobConfig;

#[cfg(test)]
use labels::selector_labels;
pub use labels::selector_string;

/// Facts the builders need beyond the resource itself.
#[derive(Clone, Debug)]
pub struct BuildInputs {
    /// Image used when the resource names none.
    pub default_image: String,
    /// Replicas the StatefulSet should run (already resolved from suspend, mode and shards).
    pub replicas: i32,
}

/// Every child object, as it should be.
#[derive(Clone, Debug)]
pub struct Children {
    pub config_map: ConfigMap,
    pub headless_service: Service,
    pub metrics_service: Service,
    pub statefulset: StatefulSet,
    pub pdb: PodDisruptionBudget,
    /// Hash of the rendered job configuration (also on the pod template).
    pub config_hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the resource has no {0}")]
    MissingMetadata(&'static str),
    #[error("rendering the job configuration: {0}")]
    RenderConfig(#[from] serde_yaml::Error),
}

/// Names of the children, derived from the resource name (one place, so tests and the status
/// step agree with the builders).
pub mod names {
    pub fn config_map(se: &str) -> String {
        format!("{se}-config")
    }
    pub fn headless_service(se: &str) -> String {
        se.to_string()
    }
    pub fn metrics_service(se: &str) -> String {
        format!("{se}-metrics")
    }
    pub fn statefulset(se: &str) -> String {
        se.to_string()
    }
    pub fn pdb(se: &str) -> String {
        se.to_string()
    }
}

/// Build every child of `se`.
pub fn build(se: &StreamingEnrichment, inputs: &BuildInputs) -> Result<Children, BuildError> {
    let name = se
        .metadata
        .name
        .as_deref()
        .ok_or(BuildError::MissingMetadata("name"))?;
    let namespace = se
        .metadata
        .namespace
        .as_deref()
        .ok_or(BuildError::MissingMetadata("namespace"))?;
    let owner = labels::owner_reference(se)?;

    // The job sees the replica count it runs at; a suspended job renders the count it will
    // resume at, so suspending does not change the configuration hash.
    let config_replicas = inputs.replicas.max(1);
    let job_config = JobConfig::from_spec(namespace, name, &se.spec, config_replicas);
    let (config_map, config_hash) = config_map::build(se, name, namespace, &owner, &job_config)?;

    Ok(Children {
        headless_service: services::headless(name, namespace, &owner),
        metrics_service: services::metrics(name, namespace, &owner),
        statefulset: statefulset::build(se, name, namespace, &owner, inputs, &config_hash),
        pdb: pdb::build(name, namespace, &owner),
        config_map,
        config_hash,
    })
}

#[cfg(test)]
pub(crate) mod fixtures {
    use tributary_crds::StreamingEnrichment;

    /// Load a resource from `examples/`, as a user would apply it, with the metadata the API
    /// server would add.
    pub fn example(file: &str) -> StreamingEnrichment {
        let path = format!("{}/../examples/{file}", env!("CARGO_MANIFEST_DIR"));
        let body = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut se: StreamingEnrichment = serde_yaml::from_str(&body).expect("example parses");
        se.metadata
            .namespace
            .get_or_insert_with(|| "default".into());
        se.metadata.uid = Some("0b3c2a3e-1111-4222-8333-444455556666".into());
        se.metadata.generation = Some(1);
        se
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::example;
    use super::*;
    use tributary_crds::job_config::{ADMIN_PORT, CONFIG_FILE};

    fn inputs(replicas: i32) -> BuildInputs {
        BuildInputs {
            default_image: "runtime:default".into(),
            replicas,
        }
    }

    fn build_example(file: &str, replicas: i32) -> Children {
        build(&example(file), &inputs(replicas)).expect("example builds")
    }

    #[test]
    fn every_child_is_owned_labelled_and_namespaced() {
        let c = build_example("minimal.yaml", 1);
        let metas = [
            &c.config_map.metadata,
            &c.headless_service.metadata,
            &c.metrics_service.metadata,
            &c.statefulset.metadata,
            &c.pdb.metadata,
        ];
        for m in metas {
            assert_eq!(m.namespace.as_deref(), Some("default"));
            let owners = m.owner_references.as_ref().expect("owner reference");
            assert_eq!(owners.len(), 1);
            assert_eq!(owners[0].kind, "StreamingEnrichment");
            assert_eq!(owners[0].name, "sales-minimal");
            assert_eq!(owners[0].controller, Some(true));
            let labels = m.labels.as_ref().expect("labels");
            assert_eq!(labels["app.kubernetes.io/instance"], "sales-minimal");
            assert_eq!(labels["app.kubernetes.io/managed-by"], "tributary-operator");
        }
        assert_eq!(
            c.config_map.metadata.name.as_deref(),
            Some("sales-minimal-config")
        );
        assert_eq!(
            c.metrics_service.metadata.name.as_deref(),
            Some("sales-minimal-metrics")
        );
    }

    #[test]
    fn config_map_renders_the_shared_job_config() {
        let c = build_example("full.yaml", 3);
        let yaml = &c.config_map.data.as_ref().unwrap()[CONFIG_FILE];
        let cfg = JobConfig::from_yaml(yaml).unwrap();
        assert_eq!(cfg.pipeline.namespace, "analytics");
        assert_eq!(cfg.pipeline.name, "sales-enrichment");
        assert_eq!(cfg.replicas, 3);
        assert_eq!(
            cfg.sources.sales.consumer_name.as_deref(),
            Some("tributary-sales-enrichment")
        );
        assert_eq!(
            cfg.sinks.opensearch.spec.document_id,
            "{order_id}:{item_id}"
        );
    }

    #[test]
    fn opensearch_ca_is_mounted_read_only_where_the_config_points() {
        let c = build_example("full.yaml", 1);
        let yaml = &c.config_map.data.as_ref().unwrap()[CONFIG_FILE];
        let cfg = JobConfig::from_yaml(yaml).unwrap();
        assert_eq!(
            cfg.sinks.opensearch.ca_cert_file.as_deref(),
            Some("/etc/tributary-opensearch-ca/ca.crt")
        );
        let pod = c.statefulset.spec.unwrap().template.spec.unwrap();
        let vol = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "opensearch-ca")
            .expect("CA volume");
        let secret = vol.secret.as_ref().expect("a Secret volume");
        assert_eq!(
            secret.secret_name.as_deref(),
            Some("sales-enrichment-opensearch")
        );
        let items = secret.items.as_ref().unwrap();
        assert_eq!(items.len(), 1, "only the CA key is projected");
        assert_eq!(items[0].key, "ca.crt");
        assert_eq!(items[0].path, "ca.crt");
        let mount = pod.containers[0]
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "opensearch-ca")
            .expect("CA mount");
        assert_eq!(mount.read_only, Some(true));
        assert_eq!(
            format!("{}/{}", mount.mount_path, items[0].path),
            cfg.sinks.opensearch.ca_cert_file.unwrap()
        );

        // Without caCert: no volume, no mount, no path.
        let c = build_example("minimal.yaml", 1);
        let yaml = &c.config_map.data.as_ref().unwrap()[CONFIG_FILE];
        assert_eq!(
            JobConfig::from_yaml(yaml)
                .unwrap()
                .sinks
                .opensearch
                .ca_cert_file,
            None
        );
        let pod = c.statefulset.spec.unwrap().template.spec.unwrap();
        assert!(
            pod.volumes
                .iter()
                .flatten()
                .all(|v| v.name != "opensearch-ca" && v.secret.is_none())
        );
        assert!(
            pod.containers[0]
                .volume_mounts
                .iter()
                .flatten()
                .all(|m| m.name != "opensearch-ca")
        );
    }

    #[test]
    fn config_hash_is_stable_and_follows_the_configuration() {
        let a = build_example("minimal.yaml", 1);
        let b = build_example("minimal.yaml", 1);
        assert_eq!(a.config_hash, b.config_hash);
        let mut se = example("minimal.yaml");
        se.spec.join.max_wait = "20m".parse().unwrap();
        let c = build(&se, &inputs(1)).unwrap();
        assert_ne!(a.config_hash, c.config_hash);
        let d = build_example("minimal.yaml", 2);
        assert_ne!(
            a.config_hash, d.config_hash,
            "workers must agree on the replica count"
        );
        // Labels and annotations of pods are not job configuration.
        se = example("minimal.yaml");
        se.spec.pod_overrides = Some(tributary_crds::PodOverrides {
            labels: [("team".to_string(), "x".to_string())].into(),
            ..Default::default()
        });
        assert_eq!(build(&se, &inputs(1)).unwrap().config_hash, a.config_hash);
        // Naming a CA, or another Secret or key for it, rolls the pods.
        let full = build_example("full.yaml", 1);
        let mut se = example("full.yaml");
        se.spec.sinks.opensearch.ca_cert.as_mut().unwrap().name = "rotated-ca".into();
        let rotated = build(&se, &inputs(1)).unwrap();
        assert_ne!(rotated.config_hash, full.config_hash);
        se.spec.sinks.opensearch.ca_cert = None;
        let none = build(&se, &inputs(1)).unwrap();
        assert_ne!(none.config_hash, full.config_hash);
        assert_ne!(none.config_hash, rotated.config_hash);
    }

    #[test]
    fn statefulset_runs_restricted_probed_pods_with_state_volumes() {
        let c = build_example("minimal.yaml", 2);
        let sts = c.statefulset.spec.as_ref().unwrap();
        assert_eq!(sts.replicas, Some(2));
        assert_eq!(sts.service_name.as_deref(), Some("sales-minimal"));
        assert_eq!(
            sts.selector.match_labels.as_ref().unwrap()["app.kubernetes.io/name"],
            "tributary-job"
        );
        let tmpl = &sts.template;
        let ann = tmpl
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap();
        assert_eq!(ann["tributary.dev/config-hash"], c.config_hash);
        let pod = tmpl.spec.as_ref().unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            psc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        let ctr = &pod.containers[0];
        assert_eq!(ctr.image.as_deref(), Some("runtime:default"));
        let sc = ctr.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        assert_eq!(
            ctr.ports.as_ref().unwrap()[0].container_port,
            i32::from(ADMIN_PORT)
        );
        let ready = ctr
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(ready.path.as_deref(), Some("/readyz"));
        let live = ctr
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(live.path.as_deref(), Some("/healthz"));
        assert!(ctr.startup_probe.is_some());
        let mounts: Vec<_> = ctr
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert_eq!(mounts, ["/etc/tributary", "/var/lib/tributary", "/tmp"]);
        let vct = &sts.volume_claim_templates.as_ref().unwrap()[0];
        assert_eq!(vct.metadata.name.as_deref(), Some("state"));
        let req = vct
            .spec
            .as_ref()
            .unwrap()
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap();
        assert_eq!(req["storage"].0, "10Gi");
        let retention = sts
            .persistent_volume_claim_retention_policy
            .as_ref()
            .unwrap();
        assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
    }

    #[test]
    fn full_example_overrides_reach_the_pod() {
        let c = build_example("full.yaml", 1);
        let sts = c.statefulset.spec.as_ref().unwrap();
        let tmpl = &sts.template;
        let meta = tmpl.metadata.as_ref().unwrap();
        assert_eq!(meta.labels.as_ref().unwrap()["team"], "analytics");
        assert_eq!(
            meta.annotations.as_ref().unwrap()["prometheus.io/scrape"],
            "true"
        );
        let pod = tmpl.spec.as_ref().unwrap();
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some("sales-enrichment")
        );
        assert_eq!(pod.automount_service_account_token, Some(true));
        assert_eq!(
            pod.node_selector.as_ref().unwrap()["kubernetes.io/os"],
            "linux"
        );
        assert_eq!(pod.tolerations.as_ref().unwrap().len(), 1);
        let ctr = &pod.containers[0];
        assert_eq!(
            ctr.image.as_deref(),
            Some("registry.example.internal/tributary/runtime:0.1.0")
        );
        assert_eq!(ctr.image_pull_policy.as_deref(), Some("IfNotPresent"));
        let secret_envs: Vec<(String, String, String)> = ctr
            .env
            .as_ref()
            .unwrap()
            .iter()
            .filter_map(|e| {
                let s = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
                Some((e.name.clone(), s.name.clone(), s.key.clone()))
            })
            .collect();
        assert_eq!(
            secret_envs,
            [
                (
                    "AWS_ACCESS_KEY_ID".into(),
                    "sales-enrichment-aws".into(),
                    "access-key-id".into()
                ),
                (
                    "AWS_SECRET_ACCESS_KEY".into(),
                    "sales-enrichment-aws".into(),
                    "secret-access-key".into()
                ),
                (
                    "TRIBUTARY_OPENSEARCH_USERNAME".into(),
                    "sales-enrichment-opensearch".into(),
                    "username".into()
                ),
                (
                    "TRIBUTARY_OPENSEARCH_PASSWORD".into(),
                    "sales-enrichment-opensearch".into(),
                    "password".into()
                ),
            ]
        );
        let vct = &sts.volume_claim_templates.as_ref().unwrap()[0];
        assert_eq!(
            vct.spec.as_ref().unwrap().storage_class_name.as_deref(),
            Some("gp3")
        );
    }

    #[test]
    fn services_and_pdb_select_the_job_pods() {
        let c = build_example("minimal.yaml", 1);
        let hs = c.headless_service.spec.as_ref().unwrap();
        assert_eq!(hs.cluster_ip.as_deref(), Some("None"));
        assert_eq!(
            hs.selector.as_ref(),
            Some(&selector_labels("sales-minimal"))
        );
        let ms = c.metrics_service.spec.as_ref().unwrap();
        assert_eq!(
            ms.ports.as_ref().unwrap()[0].name.as_deref(),
            Some("metrics")
        );
        let pdb = c.pdb.spec.as_ref().unwrap();
        assert_eq!(
            pdb.max_unavailable,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
        );
        assert_eq!(
            pdb.selector.as_ref().unwrap().match_labels.as_ref(),
            Some(&selector_labels("sales-minimal"))
        );
    }
}
