//! The observe step: what the job is doing now, read before anything is decided. The
//! StatefulSet and the job pods always; the replicas' savepoint or state reports when the
//! recorded phase waits for them ([`upgrade::needs`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};

use super::build::{names, selector_string};
use super::control;
use super::upgrade::{self, CheckSeen, JobPod, Needs, Observed, Part, StateSeen};
use tributary_crds::OperationPhase;
use tributary_crds::control::PipelineReport;

/// What was observed: the StatefulSet as the server has it, the flow's view, and each running
/// replica's own report (`GET /status`; the error when it did not answer).
pub struct Observation {
    pub statefulset: Option<StatefulSet>,
    pub flow: Observed,
    pub pipelines: BTreeMap<u32, Result<PipelineReport, String>>,
}

/// Refusals of the control token, by `namespace/name/savepoint/ordinal`: a `POST` answered
/// 401/403 is remembered so the next poll sees a refusal, not a replica that never heard.
#[derive(Default)]
pub struct Refusals(Mutex<HashMap<String, (u16, String)>>);

impl Refusals {
    fn key(ns: &str, name: &str, id: &str, ordinal: u32) -> String {
        format!("{ns}/{name}/{id}/{ordinal}")
    }

    pub fn record(&self, ns: &str, name: &str, id: &str, ordinal: u32, status: u16, msg: String) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(Self::key(ns, name, id, ordinal), (status, msg));
    }

    fn get(&self, ns: &str, name: &str, id: &str, ordinal: u32) -> Option<(u16, String)> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&Self::key(ns, name, id, ordinal)).cloned()
    }

    /// Forget a resource's refusals (its operation is over).
    pub fn clear(&self, ns: &str, name: &str) {
        let prefix = format!("{ns}/{name}/");
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|k, _| !k.starts_with(&prefix));
    }
}

/// The ordinal of a StatefulSet pod: its name's suffix after `<statefulset>-`.
fn ordinal(statefulset: &str, pod: &str) -> Option<u32> {
    pod.strip_prefix(statefulset)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

pub fn job_pod(statefulset: &str, pod: &Pod) -> Option<JobPod> {
    let ordinal = ordinal(statefulset, pod.metadata.name.as_deref()?)?;
    let status = pod.status.as_ref();
    Some(JobPod {
        ordinal,
        ip: status
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty()),
        ready: status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        terminating: pod.metadata.deletion_timestamp.is_some(),
    })
}

pub async fn observe(
    client: &Client,
    control: &control::Client,
    refusals: &Refusals,
    namespace: &str,
    name: &str,
    recorded: &upgrade::Recorded,
) -> Result<Observation, kube::Error> {
    let sts_name = names::statefulset(name);
    let statefulset = Api::<StatefulSet>::namespaced(client.clone(), namespace)
        .get_opt(&sts_name)
        .await?;
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&selector_string(name)))
        .await?;
    let pods: Vec<JobPod> = pods
        .items
        .iter()
        .filter_map(|p| job_pod(&sts_name, p))
        .collect();
    let ip_of = |o: u32| {
        pods.iter()
            .filter(|p| p.ordinal == o)
            .find_map(|p| p.ip.clone())
    };

    let mut flow = Observed {
        statefulset_replicas: statefulset
            .as_ref()
            .and_then(|s| s.spec.as_ref())
            .map(|s| s.replicas.unwrap_or(1)),
        pods: pods.clone(),
        savepoints: BTreeMap::new(),
        states: BTreeMap::new(),
        check: None,
    };
    match upgrade::needs(recorded) {
        Needs::Nothing => {}
        Needs::Savepoints { id, ordinals } => {
            let asks = ordinals.iter().map(|&o| {
                let ip = ip_of(o);
                let id = id.clone();
                async move {
                    let part = match ip {
                        None => Part::NoPod,
                        Some(ip) => control.savepoint(&ip, &id).await,
                    };
                    let part = match (part, refusals.get(namespace, name, &id, o)) {
                        (Part::Unknown, Some((status, message))) => {
                            Part::Refused { status, message }
                        }
                        (part, _) => part,
                    };
                    (o, part)
                }
            });
            flow.savepoints = futures::future::join_all(asks).await.into_iter().collect();
            // Only once every part is written is the whole savepoint worth reading back; any
            // replica can check it (it reads the store, not its own state).
            let phase = recorded.pending.as_ref().map(|p| p.phase);
            let from = recorded.pending.as_ref().map_or(0, |p| p.from_replicas);
            if phase == Some(OperationPhase::Savepointing)
                && upgrade::all_completed(&flow.savepoints, &id, from)
            {
                let ip = ordinals.iter().find_map(|&o| ip_of(o));
                flow.check = Some(match ip {
                    Some(ip) => control.check(&ip, &id).await,
                    None => CheckSeen::Unreachable("no replica has an address".into()),
                });
            }
        }
        Needs::States { ordinals } => {
            let asks = ordinals.iter().map(|&o| {
                let ip = ip_of(o);
                async move {
                    let seen = match ip {
                        None => StateSeen::NoPod,
                        Some(ip) => control.state(&ip).await,
                    };
                    (o, seen)
                }
            });
            flow.states = futures::future::join_all(asks).await.into_iter().collect();
        }
    }
    // Every replica that runs reports on its own sources and sinks.
    let reports = pods
        .iter()
        .filter(|p| !p.terminating)
        .filter_map(|p| Some((p.ordinal, p.ip.clone()?)))
        .map(|(o, ip)| async move { (o, control.pipeline(&ip).await) });
    let pipelines = futures::future::join_all(reports)
        .await
        .into_iter()
        .collect();
    Ok(Observation {
        statefulset,
        flow,
        pipelines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_come_from_the_statefulset_pod_names() {
        assert_eq!(ordinal("sales", "sales-0"), Some(0));
        assert_eq!(ordinal("sales", "sales-12"), Some(12));
        assert_eq!(ordinal("sales", "sales-x"), None);
        assert_eq!(ordinal("sales", "salesman-0"), None);
        assert_eq!(ordinal("sales", "sales"), None);
    }
}
