//! Sinks in trouble: OpenSearch answering 429 and 503 to whole `_bulk` requests and 429 to
//! single items (a fault-injecting proxy in front of the real node: the real node cannot be made
//! to refuse on demand), and S3 unreachable for a while (a TCP proxy in front of versitygw that
//! refuses and cuts connections). The documents must still equal the oracle, exactly once, and
//! the runtime's memory must stay bounded while S3 is down (the outbox holds the backlog on disk).
//! The same proxy answers `413` to bodies above a size, as a node with a lower
//! `http.max_content_length` does: requests are split until they pass, and a document that
//! cannot pass alone goes to dead-letter.
//!
//! Needs `cargo xtask stack up`; run through `cargo xtask test` (TRIBUTARY_RUNTIME_BIN).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tributary_runtime::r#gen::GenConfig;
use tributary_tests::faults::{BulkFaultProxy, TcpProxy};
use tributary_tests::pipeline::{Fixture, TIMEOUT, free_port, http, small, stop};
use tributary_tests::{eventually, stack_var};

/// The value of one sample of the Prometheus text, `0` when absent.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// Peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("VmHWM")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb * 1024)
}

#[tokio::test]
async fn failing_sinks_lose_and_duplicate_nothing_with_bounded_memory() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let s3_addr: SocketAddr = stack_var("S3_ENDPOINT")?
        .trim_start_matches("http://")
        .parse()
        .context("S3_ENDPOINT host:port")?;
    let s3 = TcpProxy::start(s3_addr).await?;
    let os = BulkFaultProxy::start(&stack_var("OPENSEARCH_URL")?).await?;
    // Well under bulkMaxBytes: the first full request is refused, its halves pass.
    os.set_max_body(256 * 1024);
    let fx = Fixture::with_endpoints(
        "rtf",
        &GenConfig {
            sales: 1200,
            ..small()
        },
        Some(s3.url()),
        Some(os.url()),
    )
    .await?;
    let port = free_port()?;
    let child = fx.start(port)?;
    let pid = child.id();
    let result = async {
        // Reference data loads through the proxy first; then S3 goes away.
        eventually("readyz", TIMEOUT, || async {
            let (code, _) = http(&format!("http://127.0.0.1:{port}/readyz")).await?;
            Ok((code == 200).then_some(()))
        })
        .await?;
        s3.set_down(true).await;
        fx.put_all().await?;
        eventually("documents while S3 is down", TIMEOUT, || async {
            Ok((fx.count().await? > 200).then_some(()))
        })
        .await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (_, metrics) = http(&format!("http://127.0.0.1:{port}/metrics")).await?;
        let s3_failures = sample(&metrics, "tributary_sink_failures_total{sink=\"s3\"}");
        ensure!(s3_failures > 0.0, "the S3 sink never failed:\n{metrics}");
        ensure!(
            sample(&metrics, "tributary_outbox_pending_entries") > 0.0,
            "nothing waits in the outbox while S3 is down"
        );
        s3.set_down(false).await;
        fx.assert_complete().await?;
        let f = &os.faults;
        ensure!(
            f.whole_request_failures.load(Ordering::SeqCst) > 0
                && f.items_failed.load(Ordering::SeqCst) > 0,
            "the proxy injected no fault: {f:?}"
        );
        ensure!(
            f.too_large.load(Ordering::SeqCst) > 0,
            "no request was large enough to be refused: {f:?}"
        );
        ensure!(
            s3.refused.load(Ordering::SeqCst) > 0,
            "S3 was never refused"
        );
        let peak = peak_rss(pid)?;
        println!("runtime peak RSS: {} MiB", peak / (1024 * 1024));
        ensure!(
            peak < 512 * 1024 * 1024,
            "peak RSS {} MiB: memory is not bounded",
            peak / (1024 * 1024)
        );
        Ok(())
    }
    .await;
    stop(child)?;
    fx.cleanup().await;
    result.with_context(|| fx.log())
}

#[tokio::test]
async fn a_document_too_large_for_the_cluster_goes_to_dead_letter() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let os = BulkFaultProxy::start(&stack_var("OPENSEARCH_URL")?).await?;
    // Below the size of any one document: none can ever be indexed through this proxy.
    os.set_max_body(200);
    let fx = Fixture::with_endpoints(
        "rtl",
        &GenConfig {
            sales: 40,
            ..small()
        },
        None,
        Some(os.url()),
    )
    .await?;
    let port = free_port()?;
    let child = fx.start(port)?;
    let result = async {
        fx.put_all().await?;
        let want: BTreeSet<String> = fx.data.expected.values().map(Value::to_string).collect();
        let got = eventually("every document dead-lettered", TIMEOUT, || async {
            let mut docs = BTreeSet::new();
            for (key, body) in fx.objects("dead-letter/opensearch-rejected/").await? {
                for line in std::str::from_utf8(&body)?.lines() {
                    let v: Value = serde_json::from_str(line)?;
                    ensure!(
                        v["reason"] == "opensearch_too_large"
                            && v["detail"].as_str().is_some_and(|d| d.contains("HTTP 413")),
                        "{key}: {line}"
                    );
                    ensure!(docs.insert(v["document"].to_string()), "twice: {line}");
                }
            }
            Ok((docs.len() >= want.len()).then_some(docs))
        })
        .await?;
        ensure!(
            got == want,
            "the dead-lettered documents differ from the oracle's"
        );
        // The other sinks are not held up: every row reached S3.
        let keys = eventually("every row in S3", TIMEOUT, || async {
            let keys = fx.parquet_keys().await?;
            Ok((keys.len() >= want.len()).then_some(keys))
        })
        .await?;
        ensure!(keys.len() == want.len(), "{} rows in S3", keys.len());
        ensure!(fx.count().await? == 0, "a refused document was indexed");
        // Counted once each, right after their objects were written.
        eventually("the dead-letter metric", TIMEOUT, || async {
            let (_, metrics) = http(&format!("http://127.0.0.1:{port}/metrics")).await?;
            let counted = sample(
                &metrics,
                "tributary_dead_letters_total{reason=\"opensearch_too_large\"}",
            );
            ensure!(
                counted <= want.len() as f64,
                "{counted} counted as too large"
            );
            Ok((counted == want.len() as f64).then_some(()))
        })
        .await
    }
    .await;
    stop(child)?;
    fx.cleanup().await;
    result.with_context(|| fx.log())
}
