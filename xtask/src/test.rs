//! `cargo xtask test`: the README's second command and exactly what CI runs. Format check, clippy
//! with warnings as errors, then the whole test suite against the local stack, which is brought
//! up first and taken down at the end even when a step fails.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::heartbeat::{self, Heartbeat};
use crate::stack::{self, Ctx, progress};

/// One step: its command's output as it comes, with a heartbeat line every 30 s (what cargo is
/// compiling) while it runs.
fn step(name: &str, cmd: &mut Command) -> Result<()> {
    let start = Instant::now();
    eprintln!("\n== {name}");
    let r = heartbeat::cargo("test", name, cmd);
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
        cargo(ctx).args([
            "build",
            "--bin",
            "tributary-operator",
            "--bin",
            "tributary-runtime",
        ]),
    )?;

    let mut totals = Totals::default();
    // A failed `up` may have started some servers: they are stopped below all the same.
    let result = stack::up(ctx).and_then(|()| run_against_stack(ctx, &mut totals));
    if keep_stack {
        progress("leaving the stack running (--keep-stack)");
    } else if let Err(e) = stack::down(ctx) {
        eprintln!("stopping the stack failed: {e:#}");
    }
    // One closing line over every test binary, so the summary is not the last binary's alone.
    println!(
        "summary: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    result
}

/// Counts summed over every `test result:` line cargo test prints.
#[derive(Default, Debug, PartialEq, Eq)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(['.', ';']) {
            let mut words = part.split_whitespace();
            let (Some(n), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// Run cargo test, echoing its output as it comes and counting its results.
fn cargo_test(cmd: &mut Command, totals: &mut Totals) -> Result<()> {
    use std::io::{BufRead, BufReader, Write};
    let start = Instant::now();
    eprintln!("\n== tests");
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn()?;
    // The test binaries' output comes at each test's end: the heartbeat names the binary that
    // runs (and what compiles before them).
    let beat = Heartbeat::cargo("test", "tests", child.id());
    if let Some(out) = child.stdout.take() {
        let mut stdout = std::io::stdout().lock();
        for line in BufReader::new(out).lines() {
            let line = line?;
            totals.add_line(&line);
            let _ = writeln!(stdout, "{line}");
        }
    }
    let status = child.wait()?;
    drop(beat);
    eprintln!(
        "== tests: {} in {:.0}s",
        if status.success() { "ok" } else { "FAILED" },
        start.elapsed().as_secs_f64()
    );
    if !status.success() {
        bail!("cargo test failed with {status}");
    }
    Ok(())
}

/// Namespaces the API server creates itself; every other one belongs to a test or the demo.
const SYSTEM_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Start from an empty cluster: the stack's etcd keeps its data between runs, so a demo
/// (operator release, running pipeline) or an interrupted test would otherwise still run
/// pods next to the tests. Deleting their namespaces stops those pods (the node agent kills
/// their processes) and drops their claims.
fn reset_cluster(env: &[(String, String)]) -> Result<()> {
    let var = |k: &str| {
        env.iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
            .with_context(|| format!("stack.env has no {k}"))
    };
    let (kubectl, kubeconfig) = (var("KUBECTL")?, var("KUBECONFIG")?);
    let out = Command::new(&kubectl)
        .env("KUBECONFIG", &kubeconfig)
        .args([
            "get",
            "namespaces",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .output()?;
    let names = String::from_utf8_lossy(&out.stdout).into_owned();
    let leftovers: Vec<&str> = names
        .split_whitespace()
        .filter(|n| !SYSTEM_NAMESPACES.contains(n))
        .collect();
    if leftovers.is_empty() {
        return Ok(());
    }
    progress(&format!(
        "deleting namespaces left by earlier runs: {}",
        leftovers.join(" ")
    ));
    // No operator runs now: a resource's finalizer (deletionPolicy: Delete) would keep its
    // namespace terminating forever. The OpenSearch data of those runs is not the user's.
    for ns in &leftovers {
        let out = Command::new(&kubectl)
            .env("KUBECONFIG", &kubeconfig)
            .args(["-n", ns, "get", "streamingenrichments", "-o", "name"])
            .output()?;
        for name in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new(&kubectl)
                .env("KUBECONFIG", &kubeconfig)
                .args(["-n", ns, "patch", name, "--type=merge"])
                .args(["-p", r#"{"metadata":{"finalizers":null}}"#])
                .output();
        }
    }
    // A namespace that was already terminating when the last stack stopped may finish between
    // the listing above and this delete: that is the outcome wanted, not an error.
    let status = Command::new(&kubectl)
        .env("KUBECONFIG", &kubeconfig)
        .args([
            "delete",
            "namespace",
            "--ignore-not-found",
            "--wait=true",
            "--timeout=180s",
        ])
        .args(&leftovers)
        .status()?;
    if !status.success() {
        bail!("could not delete the namespaces left by earlier runs");
    }
    Ok(())
}

fn run_against_stack(ctx: &Ctx, totals: &mut Totals) -> Result<()> {
    let env = stack::read_env(ctx)?;
    reset_cluster(&env)?;
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
    cargo_test(
        cargo(ctx)
            .args([
                "test",
                "--workspace",
                "--lib",
                "--bins",
                "--tests",
                "--no-fail-fast",
            ])
            .envs(env)
            .env(
                "TRIBUTARY_OPERATOR_BIN",
                target.join("debug/tributary-operator"),
            )
            .env(
                "TRIBUTARY_RUNTIME_BIN",
                target.join("debug/tributary-runtime"),
            )
            // Integration tests share one API server and one OpenSearch node; two at a time
            // keeps the 2-core machine responsive without serialising everything.
            .env("RUST_TEST_THREADS", "2"),
        totals,
    )
}

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn sums_every_result_line() {
        let mut t = Totals::default();
        for l in [
            "test result: ok. 10 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.04s",
            "running 3 tests",
            "test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1s",
        ] {
            t.add_line(l);
        }
        assert_eq!(
            t,
            Totals {
                passed: 12,
                failed: 1,
                ignored: 1
            }
        );
    }
}
