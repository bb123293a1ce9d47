//! The StreamingEnrichment controller: validate -> build -> apply -> status, one step per module.

mod apply;
pub mod build;
mod status;
pub mod validate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tributary_crds::{ScalingMode, StreamingEnrichment};

use crate::config::OperatorConfig;
use crate::metrics::Metrics;
use crate::opensearch;
use build::BuildInputs;
use build::labels::{MANAGED_BY_LABEL, MANAGER};

/// Errors of one reconcile, each with a category for metrics and events.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("building children: {0}")]
    Build(#[from] build::BuildError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

impl Error {
    /// Bounded label for metrics: internal (our bug), external (a server failed).
    pub fn category(&self) -> &'static str {
        match self {
            Self::Build(_) => "internal",
            Self::Kube(_) => "external",
        }
    }
}

pub struct Context {
    pub client: Client,
    pub config: Arc<OperatorConfig>,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// Consecutive failures per object, for exponential backoff; cleared on success.
    failures: Mutex<HashMap<String, u32>>,
    /// Consecutive OpenSearch failures per object (they back off without failing the reconcile).
    opensearch_failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        config: Arc<OperatorConfig>,
        metrics: Arc<Metrics>,
        recorder: Recorder,
    ) -> Self {
        Self {
            client,
            config,
            metrics,
            recorder,
            failures: Mutex::new(HashMap::new()),
            opensearch_failures: Mutex::new(HashMap::new()),
        }
    }

    fn key(se: &StreamingEnrichment) -> String {
        format!("{}/{}", se.namespace().unwrap_or_default(), se.name_any())
    }

    fn record_failure(&self, se: &StreamingEnrichment) -> u32 {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = f.entry(Self::key(se)).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    fn clear_failures(&self, se: &StreamingEnrichment) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        f.remove(&Self::key(se));
    }

    /// Count an OpenSearch failure (`failed`) or clear the count; returns the count.
    fn opensearch_outcome(&self, se: &StreamingEnrichment, failed: bool) -> u32 {
        let mut f = self
            .opensearch_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if failed {
            let n = f.entry(Self::key(se)).or_insert(0);
            *n = n.saturating_add(1);
            *n
        } else {
            f.remove(&Self::key(se));
            0
        }
    }
}

/// 1s, 2s, 4s ... capped at 5 minutes.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(8)).min(Duration::from_secs(300))
}

/// The replica count the StatefulSet should run.
pub fn desired_replicas(se: &StreamingEnrichment) -> i32 {
    let spec = &se.spec;
    if spec.suspend {
        return 0;
    }
    match spec.scaling.mode {
        ScalingMode::Manual => spec.replicas.unwrap_or(1),
        ScalingMode::Shards => {
            let s = &spec.scaling;
            let shards = se.status.as_ref().and_then(|st| st.shards).unwrap_or(0);
            let per = s.shards_per_replica.max(1);
            let wanted = (shards + per - 1) / per;
            wanted.clamp(s.min_replicas, s.max_replicas.max(s.min_replicas))
        }
    }
}

/// The replica count the job configuration is rendered for: a suspended job keeps the count it
/// will resume at, so suspending and resuming do not roll the configuration.
fn config_replicas(se: &StreamingEnrichment) -> i32 {
    let mut unsuspended = se.clone();
    unsuspended.spec.suspend = false;
    desired_replicas(&unsuspended)
}

async fn publish(
    ctx: &Context,
    se: &StreamingEnrichment,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &se.object_ref(&())).await {
        tracing::warn!(error = %e, "publishing event failed");
    }
}

async fn reconcile(se: Arc<StreamingEnrichment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&se, &ctx).await;
    ctx.metrics.observe_reconcile(
        started.elapsed(),
        result.as_ref().err().map(Error::category),
    );
    if result.is_ok() {
        ctx.clear_failures(&se);
    }
    result
}

