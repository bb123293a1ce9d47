//! The Node this agent stands for: registered with labels, capacity and a Ready condition, kept
//! alive by renewing its Lease in `kube-node-lease` every 10 seconds and re-posting its status
//! every minute, as a kubelet does, so the node lifecycle controller neither taints nor evicts.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use super::MANAGER;

const LEASE_SECONDS: u64 = 40;
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// Status posts per lease renewals (one a minute).
const STATUS_EVERY_RENEWALS: u32 = 6;

/// The node's labels; pods whose nodeSelector is a subset of them are bound here.
pub fn labels(node: &str) -> std::collections::BTreeMap<String, String> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    [
        ("kubernetes.io/hostname", node),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", arch),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", arch),
        ("tributary.dev/node-agent", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `MemTotal` of `/proc/meminfo`, in KiB.
pub fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The status the agent applies (server-side, forced: the lifecycle controller may have set
/// Ready to Unknown while the agent was down).
pub fn status(
    node: &str,
    host_ip: &str,
    cpus: usize,
    mem_kib: u64,
    since: &str,
    now: &str,
) -> Value {
    let resources =
        json!({"cpu": cpus.to_string(), "memory": format!("{mem_kib}Ki"), "pods": "110"});
    let cond = |type_: &str, ok: bool, reason: &str, message: &str| {
        json!({"type": type_, "status": if ok { "True" } else { "False" }, "reason": reason,
               "message": message, "lastHeartbeatTime": now, "lastTransitionTime": since})
    };
    json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": node},
        "status": {
            "capacity": resources, "allocatable": resources,
            "conditions": [
                cond("MemoryPressure", false, "KubeletHasSufficientMemory", "node agent: not measured"),
                cond("DiskPressure", false, "KubeletHasNoDiskPressure", "node agent: not measured"),
                cond("PIDPressure", false, "KubeletHasSufficientPID", "node agent: not measured"),
                cond("Ready", true, "KubeletReady", "tributary node agent (test tooling) is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": host_ip}, {"type": "Hostname", "address": node}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "architecture": labels(node).get("kubernetes.io/arch").cloned().unwrap_or_default(),
                "bootID": "", "machineID": "", "systemUUID": "",
                "containerRuntimeVersion": "tributary-node-agent://0.1.0",
                "kernelVersion": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
                "kubeProxyVersion": "", "kubeletVersion": super::KUBELET_VERSION,
                "operatingSystem": "linux", "osImage": "local processes (tributary node agent)",
            },
        }
    })
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

async fn post_status(
    client: &kube::Client,
    node: &str,
    host_ip: &str,
    since: &str,
) -> kube::Result<()> {
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| mem_total_kib(&m))
        .unwrap_or(0);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let body = status(node, host_ip, cpus, mem, since, &now_rfc3339());
    let api: Api<Node> = Api::all(client.clone());
    api.patch_status(
        node,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// Create or update the Node and post its first status; returns the Node's UID.
pub async fn register(
    client: &kube::Client,
    node: &str,
    host_ip: &str,
    since: &str,
) -> kube::Result<String> {
    let api: Api<Node> = Api::all(client.clone());
    let body = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "labels": labels(node)}});
    let created = api
        .patch(
            node,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    post_status(client, node, host_ip, since).await?;
    renew_lease(
        client,
        node,
        created.metadata.uid.as_deref().unwrap_or_default(),
    )
    .await?;
    Ok(created.metadata.uid.unwrap_or_default())
}

async fn renew_lease(client: &kube::Client, node: &str, node_uid: &str) -> kube::Result<()> {
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let renew =
        serde_json::to_value(MicroTime(k8s_openapi::jiff::Timestamp::now())).unwrap_or_default();
    let body = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": node, "ownerReferences": [
            {"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid}
        ]},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": renew},
    });
    api.patch(
        node,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// Renew the lease and re-post the status forever (errors are logged and retried).
pub async fn heartbeat(
    client: kube::Client,
    node: String,
    node_uid: String,
    host_ip: String,
    since: String,
) {
    let mut tick = tokio::time::interval(RENEW_EVERY);
    let mut n = 0u32;
    loop {
        tick.tick().await;
        if let Err(e) = renew_lease(&client, &node, &node_uid).await {
            tracing::warn!("renewing the node lease: {e}");
        }
        n += 1;
        if n.is_multiple_of(STATUS_EVERY_RENEWALS)
            && let Err(e) = post_status(&client, &node, &host_ip, &since).await
        {
            tracing::warn!("posting the node status: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_ready_with_capacity() {
        let s = status(
            "n1",
            "127.0.0.1",
            2,
            1024,
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:01:00Z",
        );
        assert_eq!(s["status"]["capacity"]["cpu"], "2");
        assert_eq!(s["status"]["allocatable"]["memory"], "1024Ki");
        let ready = &s["status"]["conditions"][3];
        assert_eq!(
            (ready["type"].as_str(), ready["status"].as_str()),
            (Some("Ready"), Some("True"))
        );
        assert_eq!(ready["lastTransitionTime"], "2024-01-01T00:00:00Z");
        assert_eq!(s["status"]["addresses"][0]["address"], "127.0.0.1");
        assert_eq!(
            labels("n1")
                .get("kubernetes.io/hostname")
                .map(String::as_str),
            Some("n1")
        );
    }

    #[test]
    fn meminfo() {
        assert_eq!(
            mem_total_kib("MemTotal:       24531212 kB\nMemFree: 1 kB\n"),
            Some(24_531_212)
        );
        assert_eq!(mem_total_kib("nothing"), None);
    }
}
