//! The StatefulSet running the job runtime: one pod per share of the sales shards, each with its
//! own state volume, meeting the restricted Pod Security Standard.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tributary_crds::control::CONTROL_SECRET_KEY;
use tributary_crds::job_config::{
    ADMIN_PORT, CONFIG_DIR, CONFIG_FILE, OPENSEARCH_CA_DIR, OPENSEARCH_CA_FILE, STATE_DIR, env,
};
use tributary_crds::{OpenSearchAuthKind, SecretKeyRef, StreamingEnrichment};

use super::labels::{child_meta, common_labels, selector_labels};
use super::services::ADMIN_PORT_NAME;
use super::{BuildInputs, names};

/// Annotation on the pod template carrying the configuration hash: a new hash rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "tributary.dev/config-hash";
/// Annotation on the pod template carrying the state id: a new state rolls the pods (the job
/// configuration in the ConfigMap is only read at start).
pub const STATE_ID_ANNOTATION: &str = "tributary.dev/state-id";
pub const CONTAINER_NAME: &str = "runtime";
pub const STATE_VOLUME: &str = "state";
const CONFIG_VOLUME: &str = "config";
const TMP_VOLUME: &str = "tmp";
const OPENSEARCH_CA_VOLUME: &str = "opensearch-ca";
/// The runtime image's non-root user.
const RUN_AS_USER: i64 = 65532;

/// The StatefulSet, without the annotations [`annotate`] adds once the hash is known.
pub fn build(
    se: &StreamingEnrichment,
    name: &str,
    namespace: &str,
    owner: &OwnerReference,
    inputs: &BuildInputs,
) -> StatefulSet {
    let spec = &se.spec;
    let overrides = spec.pod_overrides.clone().unwrap_or_default();

    let mut pod_labels = overrides.labels.clone();
    pod_labels.extend(common_labels(name, "job"));
    let pod_annotations = overrides.annotations.clone();

    StatefulSet {
        metadata: child_meta(names::statefulset(name), namespace, name, "job", owner),
        spec: Some(StatefulSetSpec {
            replicas: Some(inputs.replicas),
            service_name: Some(names::headless_service(name)),
            // Workers are independent; there is no reason to start them one by one.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(name)),
                ..Default::default()
            },
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                ..Default::default()
            }),
            // Scaling down or suspending keeps each replica's state; deleting the pipeline
            // deletes its volumes (savepoints in S3 stay).
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Delete".into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: overrides.service_account_name.clone(),
                    automount_service_account_token: Some(
                        overrides.automount_service_account_token.unwrap_or(false),
                    ),
                    node_selector: (!overrides.node_selector.is_empty())
                        .then(|| overrides.node_selector.clone()),
                    tolerations: (!overrides.tolerations.is_empty())
                        .then(|| overrides.tolerations.clone()),
                    affinity: overrides.affinity.clone(),
                    // Time for the runtime to stop reading, flush its sinks and checkpoint.
                    termination_grace_period_seconds: Some(60),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS_USER),
                        run_as_group: Some(RUN_AS_USER),
                        fs_group: Some(RUN_AS_USER),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    containers: vec![container(se, name, inputs)],
                    volumes: Some(volumes(se, name)),
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(STATE_VOLUME.into()),
                    labels: Some(selector_labels(name)),
                    ..Default::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    storage_class_name: spec.storage.storage_class_name.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".to_string(),
                            spec.storage.size.clone(),
                        )])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Put the configuration hash and the state id on the pod template: either changing rolls the
/// pods.
pub fn annotate(sts: &mut StatefulSet, config_hash: &str, state_id: &str) {
    let Some(spec) = sts.spec.as_mut() else {
        return;
    };
    let annotations = spec
        .template
        .metadata
        .get_or_insert_with(Default::default)
        .annotations
        .get_or_insert_with(Default::default);
    annotations.insert(CONFIG_HASH_ANNOTATION.to_string(), config_hash.to_string());
    if !state_id.is_empty() {
        annotations.insert(STATE_ID_ANNOTATION.to_string(), state_id.to_string());
    }
}

