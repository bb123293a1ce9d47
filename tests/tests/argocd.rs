//! The Argo CD health check of `StreamingEnrichment`
//! (`deploy/argocd/tributary.dev/StreamingEnrichment/`), run by Argo CD's own Lua VM, and the
//! Argo CD example (`examples/argocd-application.yaml`). No stack needed.
//!
//! `tests/argocd` is a Go program on Argo CD's `util/settings` and `util/lua` (v3.5.8, pinned with
//! every dependency by its go.mod and go.sum), built by `go build` into
//! `$TRIBUTARY_HOME/argocd-check`. Go's build cache keeps later builds to seconds; the first
//! compiles most of Argo CD's dependency tree (3 to 6 minutes on 2 cores) and prints a
//! progress line every 30 s. The program runs every case of `health_test.yaml` the way the
//! application controller does with `argocd-cm` as docs/argocd.md's install command writes it,
//! and the way Argo CD's own resource_customizations tests do, and fails on any difference.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;
use tributary_crds::StreamingEnrichment;
use tributary_tests::cluster::repo_root;
use tributary_tests::home;

/// The health check's folder, laid out as Argo CD's resource_customizations/<group>/<kind>/.
fn check_dir() -> PathBuf {
    repo_root().join("deploy/argocd/tributary.dev/StreamingEnrichment")
}

/// One progress line on stderr, past the test harness' capture (it captures `print!` only).
fn progress(msg: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "[argocd] {msg}");
    let _ = err.flush();
}

/// The Go toolchain: `$GO`, else `go` on PATH, else the usual /usr/local/go install (as xtask).
fn go() -> PathBuf {
    if let Some(go) = std::env::var_os("GO") {
        return PathBuf::from(go);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("go"))
            .find(|p| p.is_file())
    });
    on_path.unwrap_or_else(|| PathBuf::from("/usr/local/go/bin/go"))
}

/// What the tool processes started by `parent` do now, from /proc: the packages `compile` builds,
/// or `link`.
fn building_now(parent: u32) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pkgs = Vec::new();
    for e in entries.flatten() {
        let dir = e.path();
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces, so split after its `)`.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(dir.join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("/link")) {
            pkgs.push("linking".to_string());
        } else if let Some(i) = args.iter().position(|a| a == "-p") {
            pkgs.extend(args.get(i + 1).map(|p| format!("compiling {p}")));
        }
    }
    pkgs.sort();
    pkgs
}

/// A thread that reads `pipe` to its end.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}

/// `go build` of `tests/argocd` into `$TRIBUTARY_HOME/argocd-check/argocd-health-check`, with a
/// progress line every 30 s while it runs. Go decides what is stale; the module cache stays
/// writable (`-modcacherw`) so it can be deleted.
fn build_checker() -> Result<PathBuf> {
    let src = repo_root().join("tests/argocd");
    let out_dir = home().join("argocd-check");
    std::fs::create_dir_all(&out_dir)?;
    let bin = out_dir.join("argocd-health-check");
    let go = go();
    let mut goflags = std::env::var("GOFLAGS").unwrap_or_default();
    if !goflags.split_whitespace().any(|f| f == "-modcacherw") {
        goflags = format!("{goflags} -modcacherw").trim().to_string();
    }
    let start = Instant::now();
    let mut child = Command::new(&go)
        .current_dir(&src)
        .env("GOFLAGS", goflags)
        .args(["build", "-mod=readonly", "-trimpath", "-buildvcs=false"])
        .args(["-ldflags=-s -w", "-o"])
        .arg(&bin)
        .arg(".")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (Go 1.26 or newer is a `cargo xtask test` prerequisite; or set GO)",
                go.display()
            )
        })?;
    // Go says nothing while it compiles; its output is read as it comes so the pipes never fill.
    let readers = [drain(child.stdout.take()), drain(child.stderr.take())];
    let mut announced = false;
    let mut last = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if !announced && start.elapsed() > Duration::from_secs(3) {
            progress(&format!(
                "go build of {} runs: a first build compiles most of Argo CD's dependency \
                 tree (3 to 6 minutes on 2 cores); later builds take seconds",
                src.display()
            ));
            announced = true;
        }
        if last.elapsed() >= Duration::from_secs(30) {
            let now = building_now(child.id());
            let what = if now.is_empty() {
                "between packages".to_string()
            } else {
                now.join(", ")
            };
            progress(&format!(
                "go build: {:.0}s, {what}",
                start.elapsed().as_secs_f64()
            ));
            last = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let output: String = readers
        .into_iter()
        .map(|r| r.join().unwrap_or_default())
        .collect();
    ensure!(
        status.success(),
        "go build in {} failed ({status}):\n{output}",
        src.display()
    );
    if announced {
        progress(&format!(
            "built {} in {:.0}s",
            bin.display(),
            start.elapsed().as_secs_f64()
        ));
    }
    Ok(bin)
}

