//! Kinesis: two Node servers from npm, pinned by `xtask/npm/package-lock.json` (its integrity
//! hashes are the checksums) and installed with `npm ci` into `$TRIBUTARY_HOME/npm`.
//!
//! - kinesis-mock (npm `kinesis-local`), the engine LocalStack runs, on `KINESIS_ENDPOINT`: the
//!   full API the runtime uses (resharding with UpdateShardCount/Split/Merge, reading closed
//!   parents, enhanced fan-out), but slow (about 1,000 records/s). It always starts empty: a fresh
//!   working directory each start (it loads `data/kinesis-data.json` from its working directory
//!   when present) and persistence off.
//! - kinesalite on `KINESIS_VOLUME_ENDPOINT`: about ten times faster and persistent (LevelDB in
//!   the data folder), but without UpdateShardCount or enhanced fan-out; for volume tests only.
//!
//! Neither server has a listen-address option (both bind every interface), so both run with a
//! small preload script that pins Node's `net.Server.listen` to 127.0.0.1.
//! Both accept any access key, but refuse requests that are not SigV4-signed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{Component, Ctx, installed, progress, require_tool};
use crate::prereqs::Toolchain;

pub const KINESIS_MOCK_PORT: u16 = 4568;
/// kinesis-mock refuses to start without a TLS port; nothing uses it.
const KINESIS_MOCK_TLS_PORT: u16 = 4567;
pub const KINESALITE_PORT: u16 = 4569;
pub const REGION: &str = "us-east-1";
/// Dummy credentials: both servers accept any, but the SDKs need some to sign.
pub const ACCESS_KEY_ID: &str = "tributary-local";
pub const SECRET_ACCESS_KEY: &str = "tributary-local-secret";

/// Loaded with `node -r` before the server: every TCP listen goes to 127.0.0.1.
const LOOPBACK_PRELOAD: &str = r#"'use strict';
// Written by `cargo xtask stack up`: pins every TCP listen of this Node process to 127.0.0.1.
const net = require('net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const a = args[0];
  if (a !== null && typeof a === 'object' && !Array.isArray(a) && a.path === undefined) {
    args[0] = Object.assign({}, a, { host: '127.0.0.1' });
  } else if (typeof a === 'number' || (typeof a === 'string' && /^\d+$/.test(a))) {
    if (typeof args[1] === 'string' || args[1] === null || args[1] === undefined) {
      args[1] = '127.0.0.1';
    } else {
      args.splice(1, 0, '127.0.0.1');
    }
  }
  return listen.apply(this, args);
};
"#;

pub struct Kinesis;

/// `$TRIBUTARY_HOME/npm`: the npm project of the stack (package.json, lock, node_modules).
fn npm_dir(ctx: &Ctx) -> PathBuf {
    ctx.home.join("npm")
}

fn lock_marker(ctx: &Ctx) -> PathBuf {
    npm_dir(ctx).join(".installed-package-lock.json")
}

fn preload_path(ctx: &Ctx) -> PathBuf {
    npm_dir(ctx).join("loopback-preload.js")
}

fn package_dir(ctx: &Ctx, package: &str) -> PathBuf {
    npm_dir(ctx).join("node_modules").join(package)
}

fn endpoint(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// Whether the servers are installed from the lock file in the checkout.
fn up_to_date(ctx: &Ctx) -> bool {
    let lock = std::fs::read(ctx.repo.join("xtask/npm/package-lock.json")).unwrap_or_default();
    !lock.is_empty()
        && std::fs::read(lock_marker(ctx)).is_ok_and(|m| m == lock)
        && installed(&package_dir(ctx, "kinesis-local").join("main.js"))
        && installed(&package_dir(ctx, "kinesalite").join("cli.js"))
}

/// A signed `ListStreams` (both servers reject unsigned requests) answering 200.
fn list_streams_ok(port: u16) -> bool {
    Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5"])
        .args(["-X", "POST"])
        .args(["--aws-sigv4", &format!("aws:amz:{REGION}:kinesis")])
        .args(["--user", &format!("{ACCESS_KEY_ID}:{SECRET_ACCESS_KEY}")])
        .args(["-H", "X-Amz-Target: Kinesis_20131202.ListStreams"])
        .args(["-H", "Content-Type: application/x-amz-json-1.1"])
        .args(["-d", "{}"])
        .arg(endpoint(port))
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| o.stdout == b"200")
}

/// Start `name` unless it is already running and answering; then wait until it answers.
fn ensure_started(
    ctx: &Ctx,
    name: &str,
    port: u16,
    spawn: impl FnOnce() -> Result<Command>,
) -> Result<()> {
    if ctx.is_running(name) {
        if list_streams_ok(port) {
            progress(&format!("{name} already running"));
            return Ok(());
        }
    } else {
        if list_streams_ok(port) {
            bail!(
                "port {port} already answers Kinesis calls, but not from a {name} this stack \
                 started; stop that server first"
            );
        }
        ctx.spawn(name, spawn()?)?;
    }
    ctx.wait_ready(name, Duration::from_secs(180), || list_streams_ok(port))
}

