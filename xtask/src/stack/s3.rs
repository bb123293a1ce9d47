//! S3: the Versity S3 Gateway (versitygw, Apache-2.0) with its posix backend, built from source
//! through the Go module proxy (`xtask/go/versitygw`, go.mod + go.sum pinned) into the bin folder.
//!
//! Why this server: it is a production S3 server (used in front of real file systems), not a
//! mock, and its S3 layer is tested against AWS behaviour; the parts the runtime's sinks and
//! checkpoints rely on behave as on AWS: multipart uploads (5 MiB minimum part size enforced,
//! ListParts, abort, multipart ETags), ListObjectsV2 with prefix/delimiter/continuation tokens,
//! conditional requests (If-Match / If-None-Match on GET and HEAD with 304/412, and conditional
//! PUT with If-None-Match: *), SigV4 checked against the configured keys, real bucket-name rules.
//! Objects are plain files under the data folder (metadata in extended attributes), so data
//! survives restarts and is easy to inspect. Compared with what was tried before: MinIO is
//! archived and AGPL; moto is in-memory; s3s-fs is a sample backend (slow GETs, thin
//! conditional support); s3rver is unmaintained.
//!
//! Path-style addressing only (no virtual-host domain is configured). The posix backend needs a
//! file system with user extended attributes (ext4, xfs, btrfs: yes) under `$TRIBUTARY_HOME`.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Result, bail};

use super::go::{built, go_build};
use super::{Component, Ctx, progress, require_tool};
use crate::prereqs::Toolchain;

/// `github.com/versity/versitygw` version pinned in `xtask/go/versitygw/go.mod`.
pub const VERSITYGW_VERSION: &str = "v1.8.0";
pub const PORT: u16 = 7070;
pub const REGION: &str = "us-east-1";
pub const ACCESS_KEY_ID: &str = "tributary";
pub const SECRET_ACCESS_KEY: &str = "tributary-s3-secret";
const PROCESS: &str = "versitygw";
/// SHA-256 of an empty body, for the signed probe.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

pub struct S3;

fn endpoint() -> String {
    format!("http://127.0.0.1:{PORT}")
}

/// A SigV4-signed ListBuckets answering 200: the server is up and takes the stack's keys.
fn list_buckets_ok() -> bool {
    Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5"])
        .args(["--aws-sigv4", &format!("aws:amz:{REGION}:s3")])
        .args(["--user", &format!("{ACCESS_KEY_ID}:{SECRET_ACCESS_KEY}")])
        .args(["-H", &format!("x-amz-content-sha256: {EMPTY_SHA256}")])
        .arg(format!("{}/", endpoint()))
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| o.stdout == b"200")
}

impl Component for S3 {
    fn name(&self) -> &'static str {
        "s3"
    }

    fn install(&self, ctx: &Ctx) -> Result<()> {
        require_tool("curl", "apt-get install -y curl")?;
        go_build(
            ctx,
            "versitygw",
            VERSITYGW_VERSION,
            &format!("-s -w -X main.Version={VERSITYGW_VERSION} -X main.Build=tributary"),
            &[("github.com/versity/versitygw/cmd/versitygw", "versitygw")],
        )
    }

    fn start(&self, ctx: &Ctx) -> Result<()> {
        if ctx.is_running(PROCESS) {
            if list_buckets_ok() {
                progress("versitygw already running");
                return Ok(());
            }
        } else {
            if list_buckets_ok() {
                bail!(
                    "port {PORT} already answers S3 calls, but not from a versitygw this stack \
                     started; stop that server first"
                );
            }
            let data = ctx.data_dir("s3")?;
            let root = data.join("buckets");
            std::fs::create_dir_all(&root)?;
            let mut cmd = Command::new(ctx.bin_dir().join("versitygw"));
            cmd.current_dir(&data)
                .args(["--port", &format!("127.0.0.1:{PORT}")])
                .args(["--access", ACCESS_KEY_ID, "--secret", SECRET_ACCESS_KEY])
                .args(["--region", REGION])
                .arg("--keep-alive")
                // No per-request line on stdout; errors still reach the log.
                .arg("--quiet")
                .arg("posix")
                .arg(&root);
            ctx.spawn(PROCESS, cmd)?;
        }
        ctx.wait_ready(PROCESS, Duration::from_secs(60), list_buckets_ok)
    }

    fn processes(&self) -> Vec<&'static str> {
        vec![PROCESS]
    }

    fn ready(&self, ctx: &Ctx) -> bool {
        ctx.is_running(PROCESS) && list_buckets_ok()
    }

    fn toolchains(&self, ctx: &Ctx) -> Vec<Toolchain> {
        if built(ctx, PROCESS, VERSITYGW_VERSION) {
            Vec::new()
        } else {
            vec![Toolchain::Go]
        }
    }

    fn env(&self, _ctx: &Ctx) -> Vec<(&'static str, String)> {
        vec![
            ("S3_ENDPOINT", endpoint()),
            ("S3_ACCESS_KEY_ID", ACCESS_KEY_ID.to_string()),
            ("S3_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_string()),
            ("S3_REGION", REGION.to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::VERSITYGW_VERSION;

    #[test]
    fn version_matches_go_mod() {
        let go_mod = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("go/versitygw/go.mod"),
        )
        .unwrap_or_default();
        assert!(
            go_mod.contains(&format!("github.com/versity/versitygw {VERSITYGW_VERSION}")),
            "xtask/go/versitygw/go.mod does not pin versitygw {VERSITYGW_VERSION}"
        );
    }
}
