//! End to end, as a user runs it: `helm install` the operator (its pod runs on the stack's node
//! agent), apply a `StreamingEnrichment`, put generated data into Kinesis; the operator's
//! StatefulSet pod (the runtime, on the agent) must produce every document of the oracle in
//! OpenSearch (through the index and aliases the operator bootstrapped) and every row in the
//! S3 Parquet files, exactly once. Mid-stream the runtime process is killed with SIGKILL; the
//! agent restarts it like a kubelet would, and the result must not change.
//!
//! Needs `cargo xtask stack up` (with the node agent) and the binaries `cargo xtask test` builds.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tributary_runtime::r#gen::GenConfig;
use tributary_tests::cluster::kubectl;
use tributary_tests::eventually;
use tributary_tests::pipeline::{Fixture, TIMEOUT, small};

/// The pid of a pod's container process, from the node agent's record of the pod.
fn container_pid(namespace: &str, pod: &str) -> Result<Option<u32>> {
    let home = std::env::var("TRIBUTARY_HOME").map_or_else(
        |_| {
            std::env::var("HOME")
                .map(|h| std::path::PathBuf::from(h).join(".cache/tributary"))
                .unwrap_or_default()
        },
        std::path::PathBuf::from,
    );
    let prefix = format!("{namespace}_{pod}_");
    for entry in std::fs::read_dir(home.join("agent/pods"))? {
        let entry = entry?;
        if !entry.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path().join("state.json")) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&text)?;
        if let Some(pid) = v["containers"][0]["pid"].as_u64() {
            return Ok(Some(u32::try_from(pid)?));
        }
    }
    Ok(None)
}

#[tokio::test]
async fn helm_install_apply_and_a_killed_runtime_give_exactly_the_oracle() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fx = Fixture::new(
        "e2e",
        &GenConfig {
            sales: 1500,
            ..small()
        },
    )
    .await?;
    let ns = fx.name.clone();
    let result = async {
        fx.install_and_apply("")?;

        // Data arrives while the job runs; the runtime is killed once documents flow.
        let writer = fx.put_all();
        let killer = async {
            eventually("first documents", TIMEOUT, || async {
                Ok((fx.count().await? > 100).then_some(()))
            })
            .await?;
            let pid = container_pid(&ns, "sales-0")?.context("no pid for sales-0")?;
            let status = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()?;
            ensure!(status.success(), "kill -9 {pid}");
            anyhow::Ok(pid)
        };
        let (_, killed) = tokio::try_join!(writer, killer)?;
        ensure!(
            fx.count().await? < fx.data.expected.len() as u64,
            "the kill came after the last document: make the dataset larger"
        );
        fx.assert_complete().await?;
        let restarts = eventually("the restart recorded", Duration::from_secs(60), || async {
            let out = kubectl(&[
                "-n",
                &ns,
                "get",
                "pod",
                "sales-0",
                "-o",
                "jsonpath={.status.containerStatuses[0].restartCount}",
            ])?;
            let n: u32 = out.trim().parse().unwrap_or(0);
            Ok((n >= 1).then_some(n))
        })
        .await?;
        let now = container_pid(&ns, "sales-0")?;
        ensure!(now != Some(killed), "the killed process is still the pod's");
        println!("runtime restarted {restarts} time(s) by the agent");
        let se = kubectl(&[
            "-n",
            &ns,
            "get",
            "se",
            "sales",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ])?;
        ensure!(se.trim() == "True", "the resource is not Ready: {se}");
        Ok(())
    }
    .await;
    tributary_tests::flow::teardown(&fx).await;
    result
}