/// The argocd-cm patch the install command of docs/argocd.md writes, into `dir`; it must hold
/// health.lua unchanged under the key Argo CD reads it from.
fn docs_argocd_cm_patch(dir: &Path) -> Result<PathBuf> {
    let doc = std::fs::read_to_string(repo_root().join("docs/argocd.md"))?;
    let redirect = "} > argocd-cm-patch.yaml";
    let end = doc
        .find(redirect)
        .context("docs/argocd.md: no `} > argocd-cm-patch.yaml`")?;
    let start = doc[..end]
        .rfind("```sh\n")
        .context("docs/argocd.md: the install command's code block")?
        + "```sh\n".len();
    let patch = dir.join("argocd-cm-patch.yaml");
    let script = format!("{}}} > '{}'", &doc[start..end], patch.display());
    let out = Command::new("sh")
        .args(["-eu", "-c", &script])
        .current_dir(repo_root())
        .output()?;
    ensure!(
        out.status.success(),
        "docs/argocd.md's install command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cm: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&patch)?)?;
    let key = "resource.customizations.health.tributary.dev_StreamingEnrichment";
    let got = cm["data"][key]
        .as_str()
        .with_context(|| format!("the argocd-cm patch has no data.{key}"))?;
    ensure!(
        got == std::fs::read_to_string(check_dir().join("health.lua"))?,
        "the argocd-cm patch's script differs from health.lua"
    );
    Ok(patch)
}

/// Every case of health_test.yaml, with argocd-cm as docs/argocd.md installs it.
#[test]
fn health_check_gives_every_expected_status_in_argo_cds_lua_vm() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let patch = docs_argocd_cm_patch(tmp.path())?;
    let bin = build_checker()?;
    let out = Command::new(&bin)
        .arg("-argocd-cm")
        .arg(&patch)
        .arg(check_dir())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    ensure!(
        out.status.success(),
        "the health check does not give what health_test.yaml expects ({}):\n{text}",
        out.status
    );
    ensure!(
        text.contains("tributary.dev/StreamingEnrichment: ") && text.contains(" 0 failed"),
        "unexpected checker output:\n{text}"
    );
    Ok(())
}

#[derive(Deserialize)]
struct HealthTests {
    tests: Vec<HealthTest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthTest {
    health_status: HealthStatus,
    input_path: String,
}

#[derive(Deserialize)]
struct HealthStatus {
    status: String,
    message: String,
}

fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.retain(|p| p.extension().is_some_and(|x| x == "yaml"));
    files.sort();
    Ok(files)
}

/// The inputs are real resources: each one reads as a `StreamingEnrichment` of this repository's
/// types (field names, enums, required fields), and every health status has a case.
#[test]
fn health_check_inputs_are_streaming_enrichments_and_cover_every_status() -> Result<()> {
    let dir = check_dir();
    let tests: HealthTests =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("health_test.yaml"))?)?;
    let mut statuses = std::collections::BTreeSet::new();
    for t in &tests.tests {
        let path = dir.join(&t.input_path);
        let body = std::fs::read_to_string(&path).with_context(|| t.input_path.clone())?;
        let se: StreamingEnrichment =
            serde_yaml::from_str(&body).with_context(|| t.input_path.clone())?;
        ensure!(
            se.metadata.generation.is_some(),
            "{}: no metadata.generation (the API server always sets it)",
            t.input_path
        );
        ensure!(
            !t.health_status.message.is_empty(),
            "{}: every status comes with a message",
            t.input_path
        );
        statuses.insert(t.health_status.status.clone());
    }
    ensure!(
        tests.tests.len() == yaml_files(&dir.join("testdata"))?.len(),
        "every file in testdata/ is the input of one test"
    );
    for s in ["Healthy", "Progressing", "Degraded", "Suspended"] {
        ensure!(statuses.contains(s), "no test expects {s}");
    }
    Ok(())
}

/// `examples/argocd-application.yaml`: the Applications point at this repository's chart with
/// values the chart has, and the StreamingEnrichment reads as one.
#[test]
fn argocd_example_matches_the_chart_and_the_crd() -> Result<()> {
    let body = std::fs::read_to_string(repo_root().join("examples/argocd-application.yaml"))?;
    let values: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(
        repo_root().join("charts/tributary/values.yaml"),
    )?)?;
    let (mut apps, mut resources) = (0, 0);
    for doc in serde_yaml::Deserializer::from_str(&body) {
        let doc = serde_yaml::Value::deserialize(doc)?;
        match doc["kind"].as_str() {
            Some("Application") => {
                apps += 1;
                ensure!(doc["apiVersion"] == "argoproj.io/v1alpha1", "{doc:?}");
                let source = &doc["spec"]["source"];
                let Some(path) = source["path"].as_str() else {
                    bail!("an Application without spec.source.path");
                };
                if source["helm"].is_mapping() {
                    ensure!(path == "charts/tributary", "the chart's path: {path}");
                    ensure!(repo_root().join(path).join("Chart.yaml").is_file());
                    // Every value set is one the chart's values.yaml has.
                    let set = &source["helm"]["valuesObject"];
                    ensure!(set.is_mapping(), "helm.valuesObject");
                    check_keys(set, &values, "")?;
                }
            }
            Some("StreamingEnrichment") => {
                resources += 1;
                let _: StreamingEnrichment = serde_yaml::from_value(doc)?;
            }
            other => bail!("unexpected document kind {other:?}"),
        }
    }
    ensure!(
        apps == 2 && resources == 1,
        "{apps} Applications, {resources} StreamingEnrichments"
    );
    Ok(())
}

fn check_keys(set: &serde_yaml::Value, values: &serde_yaml::Value, at: &str) -> Result<()> {
    let Some(map) = set.as_mapping() else {
        return Ok(());
    };
    for (k, v) in map {
        let k = k.as_str().context("a values key")?;
        let path = format!("{at}.{k}");
        ensure!(
            values.get(k).is_some(),
            "helm.valuesObject{path} is not a value of the chart"
        );
        // A map the chart leaves empty (podLabels: {}) takes any keys.
        if values[k].as_mapping().is_some_and(|m| !m.is_empty()) {
            check_keys(v, &values[k], &path)?;
        }
    }
    Ok(())
}
