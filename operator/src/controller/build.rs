//! Pure builders of every child object a `StreamingEnrichment` owns. No client here: each builder
//! takes the resource (and resolved facts such as the replica count) and returns the object to
//! server-side apply. Unit-tested from the resources in `examples/`.

mod config_map;
mod control_secret;
pub mod labels;
mod pdb;
mod services;
mod statefulset;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use sha2::{Digest, Sha256};
use tributary_crds::StreamingEnrichment;
use tributary_crds::job_config::{JobConfig, StateConfig};

#[cfg(test)]
use labels::selector_labels;
pub use labels::selector_string;

#[cfg(test)]
use statefulset::{CONFIG_HASH_ANNOTATION, STATE_ID_ANNOTATION};

/// Facts the builders need beyond the resource itself, decided by the upgrade flow
/// ([`super::upgrade`]): the builders never choose a replica count or a state.
#[derive(Clone, Debug)]
pub struct BuildInputs {
    /// Image used when the resource names none.
    pub default_image: String,
    /// `spec.replicas` of the StatefulSet (zero while suspended or scaled down for a restore).
    pub replicas: i32,
    /// The replica count the job configuration splits the sales shards among.
    pub job_replicas: i32,
    /// The state the replicas run on, and the savepoint to restore when it is new.
    pub state: StateConfig,
    /// The resource's control token; `None` when the operator has no control key (no Secret).
    pub control_token: Option<tributary_crds::secret::Secret>,
}

impl BuildInputs {
    /// Inputs that change nothing but the image: enough to compute the configuration hash.
    pub fn for_hash(default_image: &str) -> Self {
        Self {
            default_image: default_image.to_string(),
            replicas: 1,
            job_replicas: 1,
            state: StateConfig::default(),
            control_token: None,
        }
    }
}

