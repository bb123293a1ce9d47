//! The StreamingEnrichment controller: validate -> observe (the job's objects and pods, the
//! Kinesis streams) -> decide (Shards mode, the upgrade flow) -> record the intent -> apply ->
//! status, one step per module.

mod apply;
pub mod build;
mod control;
#[cfg(test)]
mod fake;
mod finalizer;
#[cfg(test)]
mod flow_tests;
mod observe;
pub mod scaling;
mod status;
pub mod upgrade;
pub mod validate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tributary_crds::control::control_token;
use tributary_crds::job_config::ADMIN_PORT;
use tributary_crds::{ScalingMode, ScalingStatus, StreamingEnrichment};

use crate::config::OperatorConfig;
use crate::metrics::Metrics;
use crate::{kinesis, opensearch};
use build::BuildInputs;
use build::labels::{INSTANCE_LABEL, JOB_NAME, MANAGED_BY_LABEL, MANAGER, NAME_LABEL};
use upgrade::{Action as Step, Decision};

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

/// When an object's streams were last looked at, for which generation, and what it found.
type SourcesSeen = (Instant, Option<i64>, Option<kinesis::Health>);

pub struct Context {
    pub client: Client,
    pub config: Arc<OperatorConfig>,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// The key control tokens are derived from; `None`: savepoints cannot be asked for.
    control_key: Option<Vec<u8>>,
    /// The job pods' control API.
    control: control::Client,
    /// Control requests refused for their token, until the operation is over.
    refusals: observe::Refusals,
    /// Consecutive failures per object, for exponential backoff; cleared on success.
    failures: Mutex<HashMap<String, u32>>,
    /// Consecutive OpenSearch failures per object (they back off without failing the reconcile).
    opensearch_failures: Mutex<HashMap<String, u32>>,
    /// When each object's streams were last looked at, for which generation, and what the look
    /// found (`None` until it answered).
    sources_seen: Mutex<HashMap<String, SourcesSeen>>,
    /// Whether the Kinesis streams are looked at (off in the mocked-API tests, which have no
    /// Kinesis).
    streams: bool,
}

impl Context {
    pub fn new(
        client: Client,
        config: Arc<OperatorConfig>,
        metrics: Arc<Metrics>,
        recorder: Recorder,
        control_key: Option<Vec<u8>>,
    ) -> Self {
        Self::with_control_port(client, config, metrics, recorder, control_key, ADMIN_PORT)
    }

    /// As [`Context::new`], with the job pods' admin port elsewhere (a fake runtime in tests).
    pub fn with_control_port(
        client: Client,
        config: Arc<OperatorConfig>,
        metrics: Arc<Metrics>,
        recorder: Recorder,
        control_key: Option<Vec<u8>>,
        control_port: u16,
    ) -> Self {
        Self {
            client,
            config,
            metrics,
            recorder,
            control_key,
            control: control::Client::new(control_port),
            refusals: observe::Refusals::default(),
            failures: Mutex::new(HashMap::new()),
            opensearch_failures: Mutex::new(HashMap::new()),
            sources_seen: Mutex::new(HashMap::new()),
            streams: true,
        }
    }

    /// The context without the Kinesis observation (status.shards and SourcesHealthy stay as
    /// they are).
    #[cfg(test)]
    pub fn without_streams(mut self) -> Self {
        self.streams = false;
        self
    }

    /// Whether the object's streams are due for a look: never seen, its spec changed since, or
    /// the interval passed. Marks them seen now when due.
    fn sources_due(&self, se: &StreamingEnrichment) -> bool {
        if !self.streams {
            return false;
        }
        let interval = kinesis::interval(self.config.sources_check_interval_secs);
        let mut seen = self.sources_seen.lock().unwrap_or_else(|p| p.into_inner());
        let generation = se.metadata.generation;
        let key = Self::key(se);
        let due = seen
            .get(&key)
            .is_none_or(|(at, g, _)| *g != generation || at.elapsed() >= interval);
        if due {
            let last = seen.get(&key).and_then(|(_, _, h)| h.clone());
            seen.insert(key, (Instant::now(), generation, last));
        }
        due
    }

    /// Remember what the look at the streams found.
    fn sources_found(&self, se: &StreamingEnrichment, health: &kinesis::Health) {
        let mut seen = self.sources_seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = seen.get_mut(&Self::key(se)) {
            entry.2 = Some(health.clone());
        }
    }

    /// What the last look at the streams found.
    fn sources_health(&self, se: &StreamingEnrichment) -> Option<kinesis::Health> {
        let seen = self.sources_seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(&Self::key(se)).and_then(|(_, _, h)| h.clone())
    }

