//! OpenSearch: one node on 127.0.0.1:9200, fetched from Maven Central with `mvn`.
//!
//! Maven Central carries the integ-test distribution of OpenSearch (server, launcher scripts and
//! the transport-netty4 module; no bundled JDK, no other module). Everything else a full
//! distribution would hold comes from what Central publishes next to it, as pinned in
//! `xtask/maven/opensearch/pom.xml`:
//! - the modules mapper-extras (`scaled_float`), lang-painless, analysis-common and reindex:
//!   Central has their jars (and their dependencies), not their module folders, so the install
//!   lays out `modules/<name>/` itself: the jars, a `plugin-descriptor.properties` and the module's
//!   security policy where it has one; the same shape as transport-netty4, whose module folder is
//!   its `-client` jar plus a descriptor;
//! - the plugin opensearch-security, installed with `opensearch-plugin` and disabled
//!   (`plugins.security.disabled=true`). Central has it only for 2.19.3.0 and 2.19.4.0, so its
//!   descriptor is rewritten from `opensearch.version=2.19.4` to the range `~2.19.4`
//!   (2.19.4 <= v < 2.20.0), which OpenSearch 2.x descriptors support.
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

/// The newest 2.19 patch on Maven Central (2.x is the line that runs on Java 17).
pub(super) const VERSION: &str = "2.19.6";
/// The newest 2.19 opensearch-security on Maven Central.
const SECURITY_VERSION: &str = "2.19.4.0";
const SECURITY_RANGE: &str = "~2.19.4";
/// Bump when `install` lays the folder out differently, so existing installs are redone.
const INSTALL_LAYOUT: u32 = 2;
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

fn modules() -> Vec<Module> {
    let v = VERSION;
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
    let mut names: Vec<&'static str> = modules().iter().map(|m| m.name).collect();
    names.push(SECURITY_PLUGIN);
    names
}

pub struct OpenSearch;

pub(super) fn install_dir(ctx: &Ctx) -> PathBuf {
    ctx.home.join("opensearch").join(VERSION)
}

fn marker_path(ctx: &Ctx) -> PathBuf {
    install_dir(ctx).join(".tributary-installed")
}

/// The marker's content: a change to what is installed makes `install` redo it.
fn marker_content() -> String {
    format!(
        "opensearch {VERSION}\nmodules {}\nplugins {SECURITY_PLUGIN}-{SECURITY_VERSION}\n\
         layout {INSTALL_LAYOUT}\n",
        modules()
            .iter()
            .map(|m| m.name)
            .collect::<Vec<_>>()
            .join(",")
    )
}

fn url() -> String {
    format!("http://{HOST}:{HTTP_PORT}")
}

