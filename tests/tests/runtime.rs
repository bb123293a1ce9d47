//! The job runtime as a process against the real stack (see `tributary_tests::pipeline`):
//! every output compared with the generator's oracle; then the runtime killed with SIGKILL
//! while records are still arriving and restarted on the same state.
//!
//! Needs `cargo xtask stack up`; run through `cargo xtask test` (TRIBUTARY_RUNTIME_BIN).

use anyhow::{Context, Result, ensure};
use tributary_runtime::r#gen::GenConfig;
use tributary_tests::eventually;
use tributary_tests::pipeline::{Fixture, TIMEOUT, free_port, http, small, stop};

#[tokio::test]
async fn the_runtime_produces_exactly_the_oracle() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fx = Fixture::new("rt", &small()).await?;
    fx.put_all().await?;
    let port = free_port()?;
    let child = fx.start(port)?;
    let result = async {
        fx.assert_complete().await?;
        let (code, body) = http(&format!("http://127.0.0.1:{port}/readyz")).await?;
        ensure!(code == 200, "readyz {code} {body}");
        let (_, metrics) = http(&format!("http://127.0.0.1:{port}/metrics")).await?;
        ensure!(
            metrics.contains("tributary_documents_out_total"),
            "metrics: {metrics}"
        );
        Ok(())
    }
    .await;
    stop(child)?;
    fx.cleanup().await;
    result.with_context(|| fx.log())
}

#[tokio::test]
async fn kill_9_mid_stream_and_restart_gives_the_same_documents() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fx = Fixture::new(
        "rtk",
        &GenConfig {
            sales: 1500,
            ..small()
        },
    )
    .await?;
    let port = free_port()?;
    let mut child = fx.start(port)?;
    let writer = {
        let fx_records = fx.put_all();
        let killer = async {
            eventually("first documents", TIMEOUT, || async {
                Ok((fx.count().await? > 50).then_some(()))
            })
            .await?;
            child.kill()?; // SIGKILL
            child.wait()?;
            anyhow::Ok(())
        };
        tokio::try_join!(fx_records, killer).map(|_| ())
    };
    writer.with_context(|| fx.log())?;
    ensure!(
        fx.count().await? < fx.data.expected.len() as u64,
        "the kill came after the end: make the dataset larger"
    );
    let child = fx.start(port)?;
    let result = fx.assert_complete().await;
    stop(child)?;
    fx.cleanup().await;
    result.with_context(|| fx.log())
}