fn container(se: &StreamingEnrichment, name: &str, inputs: &BuildInputs) -> Container {
    let spec = &se.spec;
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(ADMIN_PORT_NAME.into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(3),
        ..Default::default()
    };
    Container {
        name: CONTAINER_NAME.into(),
        image: Some(
            spec.image
                .clone()
                .unwrap_or_else(|| inputs.default_image.clone()),
        ),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_string()),
        args: Some(vec![
            "--config".into(),
            format!("{CONFIG_DIR}/{CONFIG_FILE}"),
        ]),
        env: Some(env_vars(se, name)),
        ports: Some(vec![ContainerPort {
            name: Some(ADMIN_PORT_NAME.into()),
            container_port: i32::from(ADMIN_PORT),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        resources: Some(spec.resources.clone().unwrap_or_else(default_resources)),
        // Restoring a large state can take minutes: the startup probe gives it 10 minutes
        // before liveness starts counting.
        startup_probe: Some(probe("/healthz", 5, 120)),
        liveness_probe: Some(probe("/healthz", 10, 6)),
        readiness_probe: Some(probe("/readyz", 5, 3)),
        volume_mounts: Some(volume_mounts(se)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn volumes(se: &StreamingEnrichment, name: &str) -> Vec<Volume> {
    let mut volumes = vec![
        Volume {
            name: CONFIG_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names::config_map(name),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: TMP_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    ];
    // The CA is a file, not an environment variable: the runtime reads it at start. Only the
    // named key is projected, under a fixed name ([`JobConfig`] carries the path). The kubelet
    // refreshes the file when the Secret changes (no subPath), but the runtime reads it once:
    // a new CA takes effect at the pods' next start; pointing `caCert` at another Secret or key
    // changes the configuration hash and rolls them.
    //
    // [`JobConfig`]: tributary_crds::job_config::JobConfig
    if let Some(ca) = &se.spec.sinks.opensearch.ca_cert {
        volumes.push(Volume {
            name: OPENSEARCH_CA_VOLUME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(ca.name.clone()),
                items: Some(vec![KeyToPath {
                    key: ca.key.clone(),
                    path: OPENSEARCH_CA_FILE.into(),
                    ..Default::default()
                }]),
                // Readable by the runtime's user through the pod's fsGroup.
                default_mode: Some(0o440),
                optional: Some(false),
            }),
            ..Default::default()
        });
    }
    volumes
}

fn volume_mounts(se: &StreamingEnrichment) -> Vec<VolumeMount> {
    let mut mounts = vec![
        VolumeMount {
            name: CONFIG_VOLUME.into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount {
            name: STATE_VOLUME.into(),
            mount_path: STATE_DIR.into(),
            ..Default::default()
        },
        VolumeMount {
            name: TMP_VOLUME.into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        },
    ];
    if se.spec.sinks.opensearch.ca_cert.is_some() {
        mounts.push(VolumeMount {
            name: OPENSEARCH_CA_VOLUME.into(),
            mount_path: OPENSEARCH_CA_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    mounts
}

fn secret_env(name: &str, r: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: r.name.clone(),
                key: r.key.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn env_vars(se: &StreamingEnrichment, name: &str) -> Vec<EnvVar> {
    let mut vars = vec![
        field_env(env::POD_NAME, "metadata.name"),
        field_env(env::POD_IP, "status.podIP"),
        // Optional: without a control key the operator writes no Secret, and the pods run
        // without a token (refusing every control request) instead of waiting for one. The
        // template is the same with or without a key, so configuring one rolls nothing.
        EnvVar {
            name: env::CONTROL_TOKEN.into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: names::control_secret(name),
                    key: CONTROL_SECRET_KEY.into(),
                    optional: Some(true),
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    if let Some(creds) = &se.spec.aws.credentials {
        vars.push(secret_env(env::AWS_ACCESS_KEY_ID, &creds.access_key_id));
        vars.push(secret_env(
            env::AWS_SECRET_ACCESS_KEY,
            &creds.secret_access_key,
        ));
    }
    let auth = &se.spec.sinks.opensearch.auth;
    if auth.kind == OpenSearchAuthKind::Basic {
        if let Some(u) = &auth.username {
            vars.push(secret_env(env::OPENSEARCH_USERNAME, u));
        }
        if let Some(p) = &auth.password {
            vars.push(secret_env(env::OPENSEARCH_PASSWORD, p));
        }
    }
    vars
}

/// The job pod's resources when the resource names none: a pod without requests is scheduled
/// anywhere and evicted first, and one without a memory limit can take the node's memory.
fn default_resources() -> k8s_openapi::api::core::v1::ResourceRequirements {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let q = |v: &str| Quantity(v.to_string());
    k8s_openapi::api::core::v1::ResourceRequirements {
        requests: Some(
            [
                ("cpu".to_string(), q("500m")),
                ("memory".to_string(), q("1Gi")),
            ]
            .into(),
        ),
        limits: Some([("memory".to_string(), q("2Gi"))].into()),
        ..Default::default()
    }
}