impl Component for OpenSearch {
    fn name(&self) -> &'static str {
        "opensearch"
    }

    fn install(&self, ctx: &Ctx) -> Result<()> {
        let marker = marker_path(ctx);
        if installed(&marker) && std::fs::read_to_string(&marker)? == marker_content() {
            return Ok(());
        }
        if ctx.is_running("opensearch") {
            bail!(
                "the running OpenSearch is not the pinned install ({}); \
                 stop it first: cargo xtask stack down",
                marker.display()
            );
        }
        require_tool("mvn", "apt-get install -y maven")?;
        require_tool("unzip", "apt-get install -y unzip")?;
        let java_home = java_home()?;

        let downloads = ctx.home.join("opensearch/downloads").join(VERSION);
        progress(&format!(
            "fetching OpenSearch {VERSION} and its modules with mvn (cache ~/.m2)"
        ));
        let pom = ctx.repo.join("xtask/maven/opensearch/pom.xml");
        run_checked(
            Command::new("mvn")
                .args(["-q", "-B", "-C", "-Dstyle.color=never", "-f"])
                .arg(&pom)
                .args(["dependency:copy-dependencies", "-DexcludeTransitive=true"])
                .arg(format!("-DoutputDirectory={}", downloads.display())),
        )?;
        let checksums = ctx.repo.join("xtask/maven/opensearch/checksums");
        let verified = verify_checksums(&checksums, &downloads)?;

        // Unpack into a scratch folder and move it into place at the end, so an interrupted
        // install never leaves a half-made node behind the version's folder name.
        let dest = install_dir(ctx);
        let scratch = ctx
            .home
            .join("opensearch")
            .join(format!("{VERSION}.partial"));
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch)?;
        let zip = downloads.join(format!("opensearch-{VERSION}.zip"));
        run_checked(
            Command::new("unzip")
                .arg("-q")
                .arg(&zip)
                .arg("-d")
                .arg(&scratch),
        )?;
        let home = scratch.join(format!("opensearch-{VERSION}"));

        for m in modules() {
            let dir = home.join("modules").join(m.name);
            std::fs::create_dir_all(&dir)?;
            for jar in &m.jars {
                if !verified.iter().any(|v| v == jar) {
                    bail!("{jar} has no checksum in {}", checksums.display());
                }
                std::fs::copy(downloads.join(jar), dir.join(jar))
                    .with_context(|| format!("copying {jar}"))?;
            }
            std::fs::write(
                dir.join("plugin-descriptor.properties"),
                descriptor(&m, &format!("opensearch.version={VERSION}")),
            )?;
            if let Some(policy) = m.policy {
                std::fs::write(dir.join("plugin-security.policy"), policy)?;
            }
        }

        install_security(&home, &scratch, &downloads, &java_home)?;

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
        std::fs::write(marker_path(ctx), marker_content())?;
        progress(&format!(
            "OpenSearch {VERSION} installed in {} with {}",
            dest.display(),
            added().join(", ")
        ));
        Ok(())
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
            let bin = install_dir(ctx).join("bin/opensearch");
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

    fn env(&self, _ctx: &Ctx) -> Vec<(&'static str, String)> {
        vec![
            ("OPENSEARCH_URL", url()),
            ("OPENSEARCH_VERSION", VERSION.to_string()),
            ("OPENSEARCH_PLUGINS", added().join(",")),
        ]
    }
}

fn descriptor(m: &Module, version_line: &str) -> String {
    format!(
        "# Written by `cargo xtask stack up` (xtask/src/stack/opensearch.rs).\n\
         description={}\nversion={VERSION}\nname={}\nclassname={}\njava.version=11\n\
         {version_line}\ncustom.foldername=\nextended.plugins={}\nhas.native.controller=false\n",
        m.description, m.name, m.classname, m.extended
    )
}

/// Install opensearch-security with the distribution's own installer, after widening the
/// OpenSearch version its descriptor accepts (see the module docs).
fn install_security(home: &Path, scratch: &Path, downloads: &Path, java_home: &Path) -> Result<()> {
    let zip = downloads.join(format!("{SECURITY_PLUGIN}-{SECURITY_VERSION}.zip"));
    let staging = scratch.join("security-zip");
    std::fs::create_dir_all(&staging)?;
    run_checked(
        Command::new("unzip")
            .arg("-q")
            .arg(&zip)
            .arg("-d")
            .arg(&staging),
    )?;
    let desc_path = staging.join("plugin-descriptor.properties");
    let desc = std::fs::read_to_string(&desc_path)?;
    let pinned = format!("opensearch.version={}", version_of(SECURITY_VERSION));
    if !desc.lines().any(|l| l.trim() == pinned) {
        bail!("{} does not say {pinned}", zip.display());
    }
    let desc: String = desc
        .lines()
        .map(|l| {
            if l.trim() == pinned {
                format!("dependencies={{\"opensearch\": \"{SECURITY_RANGE}\"}}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&desc_path, desc)?;
    let patched = scratch.join(format!("{SECURITY_PLUGIN}-{SECURITY_VERSION}.zip"));
    run_checked(
        Command::new(java_home.join("bin/jar"))
            .args(["--create", "--no-manifest", "--file"])
            .arg(&patched)
            .arg("-C")
            .arg(&staging)
            .arg("."),
    )?;
    progress(&format!(
        "installing plugin {SECURITY_PLUGIN} {SECURITY_VERSION}"
    ));
    let mut url = "file://".to_string();
    url.push_str(&patched.display().to_string());
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