/// Every child object, as it should be.
#[derive(Clone, Debug)]
pub struct Children {
    pub config_map: ConfigMap,
    pub headless_service: Service,
    pub metrics_service: Service,
    pub statefulset: StatefulSet,
    pub pdb: PodDisruptionBudget,
    /// The control Secret holding the job pods' bearer token (when the operator has a key).
    pub control_secret: Option<Secret>,
    /// Hash of the job configuration and the pod template, without the replica count and the
    /// state (also on the pod template).
    pub config_hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the resource has no {0}")]
    MissingMetadata(&'static str),
    #[error("rendering the job configuration: {0}")]
    RenderConfig(#[from] serde_yaml::Error),
    #[error("serialising the pod template: {0}")]
    RenderTemplate(#[from] serde_json::Error),
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
    pub fn control_secret(se: &str) -> String {
        tributary_crds::control::control_secret_name(se)
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

    let mut job_config =
        JobConfig::from_spec(namespace, name, &se.spec, inputs.job_replicas.max(1));
    job_config.state = inputs.state.clone();
    let config_map = config_map::build(name, namespace, &owner, &job_config)?;
    let mut statefulset = statefulset::build(se, name, namespace, &owner, inputs);
    let config_hash = hash(&job_config, &statefulset)?;
    statefulset::annotate(&mut statefulset, &config_hash, &inputs.state.id);

    Ok(Children {
        headless_service: services::headless(name, namespace, &owner),
        metrics_service: services::metrics(name, namespace, &owner),
        statefulset,
        pdb: pdb::build(name, namespace, &owner),
        control_secret: inputs
            .control_token
            .as_ref()
            .map(|t| control_secret::build(name, namespace, &owner, t.expose())),
        config_map,
        config_hash,
    })
}

/// The hash of what the pods run, without what the upgrade flow decides (the replica count
/// and the state): a change of it is a change of configuration, brought in as `upgradeMode`
/// says. It covers the pod template as well as the job configuration, so a new image is a
/// change like any other.
fn hash(job_config: &JobConfig, statefulset: &StatefulSet) -> Result<String, BuildError> {
    let basis = JobConfig {
        replicas: 0,
        state: StateConfig::default(),
        ..job_config.clone()
    };
    let template = statefulset.spec.as_ref().map(|s| &s.template);
    let mut h = Sha256::new();
    h.update(basis.to_yaml()?.as_bytes());
    h.update(b"\n---\n");
    h.update(serde_json::to_vec(&template)?);
    Ok(hex::encode(&h.finalize()[..8]))
}

/// The configuration hash of `se` as it would be built now (see [`hash`]).
pub fn config_hash(se: &StreamingEnrichment, default_image: &str) -> Result<String, BuildError> {
    Ok(build(se, &BuildInputs::for_hash(default_image))?.config_hash)
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
    use tributary_crds::job_config::{ADMIN_PORT, CONFIG_FILE, SavepointLocation};

    fn inputs(replicas: i32) -> BuildInputs {
        BuildInputs {
            default_image: "runtime:default".into(),
            replicas,
            job_replicas: replicas.max(1),
            state: StateConfig::default(),
            control_token: Some(tributary_crds::secret::Secret::new("t0ken")),
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
        // What the upgrade flow decides is not configuration: the replica counts, the state and
        // the token (a change of count or state is its own step, never a "config change").
        let d = build_example("minimal.yaml", 2);
        assert_eq!(a.config_hash, d.config_hash);
        let mut other = inputs(0);
        other.job_replicas = 5;
        other.state = StateConfig {
            id: "sp-1".into(),
            restore: Some(SavepointLocation {
                id: "sp-1".into(),
                uri: "s3://b/sp-1/".into(),
            }),
        };
        other.control_token = None;
        assert_eq!(
            build(&example("minimal.yaml"), &other).unwrap().config_hash,
            a.config_hash
        );
        assert_eq!(
            config_hash(&example("minimal.yaml"), "runtime:default").unwrap(),
            a.config_hash
        );
        // The image and the pod template are: changing them restarts the pods.
        assert_ne!(
            config_hash(&example("minimal.yaml"), "runtime:v2").unwrap(),
            a.config_hash
        );
        se = example("minimal.yaml");
        se.spec.pod_overrides = Some(tributary_crds::PodOverrides {
            labels: [("team".to_string(), "x".to_string())].into(),
            ..Default::default()
        });
        assert_ne!(build(&se, &inputs(1)).unwrap().config_hash, a.config_hash);
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
    fn replicas_state_and_restore_come_from_the_inputs() {
        let se = example("minimal.yaml");
        // Scaled down for a restore: zero pods, the configuration still cut for 2.
        let mut i = inputs(0);
        i.job_replicas = 2;
        let c = build(&se, &i).unwrap();
        assert_eq!(c.statefulset.spec.as_ref().unwrap().replicas, Some(0));
        let cfg = JobConfig::from_yaml(&c.config_map.data.as_ref().unwrap()[CONFIG_FILE]).unwrap();
        assert_eq!(cfg.replicas, 2);
        assert_eq!(cfg.state, StateConfig::default());
        let ann = |c: &Children| {
            c.statefulset
                .spec
                .clone()
                .unwrap()
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()
        };
        assert!(
            !ann(&c).contains_key(STATE_ID_ANNOTATION),
            "no state id: none"
        );

        // Restoring: the state and the savepoint in the job configuration, the state id on
        // the template (a new one rolls the pods).
        let restore = StateConfig {
            id: "sp-7".into(),
            restore: Some(SavepointLocation {
                id: "sp-7".into(),
                uri: "s3://ara-savepoints/x/sp-7/".into(),
            }),
        };
        let mut i = inputs(3);
        i.state = restore.clone();
        let c = build(&se, &i).unwrap();
        assert_eq!(c.statefulset.spec.as_ref().unwrap().replicas, Some(3));
        let cfg = JobConfig::from_yaml(&c.config_map.data.as_ref().unwrap()[CONFIG_FILE]).unwrap();
        assert_eq!((cfg.replicas, cfg.state), (3, restore));
        assert_eq!(ann(&c)[STATE_ID_ANNOTATION], "sp-7");
        assert_eq!(ann(&c)[CONFIG_HASH_ANNOTATION], c.config_hash);
    }

    #[test]
    fn the_control_secret_holds_the_token_the_pods_read_by_reference() {
        let c = build_example("minimal.yaml", 1);
        let secret = c
            .control_secret
            .as_ref()
            .expect("a control Secret with a key");
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("sales-minimal-control")
        );
        assert_eq!(secret.metadata.namespace.as_deref(), Some("default"));
        let owners = secret.metadata.owner_references.as_ref().unwrap();
        assert_eq!(
            (owners[0].kind.as_str(), owners[0].controller),
            ("StreamingEnrichment", Some(true))
        );
        let labels = secret.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["app.kubernetes.io/managed-by"], "tributary-operator");
        let data = secret.data.as_ref().unwrap();
        assert_eq!(
            data[tributary_crds::control::CONTROL_SECRET_KEY].0,
            b"t0ken"
        );

        let pod = c.statefulset.spec.unwrap().template.spec.unwrap();
        let var = pod.containers[0]
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == tributary_crds::job_config::env::CONTROL_TOKEN)
            .expect("the token variable")
            .clone();
        assert_eq!(var.value, None, "never the token itself in the pod spec");
        let sel = var.value_from.unwrap().secret_key_ref.unwrap();
        assert_eq!(sel.name, "sales-minimal-control");
        assert_eq!(sel.key, "token");
        assert_eq!(sel.optional, Some(true), "pods start without a key too");

        // Without a key: no Secret, the same pod template (a key added later rolls nothing).
        let mut i = inputs(1);
        i.control_token = None;
        let without = build(&example("minimal.yaml"), &i).unwrap();
        assert!(without.control_secret.is_none());
        assert_eq!(without.config_hash, c.config_hash);
        assert_eq!(
            without.statefulset.spec.unwrap().template,
            build_example("minimal.yaml", 1)
                .statefulset
                .spec
                .unwrap()
                .template
        );
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
    fn a_job_pod_without_resources_gets_bounded_defaults() {
        let c = build_example("minimal.yaml", 1);
        let pod = c
            .statefulset
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap();
        let r = pod.containers[0].resources.as_ref().unwrap();
        let requests = r.requests.as_ref().unwrap();
        assert_eq!(requests["cpu"].0, "500m");
        assert_eq!(requests["memory"].0, "1Gi");
        assert_eq!(r.limits.as_ref().unwrap()["memory"].0, "2Gi");
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
                    "TRIBUTARY_CONTROL_TOKEN".into(),
                    "sales-enrichment-control".into(),
                    "token".into()
                ),
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