async fn reconcile_inner(se: &StreamingEnrichment, ctx: &Context) -> Result<Action, Error> {
    let ns = se.namespace().unwrap_or_default();
    let name = se.name_any();
    let api: Api<StreamingEnrichment> = Api::namespaced(ctx.client.clone(), &ns);
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let before = se.status.clone().unwrap_or_default();

    // 0. deletion and the finalizer (only `deletionPolicy: Delete` of a managed OpenSearch side
    //    needs one: in-cluster children go with their owner reference).
    if se.metadata.deletion_timestamp.is_some() {
        return finalize(se, ctx, &api).await;
    }
    if finalizer::wanted(se) && !finalizer::present(se) {
        finalizer::add(&api, se).await?;
    } else if !finalizer::wanted(se) && finalizer::present(se) {
        finalizer::remove(&api, se).await?;
    }

    // 1. validate
    let outcome_err = validate::validate(&se.spec).err();
    let (new_status, requeue) = if let Some(err) = &outcome_err {
        tracing::info!(%ns, %name, %err, "invalid spec");
        let s = status::compute(se, status::Outcome::Invalid(err), None, &now);
        (s, Action::await_change())
    } else {
        // 2. build
        let replicas = desired_replicas(se);
        let mut children = build::build(
            se,
            &BuildInputs {
                default_image: ctx.config.runtime_image.clone(),
                replicas: config_replicas(se),
            },
        )?;
        if let Some(spec) = children.statefulset.spec.as_mut() {
            spec.replicas = Some(replicas);
        }
        // 3. apply
        let sts = apply::apply_children(&ctx.client, &ns, &children).await?;
        // 4. the OpenSearch side, after the job's objects: its trouble never blocks them.
        let os = if se.spec.sinks.opensearch.template.managed {
            let now_ms = k8s_openapi::jiff::Timestamp::now().as_millisecond();
            Some(opensearch::ensure(&ctx.client, se, now_ms).await)
        } else {
            None
        };
        // 5. status
        let mut s = status::compute(
            se,
            status::Outcome::Applied {
                desired_replicas: replicas,
                config_hash: &children.config_hash,
            },
            Some(&sts),
            &now,
        );
        status::opensearch(&mut s, se, os.as_ref(), &now);
        // Owned objects wake us on change; the periodic requeue catches drift we do not watch.
        let mut requeue = Duration::from_secs(300);
        match &os {
            Some(Ok(report)) => {
                ctx.opensearch_outcome(se, false);
                requeue = requeue.min(Duration::from_secs(
                    ctx.config.opensearch_check_interval_secs,
                ));
                opensearch_events(ctx, se, report).await;
            }
            Some(Err(e)) => {
                let n = ctx.opensearch_outcome(se, true);
                tracing::warn!(%ns, %name, reason = e.reason(), error = %e, retry_in_s = backoff(n).as_secs(), "OpenSearch step failed");
                requeue = backoff(n);
            }
            None => {}
        }
        (s, Action::requeue(requeue))
    };

    if new_status != before {
        status::apply(&api, &name, &new_status).await?;
    }
    for c in status::flips(&before, &new_status) {
        let warn = (c.type_ == "Degraded" && c.status == "True")
            || (c.type_ == "Ready" && c.status == "False" && c.reason == "InvalidSpec")
            || (c.type_ == "IndexTemplateReady" && c.status == "False");
        let type_ = if warn {
            EventType::Warning
        } else {
            EventType::Normal
        };
        publish(
            ctx,
            se,
            type_,
            &c.reason,
            format!("{} is {}: {}", c.type_, c.status, c.message),
        )
        .await;
    }
    Ok(requeue)
}

