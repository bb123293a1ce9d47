//! The local API server from the tests' side: a kube client, and kubectl/helm as a user runs them.

use std::path::PathBuf;
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::stack_var;

pub fn kubeconfig_path() -> Result<PathBuf> {
    Ok(PathBuf::from(stack_var("KUBECONFIG")?))
}

/// A client with the stack's admin kubeconfig.
pub async fn admin_client() -> Result<Client> {
    client_from(&kubeconfig_path()?).await
}

pub async fn client_from(path: &std::path::Path) -> Result<Client> {
    // kube is built with ring and the AWS SDK with aws-lc-rs; with both providers compiled in,
    // rustls cannot pick one by itself and panics. (Err: already installed, which is fine.)
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(cfg)?)
}

fn tool(var: &str) -> Result<Command> {
    let mut c = Command::new(stack_var(var)?);
    c.env("KUBECONFIG", kubeconfig_path()?);
    Ok(c)
}

fn checked(what: &str, out: Output) -> Result<String> {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// Run kubectl with the admin kubeconfig; Err carries stdout and stderr.
pub fn kubectl(args: &[&str]) -> Result<String> {
    let out = tool("KUBECTL")?.args(args).output()?;
    checked(&format!("kubectl {}", args.join(" ")), out)
}

/// Run kubectl and return (success, stdout + stderr), for commands expected to fail.
pub fn kubectl_raw(args: &[&str], stdin: Option<&str>) -> Result<(bool, String)> {
    use std::io::Write;
    let mut cmd = tool("KUBECTL")?;
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn()?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(input.as_bytes())?;
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output()?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// Run helm with the admin kubeconfig.
pub fn helm(args: &[&str]) -> Result<String> {
    let out = tool("HELM")?.args(args).output()?;
    checked(&format!("helm {}", args.join(" ")), out)
}

/// The repository root (charts and examples live there).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Apply the chart's CRDs the way its notes tell users to upgrade them (Helm installs `crds/`
/// only once), and wait until the API server serves them.
pub fn install_crds() -> Result<()> {
    let dir = repo_root().join("charts/tributary/crds");
    let dir = dir.to_str().context("CRD folder path")?;
    kubectl(&["apply", "--server-side", "--force-conflicts", "-f", dir])?;
    kubectl(&[
        "wait",
        "--for",
        "condition=established",
        "--timeout=60s",
        "crd/streamingenrichments.tributary.dev",
    ])?;
    Ok(())
}
