//! tributary-operator: flags -> telemetry -> admin server -> leader election -> controller.

mod admin;
mod config;
mod controller;
mod kinesis;
mod leader;
mod metrics;
mod opensearch;
mod telemetry;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use clap::Parser;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use tokio::sync::watch;

use config::OperatorConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // kube's TLS uses ring; when the workspace build also enables aws-lc-rs for rustls, rustls
    // cannot choose by itself. Err means a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Arc::new(OperatorConfig::parse());
    telemetry::init(config.log_format);
    tracing::info!(?config, "starting tributary-operator");

    let control_key = config
        .load_control_key()
        .context("loading the control key")?;
    if control_key.is_none() {
        tracing::warn!(
            "no control key (--control-key-file / TRIBUTARY_CONTROL_KEY_FILE, or \
             TRIBUTARY_CONTROL_KEY): savepoint upgrades and rescales of running jobs are refused"
        );
    }

    let metrics = Arc::new(metrics::Metrics::new().context("registering metrics")?);
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let admin = tokio::spawn(admin::serve(
        config.admin_addr,
        admin::AdminState {
            metrics: metrics.clone(),
            ready: ready.clone(),
        },
        stopped(stop_rx.clone()),
    ));

    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested");
        let _ = stop_tx.send(true);
    });

    let client = Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let identity = config.identity.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "tributary-operator".into()),
            std::process::id()
        )
    });

    let elector = config.leader_elect.then(|| {
        leader::Elector::new(
            kube::Api::namespaced(client.clone(), &config.lease_namespace),
            config.lease_name.clone(),
            identity.clone(),
        )
    });
    if let Some(e) = &elector {
        // A standby is a healthy replica: ready, so rollouts of the operator's Deployment proceed.
        ready.store(true, Ordering::Relaxed);
        tracing::info!(lease = %config.lease_name, %identity, "waiting for the leader Lease");
        tokio::select! {
            () = e.acquire() => {}
            () = stopped(stop_rx.clone()) => return Ok(()),
        }
        ready.store(false, Ordering::Relaxed);
        metrics.leader.set(1);
        tracing::info!(%identity, "leading");
    }

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "tributary-operator".into(),
            instance: Some(identity.clone()),
        },
    );
    let ctx = Arc::new(controller::Context::new(
        client.clone(),
        config.clone(),
        metrics.clone(),
        recorder,
        control_key,
    ));
    let ready_flag = ready.clone();
    let controller = controller::run(ctx, stopped(stop_rx.clone()), move || {
        tracing::info!("caches synced");
        ready_flag.store(true, Ordering::Relaxed);
    });

    let outcome = match &elector {
        Some(e) => tokio::select! {
            () = controller => Ok(()),
            lost = e.keep_renewing() => Err(lost),
        },
        None => {
            controller.await;
            Ok(())
        }
    };
    if let Some(e) = &elector {
        metrics.leader.set(0);
        if outcome.is_ok() {
            e.release().await;
        }
    }
    admin.abort();
    outcome.context("leader election")?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
