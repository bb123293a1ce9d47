//! Savepoints of the job runtime against the real stack (kinesis-mock, versitygw, OpenSearch),
//! without the operator: what the operator's upgrade and rescale flows rely on.
//!
//! A replica takes a savepoint mid-stream and stops reading; new replicas at another count
//! restore it from S3 while records keep arriving; every document and every Parquet row of
//! the oracle comes out exactly once. Also: the control API refuses a caller without the
//! token, and a damaged savepoint stops a restoring replica at start with the reason.
//!
//! Needs `cargo xtask stack up`; run through `cargo xtask test` (TRIBUTARY_RUNTIME_BIN).

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tributary_crds::control::{SavepointReport, SavepointState};
use tributary_crds::job_config::{SavepointLocation, StateConfig};
use tributary_crds::spec::SavepointsSpec;
use tributary_runtime::r#gen::GenConfig;
use tributary_tests::eventually;
use tributary_tests::pipeline::{Fixture, TIMEOUT, free_port, http, http_post, small, stop};

const TOKEN: &str = "test-control-token";

fn data() -> GenConfig {
    GenConfig {
        sales: 1500,
        // Every replica reads the dimension streams whole, so each would dead-letter a bad
        // dimension record again: not what this test is about.
        malformed_share: 0.0,
        ..small()
    }
}