impl Component for Kinesis {
    fn name(&self) -> &'static str {
        "kinesis"
    }

    fn install(&self, ctx: &Ctx) -> Result<()> {
        require_tool("node", "apt-get install -y nodejs (Node 18 or newer)")?;
        require_tool("npm", "apt-get install -y npm")?;
        require_tool("curl", "apt-get install -y curl")?;
        let src = ctx.repo.join("xtask/npm");
        let lock = std::fs::read(src.join("package-lock.json"))
            .with_context(|| format!("reading {}/package-lock.json", src.display()))?;
        let dir = npm_dir(ctx);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(preload_path(ctx), LOOPBACK_PRELOAD)?;
        if up_to_date(ctx) {
            progress("kinesis-mock and kinesalite already installed");
            return Ok(());
        }
        let _ = std::fs::remove_file(lock_marker(ctx));
        for f in ["package.json", "package-lock.json"] {
            std::fs::copy(src.join(f), dir.join(f))
                .with_context(|| format!("copying {f} into {}", dir.display()))?;
        }
        progress(&format!(
            "npm ci in {} (kinesis-local, kinesalite)",
            dir.display()
        ));
        let start = Instant::now();
        // No install scripts: kinesis-local is plain JavaScript, and kinesalite's optional
        // leveldown ships prebuilt binaries that node-gyp-build finds at run time.
        crate::heartbeat::run(
            "stack",
            "npm ci",
            Command::new("npm").current_dir(&dir).args([
                "ci",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
            ]),
        )?;
        // The marker holds the lock it was installed from: a changed lock reinstalls.
        std::fs::write(lock_marker(ctx), &lock)?;
        progress(&format!(
            "installed the Kinesis servers in {:.0}s",
            start.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    fn start(&self, ctx: &Ctx) -> Result<()> {
        let preload = preload_path(ctx);
        ensure_started(ctx, "kinesis-mock", KINESIS_MOCK_PORT, || {
            let pkg = package_dir(ctx, "kinesis-local");
            // A fresh, empty working directory each start: kinesis-mock loads
            // `data/kinesis-data.json` from it when present.
            let work = ctx.data_dir("kinesis")?.join("kinesis-mock-run");
            if work.exists() {
                std::fs::remove_dir_all(&work)
                    .with_context(|| format!("emptying {}", work.display()))?;
            }
            std::fs::create_dir_all(&work)?;
            let mut cmd = node(&preload, &pkg.join("main.js"));
            cmd.current_dir(&work)
                .env("KINESIS_MOCK_CERT_PATH", pkg.join("server.json"))
                .env("KINESIS_MOCK_PLAIN_PORT", KINESIS_MOCK_PORT.to_string())
                .env("KINESIS_MOCK_TLS_PORT", KINESIS_MOCK_TLS_PORT.to_string())
                .env("SHOULD_PERSIST_DATA", "false")
                .env("LOAD_DATA_IF_EXISTS", "false")
                .env("AWS_REGION", REGION)
                // The default account limit (50 shards) is a quota, not a behaviour to test:
                // the tests and the demo create many small streams in one server's lifetime.
                .env("SHARD_LIMIT", "2000")
                // The runtime's CPU-starvation warning fires constantly on a busy 2-core machine.
                .env("CATS_EFFECT_CPU_STARVATION_CHECK_INITIAL_DELAY", "Inf");
            Ok(cmd)
        })?;
        ensure_started(ctx, "kinesalite", KINESALITE_PORT, || {
            let db = ctx.data_dir("kinesis")?.join("kinesalite");
            let mut cmd = node(&preload, &package_dir(ctx, "kinesalite").join("cli.js"));
            cmd.current_dir(ctx.data_dir("kinesis")?)
                .arg("--port")
                .arg(KINESALITE_PORT.to_string())
                .arg("--path")
                .arg(db);
            Ok(cmd)
        })
    }

    fn processes(&self) -> Vec<&'static str> {
        vec!["kinesis-mock", "kinesalite"]
    }

    fn ready(&self, ctx: &Ctx) -> bool {
        ctx.is_running("kinesis-mock")
            && ctx.is_running("kinesalite")
            && list_streams_ok(KINESIS_MOCK_PORT)
            && list_streams_ok(KINESALITE_PORT)
    }

    fn toolchains(&self, ctx: &Ctx) -> Vec<Toolchain> {
        if up_to_date(ctx) {
            vec![Toolchain::Node]
        } else {
            vec![Toolchain::Node, Toolchain::Npm]
        }
    }

    fn env(&self, _ctx: &Ctx) -> Vec<(&'static str, String)> {
        vec![
            ("KINESIS_ENDPOINT", endpoint(KINESIS_MOCK_PORT)),
            ("KINESIS_VOLUME_ENDPOINT", endpoint(KINESALITE_PORT)),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_string()),
        ]
    }
}

fn node(preload: &Path, script: &Path) -> Command {
    let mut cmd = Command::new("node");
    cmd.arg("-r").arg(preload).arg(script);
    cmd
}
