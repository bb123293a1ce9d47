//! The local stack: real servers on 127.0.0.1, installed once into a cache outside the clone,
//! started as background processes with a log and a pid file each, and probed until ready.
//!
//! Every component lives in its own module and implements [`Component`]. `stack up` installs and
//! starts them in order; `stack down` stops every process it recorded; `stack status` probes each.
//! The endpoints of a running stack are written to `stack.env`, which tests read.

mod go;
mod kinesis;
mod kubernetes;
mod node_agent;
mod opensearch;
mod opensearch_secure;
mod process;
mod prometheus;
mod s3;
mod tools;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub use go::find_go;
pub use kubernetes::{KUBERNETES_VERSION, kubeconfig_path};
pub use node_agent::running_bin_path as node_agent_bin_path;
pub use process::{require_tool, run_checked};
pub use prometheus::PORT as PROMETHEUS_PORT;

use crate::prereqs::Toolchain;

/// Where the stack keeps binaries, data, logs and pid files; shared by every clone on the machine.
pub struct Ctx {
    /// `$TRIBUTARY_HOME`, by default `~/.cache/tributary`.
    pub home: PathBuf,
    /// The root of this checkout (go modules, npm lock files and checksums live here).
    pub repo: PathBuf,
}

impl Ctx {
    pub fn from_env() -> Result<Self> {
        let home = match std::env::var_os("TRIBUTARY_HOME") {
            Some(h) => PathBuf::from(h),
            None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
                .join(".cache/tributary"),
        };
        // `cargo run` sets CARGO_MANIFEST_DIR at run time too. Prefer it to the compile-time
        // value: the target folder is shared between clones (CI builds a fresh clone elsewhere),
        // and a binary built in another clone must still act on the clone that runs it.
        let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        let repo = manifest_dir
            .parent()
            .context("xtask has no parent folder")?
            .to_path_buf();
        for d in ["bin", "stack/logs", "stack/pids", "stack/data"] {
            std::fs::create_dir_all(home.join(d))?;
        }
        Ok(Self { home, repo })
    }

    /// Cached binaries built or unpacked by `install` steps.
    pub fn bin_dir(&self) -> PathBuf {
        self.home.join("bin")
    }

    /// A component's persistent data folder (created on demand).
    pub fn data_dir(&self, component: &str) -> Result<PathBuf> {
        let d = self.home.join("stack/data").join(component);
        std::fs::create_dir_all(&d)?;
        Ok(d)
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.home.join("stack/logs").join(format!("{name}.log"))
    }

    pub fn pid_path(&self, name: &str) -> PathBuf {
        self.home.join("stack/pids").join(format!("{name}.pid"))
    }

    pub fn stack_dir(&self) -> PathBuf {
        self.home.join("stack")
    }

    /// Start a long-running process in its own process group, output to `logs/<name>.log`,
    /// pid to `pids/<name>.pid`. Returns the pid.
    pub fn spawn(&self, name: &str, cmd: std::process::Command) -> Result<u32> {
        process::spawn_detached(self, name, cmd)
    }

    /// Whether the process recorded under `name` is alive.
    pub fn is_running(&self, name: &str) -> bool {
        process::recorded_pid(self, name).is_some_and(process::alive)
    }

    /// Stop the process group recorded under `name` (TERM, then KILL after a grace period).
    pub fn stop(&self, name: &str) -> Result<()> {
        process::stop(self, name)
    }

