//! Whole flows through the real reconcile, against the mocked API server and fake runtimes of
//! [`super::fake`].

use std::collections::BTreeSet;
use std::sync::Arc;

use clap::Parser;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::json;
use tributary_crds::conditions::{ConditionType, get_condition};
use tributary_crds::control::control_token;
use tributary_crds::{OperationPhase, SavepointsSpec, StreamingEnrichment};

use super::build::fixtures::example;
use super::fake::{FakeApi, FakeRuntime, Log, World};
use super::{Context, reconcile};
use crate::config::OperatorConfig;
use crate::metrics::Metrics;

const NS: &str = "default";
const NAME: &str = "sales-minimal";
const KEY: &[u8] = b"test-control-key";

fn se_path() -> String {
    format!("/apis/tributary.dev/v1alpha1/namespaces/{NS}/streamingenrichments/{NAME}")
}

fn resource(savepoints: bool) -> StreamingEnrichment {
    let mut se = example("minimal.yaml");
    se.spec.replicas = Some(2);
    // No OpenSearch here: this tier is about the job.
    se.spec.sinks.opensearch.template.managed = false;
    se.spec.savepoints = savepoints.then(|| SavepointsSpec {
        uri: "s3://ara-savepoints/sales-minimal".into(),
    });
    se
}

fn context(api: &FakeApi, port: u16, key: Option<&[u8]>) -> Arc<Context> {
    let client = api.client();
    let config = Arc::new(
        OperatorConfig::try_parse_from(["tributary-operator", "--runtime-image", "runtime:test"])
            .unwrap(),
    );
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "tributary-operator".into(),
            instance: Some("test".into()),
        },
    );
    Arc::new(
        Context::with_control_port(
            client,
            config,
            Arc::new(Metrics::new().unwrap()),
            recorder,
            key.map(<[u8]>::to_vec),
            port,
        )
        .without_streams(),
    )
}

struct Setup {
    log: Log,
    api: FakeApi,
    runtime: FakeRuntime,
}

impl Setup {
    async fn new(se: &StreamingEnrichment, runtime_token: Option<String>) -> Self {
        let log: Log = Arc::default();
        let api = FakeApi::new(log.clone());
        api.store
            .lock()
            .unwrap()
            .put(&se_path(), serde_json::to_value(se).unwrap());
        let uid = se.metadata.uid.clone().unwrap();
        let token = runtime_token.unwrap_or_else(|| control_token(KEY, &uid));
        let runtime = FakeRuntime::start(4, token, log.clone()).await;
        Self { log, api, runtime }
    }

    fn world(&self) -> World<'_> {
        World {
            api: &self.api,
            runtime: &self.runtime,
            namespace: NS.into(),
            name: NAME.into(),
        }
    }

    /// Reconcile as the controller would (with the resource as the cache has it), then let
    /// the cluster move; check that replicas of two counts never run at once (stopped ones
    /// included: a stopped replica that restarts reads again).
    async fn round(&self, ctx: &Arc<Context>) {
        let se = Arc::new(self.world().resource());
        reconcile(se, ctx.clone()).await.expect("reconcile");
        let counts: BTreeSet<i32> = self
            .runtime
            .replicas
            .lock()
            .unwrap()
            .values()
            .map(|r| r.job_replicas)
            .collect();
        assert!(
            counts.len() <= 1,
            "replicas of counts {counts:?} read at once"
        );
        self.world().tick();
    }

    fn edit(&self, f: impl FnOnce(&mut StreamingEnrichment)) {
        let mut se = self.world().resource();
        f(&mut se);
        se.metadata.generation = Some(se.metadata.generation.unwrap_or(1) + 1);
        self.api
            .store
            .lock()
            .unwrap()
            .put(&se_path(), serde_json::to_value(&se).unwrap());
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn position(&self, what: &str) -> usize {
        self.log()
            .iter()
            .position(|l| l.contains(what))
            .unwrap_or_else(|| panic!("never: {what}\n{:#?}", self.log()))
    }

    fn events(&self) -> Vec<String> {
        self.log()
            .iter()
            .filter(|l| l.contains("/events"))
            .filter_map(|l| l.rsplit(' ').next().map(str::to_string))
            .collect()
    }
}

async fn running(setup: &Setup, ctx: &Arc<Context>) {
    for _ in 0..3 {
        setup.round(ctx).await;
    }
    assert_eq!(setup.world().pods(), [0, 1]);
    let st = setup.world().resource().status.unwrap();
    assert_eq!(st.running_replicas, Some(2));
}