    fn forget_sources(&self, se: &StreamingEnrichment) {
        let mut seen = self.sources_seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.remove(&Self::key(se));
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

/// 1s, 2s, 4s ... up to 256 s (2^8).
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(8)).min(Duration::from_secs(300))
}

/// The replica count the spec asks for, ignoring `suspend` (0 only when `replicas` is 0): in
/// Shards mode what [`scaling::decide`] decided (`minReplicas` before its first decision).
pub fn spec_replicas(se: &StreamingEnrichment, scaling: Option<&ScalingStatus>) -> i32 {
    let spec = &se.spec;
    match spec.scaling.mode {
        ScalingMode::Manual => spec.replicas.unwrap_or(1),
        ScalingMode::Shards => scaling.map_or(spec.scaling.min_replicas, |s| s.replicas),
    }
}

/// What the spec asks of the upgrade flow.
fn desired(
    se: &StreamingEnrichment,
    scaling: Option<&ScalingStatus>,
    default_image: &str,
) -> Result<upgrade::Desired, Error> {
    let replicas = spec_replicas(se, scaling);
    Ok(upgrade::Desired {
        config_hash: build::config_hash(se, default_image)?,
        replicas,
        stopped: se.spec.suspend || replicas == 0,
        upgrade_mode: se.spec.upgrade_mode,
        savepoints_uri: se.spec.savepoints.as_ref().map(|s| s.uri.clone()),
        generation: se.metadata.generation.unwrap_or(0),
    })
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
    match &result {
        Ok(_) => ctx.clear_failures(&se),
        Err(e) => report_failure(&ctx, &se, e).await,
    }
    result
}

/// A failed pass is a Warning event and `Degraded=True` (reason `ReconcileFailed`), not only a
/// log line. Both are best effort: the API server may be what failed.
async fn report_failure(ctx: &Context, se: &StreamingEnrichment, e: &Error) {
    let message = format!("{} error: {e}", e.category());
    publish(
        ctx,
        se,
        EventType::Warning,
        "ReconcileFailed",
        message.clone(),
    )
    .await;
    let api: Api<StreamingEnrichment> =
        Api::namespaced(ctx.client.clone(), &se.namespace().unwrap_or_default());
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    if let Err(err) = status::failed(&api, &se.name_any(), &message, &now).await {
        tracing::debug!(error = %err, "recording the failed reconcile in the status failed");
    }
}

