//! The local node agent (`cargo xtask node-agent`, see `xtask/src/agent/`) as a stack component:
//! this very binary, spawned with the subcommand, logging to `stack/logs/node-agent.log`. Ready
//! when its Node reports Ready. Without it, pods stay Pending.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{Component, Ctx, progress, require_tool};
use crate::agent;

const PROCESS: &str = "node-agent";

pub struct NodeAgent;

/// The `--bin-path` the running node agent was started with (it may have been started from
/// another target folder than the caller's build).
pub fn running_bin_path(ctx: &Ctx) -> Option<String> {
    let pid = super::process::recorded_pid(ctx, PROCESS)?;
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let i = args.iter().position(|a| a == "--bin-path")?;
    args.get(i + 1).cloned()
}

fn node_ready(ctx: &Ctx) -> bool {
    Command::new(ctx.bin_dir().join("kubectl"))
        .env("KUBECONFIG", super::kubeconfig_path(ctx))
        .args([
            "get",
            "node",
            agent::DEFAULT_NODE,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout == b"True")
}

impl Component for NodeAgent {
    fn name(&self) -> &'static str {
        "node-agent"
    }

    fn install(&self, _ctx: &Ctx) -> Result<()> {
        // unshare(1), nsenter(1) and mount(8): util-linux and mount, in every Debian base.
        require_tool("unshare", "apt-get install util-linux")?;
        require_tool("nsenter", "apt-get install util-linux")?;
        require_tool("mount", "apt-get install mount")
    }

    fn start(&self, ctx: &Ctx) -> Result<()> {
        if ctx.is_running(PROCESS) {
            if node_ready(ctx) {
                progress("node-agent already running");
                return Ok(());
            }
        } else {
            let exe = std::env::current_exe().context("locating the xtask binary")?;
            let mut cmd = Command::new(exe);
            cmd.arg("node-agent")
                .arg("--node-name")
                .arg(agent::DEFAULT_NODE)
                .arg("--kubeconfig")
                .arg(super::kubeconfig_path(ctx))
                .arg("--dir")
                .arg(agent::default_dir(ctx))
                .arg("--bin-path")
                .arg(agent::default_bin_path(&ctx.repo));
            let pid = ctx.spawn(PROCESS, cmd)?;
            progress(&format!(
                "started node-agent (pid {pid}), log {}",
                ctx.log_path(PROCESS).display()
            ));
        }
        ctx.wait_ready(PROCESS, Duration::from_secs(60), || node_ready(ctx))
    }

    fn processes(&self) -> Vec<&'static str> {
        vec![PROCESS]
    }

    fn ready(&self, ctx: &Ctx) -> bool {
        ctx.is_running(PROCESS) && node_ready(ctx)
    }

    fn env(&self, ctx: &Ctx) -> Vec<(&'static str, String)> {
        vec![
            ("NODE_AGENT_NODE_NAME", agent::DEFAULT_NODE.to_string()),
            (
                "NODE_AGENT_DIR",
                agent::default_dir(ctx).display().to_string(),
            ),
            ("NODE_AGENT_BIN_PATH", agent::default_bin_path(&ctx.repo)),
        ]
    }
}