#[tokio::test]
async fn a_rescale_goes_savepoint_scale_down_restore_against_a_mocked_api() {
    let se = resource(true);
    let setup = Setup::new(&se, None).await;
    let ctx = context(&setup.api, setup.runtime.port, Some(KEY));
    running(&setup, &ctx).await;

    // The control Secret holds the token the pods read, by reference.
    let secret = setup
        .api
        .get(&format!("/api/v1/namespaces/{NS}/secrets/{NAME}-control"))
        .expect("control Secret");
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["kind"],
        "StreamingEnrichment"
    );
    let token = secret["data"]["token"].as_str().unwrap();
    let sts = setup.world().statefulset().unwrap();
    let env = sts.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    let var = env
        .iter()
        .find(|e| e.name == "TRIBUTARY_CONTROL_TOKEN")
        .expect("token variable");
    let sel = var
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (sel.name.as_str(), sel.key.as_str()),
        ("sales-minimal-control", "token")
    );
    assert_eq!(
        json!(token),
        serde_json::to_value(k8s_openapi::ByteString(
            setup.runtime.token().as_bytes().to_vec()
        ))
        .unwrap()
    );

    setup.log.lock().unwrap().clear();
    setup.edit(|se| se.spec.replicas = Some(3));
    let mut phases = Vec::new();
    for _ in 0..30 {
        setup.round(&ctx).await;
        let st = setup.world().resource().status.unwrap();
        let phase = st.pending_operation.as_ref().map(|p| p.phase);
        if phases.last() != Some(&phase) {
            phases.push(phase);
        }
        if phase.is_none() && st.running_replicas == Some(3) {
            break;
        }
    }
    assert_eq!(
        phases,
        [
            Some(OperationPhase::Savepointing),
            Some(OperationPhase::ScaledDown),
            Some(OperationPhase::Restoring),
            None
        ]
    );

    // The intent is recorded before the replicas are asked; the scale-down by the scale
    // subresource; the new StatefulSet only once the old pods are gone.
    let recorded = setup.position("/status phase=Savepointing");
    let asked = setup.position("POST /savepoints");
    assert!(recorded < asked, "{:#?}", setup.log());
    let checked = setup.position("/check");
    let scaled = setup.position("statefulsets/sales-minimal/scale");
    assert!(
        asked < checked && checked < scaled,
        "verified before the scale-down"
    );
    let restoring = setup.position("/status phase=Restoring");
    assert!(scaled < restoring);
    assert!(restoring < setup.position("GET /state"));

    let st = setup.world().resource().status.unwrap();
    let sp = st.last_savepoint.clone().expect("lastSavepoint");
    assert_eq!(sp.replicas, 2);
    assert!(
        sp.uri.starts_with("s3://ara-savepoints/sales-minimal/sp-"),
        "{}",
        sp.uri
    );
    assert_eq!(st.state_id.as_deref(), Some(sp.id.as_str()));
    assert!(
        get_condition(&st.conditions, ConditionType::SavepointReady)
            .is_some_and(|c| c.status == "True")
    );
    let cfg = setup.world().job_config();
    assert_eq!(cfg.replicas, 3);
    assert_eq!(cfg.state.id, sp.id);
    assert_eq!(
        cfg.state.restore, None,
        "restored: no longer needed to start"
    );
    assert_eq!(setup.world().pods(), [0, 1, 2]);
    for r in setup.runtime.replicas.lock().unwrap().values() {
        assert_eq!(r.restored_from.as_deref(), Some(sp.id.as_str()), "{r:?}");
        assert_eq!(r.job_replicas, 3);
    }
    let events = setup.events();
    for reason in [
        "SavepointStarted",
        "SavepointCompleted",
        "RestoreStarted",
        "RestoreCompleted",
    ] {
        assert!(events.iter().any(|e| e == reason), "{reason} in {events:?}");
    }
}

