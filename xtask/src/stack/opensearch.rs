//! OpenSearch: one node on 127.0.0.1:9200, fetched from Maven Central with `mvn`; also the
//! installer of the secure node's own OpenSearch (`opensearch_secure.rs`), made the same way from
//! its own pom.
//!
//! Maven Central carries the integ-test distribution of OpenSearch (server, launcher scripts and
//! the transport-netty4 module; no bundled JDK, no other module). Everything else a full
//! distribution would hold comes from what Central publishes next to it, as pinned in
//! `xtask/maven/<component>/pom.xml` (and checked against `checksums` beside it):
//! - the modules mapper-extras (`scaled_float`), lang-painless, analysis-common and reindex:
//!   Central has their jars (and their dependencies), not their module folders, so the install
//!   lays out `modules/<name>/` itself: the jars, a `plugin-descriptor.properties` and the module's
//!   security policy where it has one; the same shape as transport-netty4, whose module folder is
//!   its `-client` jar plus a descriptor;
//! - the plugin opensearch-security, installed with `opensearch-plugin`.
//!
//! This node runs 2.19.6, the newest 2.19 patch on Central, with security disabled
//! (`plugins.security.disabled=true`). Central has opensearch-security only for 2.19.3.0 and
//! 2.19.4.0, so here its descriptor is rewritten from `opensearch.version=2.19.4` to the range
//! `~2.19.4` (2.19.4 <= v < 2.20.0), which OpenSearch 2.x descriptors support. That is enough for
//! a disabled plugin, not for a working one: 2.19.4.0's field-level security calls
//! `XContentMapValues.filter(String[], String[])`, which 2.19.6 replaced by a form with a third
//! (boolean) argument, so the first search under an FLS role would kill the node with
//! `NoSuchMethodError`. The secure node therefore runs a core of its plugin's own version (2.19.4,
//! plugin unmodified; see `opensearch_secure.rs`).
//!
//! Not on Central, so not installed: index-management (ISM). The job scheduler (Central has
//! 2.19.0.0 and 2.19.4.0 zips) is left out with ISM, its only user here.
//!
//! OpenSearch refuses to run as root. When `stack up` runs as root (CI, these machines), the node
//! runs in a user namespace of its own (`unshare --user --map-user=1000`): inside, its uid is 1000;
//! outside, the kernel still sees uid 0, so the files it writes in the cache belong to root and
//! `stack down` signals it like any other process.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{Component, Ctx, installed, progress, require_tool, run_checked};
use crate::prereqs::Toolchain;

/// One OpenSearch install: a core version, the modules laid out for it and opensearch-security.
/// `install` makes it from `xtask/maven/<name>/` (pom.xml and checksums) into
/// `$TRIBUTARY_HOME/<name>/<version>/`.
pub(super) struct Dist {
    /// The component (and process) that runs it; names its Maven folder and install folder.
    pub name: &'static str,
    /// The OpenSearch core (the integ-test distribution and the module jars).
    pub version: &'static str,
    /// The opensearch-security plugin zip.
    pub security_version: &'static str,
    /// `Some(range)`: the plugin was built for another core, and its descriptor is rewritten to
    /// accept `range`. `None`: the plugin must have been built for `version` exactly.
    pub security_range: Option<&'static str>,
    /// Bump when `install` lays the folder out differently, so existing installs are redone.
    pub layout: u32,
}

/// The node on 9200: the newest 2.19 patch on Maven Central (2.x is the line that runs on Java
/// 17), with the newest 2.19 opensearch-security (disabled) widened to accept it.
const PLAIN: Dist = Dist {
    name: "opensearch",
    version: "2.19.6",
    security_version: "2.19.4.0",
    security_range: Some("~2.19.4"),
    layout: 2,
};
const VERSION: &str = PLAIN.version;
const HOST: &str = "127.0.0.1";
const HTTP_PORT: u16 = 9200;

/// JVM heap. The machine has 2 cores and 24 GiB shared with kind (a Kubernetes node), the
/// Kinesis and S3 servers, Prometheus and the Rust/C++ builds. 1 GiB is plenty for test indices of
/// thousands of documents, leaves the rest of memory to the page cache Lucene reads through, and
/// keeps a full GC short on 2 cores. Xms = Xmx so the heap is sized once at start, as OpenSearch
/// recommends.
const HEAP: &str = "-Xms1g -Xmx1g";

/// A module laid out from jars Central publishes, as the full distribution would ship it.
struct Module {
    name: &'static str,
    description: &'static str,
    classname: &'static str,
    extended: &'static str,
    jars: Vec<String>,
    policy: Option<&'static str>,
}