/// Events for what an OpenSearch pass changed (condition flips have their own).
async fn opensearch_events(ctx: &Context, se: &StreamingEnrichment, r: &opensearch::Report) {
    let os = &se.spec.sinks.opensearch;
    if r.template != "UpToDate" {
        let note = format!(
            "index template {} {}",
            opensearch::template::template_name(os),
            r.template.to_lowercase()
        );
        publish(ctx, se, EventType::Normal, "IndexTemplateWritten", note).await;
    }
    if let Some(first) = &r.bootstrapped {
        let note = format!(
            "created {first} with aliases {} (write) and {}",
            os.write_alias, os.read_alias
        );
        publish(ctx, se, EventType::Normal, "IndexBootstrapped", note).await;
    }
    if let Some((old, new)) = &r.rolled_over {
        let note = format!("{} rolled over from {old} to {new}", os.write_alias);
        publish(ctx, se, EventType::Normal, "RolledOver", note).await;
    }
    if !r.deleted.is_empty() {
        let note = format!(
            "deleted indices older than deleteAfter: {}",
            r.deleted.join(", ")
        );
        publish(ctx, se, EventType::Normal, "IndicesDeleted", note).await;
    }
}

/// A resource being deleted: with our finalizer, remove the OpenSearch side first.
async fn finalize(
    se: &StreamingEnrichment,
    ctx: &Context,
    api: &Api<StreamingEnrichment>,
) -> Result<Action, Error> {
    if !finalizer::present(se) {
        return Ok(Action::await_change());
    }
    if finalizer::wanted(se) {
        match opensearch::cleanup(&ctx.client, se).await {
            Ok(removed) => {
                let note = format!("deletionPolicy Delete removed: {}", removed.join(", "));
                publish(ctx, se, EventType::Normal, "OpenSearchDeleted", note).await;
            }
            Err(e) => {
                // The finalizer stays until OpenSearch answers: the data must not be orphaned
                // silently. (Remove the finalizer by hand to give up on it.)
                let n = ctx.opensearch_outcome(se, true);
                publish(
                    ctx,
                    se,
                    EventType::Warning,
                    e.reason(),
                    format!("deleting the OpenSearch side: {e}"),
                )
                .await;
                return Ok(Action::requeue(backoff(n)));
            }
        }
    }
    finalizer::remove(api, se).await?;
    Ok(Action::await_change())
}

/// The finalizer that guards `deletionPolicy: Delete`.
mod finalizer {
    use kube::Api;
    use kube::api::{Patch, PatchParams};
    use serde_json::json;
    use tributary_crds::{DeletionPolicy, StreamingEnrichment};

    pub const NAME: &str = "tributary.dev/opensearch";

    pub fn wanted(se: &StreamingEnrichment) -> bool {
        let os = &se.spec.sinks.opensearch;
        os.template.managed && os.deletion_policy == DeletionPolicy::Delete
    }

    pub fn present(se: &StreamingEnrichment) -> bool {
        se.metadata.finalizers.iter().flatten().any(|f| f == NAME)
    }

    /// Merge patches of the whole list carrying the resourceVersion they were computed from, so
    /// a concurrent change of the finalizers makes the patch fail with a conflict (and the
    /// reconcile retry) instead of clobbering it.
    pub async fn add(
        api: &Api<StreamingEnrichment>,
        se: &StreamingEnrichment,
    ) -> Result<(), kube::Error> {
        let mut list = se.metadata.finalizers.clone().unwrap_or_default();
        list.push(NAME.to_string());
        send(api, se, list).await
    }

    pub async fn remove(
        api: &Api<StreamingEnrichment>,
        se: &StreamingEnrichment,
    ) -> Result<(), kube::Error> {
        let mut list = se.metadata.finalizers.clone().unwrap_or_default();
        list.retain(|f| f != NAME);
        send(api, se, list).await
    }

    async fn send(
        api: &Api<StreamingEnrichment>,
        se: &StreamingEnrichment,
        list: Vec<String>,
    ) -> Result<(), kube::Error> {
        let name = se.metadata.name.clone().unwrap_or_default();
        let patch = json!({
            "metadata": {
                "finalizers": list,
                "resourceVersion": se.metadata.resource_version,
            }
        });
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }
}

