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
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/tributary"),
    }
}

/// The stack's endpoints: `stack.env`, overridden by the process environment.
pub fn stack_env() -> Result<HashMap<String, String>> {
    let path = home().join("stack/stack.env");
    let body = std::fs::read_to_string(&path).with_context(|| {
        format!("{} missing: run `cargo xtask stack up` first", path.display())
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
    stack_env()?
        .remove(name)
        .with_context(|| format!("{name} is not in stack.env: is that component part of the stack?"))
}
