//! Prometheus: Debian's `prometheus` package (2.42 on Debian 12), not built here.
//!
//! `install` needs `/usr/bin/prometheus`. The package is one of the prerequisites
//! (`xtask/src/prereqs.rs`) that `stack up`, `demo` and `test` check first: installed there when
//! running as root with apt-get (which also stops the service the package starts on systemd
//! machines, since it would hold the port), else named with the command to run.
//!
//! The server scrapes itself and every target listed in `PROMETHEUS_FILE_SD_DIR/*.json`
//! (file-based service discovery, re-read within seconds: later jobs add targets by writing a
//! file there, `[{"targets": ["127.0.0.1:9185"], "labels": {"job": "tributary"}}]`).
//! Storage lives in the data folder; the lifecycle API (`POST /-/reload`) is on.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, bail};

use super::{Component, Ctx, progress};

pub const PORT: u16 = 9090;
const BINARY: &str = "/usr/bin/prometheus";
const PROCESS: &str = "prometheus";

pub struct Prometheus;

fn file_sd_dir(ctx: &Ctx) -> Result<PathBuf> {
    Ok(ctx.data_dir("prometheus")?.join("file_sd"))
}

fn config(file_sd: &Path) -> String {
    format!(
        "# Written by `cargo xtask stack up` on every start.\n\
         global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n\
         scrape_configs:\n\
         \x20 - job_name: prometheus\n\
         \x20   static_configs:\n\
         \x20     - targets: ['127.0.0.1:{PORT}']\n\
         \x20 - job_name: file_sd\n\
         \x20   file_sd_configs:\n\
         \x20     - files: ['{}/*.json']\n\
         \x20       refresh_interval: 5s\n",
        file_sd.display()
    )
}

/// `GET /-/ready` answering 200, over a plain socket.
fn ready_ok() -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], PORT));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    let req =
        format!("GET /-/ready HTTP/1.1\r\nHost: 127.0.0.1:{PORT}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

impl Component for Prometheus {
    fn name(&self) -> &'static str {
        "prometheus"
    }

    fn install(&self, _ctx: &Ctx) -> Result<()> {
        // The prerequisites check installs or names the package before any component runs.
        if !Path::new(BINARY).exists() {
            bail!(
                "{BINARY} is missing; install Debian's package with:\n  \
                 sudo apt-get install -y --no-install-recommends prometheus\n\
                 and, on a machine with systemd, stop the service it starts on port {PORT}:\n  \
                 sudo systemctl disable --now prometheus"
            );
        }
        Ok(())
    }

    fn start(&self, ctx: &Ctx) -> Result<()> {
        if ctx.is_running(PROCESS) {
            if ready_ok() {
                progress("prometheus already running");
                return Ok(());
            }
        } else {
            if ready_ok() {
                bail!(
                    "port {PORT} already answers as Prometheus, but not from one this stack \
                     started (the Debian package's service? `systemctl disable --now prometheus`)"
                );
            }
            let data = ctx.data_dir("prometheus")?;
            let file_sd = file_sd_dir(ctx)?;
            std::fs::create_dir_all(&file_sd)?;
            let config_path = data.join("prometheus.yml");
            std::fs::write(&config_path, config(&file_sd))?;
            let mut cmd = Command::new(BINARY);
            cmd.current_dir(&data)
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{PORT}"))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    data.join("tsdb").display()
                ))
                .arg("--storage.tsdb.retention.time=7d")
                .arg("--web.enable-lifecycle");
            ctx.spawn(PROCESS, cmd)?;
        }
        ctx.wait_ready(PROCESS, Duration::from_secs(60), ready_ok)
    }

    fn processes(&self) -> Vec<&'static str> {
        vec![PROCESS]
    }

    fn ready(&self, ctx: &Ctx) -> bool {
        ctx.is_running(PROCESS) && ready_ok()
    }

    fn env(&self, ctx: &Ctx) -> Vec<(&'static str, String)> {
        let file_sd = file_sd_dir(ctx).map_or_else(|_| String::new(), |p| p.display().to_string());
        vec![
            ("PROMETHEUS_URL", format!("http://127.0.0.1:{PORT}")),
            ("PROMETHEUS_FILE_SD_DIR", file_sd),
        ]
    }
}