    /// Poll `probe` until it returns true, printing progress; fail naming the log after `timeout`.
    pub fn wait_ready(
        &self,
        name: &str,
        timeout: Duration,
        mut probe: impl FnMut() -> bool,
    ) -> Result<()> {
        let start = Instant::now();
        let mut last_print = Instant::now();
        loop {
            if probe() {
                progress(&format!(
                    "{name} ready after {:.1}s",
                    start.elapsed().as_secs_f64()
                ));
                return Ok(());
            }
            if !self.is_running(name) && process::recorded_pid(self, name).is_some() {
                bail!(
                    "{name} exited before it was ready; see {}",
                    self.log_path(name).display()
                );
            }
            if start.elapsed() > timeout {
                bail!(
                    "{name} not ready after {}s; see {}",
                    timeout.as_secs(),
                    self.log_path(name).display()
                );
            }
            if last_print.elapsed() > Duration::from_secs(10) {
                progress(&format!(
                    "waiting for {name} ({:.0}s)",
                    start.elapsed().as_secs_f64()
                ));
                last_print = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// One server (or tool set) of the local stack.
pub trait Component {
    fn name(&self) -> &'static str;
    /// Install once into the cache; a no-op when the pinned version is already there.
    fn install(&self, ctx: &Ctx) -> Result<()>;
    /// Start the server(s); a no-op when already running and ready. Waits until ready.
    fn start(&self, ctx: &Ctx) -> Result<()>;
    /// Names of the processes `start` records (for `down`), in start order.
    fn processes(&self) -> Vec<&'static str>;
    /// A cheap readiness probe of the running component.
    fn ready(&self, ctx: &Ctx) -> bool;
    /// Variables this component contributes to `stack.env` (endpoints, paths, credentials).
    fn env(&self, ctx: &Ctx) -> Vec<(&'static str, String)>;
    /// The toolchains `install` and `start` would run on this machine now: a build tool only
    /// while what it builds or fetches is not installed yet (checked by `prereqs`).
    fn toolchains(&self, _ctx: &Ctx) -> Vec<Toolchain> {
        Vec::new()
    }
}

/// Print one line of progress, flushed, so long steps are visible in CI logs.
pub fn progress(msg: &str) {
    use std::io::Write;
    let mut out = std::io::stderr().lock();
    let _ = writeln!(out, "[stack] {msg}");
    let _ = out.flush();
}

fn components() -> Vec<Box<dyn Component>> {
    vec![
        Box::new(kubernetes::Kubernetes),
        Box::new(tools::Tools),
        // After tools: its readiness probe asks kubectl for the Node.
        Box::new(node_agent::NodeAgent),
        Box::new(kinesis::Kinesis),
        Box::new(s3::S3),
        Box::new(opensearch::OpenSearch),
        Box::new(opensearch_secure::OpenSearchSecure),
        Box::new(prometheus::Prometheus),
    ]
}

/// The toolchains `up` would run on this machine now (see [`Component::toolchains`]).
pub fn toolchains(ctx: &Ctx) -> std::collections::BTreeSet<Toolchain> {
    components()
        .iter()
        .flat_map(|c| c.toolchains(ctx))
        .collect()
}

pub fn up(ctx: &Ctx) -> Result<()> {
    let comps = components();
    for c in &comps {
        progress(&format!("installing {}", c.name()));
        c.install(ctx)
            .with_context(|| format!("installing {}", c.name()))?;
    }
    for c in &comps {
        progress(&format!("starting {}", c.name()));
        c.start(ctx)
            .with_context(|| format!("starting {}", c.name()))?;
    }
    write_env(ctx, &comps)?;
    progress(&format!(
        "stack up; endpoints in {}",
        env_path(ctx).display()
    ));
    Ok(())
}

pub fn down(ctx: &Ctx) -> Result<()> {
    let comps = components();
    for c in comps.iter().rev() {
        for p in c.processes().into_iter().rev() {
            ctx.stop(p)?;
        }
    }
    progress("stack down");
    Ok(())
}

pub fn status(ctx: &Ctx) -> Result<bool> {
    let mut all = true;
    for c in components() {
        let ready = c.ready(ctx);
        all &= ready;
        println!(
            "{:<12} {}",
            c.name(),
            if ready { "ready" } else { "NOT READY" }
        );
    }
    Ok(all)
}

pub fn env_path(ctx: &Ctx) -> PathBuf {
    ctx.stack_dir().join("stack.env")
}

fn write_env(ctx: &Ctx, comps: &[Box<dyn Component>]) -> Result<()> {
    let mut vars = BTreeMap::new();
    vars.insert("TRIBUTARY_HOME", ctx.home.display().to_string());
    for c in comps {
        vars.extend(c.env(ctx));
    }
    let body: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(env_path(ctx), body)?;
    Ok(())
}

/// Read `stack.env` as written by `up` (for commands that run against a running stack).
pub fn read_env(ctx: &Ctx) -> Result<Vec<(String, String)>> {
    let body = std::fs::read_to_string(env_path(ctx))
        .with_context(|| "the stack is not up: run `cargo xtask stack up`".to_string())?;
    Ok(body
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// Whether a file exists and is non-empty (install steps use it as their "done" marker).
pub fn installed(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.len() > 0)
}