fn error_policy(se: Arc<StreamingEnrichment>, err: &Error, ctx: Arc<Context>) -> Action {
    let n = ctx.record_failure(&se);
    let delay = backoff(n);
    tracing::warn!(
        namespace = se.namespace().unwrap_or_default(),
        name = se.name_any(),
        category = err.category(),
        error = %err,
        retry_in_s = delay.as_secs(),
        "reconcile failed"
    );
    Action::requeue(delay)
}

/// An API over one namespace, or over all of them.
fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Run the controllers until `shutdown` resolves: one over every namespace, or one per watched
/// namespace (`--watch-namespaces`). `on_synced` fires once every cache is filled.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
    on_synced: impl FnOnce() + Send + 'static,
) {
    let scopes: Vec<Option<String>> = match ctx.config.watch_scope() {
        Some(list) => {
            tracing::info!(namespaces = %list.join(","), "watching these namespaces only");
            list.into_iter().map(Some).collect()
        }
        None => {
            tracing::info!("watching every namespace");
            vec![None]
        }
    };
    let shutdown = shutdown.shared();
    let mut stores = Vec::new();
    let mut controllers = Vec::new();
    for scope in &scopes {
        let (store, controller) = scope_controller(&ctx, scope.as_deref(), shutdown.clone());
        stores.push(store);
        controllers.push(controller);
    }
    tokio::spawn(async move {
        for store in stores {
            // Polled rather than awaited: the controller itself already waits on this store, and
            // a second waiter on its ready signal is not woken (seen with kube-runtime 5.0).
            loop {
                match store.wait_until_ready().now_or_never() {
                    Some(Ok(())) => break,
                    Some(Err(e)) => {
                        return tracing::error!(error = %e, "the resource cache never filled");
                    }
                    None => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
        on_synced();
    });
    futures::future::join_all(controllers).await;
}

/// The controller of one scope (`None`: every namespace) and its resource cache.
fn scope_controller<S>(
    ctx: &Arc<Context>,
    namespace: Option<&str>,
    shutdown: S,
) -> (
    kube::runtime::reflector::Store<StreamingEnrichment>,
    impl std::future::Future<Output = ()> + Send + use<S>,
)
where
    S: std::future::Future<Output = ()> + Send + Sync + 'static,
{
    let client = &ctx.client;
    let owned = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"));
    let controller = Controller::new(
        scoped::<StreamingEnrichment>(client, namespace),
        watcher::Config::default().any_semantic(),
    )
    .owns(scoped::<StatefulSet>(client, namespace), owned.clone())
    .owns(scoped::<ConfigMap>(client, namespace), owned.clone())
    .owns(scoped::<Service>(client, namespace), owned.clone())
    .owns(scoped::<PodDisruptionBudget>(client, namespace), owned);
    let store = controller.store();
    let ctx = ctx.clone();
    let run = controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok(_) => {}
                // Already logged, with its category, by error_policy.
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                Err(e) => tracing::warn!(error = %e, "controller error (watch or queue)"),
            }
        });
    (store, run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::build::fixtures::example;

    #[test]
    fn replicas_follow_suspend_mode_and_shards() {
        let mut se = example("minimal.yaml");
        assert_eq!(desired_replicas(&se), 1);
        se.spec.replicas = Some(3);
        assert_eq!(desired_replicas(&se), 3);
        se.spec.suspend = true;
        assert_eq!(desired_replicas(&se), 0);
        assert_eq!(
            config_replicas(&se),
            3,
            "suspending keeps the configuration"
        );

        let mut full = example("full.yaml"); // Shards mode, 2 shards per replica, 1..=8
        assert_eq!(
            desired_replicas(&full),
            1,
            "unknown shard count: minReplicas"
        );
        full.status = Some(tributary_crds::StreamingEnrichmentStatus {
            shards: Some(5),
            ..Default::default()
        });
        assert_eq!(desired_replicas(&full), 3);
        full.status.as_mut().unwrap().shards = Some(40);
        assert_eq!(desired_replicas(&full), 8);
    }
}
