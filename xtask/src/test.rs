//! `cargo xtask test`: the README's second command and exactly what CI runs. Format check, clippy
//! with warnings as errors, then the whole test suite against the local stack, which is brought
//! up first and taken down at the end even when a step fails.

use std::process::Command;
use std::time::Instant;

use anyhow::{Result, bail};

use crate::stack::{self, Ctx, progress, run_checked};

fn step(name: &str, cmd: &mut Command) -> Result<()> {
    let start = Instant::now();
    eprintln!("\n== {name}");
    let r = run_checked(cmd);
    eprintln!(
        "== {name}: {} in {:.0}s",
        if r.is_ok() { "ok" } else { "FAILED" },
        start.elapsed().as_secs_f64()
    );
    r
}

fn cargo(ctx: &Ctx) -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(&ctx.repo);
    c
}

pub fn run(ctx: &Ctx, keep_stack: bool) -> Result<()> {
    step("format", cargo(ctx).args(["fmt", "--all", "--", "--check"]))?;
    step(
        "clippy",
        cargo(ctx).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    // Binaries the integration tests start as processes.
    step(
        "build binaries",
        cargo(ctx).args(["build", "--bin", "tributary-operator"]),
    )?;

    stack::up(ctx)?;
    let result = run_against_stack(ctx);
    if keep_stack {
        progress("leaving the stack running (--keep-stack)");
    } else if let Err(e) = stack::down(ctx) {
        eprintln!("stopping the stack failed: {e:#}");
    }
    result
}

fn run_against_stack(ctx: &Ctx) -> Result<()> {
    let env = stack::read_env(ctx)?;
    let helm = env
        .iter()
        .find(|(k, _)| k == "HELM")
        .map(|(_, v)| v.clone());
    match helm {
        Some(helm) => step(
            "helm lint",
            Command::new(helm)
                .args(["lint", "--strict"])
                .arg(ctx.repo.join("charts/tributary")),
        )?,
        None => bail!("stack.env has no HELM: the tools component did not install helm"),
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| ctx.repo.join("target"));
    step(
        "tests",
        cargo(ctx)
            .args(["test", "--workspace", "--no-fail-fast"])
            .envs(env)
            .env(
                "TRIBUTARY_OPERATOR_BIN",
                target.join("debug/tributary-operator"),
            )
            // Integration tests share one API server and one OpenSearch node; two at a time
            // keeps the 2-core machine responsive without serialising everything.
            .env("RUST_TEST_THREADS", "2"),
    )
}
