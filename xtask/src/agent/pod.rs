//! One pod on this node, from its first sight to its finalised deletion: pod IP, volumes, a
//! supervisor per container, status reports, and termination.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use tokio::sync::{Notify, watch};

use super::Shared;
use super::container::{self, Cx, now};
use super::env::Facts;
use super::process::{self, Proc};
use super::status::{PodRuntime, State, status_patch};
use super::volumes;

/// The latest view of the pod from the API; `None` once it is gone from the API.
pub type Updates = watch::Receiver<Option<Arc<Pod>>>;

pub const STATE_FILE: &str = "state.json";

fn terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

/// Run a pod until it is deleted (then finalise the deletion) or gone from the API.
pub async fn run(shared: Arc<Shared>, mut updates: Updates, adopted: Option<PodRuntime>) {
    let Some(mut pod) = updates.borrow().clone() else {
        return;
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let dir = shared.pod_dir(&pod);
    let name = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    let ip = adopted
        .as_ref()
        .map(|r| r.ip.clone())
        .or_else(|| shared.allocate_ip(&uid));
    let Some(ip) = ip else {
        tracing::error!(pod = %name, "no free pod IP");
        return;
    };
    let mut rt = PodRuntime::new(&pod, ip, now());
    let mut adopted_procs: BTreeMap<usize, Proc> = BTreeMap::new();
    if let Some(old) = adopted {
        rt.started_at = old.started_at;
        for (i, c) in rt.containers.iter_mut().enumerate() {
            let Some(prev) = old.containers.iter().find(|p| p.name == c.name) else {
                continue;
            };
            c.restart_count = prev.restart_count;
            c.last = prev.last.clone();
            c.binary = prev.binary.clone();
            match (prev.pid, prev.start_ticks) {
                (Some(pid), Some(ticks)) if process::alive(pid, ticks) => {
                    tracing::info!(pod = %name, container = %c.name, pid, "adopting running process");
                    c.state = prev.state.clone();
                    adopted_procs.insert(
                        i,
                        Proc::Adopted {
                            pid,
                            start_ticks: ticks,
                        },
                    );
                }
                _ if matches!(prev.state, State::Running { .. }) => c.restart_count += 1,
                _ => {}
            }
        }
    }
    let rt = Arc::new(Mutex::new(rt));
    let notify = Arc::new(Notify::new());
    let reporter = tokio::spawn(report(
        shared.clone(),
        updates.clone(),
        rt.clone(),
        notify.clone(),
        dir.clone(),
    ));
    notify.notify_one();
    let (stop_tx, stop_rx) = watch::channel(None);
    let mut supervisors = Vec::new();

    // Volumes (retried until they can be made), then one supervisor per container.
    let facts_ip = rt.lock().unwrap_or_else(|e| e.into_inner()).ip.clone();
    let mut gone = false;
    loop {
        if terminating(&pod) || gone {
            break;
        }
        let inputs = volumes::Inputs {
            client: &shared.client,
            facts: Facts {
                pod: &pod,
                pod_ip: &facts_ip,
                host_ip: &shared.host_ip,
                node_name: &shared.node,
            },
            dir: &dir.join("volumes"),
            claims: &shared.claims_dir(),
        };
        match volumes::prepare(&inputs).await {
            Ok(vols) => {
                rt.lock().unwrap_or_else(|e| e.into_inner()).initialized = true;
                for i in 0..pod.spec.as_ref().map_or(0, |s| s.containers.len()) {
                    let cx = Cx {
                        shared: shared.clone(),
                        pod: pod.clone(),
                        index: i,
                        volumes: vols.clone(),
                        rt: rt.clone(),
                        notify: notify.clone(),
                        log: dir.join(format!("{}.log", container_name(&pod, i))),
                    };
                    supervisors.push(tokio::spawn(
                        cx.supervise(adopted_procs.remove(&i), stop_rx.clone()),
                    ));
                }
                break;
            }
            Err(e) => {
                tracing::info!(pod = %name, "volumes not ready: {e}");
                {
                    let mut rt = rt.lock().unwrap_or_else(|e| e.into_inner());
                    for c in &mut rt.containers {
                        c.state = State::Waiting {
                            reason: "ContainerCreating".into(),
                            message: Some(format!("MountVolume failed: {e}")),
                        };
                    }
                }
                notify.notify_one();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(3)) => {}
                    r = updates.changed() => if r.is_err() { gone = true },
                }
                match updates.borrow().clone() {
                    Some(p) => pod = p,
                    None => gone = true,
                }
            }
        }
    }
    notify.notify_one();

    // Wait for the deletion (or the pod vanishing from the API).
    while !gone && !terminating(&pod) {
        if updates.changed().await.is_err() {
            gone = true;
            break;
        }
        match updates.borrow().clone() {
            Some(p) => pod = p,
            None => gone = true,
        }
    }
    let grace = pod.metadata.deletion_grace_period_seconds.map_or_else(
        || container::grace(&pod),
        |s| Duration::from_secs(u64::try_from(s).unwrap_or(0)),
    );
    tracing::info!(pod = %name, ?grace, "stopping");
    let _ = stop_tx.send(Some(grace));
    for s in supervisors {
        let _ = s.await;
    }
    notify.notify_one();
    // Let the reporter post the final container states, then stop it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    reporter.abort();
    let _ = std::fs::remove_dir_all(dir.join("volumes"));
    let _ = std::fs::remove_file(dir.join(STATE_FILE));
    if !gone {
        finalise(&shared, &pod, &uid, &name).await;
    }
    shared.release_ip(&uid);
    tracing::info!(pod = %name, "done");
}

fn container_name(pod: &Pod, i: usize) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.get(i))
        .map(|c| c.name.clone())
        .unwrap_or_default()
}

/// Delete the pod for good: grace period 0, only if it is still this pod (UID precondition).
async fn finalise(shared: &Shared, pod: &Pod, uid: &str, name: &str) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &ns);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api
        .delete(pod.metadata.name.as_deref().unwrap_or_default(), &dp)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => tracing::warn!(pod = %name, "finalising the deletion: {e}"),
    }
}

/// Post the pod status and write the state file whenever something changed.
async fn report(
    shared: Arc<Shared>,
    updates: Updates,
    rt: Arc<Mutex<PodRuntime>>,
    notify: Arc<Notify>,
    dir: PathBuf,
) {
    let mut last_posted = None;
    loop {
        notify.notified().await;
        // Coalesce bursts of changes into one patch.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let snapshot = rt.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Ok(body) = serde_json::to_vec_pretty(&snapshot) {
            let tmp = dir.join(format!("{STATE_FILE}.tmp"));
            if std::fs::create_dir_all(&dir).is_ok() && std::fs::write(&tmp, body).is_ok() {
                let _ = std::fs::rename(&tmp, dir.join(STATE_FILE));
            }
        }
        let Some(pod) = updates.borrow().clone() else {
            continue;
        };
        let patch = status_patch(&pod, &snapshot, &shared.host_ip, now());
        if last_posted.as_ref() == Some(&patch) {
            continue;
        }
        let api: Api<Pod> = Api::namespaced(
            shared.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let name = pod.metadata.name.clone().unwrap_or_default();
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => last_posted = Some(patch),
            Err(e) => {
                tracing::warn!(pod = %name, "posting status: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                notify.notify_one();
            }
        }
    }
}