fn modules(v: &str) -> Vec<Module> {
    vec![
        Module {
            name: "mapper-extras",
            description: "Adds advanced field mappers",
            classname: "org.opensearch.index.mapper.MapperExtrasPlugin",
            extended: "",
            jars: vec![format!("mapper-extras-client-{v}.jar")],
            policy: None,
        },
        Module {
            name: "lang-painless",
            description: "An easy, safe and fast scripting language for OpenSearch",
            classname: "org.opensearch.painless.PainlessPlugin",
            extended: "",
            jars: vec![
                format!("lang-painless-{v}.jar"),
                format!("opensearch-scripting-painless-spi-{v}.jar"),
                "antlr4-runtime-4.13.1.jar".into(),
                "asm-9.7.jar".into(),
                "asm-analysis-9.7.jar".into(),
                "asm-commons-9.7.jar".into(),
                "asm-tree-9.7.jar".into(),
                "asm-util-9.7.jar".into(),
            ],
            // The module's own policy: painless compiles scripts to classes at run time.
            policy: Some(
                "grant {\n  permission java.lang.RuntimePermission \"createClassLoader\";\n  \
                 permission java.lang.RuntimePermission \"getClassLoader\";\n};\n",
            ),
        },
        Module {
            name: "analysis-common",
            description: "Adds \"built in\" analyzers to OpenSearch.",
            classname: "org.opensearch.analysis.common.CommonAnalysisPlugin",
            // Its jar registers a painless extension, so it loads as a child of lang-painless.
            extended: "lang-painless",
            jars: vec![format!("analysis-common-{v}.jar")],
            policy: None,
        },
        Module {
            name: "reindex",
            description: "The Reindex module adds APIs to reindex from one index to another or \
                          update documents in place.",
            classname: "org.opensearch.index.reindex.ReindexPlugin",
            extended: "",
            jars: vec![
                format!("reindex-client-{v}.jar"),
                format!("opensearch-rest-client-{v}.jar"),
                format!("opensearch-ssl-config-{v}.jar"),
                "httpclient-4.5.14.jar".into(),
                "httpcore-4.4.16.jar".into(),
                "httpasyncclient-4.1.5.jar".into(),
                "httpcore-nio-4.4.16.jar".into(),
                "commons-codec-1.18.0.jar".into(),
                "commons-logging-1.2.jar".into(),
            ],
            // The module's own policy: reindex-from-remote opens connections with the REST client.
            policy: Some(
                "grant {\n  permission java.net.SocketPermission \"*\", \"connect\";\n};\n\
                 grant codeBase \"${codebase.opensearch-rest-client}\" {\n  \
                 permission java.net.NetPermission \"getProxySelector\";\n};\n\
                 grant codeBase \"${codebase.httpasyncclient}\" {\n  \
                 permission java.net.NetPermission \"getProxySelector\";\n};\n",
            ),
        },
    ]
}

const SECURITY_PLUGIN: &str = "opensearch-security";

/// What `OPENSEARCH_PLUGINS` lists: the modules and plugins added to the bare distribution.
fn added() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = modules(VERSION).iter().map(|m| m.name).collect();
    names.push(SECURITY_PLUGIN);
    names
}

pub struct OpenSearch;

pub(super) fn install_dir(ctx: &Ctx, dist: &Dist) -> PathBuf {
    ctx.home.join(dist.name).join(dist.version)
}

fn marker_path(ctx: &Ctx, dist: &Dist) -> PathBuf {
    install_dir(ctx, dist).join(".tributary-installed")
}

/// The marker's content: a change to what is installed makes `install` redo it.
fn marker_content(dist: &Dist) -> String {
    format!(
        "opensearch {}\nmodules {}\nplugins {SECURITY_PLUGIN}-{}\nlayout {}\n",
        dist.version,
        modules(dist.version)
            .iter()
            .map(|m| m.name)
            .collect::<Vec<_>>()
            .join(","),
        dist.security_version,
        dist.layout
    )
}

/// Whether `dist` is installed as pinned (else `install` runs Maven and the JDK's `jar`).
pub(super) fn is_installed(ctx: &Ctx, dist: &Dist) -> bool {
    let marker = marker_path(ctx, dist);
    installed(&marker) && std::fs::read_to_string(&marker).is_ok_and(|m| m == marker_content(dist))
}

/// The toolchains running `dist` needs now: Java, and Maven with a JDK while it is not installed.
pub(super) fn toolchains(ctx: &Ctx, dist: &Dist) -> Vec<Toolchain> {
    if is_installed(ctx, dist) {
        vec![Toolchain::Java]
    } else {
        vec![Toolchain::Jdk, Toolchain::Maven]
    }
}