async fn reconcile_inner(cached: &StreamingEnrichment, ctx: &Context) -> Result<Action, Error> {
    let ns = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let api: Api<StreamingEnrichment> = Api::namespaced(ctx.client.clone(), &ns);
    // The status is the upgrade flow's memory: decide from the server's copy, never from a
    // cache that may not have seen the last write yet (it would start an operation twice).
    let Some(fresh) = api.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    let se = &fresh;
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let before = se.status.clone().unwrap_or_default();

    // 0. deletion and the finalizer (only `deletionPolicy: Delete` of a managed OpenSearch side
    //    needs one: in-cluster children go with their owner reference).
    if se.metadata.deletion_timestamp.is_some() {
        return finalize(se, ctx, &api).await;
    }
    finalizer::sync(&api, se).await?;

    // 1. validate
    let invalid = validate::validate(&se.spec).err();
    if let Some(err) = &invalid {
        tracing::info!(%ns, %name, %err, "invalid spec");
    }
    // 2a. observe the streams (every `--sources-check-interval-secs` and after a spec change),
    //     then Shards mode's decision from the open shards.
    let streams = if invalid.is_none() && ctx.sources_due(se) {
        let o = kinesis::observe(&ctx.client, se).await;
        ctx.sources_found(se, &o.health);
        Some(o)
    } else {
        None
    };
    let open_shards = match &streams {
        Some(o) => o.shards.map(|c| c.open),
        None => before.shards,
    };
    let scaling = (se.spec.scaling.mode == ScalingMode::Shards).then(|| {
        scaling::decide(
            &se.spec.scaling,
            open_shards,
            before.scaling.as_ref(),
            now.0,
        )
    });
    let scaling_status = scaling.as_ref().map(|d| d.status.clone());
    let desired = match &invalid {
        None => Some(desired(
            se,
            scaling_status.as_ref(),
            &ctx.config.runtime_image,
        )?),
        Some(_) => None,
    };

    // 2. observe: the StatefulSet, the job pods, and what the recorded phase waits for.
    let recorded = upgrade::Recorded::from_status(&before);
    let seen = observe::observe(
        &ctx.client,
        &ctx.control,
        &ctx.refusals,
        &ns,
        &name,
        &recorded,
    )
    .await?;

    // 3. decide the next step of the upgrade flow.
    let token = match (&ctx.control_key, se.uid()) {
        (Some(key), Some(uid)) => Some(control_token(key, &uid)),
        _ => None,
    };
    let decision = upgrade::decide(&upgrade::Input {
        desired: desired.as_ref(),
        recorded: &recorded,
        observed: &seen.flow,
        settings: &upgrade::Settings {
            control_key: token.is_some(),
            savepoint_timeout: ctx.config.savepoint_timeout(),
        },
        now: now.0,
    });

    // 4. record the intent before acting on it: a restarted operator resumes from here.
    let scaling_changed = invalid.is_none() && scaling_status != before.scaling;
    if decision.recorded != recorded || scaling_changed {
        let mut intent = before.clone();
        decision.recorded.write_into(&mut intent);
        if invalid.is_none() {
            intent.scaling.clone_from(&scaling_status);
        }
        status::apply(&api, &name, &intent).await?;
    }
    if let Some((reason, note)) = scaling.as_ref().and_then(|d| d.event.clone()) {
        tracing::info!(%ns, %name, reason, %note, "shards mode");
        publish(ctx, se, EventType::Normal, reason, note).await;
    }
    if decision.recorded.pending.is_none() {
        ctx.refusals.clear(&ns, &name);
    }
    // The step's event, with its inputs, once it is recorded and before it is carried out.
    for n in &decision.report.notices {
        let type_ = if n.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        tracing::info!(%ns, %name, reason = n.reason, note = %n.note, "upgrade flow");
        publish(ctx, se, type_, n.reason, n.note.clone()).await;
    }

    // 5. act
    let sts = act(
        ctx,
        se,
        invalid.is_none(),
        &decision,
        token.as_deref(),
        &seen,
    )
    .await?;

    // 6. the OpenSearch side, after the job's objects: its trouble never blocks them.
    let os = if invalid.is_none() && se.spec.sinks.opensearch.template.managed {
        let now_ms = k8s_openapi::jiff::Timestamp::now().as_millisecond();
        Some(opensearch::ensure(&ctx.client, se, now_ms).await)
    } else {
        None
    };

    // 6a. enhanced fan-out consumers of replicas that no longer exist (at the streams' pace).
    if streams.is_some() && invalid.is_none() {
        consumers(ctx, se, &decision).await;
    }

    // 7. status
    let mut new_status = status::compute(se, invalid.as_ref(), &decision, sts.as_ref(), &now);
    if invalid.is_none() {
        new_status.scaling.clone_from(&scaling_status);
        status::streams(&mut new_status, streams.as_ref(), &now);
        if ctx.streams {
            status::pipeline(
                &mut new_status,
                se,
                ctx.sources_health(se).as_ref(),
                &seen.pipelines,
                streams.is_some(),
                &now,
            );
        }
        status::opensearch(&mut new_status, se, os.as_ref(), &now);
    }
    // Owned objects and job pods wake us on change; the periodic requeue catches drift we do
    // not watch. An invalid spec waits for the next change, unless an operation is in flight.
    let mut requeue = match (&invalid, decision.requeue) {
        (Some(_), None) => None,
        (_, r) => Some(r.unwrap_or(Duration::from_secs(300))),
    };
    // The streams are looked at again on their interval (Shards mode follows them).
    if invalid.is_none() {
        let interval = kinesis::interval(ctx.config.sources_check_interval_secs);
        requeue = requeue.map(|r| r.min(interval));
    }
    match &os {
        Some(Ok(report)) => {
            ctx.opensearch_outcome(se, false);
            requeue = requeue.map(|r| {
                r.min(Duration::from_secs(
                    ctx.config.opensearch_check_interval_secs,
                ))
            });
            opensearch_events(ctx, se, report).await;
        }
        Some(Err(e)) => {
            let n = ctx.opensearch_outcome(se, true);
            tracing::warn!(%ns, %name, reason = e.reason(), error = %e, retry_in_s = backoff(n).as_secs(), "OpenSearch step failed");
            requeue = requeue.map(|r| r.min(backoff(n)));
        }
        None => {}
    }

    let written = if decision.recorded != recorded {
        let mut w = before.clone();
        decision.recorded.write_into(&mut w);
        w
    } else {
        before.clone()
    };
    if new_status != written {
        status::apply(&api, &name, &new_status).await?;
    }
    for c in status::flips(&before, &new_status) {
        let warn = (c.type_ == "Degraded" && c.status == "True")
            || (c.type_ == "Ready" && c.status == "False" && c.reason == "InvalidSpec")
            || (c.type_ == "IndexTemplateReady" && c.status == "False")
            || (c.type_ == "SavepointReady" && c.status == "False")
            || (c.type_ == "SourcesHealthy" && c.status == "False")
            || (c.type_ == "SinksHealthy" && c.status == "False");
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
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Carry out the decided step; returns the StatefulSet as it now is, for the status. An
/// invalid spec applies nothing (the job keeps its previous configuration), but an operation
/// in flight still talks to the replicas.
async fn act(
    ctx: &Context,
    se: &StreamingEnrichment,
    valid: bool,
    decision: &Decision,
    token: Option<&str>,
    seen: &observe::Observation,
) -> Result<Option<StatefulSet>, Error> {
    let ns = se.namespace().unwrap_or_default();
    let name = se.name_any();
    let inputs = |run: Option<&upgrade::Run>| {
        let mut i = BuildInputs::for_hash(&ctx.config.runtime_image);
        i.control_token = token.map(tributary_crds::secret::Secret::new);
        if let Some(run) = run {
            i.replicas = run.statefulset_replicas;
            i.job_replicas = run.job_replicas;
            i.state = run.state.clone();
        }
        i
    };
    if let Step::Apply(run) = &decision.action
        && valid
    {
        let children = build::build(se, &inputs(Some(run)))?;
        return Ok(Some(
            apply::apply_children(&ctx.client, &ns, &children).await?,
        ));
    }
    if valid {
        let children = build::build(se, &inputs(None))?;
        apply::apply_support(&ctx.client, &ns, &children).await?;
    }
    let ip_of = |o: u32| {
        seen.flow
            .pods
            .iter()
            .filter(|p| p.ordinal == o && !p.terminating)
            .find_map(|p| p.ip.clone())
    };
    match &decision.action {
        Step::Apply(_) | Step::Keep => {}
        Step::ScaleToZero => {
            let replicas = seen.flow.statefulset_replicas.unwrap_or(0);
            if replicas != 0 {
                apply::scale_to_zero(&ctx.client, &ns, &build::names::statefulset(&name)).await?;
            }
        }
        Step::RequestSavepoints { id, ordinals } => {
            let Some(token) = token else {
                tracing::warn!(%ns, %name, "no control key: savepoint {id} cannot be asked for");
                return Ok(seen.statefulset.clone());
            };
            for &o in ordinals {
                let Some(ip) = ip_of(o) else { continue };
                match ctx.control.request_savepoint(&ip, id, token).await {
                    Ok(()) => {
                        tracing::info!(%ns, %name, ordinal = o, savepoint = %id, "savepoint requested")
                    }
                    Err(e) => {
                        tracing::warn!(%ns, %name, ordinal = o, savepoint = %id, error = %e, "savepoint request failed");
                        if let Some(status @ (401 | 403)) = e.status() {
                            ctx.refusals
                                .record(&ns, &name, id, o, status, e.to_string());
                        }
                    }
                }
            }
        }
        Step::Resume { ordinals } => {
            let Some(token) = token else {
                tracing::warn!(%ns, %name, "no control key: the replicas cannot be told to resume");
                return Ok(seen.statefulset.clone());
            };
            for &o in ordinals {
                let Some(ip) = ip_of(o) else { continue };
                match ctx.control.resume(&ip, token).await {
                    Ok(()) => tracing::info!(%ns, %name, ordinal = o, "replica resumed"),
                    Err(e) => tracing::warn!(%ns, %name, ordinal = o, error = %e, "resume failed"),
                }
            }
        }
    }
    Ok(seen.statefulset.clone())
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

/// The enhanced fan-out consumers of ordinals at or above the replica count, deregistered once
/// no operation is in flight (a rescale to fewer replicas leaves its removed ordinals' behind;
/// suspended, every replica's goes). A failure is a warning event; the next look retries.
async fn consumers(ctx: &Context, se: &StreamingEnrichment, decision: &Decision) {
    if !finalizer::wanted(se).contains(&finalizer::CONSUMERS) || decision.recorded.pending.is_some()
    {
        return;
    }
    let keep = if se.spec.suspend {
        0
    } else {
        decision.recorded.running_replicas.unwrap_or(0)
    };
    // Nothing has run yet: nothing registered.
    if decision.recorded.running_replicas.is_none() {
        return;
    }
    match kinesis::deregister_consumers(&ctx.client, se, u32::try_from(keep).unwrap_or(0)).await {
        Ok(removed) if removed.is_empty() => {}
        Ok(removed) => {
            let note = format!(
                "deregistered the enhanced fan-out consumers of removed replicas: {}",
                removed.join(", ")
            );
            publish(ctx, se, EventType::Normal, "ConsumersDeregistered", note).await;
        }
        Err(e) => {
            publish(ctx, se, EventType::Warning, "ConsumerCleanupFailed", e).await;
        }
    }
}

/// A resource being deleted: each finalizer of ours present does its cleanup, then goes.
async fn finalize(
    se: &StreamingEnrichment,
    ctx: &Context,
    api: &Api<StreamingEnrichment>,
) -> Result<Action, Error> {
    if !finalizer::any_present(se) {
        ctx.forget_sources(se);
        return Ok(Action::await_change());
    }
    let wanted = finalizer::wanted(se);
    if finalizer::present(se, finalizer::CONSUMERS) {
        if wanted.contains(&finalizer::CONSUMERS) {
            match kinesis::deregister_consumers(&ctx.client, se, 0).await {
                Ok(removed) => {
                    let note = format!(
                        "deregistered the enhanced fan-out consumers: {}",
                        if removed.is_empty() {
                            "none left".to_string()
                        } else {
                            removed.join(", ")
                        }
                    );
                    publish(ctx, se, EventType::Normal, "ConsumersDeregistered", note).await;
                }
                Err(e) => {
                    // The finalizer stays until Kinesis answers (remove it by hand to give up).
                    publish(ctx, se, EventType::Warning, "ConsumerCleanupFailed", e).await;
                    return Ok(Action::requeue(Duration::from_secs(30)));
                }
            }
        }
        finalizer::remove(api, se, finalizer::CONSUMERS).await?;
        // The next pass sees the resource without it.
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    if finalizer::present(se, finalizer::OPENSEARCH) {
        if wanted.contains(&finalizer::OPENSEARCH) {
            match opensearch::cleanup(&ctx.client, se).await {
                Ok(removed) => {
                    let note = format!("deletionPolicy Delete removed: {}", removed.join(", "));
                    publish(ctx, se, EventType::Normal, "OpenSearchDeleted", note).await;
                }
                Err(e) => {
                    // The finalizer stays until OpenSearch answers: the data must not be
                    // orphaned silently. (Remove the finalizer by hand to give up on it.)
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
        finalizer::remove(api, se, finalizer::OPENSEARCH).await?;
    }
    ctx.forget_sources(se);
    Ok(Action::await_change())
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
    ctx.metrics.watch_pipelines(stores.clone());
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
    .owns(scoped::<PodDisruptionBudget>(client, namespace), owned)
    // Job pods belong to the StatefulSet, not to the resource: they are mapped back by their
    // instance label, so a pod that stops, starts or turns ready moves the upgrade flow on.
    .watches(
        scoped::<Pod>(client, namespace),
        watcher::Config::default().labels(&format!("{NAME_LABEL}={JOB_NAME}")),
        |pod: Pod| {
            let name = pod.labels().get(INSTANCE_LABEL)?.clone();
            let ns = pod.namespace()?;
            Some(ObjectRef::<StreamingEnrichment>::new(&name).within(&ns))
        },
    );
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
    fn replicas_follow_mode_and_shards_and_suspend_stops() {
        let mut se = example("minimal.yaml");
        assert_eq!(spec_replicas(&se, None), 1);
        se.spec.replicas = Some(3);
        assert_eq!(spec_replicas(&se, None), 3);
        se.spec.suspend = true;
        let d = desired(&se, None, "img").unwrap();
        assert_eq!(
            (d.replicas, d.stopped),
            (3, true),
            "suspending keeps the count"
        );
        se.spec.suspend = false;
        se.spec.replicas = Some(0);
        let d = desired(&se, None, "img").unwrap();
        assert_eq!(
            (d.replicas, d.stopped),
            (0, true),
            "zero replicas stops too"
        );

        let full = example("full.yaml"); // Shards mode, 2 shards per replica, 1..=8
        assert_eq!(
            spec_replicas(&full, None),
            1,
            "no decision yet: minReplicas"
        );
        let decided = ScalingStatus {
            replicas: 3,
            recommended: 3,
            below_since: None,
            below_max: None,
            changed_at: None,
        };
        assert_eq!(spec_replicas(&full, Some(&decided)), 3);
        let d = desired(&full, Some(&decided), "img").unwrap();
        assert_eq!(
            d.savepoints_uri.as_deref(),
            Some("s3://ara-savepoints/sales-enrichment")
        );
        assert_eq!(d.upgrade_mode, tributary_crds::UpgradeMode::Savepoint);
    }
}
