//! Shared helpers for the workspace-level tests: where the local stack's servers are.
//!
//! `cargo xtask stack up` writes `$TRIBUTARY_HOME/stack/stack.env`; every variable in it can also be
//! overridden from the environment.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};

pub fn home() -> PathBuf {
    match std::env::var_os("TRIBUTARY_HOME") {
        Some(h) => PathBuf::from(h),
        None => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/tributary")
        }
    }
}

/// The stack's endpoints: `stack.env`, overridden by the process environment.
pub fn stack_env() -> Result<HashMap<String, String>> {
    let path = home().join("stack/stack.env");
    let body = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{} missing: run `cargo xtask stack up` first",
            path.display()
        )
    })?;
    let mut vars: HashMap<String, String> = body
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in vars.iter_mut() {
        if let Ok(over) = std::env::var(k) {
            *v = over;
        }
    }
    Ok(vars)
}

/// One variable of the stack's environment, with a clear error when it is missing.
pub fn stack_var(name: &str) -> Result<String> {
    stack_env()?.remove(name).with_context(|| {
        format!("{name} is not in stack.env: is that component part of the stack?")
    })
}

pub mod cluster;
pub mod faults;
pub mod flow;
pub mod opensearch_side;
pub mod pipeline;

/// A name unique to this test run (lowercase, DNS-safe), e.g. `op-1a2b3c`.
pub fn unique(prefix: &str) -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}-{:x}",
        (nanos ^ u128::from(std::process::id())) & 0xff_ffff
    )
}

/// Poll `f` until it yields `Some`, or fail after `timeout` with `what` in the message.
pub async fn eventually<T, F, Fut>(what: &str, timeout: std::time::Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let start = std::time::Instant::now();
    let mut last_err = None;
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if start.elapsed() > timeout {
            anyhow::bail!(
                "timed out after {:?} waiting for {what}{}",
                timeout,
                last_err
                    .map(|e| format!(" (last error: {e:#})"))
                    .unwrap_or_default()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}
