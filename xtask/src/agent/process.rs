//! A container as a local process: `unshare --mount --uts --propagation private` gives it a
//! mount namespace of its own, in which a small shell script bind-mounts each volume at its
//! `mountPath` (creating the mount point on the host file system if needed), sets the pod's
//! hostname and `exec`s the program. The pid is therefore the program's own; it leads a process
//! group of its own, so signals reach its children too, and it outlives the agent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::volumes::Mount;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("opening the log {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("starting unshare: {0}")]
    Spawn(std::io::Error),
}

/// Everything needed to start one run of a container.
#[derive(Debug)]
pub struct Launch {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub mounts: Vec<Mount>,
    pub hostname: String,
    pub workdir: String,
    pub log: PathBuf,
}

/// A running container: a child of this agent, or one adopted from a previous agent (whose exit
/// status cannot be known, only that it is gone).
#[derive(Debug)]
pub enum Proc {
    Child {
        child: tokio::process::Child,
        pid: u32,
    },
    Adopted {
        pid: u32,
        start_ticks: u64,
    },
}

/// Quote for a POSIX shell.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script run inside the new mount namespace. `file_sources` tells which mounts bind a
/// single file (a `subPath` to a file), whose mount point must be a file.
pub fn script(mounts: &[(Mount, bool)], hostname: &str, workdir: &str) -> String {
    let mut ordered: Vec<&(Mount, bool)> = mounts.iter().collect();
    // Parents before children, so a mount inside another volume's mount point stays visible.
    ordered.sort_by_key(|(m, _)| Path::new(&m.target).components().count());
    let mut s = String::from("set -e\n");
    for (m, is_file) in ordered {
        let target = quote(&m.target);
        if *is_file {
            let parent = Path::new(&m.target)
                .parent()
                .map_or_else(|| "/".to_string(), |p| p.display().to_string());
            s.push_str(&format!(
                "mkdir -p {}\n[ -e {target} ] || : > {target}\n",
                quote(&parent)
            ));
        } else {
            s.push_str(&format!("mkdir -p {target}\n"));
        }
        s.push_str(&format!(
            "mount --bind {} {target}\n",
            quote(&m.source.display().to_string())
        ));
        if m.read_only {
            s.push_str(&format!("mount -o remount,bind,ro {target}\n"));
        }
    }
    s.push_str(&format!(
        "hostname {} 2>/dev/null || true\ncd {}\nexec \"$@\"\n",
        quote(hostname),
        quote(workdir)
    ));
    s
}

pub fn spawn(l: &Launch) -> Result<Proc, ProcessError> {
    use std::io::Write;
    let log_err = |source| ProcessError::Log {
        path: l.log.clone(),
        source,
    };
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&l.log)
        .map_err(log_err)?;
    let _ = writeln!(
        log,
        "[node-agent] {} starting {:?}",
        k8s_openapi::jiff::Timestamp::now(),
        l.argv
    );
    let mounts: Vec<(Mount, bool)> = l
        .mounts
        .iter()
        .map(|m| (m.clone(), m.source.is_file()))
        .collect();
    let mut cmd = tokio::process::Command::new("unshare");
    cmd.args([
        "--mount",
        "--uts",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        "-c",
    ])
    .arg(script(&mounts, &l.hostname, &l.workdir))
    .arg("sh")
    .args(&l.argv)
    .env_clear()
    .envs(&l.env)
    .stdin(Stdio::null())
    .stdout(log.try_clone().map_err(log_err)?)
    .stderr(log)
    .process_group(0);
    let child = cmd.spawn().map_err(ProcessError::Spawn)?;
    let pid = child.id().unwrap_or_default();
    Ok(Proc::Child { child, pid })
}

impl Proc {
    pub fn pid(&self) -> u32 {
        match self {
            Proc::Child { pid, .. } | Proc::Adopted { pid, .. } => *pid,
        }
    }

    /// The exit code (128 + signal when killed); `None` for an adopted process, whose status
    /// went to its original parent. Cancel-safe.
    pub async fn wait(&mut self) -> Option<i32> {
        match self {
            Proc::Child { child, .. } => {
                use std::os::unix::process::ExitStatusExt;
                let status = child.wait().await.ok()?;
                Some(
                    status
                        .code()
                        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
                )
            }
            Proc::Adopted { pid, start_ticks } => {
                while alive(*pid, *start_ticks) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                None
            }
        }
    }

    /// SIGTERM to the process group, SIGKILL after `grace`; waits for the exit.
    pub async fn terminate(&mut self, grace: Duration) -> Option<i32> {
        signal_group(self.pid(), "TERM").await;
        if let Ok(code) = tokio::time::timeout(grace, self.wait()).await {
            return code;
        }
        signal_group(self.pid(), "KILL").await;
        self.wait().await
    }
}

pub async fn signal_group(pid: u32, sig: &str) {
    if pid == 0 {
        return;
    }
    let _ = tokio::process::Command::new("kill")
        .args([format!("-{sig}"), "--".into(), format!("-{pid}")])
        .stderr(Stdio::null())
        .status()
        .await;
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot), which tells a process
/// from a later one that reused its pid; `None` for a zombie.
pub fn parse_start_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

pub fn start_ticks(pid: u32) -> Option<u64> {
    parse_start_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether `pid` is still the process that started at `ticks`.
pub fn alive(pid: u32, ticks: u64) -> bool {
    start_ticks(pid) == Some(ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn script_mounts_parents_first() {
        let m = |s: &str, t: &str, ro| Mount {
            source: PathBuf::from(s),
            target: t.into(),
            read_only: ro,
        };
        let s = script(
            &[
                (m("/v/b", "/var/lib/x/sub", false), false),
                (m("/v/a", "/var/lib/x", true), false),
                (m("/v/f", "/etc/f.yaml", false), true),
            ],
            "pod-0",
            "/",
        );
        let parent = s.find("mount --bind '/v/a' '/var/lib/x'");
        let child = s.find("mount --bind '/v/b' '/var/lib/x/sub'");
        assert!(parent.is_some() && child.is_some() && parent < child, "{s}");
        assert!(s.contains("mount -o remount,bind,ro '/var/lib/x'\n"));
        assert!(s.contains("[ -e '/etc/f.yaml' ] || : > '/etc/f.yaml'"));
        assert!(s.ends_with("hostname 'pod-0' 2>/dev/null || true\ncd '/'\nexec \"$@\"\n"));
    }

    #[test]
    fn start_ticks_from_stat() {
        let stat = "42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 12345 0";
        assert_eq!(parse_start_ticks(stat), Some(12345));
        let zombie = "42 (x) Z 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 12345 0";
        assert_eq!(parse_start_ticks(zombie), None);
        assert!(start_ticks(std::process::id()).is_some());
    }
}