fn url() -> String {
    format!("http://{HOST}:{HTTP_PORT}")
}

impl Component for OpenSearch {
    fn name(&self) -> &'static str {
        "opensearch"
    }

    fn install(&self, ctx: &Ctx) -> Result<()> {
        install(ctx, &PLAIN)
    }

    fn start(&self, ctx: &Ctx) -> Result<()> {
        if self.ready(ctx) {
            progress("opensearch already running");
            return Ok(());
        }
        if !ctx.is_running("opensearch") {
            let data = ctx.data_dir("opensearch")?;
            for d in ["data", "logs", "tmp"] {
                std::fs::create_dir_all(data.join(d))?;
            }
            let java_home = java_home()?;
            let bin = install_dir(ctx, &PLAIN).join("bin/opensearch");
            let mut cmd = if running_as_root() {
                require_tool("unshare", "apt-get install -y util-linux")?;
                let mut c = Command::new("unshare");
                c.args(["--user", "--map-user=1000", "--map-group=1000", "--"])
                    .arg(&bin);
                c
            } else {
                Command::new(&bin)
            };
            let settings = [
                "cluster.name=tributary".to_string(),
                "node.name=tributary-0".into(),
                "discovery.type=single-node".into(),
                format!("network.host={HOST}"),
                format!("http.port={HTTP_PORT}"),
                format!("path.data={}", data.join("data").display()),
                format!("path.logs={}", data.join("logs").display()),
                // The disk may be fairly full: never stop allocating shards or mark indices
                // read-only because of it.
                "cluster.routing.allocation.disk.threshold_enabled=false".into(),
                // Installed for a later TLS setup; off until then.
                "plugins.security.disabled=true".into(),
            ];
            for s in &settings {
                cmd.arg(format!("-E{s}"));
            }
            cmd.env("JAVA_HOME", &java_home)
                .env("OPENSEARCH_JAVA_HOME", &java_home)
                .env(
                    "OPENSEARCH_JAVA_OPTS",
                    // After jvm.options, so these win. The launcher runs the JVM from the
                    // install folder: keep the GC log (taken out of jvm.options at install),
                    // heap dumps and crash files under the data folder instead.
                    format!(
                        "{HEAP} -XX:HeapDumpPath={tmp} -XX:ErrorFile={logs}/hs_err_pid%p.log \
                         -Xlog:gc*,gc+age=trace,safepoint:file={logs}/gc.log:utctime,pid,tags:\
                         filecount=4,filesize=16m",
                        tmp = data.join("tmp").display(),
                        logs = data.join("logs").display()
                    ),
                )
                .env("OPENSEARCH_TMPDIR", data.join("tmp"))
                .current_dir(&data);
            let pid = ctx.spawn("opensearch", cmd)?;
            progress(&format!("opensearch started (pid {pid})"));
        }
        // A cold JVM on a busy 2-core machine: allow a few minutes.
        ctx.wait_ready("opensearch", Duration::from_secs(240), || self.ready(ctx))
    }

    fn processes(&self) -> Vec<&'static str> {
        vec!["opensearch"]
    }

    fn ready(&self, _ctx: &Ctx) -> bool {
        cluster_health().is_some_and(|s| s == "green" || s == "yellow")
    }

    fn toolchains(&self, ctx: &Ctx) -> Vec<Toolchain> {
        toolchains(ctx, &PLAIN)
    }

    fn env(&self, _ctx: &Ctx) -> Vec<(&'static str, String)> {
        vec![
            ("OPENSEARCH_URL", url()),
            ("OPENSEARCH_VERSION", VERSION.to_string()),
            ("OPENSEARCH_PLUGINS", added().join(",")),
        ]
    }
}