#[tokio::test]
async fn a_new_operator_resumes_a_flow_from_the_status_alone() {
    let se = resource(true);
    let setup = Setup::new(&se, None).await;
    let ctx = context(&setup.api, setup.runtime.port, Some(KEY));
    running(&setup, &ctx).await;
    setup.edit(|se| se.spec.replicas = Some(1));
    // Until the savepoint is complete and the scale-down recorded.
    for _ in 0..10 {
        setup.round(&ctx).await;
        let st = setup.world().resource().status.unwrap();
        if st
            .pending_operation
            .is_some_and(|p| p.phase == OperationPhase::ScaledDown)
        {
            break;
        }
    }
    // The leader dies; another replica, with nothing in memory, takes over.
    drop(ctx);
    let ctx = context(&setup.api, setup.runtime.port, Some(KEY));
    for _ in 0..20 {
        setup.round(&ctx).await;
    }
    let st = setup.world().resource().status.unwrap();
    assert_eq!(st.pending_operation, None);
    assert_eq!(st.running_replicas, Some(1));
    assert_eq!(setup.world().pods(), [0]);
    let requests = setup.runtime.requests();
    let posts = requests
        .iter()
        .filter(|r| r.contains("POST /savepoints"))
        .count();
    assert_eq!(
        posts, 2,
        "one savepoint, asked of each old replica once: {requests:#?}"
    );
}

#[tokio::test]
async fn a_rescale_without_savepoints_is_refused_with_a_warning() {
    let se = resource(false);
    let setup = Setup::new(&se, None).await;
    let ctx = context(&setup.api, setup.runtime.port, Some(KEY));
    running(&setup, &ctx).await;
    setup.edit(|se| se.spec.replicas = Some(3));
    for _ in 0..3 {
        setup.round(&ctx).await;
    }
    let sts = setup.world().statefulset().unwrap();
    assert_eq!(sts.spec.unwrap().replicas, Some(2), "the count is kept");
    assert_eq!(setup.world().pods(), [0, 1]);
    let st = setup.world().resource().status.unwrap();
    let d = get_condition(&st.conditions, ConditionType::Degraded).unwrap();
    assert_eq!(
        (d.status.as_str(), d.reason.as_str()),
        ("True", "SavepointsNotConfigured")
    );
    let p = get_condition(&st.conditions, ConditionType::Progressing).unwrap();
    assert_eq!(
        (p.status.as_str(), p.reason.as_str()),
        ("False", "SavepointsNotConfigured")
    );
    assert!(
        setup
            .events()
            .iter()
            .any(|e| e == "SavepointsNotConfigured")
    );
    assert!(
        setup.runtime.requests().is_empty(),
        "nobody was asked anything"
    );
}

#[tokio::test]
async fn a_refused_token_abandons_the_savepoint_and_keeps_the_job() {
    let se = resource(true);
    // The pods hold another token (they started before the key changed).
    let setup = Setup::new(&se, Some("another-token".into())).await;
    let ctx = context(&setup.api, setup.runtime.port, Some(KEY));
    running(&setup, &ctx).await;
    setup.edit(|se| se.spec.replicas = Some(3));
    for _ in 0..4 {
        setup.round(&ctx).await;
    }
    let st = setup.world().resource().status.unwrap();
    assert_eq!(st.pending_operation, None);
    let retry = st.operation_retry.clone().expect("retry recorded");
    assert_eq!(retry.reason, "ControlUnauthorized");
    assert!(retry.message.contains("401"), "{}", retry.message);
    let d = get_condition(&st.conditions, ConditionType::Degraded).unwrap();
    assert_eq!(
        (d.status.as_str(), d.reason.as_str()),
        ("True", "ControlUnauthorized")
    );
    assert_eq!(setup.world().pods(), [0, 1], "nothing rolled");
    assert_eq!(
        setup.world().statefulset().unwrap().spec.unwrap().replicas,
        Some(2)
    );
    assert!(setup.events().iter().any(|e| e == "ControlUnauthorized"));
}

#[tokio::test]
async fn without_a_key_there_is_no_control_secret_and_nothing_else_breaks() {
    let se = resource(true);
    let setup = Setup::new(&se, None).await;
    let ctx = context(&setup.api, setup.runtime.port, None);
    running(&setup, &ctx).await;
    assert!(
        setup
            .api
            .get(&format!("/api/v1/namespaces/{NS}/secrets/{NAME}-control"))
            .is_none()
    );
    let st = setup.world().resource().status.unwrap();
    assert!(
        get_condition(&st.conditions, ConditionType::Ready).is_some_and(|c| c.status == "True")
    );
    setup.edit(|se| se.spec.replicas = Some(3));
    setup.round(&ctx).await;
    let st = setup.world().resource().status.unwrap();
    let p = get_condition(&st.conditions, ConditionType::Progressing).unwrap();
    assert_eq!(p.reason, "ControlKeyNotConfigured");
    assert!(p.message.contains("--control-key-file"), "{}", p.message);
}
