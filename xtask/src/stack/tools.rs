//! Command-line tools for chart and cluster tests: kubectl (the same Go module and version as the
//! control plane, `xtask/go/kubernetes`) and helm (`xtask/go/helm`), built from source through the
//! Go module proxy into the shared bin folder. No processes.

use anyhow::Result;

use super::go::{built, go_build};
use super::kubernetes::{KUBERNETES_VERSION, kube_ldflags};
use super::{Component, Ctx};
use crate::prereqs::Toolchain;

/// `helm.sh/helm/v3` version pinned in `xtask/go/helm/go.mod`.
pub const HELM_VERSION: &str = "v3.22.0";

pub struct Tools;

/// Helm's version, and the Kubernetes version `helm template`/`helm lint` assume offline, set to
/// the stack's (helm's own release sets the latter from its client-go version).
fn helm_ldflags() -> String {
    let minor = KUBERNETES_VERSION.split('.').nth(1).unwrap_or_default();
    let mut flags = format!(
        "-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION} \
         -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    );
    for pkg in [
        "helm.sh/helm/v3/pkg/chartutil",
        "helm.sh/helm/v3/pkg/lint/rules",
    ] {
        flags.push_str(&format!(
            " -X {pkg}.k8sVersionMajor=1 -X {pkg}.k8sVersionMinor={minor}"
        ));
    }
    flags
}

impl Component for Tools {
    fn name(&self) -> &'static str {
        "tools"
    }

    fn install(&self, ctx: &Ctx) -> Result<()> {
        go_build(
            ctx,
            "kubernetes",
            KUBERNETES_VERSION,
            &kube_ldflags(),
            &[("k8s.io/kubernetes/cmd/kubectl", "kubectl")],
        )?;
        go_build(
            ctx,
            "helm",
            HELM_VERSION,
            &helm_ldflags(),
            &[("helm.sh/helm/v3/cmd/helm", "helm")],
        )
    }

    fn start(&self, _ctx: &Ctx) -> Result<()> {
        Ok(())
    }

    fn processes(&self) -> Vec<&'static str> {
        Vec::new()
    }

    fn ready(&self, ctx: &Ctx) -> bool {
        built(ctx, "kubectl", KUBERNETES_VERSION) && built(ctx, "helm", HELM_VERSION)
    }

    fn toolchains(&self, ctx: &Ctx) -> Vec<Toolchain> {
        if self.ready(ctx) {
            Vec::new()
        } else {
            vec![Toolchain::Go]
        }
    }

    fn env(&self, ctx: &Ctx) -> Vec<(&'static str, String)> {
        vec![
            (
                "KUBECTL",
                ctx.bin_dir().join("kubectl").display().to_string(),
            ),
            ("HELM", ctx.bin_dir().join("helm").display().to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helm_version_matches_go_mod() -> anyhow::Result<()> {
        let go_mod = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("go/helm/go.mod"),
        )?;
        assert!(go_mod.contains(&format!("require helm.sh/helm/v3 {HELM_VERSION}\n")));
        Ok(())
    }
}