/// Ask for a savepoint and wait until it completes; its report.
async fn savepoint(port: u16, id: &str) -> Result<SavepointReport> {
    let url = format!("http://127.0.0.1:{port}/savepoints");
    let body = format!(r#"{{"id":"{id}","stopAfter":true}}"#);
    let (code, text) = http_post(&url, &body, Some(TOKEN)).await?;
    ensure!(code == 202, "POST /savepoints: {code} {text}");
    eventually(&format!("savepoint {id}"), TIMEOUT, || async {
        let (code, text) = http(&format!("{url}/{id}")).await?;
        ensure!(code == 200, "GET savepoint: {code} {text}");
        let r: SavepointReport = serde_json::from_str(&text)?;
        ensure!(r.state != SavepointState::Failed, "failed: {:?}", r.error);
        Ok((r.state == SavepointState::Completed).then_some(r))
    })
    .await
}

#[tokio::test]
async fn a_savepoint_restored_on_two_replicas_mid_stream_gives_the_oracle_once() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut fx = Fixture::new("sp", &data()).await?;
    fx.config.savepoints = Some(SavepointsSpec {
        uri: format!("s3://{}/savepoints", fx.name),
    });
    fx.config.state = StateConfig {
        id: "first".into(),
        restore: None,
    };
    let one = fx.write_config("one.yaml", &fx.config)?;
    let port = free_port()?;
    let old = fx.start_replica(port, &one, "volume-0", 0, Some(TOKEN))?;
    let mut old = Some(old);
    let result = async {
        let writer = fx.put_all();
        let rescale = async {
            eventually("first documents", TIMEOUT, || async {
                Ok((fx.count().await? > 100).then_some(()))
            })
            .await?;
            // Without the token, nothing happens.
            let url = format!("http://127.0.0.1:{port}/savepoints");
            let (code, _) = http_post(&url, r#"{"id":"x"}"#, None).await?;
            ensure!(code == 401, "no token: {code}");
            let (code, _) = http_post(&url, r#"{"id":"x"}"#, Some("wrong")).await?;
            ensure!(code == 401, "wrong token: {code}");

            let report = savepoint(port, "sp-1").await?;
            ensure!(report.stopped, "stopAfter: the replica stops reading");
            let figures = report.figures.context("figures")?;
            ensure!(
                figures.customer_versions > 0 && figures.files > 0,
                "{figures:?}"
            );
            let manifest = report.manifest.context("manifest")?;
            ensure!(
                manifest.ends_with("sp-1/part-0/manifest.json"),
                "{manifest}"
            );
            let (code, check) = http(&format!("{url}/sp-1/check")).await?;
            let check: Value = serde_json::from_str(&check).with_context(|| format!("{code}"))?;
            ensure!(check["complete"] == true && check["parts"] == 1, "{check}");
            let (_, state) = http(&format!("http://127.0.0.1:{port}/state")).await?;
            let state: Value = serde_json::from_str(&state)?;
            ensure!(
                state["stateId"] == "first" && state["stopped"] == true,
                "{state}"
            );
            stop(old.take().context("old replica")?)?;
            let at_savepoint = fx.count().await?;
            ensure!(
                at_savepoint < fx.data.expected.len() as u64,
                "the savepoint came after the end ({at_savepoint} documents): make the dataset larger"
            );

            // Two replicas restore it: ordinal 0 on the old volume (replaced), 1 on a new one.
            let mut two = fx.config.clone();
            two.replicas = 2;
            two.state = StateConfig {
                id: "second".into(),
                restore: Some(SavepointLocation {
                    id: "sp-1".into(),
                    uri: format!("s3://{}/savepoints/sp-1", fx.name),
                }),
            };
            let path = fx.write_config("two.yaml", &two)?;
            let ports = [free_port()?, free_port()?];
            let new = vec![
                fx.start_replica(ports[0], &path, "volume-0", 0, Some(TOKEN))?,
                fx.start_replica(ports[1], &path, "volume-1", 1, Some(TOKEN))?,
            ];
            anyhow::Ok((new, ports))
        };
        let ((), (new, ports)) = tokio::try_join!(writer, rescale)?;
        let checked = async {
            for port in ports {
                let state = eventually("the restored replica committing", TIMEOUT, || async {
                    let (code, text) = http(&format!("http://127.0.0.1:{port}/state")).await?;
                    if code != 200 {
                        return Ok(None);
                    }
                    let v: Value = serde_json::from_str(&text)?;
                    Ok((v["committed"] == true).then_some(v))
                })
                .await?;
                ensure!(
                    state["stateId"] == "second" && state["restoredFrom"] == "sp-1",
                    "{state}"
                );
            }
            fx.assert_complete().await
        }
        .await;
        for child in new {
            stop(child)?;
        }
        checked
    }
    .await;
    if let Some(child) = old {
        let _ = stop(child);
    }
    fx.cleanup().await;
    result.with_context(|| fx.log())
}

#[tokio::test]
async fn a_damaged_savepoint_stops_the_restoring_replica_with_the_reason() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut fx = Fixture::new("spd", &small()).await?;
    fx.config.savepoints = Some(SavepointsSpec {
        uri: format!("s3://{}/savepoints", fx.name),
    });
    fx.config.state.id = "first".into();
    let one = fx.write_config("one.yaml", &fx.config)?;
    fx.put_all().await?;
    let port = free_port()?;
    let child = fx.start_replica(port, &one, "volume-0", 0, Some(TOKEN))?;
    let taken = async {
        eventually("documents", TIMEOUT, || async {
            Ok((fx.count().await? > 50).then_some(()))
        })
        .await?;
        savepoint(port, "sp-bad").await
    }
    .await;
    stop(child)?;
    let report = taken.with_context(|| fx.log())?;
    ensure!(report.state == SavepointState::Completed);

    // Edit one position in the manifest: its checksum no longer matches.
    let key = "savepoints/sp-bad/part-0/manifest.json";
    let objects = fx.objects("savepoints/sp-bad/part-0/").await?;
    let (_, body) = objects
        .iter()
        .find(|(k, _)| k == key)
        .context("the manifest")?;
    let text = String::from_utf8(body.to_vec())?;
    let damaged = text.replacen("\"stateId\": \"first\"", "\"stateId\": \"frist\"", 1);
    ensure!(
        damaged != text,
        "the manifest has no stateId to damage: {text}"
    );
    fx.put_object(key, damaged.into_bytes()).await?;

    // A replica that can still answer (the operator asks one of the old ones) finds it.
    let check_port = free_port()?;
    let checker = fx.start_replica(check_port, &one, "volume-0", 0, Some(TOKEN))?;
    let check = eventually("the savepoint check", TIMEOUT, || async {
        let (code, text) = http(&format!(
            "http://127.0.0.1:{check_port}/savepoints/sp-bad/check"
        ))
        .await?;
        Ok((code == 200).then_some(text))
    })
    .await;
    stop(checker)?;
    let check: Value = serde_json::from_str(&check.with_context(|| fx.log())?)?;
    ensure!(
        check["complete"] == false
            && check["error"]
                .as_str()
                .is_some_and(|e| e.contains("checksum does not match")),
        "{check}"
    );

    let mut restore = fx.config.clone();
    restore.state = StateConfig {
        id: "second".into(),
        restore: Some(SavepointLocation {
            id: "sp-bad".into(),
            uri: format!("s3://{}/savepoints/sp-bad", fx.name),
        }),
    };
    let path = fx.write_config("restore.yaml", &restore)?;
    // Restoring on the old replica's volume: refused before anything of the old state goes.
    let mut child = fx.start_replica(free_port()?, &path, "volume-0", 0, Some(TOKEN))?;
    let deadline = std::time::Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let status = status.context("the restoring replica did not stop")?;
    ensure!(
        !status.success(),
        "a damaged savepoint must stop the replica"
    );
    let log = fx.log();
    ensure!(
        log.contains("checksum does not match") && log.contains("sp-bad/part-0/manifest.json"),
        "the reason names the manifest: {log}"
    );

    // The old configuration still runs on the old state (a rollback needs nothing else).
    let port = free_port()?;
    let back = fx.start_replica(port, &one, "volume-0", 0, Some(TOKEN))?;
    let state = eventually("the old state back", TIMEOUT, || async {
        let (code, text) = http(&format!("http://127.0.0.1:{port}/state")).await?;
        Ok((code == 200).then_some(text))
    })
    .await;
    stop(back)?;
    fx.cleanup().await;
    let state: Value = serde_json::from_str(&state?)?;
    ensure!(state["stateId"] == "first", "{state}");
    Ok(())
}
