//! What the agent knows about a pod it runs ([`PodRuntime`], also its state file, so a restarted
//! agent can adopt the processes), and the Pod status it reports from that: phase, conditions,
//! container statuses and pod IP.

use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: i64,
    },
    Terminated {
        exit_code: i32,
        reason: String,
        message: Option<String>,
        started_at: i64,
        finished_at: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRuntime {
    pub name: String,
    pub image: String,
    /// The binary the image maps to (reported as the image ID).
    pub binary: Option<String>,
    pub state: State,
    pub last: Option<State>,
    pub restart_count: i32,
    pub started: bool,
    pub ready: bool,
    /// The running process and its start time in clock ticks (pid reuse check).
    pub pid: Option<u32>,
    pub start_ticks: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodRuntime {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub ip: String,
    pub started_at: i64,
    /// Volumes are in place and containers may start.
    pub initialized: bool,
    pub containers: Vec<ContainerRuntime>,
}

impl PodRuntime {
    pub fn new(pod: &Pod, ip: String, now: i64) -> Self {
        let containers = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .map(|c| ContainerRuntime {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                binary: None,
                state: State::Waiting {
                    reason: "ContainerCreating".into(),
                    message: None,
                },
                last: None,
                restart_count: 0,
                started: false,
                ready: false,
                pid: None,
                start_ticks: None,
            })
            .collect();
        Self {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            ip,
            started_at: now,
            initialized: false,
            containers,
        }
    }
}

/// The pod phase, as the kubelet derives it from container states and the restart policy.
pub fn phase(rt: &PodRuntime, restart_policy: &str) -> &'static str {
    let cs = &rt.containers;
    let never_ran = |c: &ContainerRuntime| {
        matches!(c.state, State::Waiting { .. }) && c.last.is_none() && c.restart_count == 0
    };
    if cs.is_empty() || !rt.initialized || cs.iter().any(never_ran) {
        return "Pending";
    }
    let exit = |c: &ContainerRuntime| match c.state {
        State::Terminated { exit_code, .. } => Some(exit_code),
        _ => None,
    };
    let codes: Option<Vec<i32>> = cs.iter().map(exit).collect();
    let Some(codes) = codes else {
        return "Running";
    };
    let all_ok = codes.iter().all(|c| *c == 0);
    match restart_policy {
        "Never" if all_ok => "Succeeded",
        "Never" => "Failed",
        "OnFailure" if all_ok => "Succeeded",
        _ => "Running",
    }
}

fn rfc3339(secs: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

fn state_json(s: &State) -> Value {
    match s {
        State::Waiting { reason, message } => {
            json!({"waiting": {"reason": reason, "message": message}})
        }
        State::Running { started_at } => json!({"running": {"startedAt": rfc3339(*started_at)}}),
        State::Terminated {
            exit_code,
            reason,
            message,
            started_at,
            finished_at,
        } => json!({"terminated": {
            "exitCode": exit_code, "reason": reason, "message": message,
            "startedAt": rfc3339(*started_at), "finishedAt": rfc3339(*finished_at),
        }}),
    }
}

/// The status subresource patch (strategic merge: conditions merge by type, so conditions other
/// controllers own survive; container statuses are replaced).
pub fn status_patch(pod: &Pod, rt: &PodRuntime, host_ip: &str, now: i64) -> Value {
    let spec = pod.spec.as_ref();
    let policy = spec
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    let phase = phase(rt, policy);
    let containers_ready = !rt.containers.is_empty() && rt.containers.iter().all(|c| c.ready);
    let existing = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let gates_ok = spec
        .and_then(|s| s.readiness_gates.as_ref())
        .into_iter()
        .flatten()
        .all(|g| {
            existing
                .iter()
                .any(|c| c.type_ == g.condition_type && c.status == "True")
        });
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let cond = |type_: &str, ok: bool, reason: Option<&str>| {
        let status = if ok { "True" } else { "False" };
        let since = existing
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .and_then(|c| c.last_transition_time.as_ref())
            .map_or_else(|| rfc3339(now), |t| t.0.to_string());
        let mut c = json!({"type": type_, "status": status, "lastTransitionTime": since});
        if let Some(r) = reason.filter(|_| !ok) {
            c["reason"] = json!(r);
        }
        c
    };
    let ready_reason = if terminal {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let conditions = vec![
        cond("PodReadyToStartContainers", rt.initialized, None),
        cond("Initialized", true, None),
        cond("ContainersReady", containers_ready, Some(ready_reason)),
        cond("Ready", containers_ready && gates_ok, Some(ready_reason)),
        cond("PodScheduled", true, None),
    ];
    let statuses: Vec<Value> = rt
        .containers
        .iter()
        .map(|c| {
            let mut s = json!({
                "name": c.name,
                "image": c.image,
                "imageID": c.binary.as_ref().map(|b| format!("local://{b}")).unwrap_or_default(),
                "restartCount": c.restart_count,
                "ready": c.ready,
                "started": c.started,
                "state": state_json(&c.state),
                "lastState": c.last.as_ref().map_or_else(|| json!({}), state_json),
            });
            if let Some(pid) = c.pid {
                s["containerID"] = json!(format!("agent://{pid}"));
            }
            s
        })
        .collect();
    json!({"status": {
        "phase": phase,
        "conditions": conditions,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": rt.ip,
        "podIPs": [{"ip": rt.ip}],
        "startTime": rfc3339(rt.started_at),
        "containerStatuses": statuses,
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(states: &[State]) -> PodRuntime {
        PodRuntime {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
            ip: "127.0.1.1".into(),
            started_at: 1_700_000_000,
            initialized: true,
            containers: states
                .iter()
                .enumerate()
                .map(|(i, s)| ContainerRuntime {
                    name: format!("c{i}"),
                    image: "img".into(),
                    binary: Some("/bin/img".into()),
                    state: s.clone(),
                    last: None,
                    restart_count: 0,
                    started: true,
                    ready: matches!(s, State::Running { .. }),
                    pid: None,
                    start_ticks: None,
                })
                .collect(),
        }
    }

    fn exited(code: i32) -> State {
        State::Terminated {
            exit_code: code,
            reason: "Completed".into(),
            message: None,
            started_at: 0,
            finished_at: 1,
        }
    }

    #[test]
    fn phases() {
        let waiting = State::Waiting {
            reason: "ContainerCreating".into(),
            message: None,
        };
        let running = State::Running { started_at: 1 };
        assert_eq!(
            phase(&runtime(&[waiting, running.clone()]), "Always"),
            "Pending"
        );
        assert_eq!(
            phase(&runtime(&[running.clone(), exited(0)]), "Never"),
            "Running"
        );
        assert_eq!(
            phase(&runtime(&[exited(0), exited(0)]), "Never"),
            "Succeeded"
        );
        assert_eq!(phase(&runtime(&[exited(0), exited(2)]), "Never"), "Failed");
        assert_eq!(phase(&runtime(&[exited(2)]), "OnFailure"), "Running");
        assert_eq!(phase(&runtime(&[exited(0)]), "Always"), "Running");
        let mut restarting = runtime(&[State::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: None,
        }]);
        restarting.containers[0].restart_count = 1;
        assert_eq!(phase(&restarting, "Always"), "Running");
    }

    #[test]
    fn patch_reports_ip_conditions_and_containers() -> Result<(), serde_json::Error> {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c0"}], "readinessGates": [{"conditionType": "x/gate"}]},
            "status": {"conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"}
            ]}
        }))?;
        let rt = runtime(&[State::Running { started_at: 1 }]);
        let p = status_patch(&pod, &rt, "127.0.0.1", 1_700_000_100);
        let s = &p["status"];
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["podIP"], "127.0.1.1");
        assert_eq!(s["podIPs"][0]["ip"], "127.0.1.1");
        let cond = |t: &str| {
            s["conditions"]
                .as_array()
                .and_then(|a| a.iter().find(|c| c["type"] == t).cloned())
                .unwrap_or_default()
        };
        assert_eq!(cond("ContainersReady")["status"], "True");
        assert_eq!(cond("Ready")["status"], "False", "readiness gate not met");
        assert_eq!(
            cond("PodScheduled")["lastTransitionTime"],
            "2024-01-01T00:00:00Z"
        );
        assert_eq!(
            cond("Initialized")["lastTransitionTime"],
            "2023-11-14T22:15:00Z"
        );
        let c0 = &s["containerStatuses"][0];
        assert_eq!(c0["ready"], true);
        assert_eq!(c0["imageID"], "local:///bin/img");
        assert_eq!(c0["state"]["running"]["startedAt"], "1970-01-01T00:00:01Z");
        Ok(())
    }
}
