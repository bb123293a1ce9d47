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
        // 4. status
        let s = status::compute(
            se,
            status::Outcome::Applied {
                desired_replicas: replicas,
                config_hash: &children.config_hash,
            },
            Some(&sts),
            &now,
        );
        // Owned objects wake us on change; the periodic requeue catches drift we do not watch.
        (s, Action::requeue(Duration::from_secs(300)))
    };

    if new_status != before {
        status::apply(&api, &name, &new_status).await?;
    }
    for c in status::flips(&before, &new_status) {
        let warn = (c.type_ == "Degraded" && c.status == "True")
            || (c.type_ == "Ready" && c.status == "False" && c.reason == "InvalidSpec");
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

fn error_policy(se: Arc<StreamingEnrichment>, err: &Error, ctx: Arc<Context>) -> Action {
    let n = ctx.record_failure(&se);
    // 1s, 2s, 4s ... capped at 5 minutes.
    let delay = Duration::from_secs(1u64 << n.min(8)).min(Duration::from_secs(300));
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

/// Run the controller until `shutdown` resolves. `on_synced` fires once the caches are filled.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
    on_synced: impl FnOnce() + Send + 'static,
) {
    let client = ctx.client.clone();
    let owned = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"));
    let controller = Controller::new(
        Api::<StreamingEnrichment>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .owns(Api::<StatefulSet>::all(client.clone()), owned.clone())
    .owns(Api::<ConfigMap>::all(client.clone()), owned.clone())
    .owns(Api::<Service>::all(client.clone()), owned.clone())
    .owns(Api::<PodDisruptionBudget>::all(client.clone()), owned);
    let store = controller.store();
    tokio::spawn(async move {
        // Polled rather than awaited: the controller itself already waits on this store, and a
        // second waiter on its ready signal is not woken (seen with kube-runtime 5.0).
        loop {
            match store.wait_until_ready().now_or_never() {
                Some(Ok(())) => return on_synced(),
                Some(Err(e)) => {
                    return tracing::error!(error = %e, "the resource cache never filled");
                }
                None => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok(_) => {}
                // Already logged, with its category, by error_policy.
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                Err(e) => tracing::warn!(error = %e, "controller error (watch or queue)"),
            }
        })
        .await;
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
