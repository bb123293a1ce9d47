//! The Helm chart renders, validates its values, and every manifest it renders (and every example
//! resource) passes a server-side dry run against the real API server.

use anyhow::{Context, Result, ensure};
use tributary_tests::cluster::{helm, install_crds, kubectl, kubectl_raw, repo_root};
use tributary_tests::unique;

fn chart() -> Result<String> {
    Ok(repo_root()
        .join("charts/tributary")
        .to_str()
        .context("chart path")?
        .to_string())
}

/// `kubectl apply --dry-run=server` of a manifest stream: (accepted, output).
fn dry_run(ns: &str, manifests: &str) -> Result<(bool, String)> {
    kubectl_raw(
        &[
            "apply",
            "--dry-run=server",
            "--server-side",
            "-n",
            ns,
            "-f",
            "-",
        ],
        Some(manifests),
    )
}

#[test]
fn rendered_chart_and_examples_pass_a_server_side_dry_run() -> Result<()> {
    let ns = unique("chart-dry-run");
    kubectl(&["create", "namespace", &ns])?;
    let result = (|| -> Result<()> {
        // The CRD first (as `helm install` would), so the examples can be checked against it.
        install_crds()?;
        let chart = chart()?;
        let scoped = format!("watchNamespaces={{{ns}}}");
        for (values, cluster_wide) in [
            (vec![], true),
            (
                vec!["--set", "replicaCount=2", "--set", "logFormat=text"],
                true,
            ),
            (vec!["--set", scoped.as_str()], false),
        ] {
            let mut args = vec!["template", "tributary", chart.as_str(), "-n", &ns];
            args.extend(values.iter().copied());
            let rendered = helm(&args)?;
            // Top-level kinds only (a roleRef's `kind` is indented).
            let count = |kind: &str| rendered.matches(&format!("\nkind: {kind}\n")).count();
            for kind in ["Deployment", "ServiceAccount", "Service"] {
                ensure!(count(kind) > 0, "no {kind} rendered");
            }
            // The leader Lease's Role always; the operator's rules in a ClusterRole, or in a
            // Role per watched namespace and nothing cluster-wide for the operator. The two
            // ClusterRoles aggregated to the default edit and view roles grant it nothing.
            let (cluster, roles) = if cluster_wide { (1, 1) } else { (0, 2) };
            ensure!(
                rendered.contains("rbac.authorization.k8s.io/aggregate-to-edit: \"true\"")
                    && rendered.contains("rbac.authorization.k8s.io/aggregate-to-view: \"true\""),
                "{values:?}: no aggregated ClusterRoles"
            );
            ensure!(
                count("ClusterRole") == cluster + 2 && count("ClusterRoleBinding") == cluster,
                "{values:?}: {} ClusterRoles",
                count("ClusterRole")
            );
            ensure!(
                count("Role") == roles && count("RoleBinding") == roles,
                "{values:?}: {} Roles",
                count("Role")
            );
            ensure!(
                rendered.contains(&format!(
                    "TRIBUTARY_WATCH_NAMESPACES, value: \"{}\"",
                    if cluster_wide { "" } else { ns.as_str() }
                )),
                "{values:?}: the operator's watch scope"
            );
            let (ok, out) = dry_run(&ns, &rendered)?;
            ensure!(ok, "server-side dry run of the chart failed: {out}");
        }
        for example in ["minimal.yaml", "full.yaml", "local.yaml"] {
            let body = std::fs::read_to_string(repo_root().join("examples").join(example))?
                .replace("namespace: analytics", &format!("namespace: {ns}"));
            let (ok, out) = dry_run(&ns, &body)?;
            ensure!(
                ok,
                "server-side dry run of examples/{example} failed: {out}"
            );
        }
        Ok(())
    })();
    let _ = kubectl(&["delete", "namespace", &ns, "--wait=false"]);
    result
}

#[test]
fn values_schema_refuses_bad_values() -> Result<()> {
    for (set, field) in [
        ("replicaCount=-1", "replicaCount"),
        ("logFormat=xml", "logFormat"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("unknownKey=1", "unknownKey"),
        ("watchNamespaces={Not_A_Namespace}", "watchNamespaces"),
    ] {
        let err = match helm(&["template", "tributary", &chart()?, "--set", set]) {
            Ok(_) => anyhow::bail!("helm accepted --set {set}"),
            Err(e) => e.to_string(),
        };
        ensure!(
            err.contains(field),
            "the error for {set} should name {field}: {err}"
        );
    }
    Ok(())
}