/// Install `dist` (a no-op when its marker says it is there): fetch what its pom pins with `mvn`,
/// verify every file against its `checksums`, unpack the distribution, lay out the modules and
/// install opensearch-security with the distribution's own installer.
pub(super) fn install(ctx: &Ctx, dist: &Dist) -> Result<()> {
    let version = dist.version;
    let marker = marker_path(ctx, dist);
    if is_installed(ctx, dist) {
        return Ok(());
    }
    if ctx.is_running(dist.name) {
        bail!(
            "the running {} is not the pinned install ({}); stop it first: cargo xtask stack down",
            dist.name,
            marker.display()
        );
    }
    require_tool("mvn", "apt-get install -y maven")?;
    require_tool("unzip", "apt-get install -y unzip")?;
    let java_home = java_home()?;

    let base = ctx.home.join(dist.name);
    let downloads = base.join("downloads").join(version);
    progress(&format!(
        "fetching OpenSearch {version} and its modules for {} with mvn (cache ~/.m2)",
        dist.name
    ));
    let maven = ctx.repo.join("xtask/maven").join(dist.name);
    // `-q` keeps Maven's per-file lines out; the heartbeat says it is still downloading.
    crate::heartbeat::run(
        "stack",
        &format!("mvn (OpenSearch {version})"),
        Command::new("mvn")
            .args(["-q", "-B", "-C", "-Dstyle.color=never", "-f"])
            .arg(maven.join("pom.xml"))
            .args(["dependency:copy-dependencies", "-DexcludeTransitive=true"])
            .arg(format!("-DoutputDirectory={}", downloads.display())),
    )?;
    let checksums = maven.join("checksums");
    let verified = verify_checksums(&checksums, &downloads)?;
    let checked = |file: &str| -> Result<PathBuf> {
        if !verified.iter().any(|v| v == file) {
            bail!("{file} has no checksum in {}", checksums.display());
        }
        Ok(downloads.join(file))
    };

    // Unpack into a scratch folder and move it into place at the end, so an interrupted
    // install never leaves a half-made node behind the version's folder name.
    let dest = install_dir(ctx, dist);
    let scratch = base.join(format!("{version}.partial"));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    run_checked(
        Command::new("unzip")
            .arg("-q")
            .arg(checked(&format!("opensearch-{version}.zip"))?)
            .arg("-d")
            .arg(&scratch),
    )?;
    let home = scratch.join(format!("opensearch-{version}"));

    for m in modules(version) {
        let dir = home.join("modules").join(m.name);
        std::fs::create_dir_all(&dir)?;
        for jar in &m.jars {
            std::fs::copy(checked(jar)?, dir.join(jar))
                .with_context(|| format!("copying {jar}"))?;
        }
        std::fs::write(
            dir.join("plugin-descriptor.properties"),
            descriptor(&m, version),
        )?;
        if let Some(policy) = m.policy {
            std::fs::write(dir.join("plugin-security.policy"), policy)?;
        }
    }

    let zip = checked(&format!("{SECURITY_PLUGIN}-{}.zip", dist.security_version))?;
    install_security(dist, &zip, &home, &scratch, &java_home)?;

    // jvm.options logs GC to `logs/gc.log`, relative to the install folder the launcher runs
    // from; `start` sends it to the data folder instead.
    let jvm_options = home.join("config/jvm.options");
    let options: String = std::fs::read_to_string(&jvm_options)?
        .lines()
        .map(|l| {
            if l.contains("-Xlog:") && l.contains("file=logs/gc.log") {
                format!("# {l} (moved to OPENSEARCH_JAVA_OPTS by cargo xtask stack up)\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&jvm_options, options)?;

    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&home, &dest)
        .with_context(|| format!("moving {} to {}", home.display(), dest.display()))?;
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::write(marker_path(ctx, dist), marker_content(dist))?;
    let mut added: Vec<&str> = modules(version).iter().map(|m| m.name).collect();
    added.push(SECURITY_PLUGIN);
    progress(&format!(
        "OpenSearch {version} installed in {} with {}",
        dest.display(),
        added.join(", ")
    ));
    Ok(())
}

fn descriptor(m: &Module, version: &str) -> String {
    format!(
        "# Written by `cargo xtask stack up` (xtask/src/stack/opensearch.rs).\n\
         description={}\nversion={version}\nname={}\nclassname={}\njava.version=11\n\
         opensearch.version={version}\ncustom.foldername=\nextended.plugins={}\n\
         has.native.controller=false\n",
        m.description, m.name, m.classname, m.extended
    )
}

/// Install opensearch-security with the distribution's own installer: as published when it was
/// built for `dist.version`, else after widening the OpenSearch version its descriptor accepts to
/// `dist.security_range` (see the module docs).
fn install_security(
    dist: &Dist,
    zip: &Path,
    home: &Path,
    scratch: &Path,
    java_home: &Path,
) -> Result<()> {
    let staging = scratch.join("security-zip");
    std::fs::create_dir_all(&staging)?;
    run_checked(
        Command::new("unzip")
            .arg("-q")
            .arg(zip)
            .arg("-d")
            .arg(&staging),
    )?;
    let desc_path = staging.join("plugin-descriptor.properties");
    let desc = std::fs::read_to_string(&desc_path)?;
    let pinned = format!("opensearch.version={}", version_of(dist.security_version));
    if !desc.lines().any(|l| l.trim() == pinned) {
        bail!("{} does not say {pinned}", zip.display());
    }
    let to_install = match dist.security_range {
        None if version_of(dist.security_version) == dist.version => zip.to_path_buf(),
        None => bail!(
            "{SECURITY_PLUGIN} {} is built for OpenSearch {}, not {}",
            dist.security_version,
            version_of(dist.security_version),
            dist.version
        ),
        Some(range) => {
            let desc: String = desc
                .lines()
                .map(|l| {
                    if l.trim() == pinned {
                        format!("dependencies={{\"opensearch\": \"{range}\"}}\n")
                    } else {
                        format!("{l}\n")
                    }
                })
                .collect();
            std::fs::write(&desc_path, desc)?;
            let patched = scratch.join(format!("{SECURITY_PLUGIN}-{}.zip", dist.security_version));
            run_checked(
                Command::new(java_home.join("bin/jar"))
                    .args(["--create", "--no-manifest", "--file"])
                    .arg(&patched)
                    .arg("-C")
                    .arg(&staging)
                    .arg("."),
            )?;
            patched
        }
    };
    progress(&format!(
        "installing plugin {SECURITY_PLUGIN} {} on OpenSearch {}",
        dist.security_version, dist.version
    ));
    let mut url = "file://".to_string();
    url.push_str(&to_install.display().to_string());
    run_checked(
        Command::new(home.join("bin/opensearch-plugin"))
            .args(["install", "--batch", "--silent", &url])
            .env("JAVA_HOME", java_home)
            .env("OPENSEARCH_JAVA_HOME", java_home),
    )?;
    Ok(())
}

/// `2.19.4.0` (a plugin's version) -> `2.19.4` (the OpenSearch version it was built for).
fn version_of(plugin_version: &str) -> &str {
    plugin_version
        .rsplit_once('.')
        .map_or(plugin_version, |(v, _)| v)
}

/// Check every file listed in `checksums` (`algorithm hex file` lines) against the downloads;
/// returns the verified file names.
fn verify_checksums(checksums: &Path, dir: &Path) -> Result<Vec<String>> {
    let body = std::fs::read_to_string(checksums)
        .with_context(|| format!("reading {}", checksums.display()))?;
    let mut verified = Vec::new();
    for line in body.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let [alg, want, file] = line.split_whitespace().collect::<Vec<_>>()[..] else {
            bail!("bad line in {}: {line}", checksums.display());
        };
        let tool = match alg {
            "sha1" => "sha1sum",
            "sha512" => "sha512sum",
            other => bail!(
                "unknown checksum algorithm {other} in {}",
                checksums.display()
            ),
        };
        let out = Command::new(tool)
            .arg(dir.join(file))
            .output()
            .with_context(|| format!("running {tool}"))?;
        if !out.status.success() {
            bail!(
                "{tool} {file} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let got = String::from_utf8_lossy(&out.stdout);
        let got = got.split_whitespace().next().unwrap_or_default();
        if !got.eq_ignore_ascii_case(want) {
            bail!(
                "{alg} of {} is {got}, expected {want} ({})",
                dir.join(file).display(),
                checksums.display()
            );
        }
        verified.push(file.to_string());
    }
    Ok(verified)
}

/// The machine's JDK: `readlink -f $(which java)`, less `/bin/java`.
pub(super) fn java_home() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let java = std::env::split_paths(&path)
        .map(|d| d.join("java"))
        .find(|p| p.is_file())
        .context(
            "`java` is not on PATH; install a JDK 17: apt-get install -y openjdk-17-jdk-headless",
        )?;
    let real = java
        .canonicalize()
        .with_context(|| format!("resolving {}", java.display()))?;
    real.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .with_context(|| format!("{} is not in a JDK's bin folder", real.display()))
}

pub(super) fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// The cluster's status (`green`, `yellow`, `red`) from a plain HTTP/1.1 request, or `None` when
/// the node does not answer 200.
fn cluster_health() -> Option<String> {
    let addr: SocketAddr = format!("{HOST}:{HTTP_PORT}").parse().ok()?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    let req = format!(
        "GET /_cluster/health?wait_for_status=yellow&timeout=1s HTTP/1.1\r\nHost: {HOST}:{HTTP_PORT}\r\n\
         Connection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    if head.split_whitespace().nth(1) != Some("200") {
        return None;
    }
    let json = &body[body.find('{')?..=body.rfind('}')?];
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v.get("status")?.as_str().map(str::to_string)
}
