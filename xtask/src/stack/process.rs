//! Background processes of the stack: spawn detached with a log and a pid file, probe, stop.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::Ctx;

pub(super) fn spawn_detached(ctx: &Ctx, name: &str, mut cmd: Command) -> Result<u32> {
    let log_path = ctx.log_path(name);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // A group of its own: `stop` signals the whole group (node, java and go children alike),
        // and Ctrl-C in the terminal that ran `stack up` does not reach the servers.
        .process_group(0);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {name}: {cmd:?}"))?;
    let pid = child.id();
    std::fs::write(ctx.pid_path(name), pid.to_string())?;
    Ok(pid)
}

pub(super) fn recorded_pid(ctx: &Ctx, name: &str) -> Option<u32> {
    std::fs::read_to_string(ctx.pid_path(name))
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub(super) fn alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; its state letter is Z.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn signal_group(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), "--".into(), format!("-{pid}")])
        .stderr(Stdio::null())
        .status();
}

pub(super) fn stop(ctx: &Ctx, name: &str) -> Result<()> {
    let Some(pid) = recorded_pid(ctx, name) else {
        return Ok(());
    };
    if alive(pid) {
        super::progress(&format!("stopping {name} (pid {pid})"));
        signal_group(pid, "TERM");
        let start = Instant::now();
        while alive(pid) && start.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_millis(100));
        }
        if alive(pid) {
            signal_group(pid, "KILL");
        }
    }
    let _ = std::fs::remove_file(ctx.pid_path(name));
    Ok(())
}

/// Fail with a message naming the tool and how to install it when it is missing.
pub fn require_tool(tool: &str, install_hint: &str) -> Result<()> {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        bail!("`{tool}` is not installed; install it with: {install_hint}");
    }
    Ok(())
}

/// Run a command to completion (inheriting output, so long builds show progress); fail with the
/// command line when it exits non-zero.
pub fn run_checked(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}
