//! Prerequisites of `demo`, `test`, `stack up` (and `gen`, `bench`), checked in their first
//! seconds, before any build or download, so a fresh machine learns everything it lacks at once
//! instead of one piece per failure fifteen minutes apart.
//!
//! - **Debian packages** ([`PACKAGES`]): what the stack runs or calls (curl, unzip, Debian's
//!   prometheus, CA certificates for the downloads) and what the runtime's build needs (a C++
//!   compiler and libclang for RocksDB). Asked of `dpkg-query`; without dpkg, looked for on the
//!   machine. When some are missing and the process runs as root with apt-get, they are installed
//!   here (`apt-get update`, then `apt-get install -y`, non-interactively); otherwise the command
//!   fails at once naming every missing piece and the one command that installs them.
//! - **Toolchains**, only those this machine will use now (see `Component::toolchains`): Go 1.26+
//!   while a pinned Go binary is not built yet and for `test` (it builds the Argo CD health
//!   check's checker, `tests/argocd`), Java 17+ (a JDK while OpenSearch is not installed),
//!   Maven while OpenSearch is not installed, Node 18+ and npm while the Kinesis servers are not
//!   installed, and for `test` (the dashboards' type check); rustfmt and clippy for `test`. A
//!   missing one is named with how to get it; they are never installed here.
//! - **Mount namespaces**: the node agent runs every pod with `unshare --mount --uts`, which needs
//!   root (or CAP_SYS_ADMIN); tried once with `true`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Result, bail};

use crate::stack::{self, Ctx};

/// What a command needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Needs {
    /// The local stack (`stack up`, which `demo` and `test` run).
    pub stack: bool,
    /// A build of the job runtime (RocksDB's C++ and bindgen).
    pub build: bool,
    /// `cargo fmt` and `cargo clippy`.
    pub lint: bool,
    /// Node and npm for the type check of the chart's Grafana dashboards (`tsc`, from npm).
    pub dashboards: bool,
}

impl Needs {
    pub const STACK: Self = Self {
        stack: true,
        build: false,
        lint: false,
        dashboards: false,
    };
    pub const BUILD: Self = Self {
        stack: false,
        build: true,
        lint: false,
        dashboards: false,
    };
    pub const DEMO: Self = Self {
        stack: true,
        build: true,
        lint: false,
        dashboards: false,
    };
    pub const TEST: Self = Self {
        stack: true,
        build: true,
        lint: true,
        dashboards: true,
    };
}

/// A toolchain the stack's install or start steps run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Toolchain {
    Go,
    Java,
    /// A JDK (`jar`): installing OpenSearch repacks a plugin zip.
    Jdk,
    Maven,
    Node,
    Npm,
}

/// How to tell, without dpkg, that what a package provides is there.
#[derive(Clone, Copy, Debug)]
enum Probe {
    /// A command on PATH.
    Command(&'static str),
    /// A file.
    File(&'static str),
    /// An environment variable that points the build elsewhere (LIBCLANG_PATH).
    Env(&'static str),
    /// A `libclang*.so*` in the usual library folders (only asked without dpkg: on Debian a
    /// bare libclang1 lacks the headers bindgen needs).
    LibClang,
}

/// One Debian package a command needs.
#[derive(Debug)]
pub struct Package {
    pub name: &'static str,
    /// What it is for, in the message.
    pub why: &'static str,
    /// Needed to build the runtime (else: to run the stack).
    build: bool,
    /// Any of these also satisfies the need.
    probes: &'static [Probe],
}

pub const PACKAGES: &[Package] = &[
    Package {
        name: "curl",
        why: "the stack's readiness probes and the demo's requests",
        build: false,
        probes: &[Probe::Command("curl")],
    },
    Package {
        name: "ca-certificates",
        why: "HTTPS downloads from the Go module proxy, Maven Central and npm",
        build: false,
        probes: &[Probe::File("/etc/ssl/certs/ca-certificates.crt")],
    },
    Package {
        name: "unzip",
        why: "unpacking OpenSearch",
        build: false,
        probes: &[Probe::Command("unzip")],
    },
    Package {
        name: "prometheus",
        why: "the stack's Prometheus server, /usr/bin/prometheus (and promtool, which checks the chart's alerts)",
        build: false,
        probes: &[Probe::File("/usr/bin/prometheus")],
    },
    Package {
        name: "g++",
        why: "RocksDB's C++ (and the C of other crates) when the runtime builds",
        build: true,
        probes: &[Probe::Command("c++")],
    },
    Package {
        name: "libclang-dev",
        why: "bindgen, which writes RocksDB's Rust bindings when the runtime builds",
        build: true,
        probes: &[Probe::Env("LIBCLANG_PATH"), Probe::LibClang],
    },
];

/// The packages `needs` asks for.
pub fn wanted(needs: Needs) -> Vec<&'static Package> {
    PACKAGES
        .iter()
        .filter(|p| if p.build { needs.build } else { needs.stack })
        .collect()
}

/// The installed packages in an answer of
/// `dpkg-query -W -f='${Package} ${db:Status-Status}\n' <names>` (packages dpkg does not know
/// are left out of it, on stderr).
pub fn installed_in_dpkg_answer(answer: &str) -> BTreeSet<&str> {
    answer
        .lines()
        .filter_map(|l| {
            let (name, status) = l.trim().split_once(' ')?;
            (status.trim() == "installed").then_some(name)
        })
        .collect()
}

/// The names in `wanted` that the dpkg answer does not show installed.
pub fn missing_from_dpkg_answer<'a>(wanted: &[&'a str], answer: &str) -> Vec<&'a str> {
    let installed = installed_in_dpkg_answer(answer);
    wanted
        .iter()
        .copied()
        .filter(|n| !installed.contains(n))
        .collect()
}

/// How missing Debian packages can be installed here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Installer {
    /// Root with apt-get: this process installs them.
    Root,
    /// apt-get, but not root.
    Sudo,
    /// No apt-get (not a Debian-like system).
    None,
}

/// How a missing toolchain is got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fix {
    /// A Debian package (with apt-get; elsewhere, its equivalent).
    Package(&'static str),
    /// Anything else, as a sentence.
    Text(String),
}

/// A toolchain that is missing or too old.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// What is needed, e.g. `go 1.26 or newer`.
    pub what: String,
    /// What was found instead, e.g. `not found` or `go1.22.5 at /usr/bin/go`.
    pub found: String,
    pub fix: Fix,
}

fn apt_command(installer: Installer, packages: &[&str]) -> String {
    let sudo = match installer {
        Installer::Root => "",
        _ => "sudo ",
    };
    format!(
        "{sudo}apt-get install -y --no-install-recommends {}",
        packages.join(" ")
    )
}

/// The message of a failed check: every missing piece, then the one command that installs the
/// Debian packages.
pub fn message(
    command: &str,
    packages: &[&Package],
    problems: &[Problem],
    installer: Installer,
    systemd: bool,
) -> String {
    let mut m = format!("`cargo xtask {command}` cannot start on this machine; it lacks:\n");
    let kind = if installer == Installer::None {
        "package"
    } else {
        "Debian package"
    };
    for p in packages {
        m.push_str(&format!("  - {kind} {}: {}\n", p.name, p.why));
    }
    let mut apt: Vec<&str> = packages.iter().map(|p| p.name).collect();
    for p in problems {
        let how = match (&p.fix, installer) {
            (Fix::Package(pkg), Installer::None) => format!("install {pkg} or its equivalent"),
            (Fix::Package(pkg), _) => {
                apt.push(pkg);
                format!("Debian package {pkg}")
            }
            (Fix::Text(t), _) => t.clone(),
        };
        m.push_str(&format!("  - {} ({}): {how}\n", p.what, p.found));
    }
    if !apt.is_empty() {
        if installer == Installer::None {
            m.push_str(&format!(
                "Install with your system's package manager: {}\n",
                apt.join(", ")
            ));
        } else {
            m.push_str(&format!(
                "Install the packages with:\n  {}\n",
                apt_command(installer, &apt)
            ));
            if apt.contains(&"prometheus") && systemd {
                let sudo = if installer == Installer::Root {
                    ""
                } else {
                    "sudo "
                };
                m.push_str(&format!(
                    "then stop the service the prometheus package starts on port {}:\n  \
                     {sudo}systemctl disable --now prometheus\n",
                    stack::PROMETHEUS_PORT
                ));
            }
        }
        if installer == Installer::Root && !packages.is_empty() {
            m.push_str(&format!(
                "(`cargo xtask {command}` installs missing Debian packages itself, as root, once \
                 the toolchains above are there.)\n"
            ));
        }
    }
    m.push_str("then run it again.");
    m
}

// ---------------------------------------------------------------------------------------------
// Looking at the machine

fn say(msg: &str) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "[prereqs] {msg}");
    let _ = err.flush();
}

/// `name` as found on PATH.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

fn has_libclang() -> bool {
    let mut dirs: Vec<PathBuf> = [
        "/usr/lib",
        "/usr/lib64",
        "/usr/local/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("llvm") {
                dirs.push(e.path().join("lib"));
            }
        }
    }
    dirs.iter().any(|d| {
        std::fs::read_dir(d)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with("libclang") && n.contains(".so")
            })
    })
}

fn probe_ok(p: Probe, with_dpkg: bool) -> bool {
    match p {
        Probe::Command(c) => on_path(c).is_some(),
        Probe::File(f) => Path::new(f).exists(),
        Probe::Env(v) => std::env::var_os(v).is_some_and(|v| !v.is_empty()),
        Probe::LibClang => !with_dpkg && has_libclang(),
    }
}

/// The packages of `wanted` missing on this machine.
fn missing_packages(wanted: &[&'static Package]) -> Vec<&'static Package> {
    let with_dpkg = on_path("dpkg-query").is_some();
    let not_installed: Vec<&str> = if with_dpkg {
        let names: Vec<&str> = wanted.iter().map(|p| p.name).collect();
        let out = Command::new("dpkg-query")
            .args(["-W", "-f=${Package} ${db:Status-Status}\\n"])
            .args(&names)
            .stderr(Stdio::null())
            .output();
        let answer = out
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        missing_from_dpkg_answer(&names, &answer)
    } else {
        wanted.iter().map(|p| p.name).collect()
    };
    wanted
        .iter()
        .copied()
        .filter(|p| not_installed.contains(&p.name))
        .filter(|p| !p.probes.iter().any(|&pr| probe_ok(pr, with_dpkg)))
        .collect()
}

/// `go version go1.26.8 linux/amd64` -> (1, 26).
pub fn go_version(out: &str) -> Option<(u32, u32)> {
    let v = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix("go1."))?;
    let minor: String = v.chars().take_while(char::is_ascii_digit).collect();
    Some((1, minor.parse().ok()?))
}

/// The major version in `java -version`'s first line: `openjdk version "17.0.15" ...` -> 17,
/// `java version "1.8.0_292"` -> 8.
pub fn java_major(out: &str) -> Option<u32> {
    let quoted = out.split('"').nth(1)?;
    let mut parts = quoted.split(['.', '_', '-', '+']);
    match parts.next()?.parse().ok()? {
        1 => parts.next()?.parse().ok(),
        n => Some(n),
    }
}

/// `v20.20.2` -> 20.
pub fn node_major(out: &str) -> Option<u32> {
    out.trim()
        .strip_prefix('v')?
        .split('.')
        .next()?
        .parse()
        .ok()
}

fn output_of(cmd: &mut Command) -> Option<String> {
    let out = cmd.stdin(Stdio::null()).output().ok()?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    out.status.success().then_some(text)
}

const GO_MIN: (u32, u32) = (1, 26);
const JAVA_MIN: u32 = 17;
const NODE_MIN: u32 = 18;

fn check_go(ok: &mut Vec<String>, problems: &mut Vec<Problem>) {
    let what = format!("go {}.{} or newer", GO_MIN.0, GO_MIN.1);
    let fix = Fix::Text(
        "https://go.dev/doc/install (Debian's golang package is older), or set GO=/path/to/go"
            .into(),
    );
    let Some(go) = stack::find_go() else {
        problems.push(Problem {
            what,
            found: "not on PATH, no $GO, no /usr/local/go".into(),
            fix,
        });
        return;
    };
    if go.is_absolute() && !go.is_file() {
        problems.push(Problem {
            what,
            found: format!("{} does not exist", go.display()),
            fix,
        });
        return;
    }
    let out = output_of(Command::new(&go).arg("version")).unwrap_or_default();
    match go_version(&out) {
        Some(v) if v >= GO_MIN => ok.push(format!("go 1.{}", v.1)),
        found => problems.push(Problem {
            what,
            found: match found {
                Some(v) => format!("go 1.{} at {}", v.1, go.display()),
                None => format!("{} does not tell its version", go.display()),
            },
            fix,
        }),
    }
}

fn check_java(jdk: bool, ok: &mut Vec<String>, problems: &mut Vec<Problem>) {
    let what = if jdk {
        format!("a JDK {JAVA_MIN} or newer")
    } else {
        format!("java {JAVA_MIN} or newer")
    };
    let fix = Fix::Package("openjdk-17-jdk-headless");
    let Some(java) = on_path("java") else {
        problems.push(Problem {
            what,
            found: "not on PATH".into(),
            fix,
        });
        return;
    };
    let out = output_of(Command::new(&java).arg("-version")).unwrap_or_default();
    match java_major(&out) {
        Some(v) if v >= JAVA_MIN => {
            let jar = java
                .canonicalize()
                .ok()
                .and_then(|j| j.parent().map(|b| b.join("jar")));
            if jdk && !jar.as_deref().is_some_and(Path::is_file) {
                problems.push(Problem {
                    what,
                    found: format!("java {v} without `jar` beside it, a JRE"),
                    fix,
                });
            } else {
                ok.push(format!("java {v}"));
            }
        }
        found => problems.push(Problem {
            what,
            found: match found {
                Some(v) => format!("java {v} at {}", java.display()),
                None => format!("{} does not tell its version", java.display()),
            },
            fix,
        }),
    }
}

fn check_node(ok: &mut Vec<String>, problems: &mut Vec<Problem>) {
    let what = format!("node {NODE_MIN} or newer");
    let fix = Fix::Package("nodejs");
    let out = output_of(Command::new("node").arg("--version"));
    match out.as_deref().and_then(node_major) {
        Some(v) if v >= NODE_MIN => ok.push(format!("node {v}")),
        Some(v) => problems.push(Problem {
            what,
            found: format!("node {v}"),
            fix,
        }),
        None => problems.push(Problem {
            what,
            found: "not on PATH".into(),
            fix,
        }),
    }
}

fn check_command(name: &str, fix: Fix, ok: &mut Vec<String>, problems: &mut Vec<Problem>) {
    if on_path(name).is_some() {
        ok.push(name.to_string());
    } else {
        problems.push(Problem {
            what: name.to_string(),
            found: "not on PATH".into(),
            fix,
        });
    }
}

fn check_lint(ok: &mut Vec<String>, problems: &mut Vec<Problem>) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for tool in ["fmt", "clippy"] {
        if output_of(Command::new(&cargo).args([tool, "--version"])).is_some() {
            ok.push(format!("cargo {tool}"));
        } else {
            problems.push(Problem {
                what: format!("cargo {tool}"),
                found: "not installed".into(),
                fix: Fix::Text("rustup component add rustfmt clippy".into()),
            });
        }
    }
}

/// The node agent's `unshare --mount --uts`, tried once.
fn check_namespaces(problems: &mut Vec<Problem>) {
    let out = Command::new("unshare")
        .args(["--mount", "--uts", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => problems.push(Problem {
            what: "mount namespaces for the node agent's pods".into(),
            found: format!(
                "`unshare --mount --uts true` failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            fix: Fix::Text(
                "run as root (or with CAP_SYS_ADMIN): the node agent starts every pod with \
                 `unshare --mount --uts`"
                    .into(),
            ),
        }),
        Err(_) => problems.push(Problem {
            what: "unshare".into(),
            found: "not on PATH".into(),
            fix: Fix::Package("util-linux"),
        }),
    }
}

/// Check everything `needs` asks for; install missing Debian packages when root with apt-get;
/// otherwise fail naming every missing piece. `command` names the xtask command in messages.
pub fn ensure(ctx: &Ctx, needs: Needs, command: &str) -> Result<()> {
    let wanted = wanted(needs);
    let missing = missing_packages(&wanted);

    let mut ok = Vec::new();
    let mut problems = Vec::new();
    let mut node = needs.dashboards;
    let mut npm = needs.dashboards;
    if needs.stack {
        let chains = stack::toolchains(ctx);
        node |= chains.contains(&Toolchain::Node);
        npm |= chains.contains(&Toolchain::Npm);
        // `test` also builds the Argo CD health check's checker (tests/tests/argocd.rs) with Go.
        if chains.contains(&Toolchain::Go) || needs == Needs::TEST {
            check_go(&mut ok, &mut problems);
        }
        if chains.contains(&Toolchain::Java) || chains.contains(&Toolchain::Jdk) {
            check_java(chains.contains(&Toolchain::Jdk), &mut ok, &mut problems);
        }
        if chains.contains(&Toolchain::Maven) {
            check_command("mvn", Fix::Package("maven"), &mut ok, &mut problems);
        }
        check_namespaces(&mut problems);
    }
    if node {
        check_node(&mut ok, &mut problems);
    }
    if npm {
        check_command("npm", Fix::Package("npm"), &mut ok, &mut problems);
    }
    if needs.lint {
        check_lint(&mut ok, &mut problems);
    }

    let installer = match (on_path("apt-get").is_some(), is_root()) {
        (true, true) => Installer::Root,
        (true, false) => Installer::Sudo,
        (false, _) => Installer::None,
    };
    let systemd = Path::new("/run/systemd/system").exists();
    if !problems.is_empty() || (!missing.is_empty() && installer != Installer::Root) {
        bail!(
            "{}",
            message(command, &missing, &problems, installer, systemd)
        );
    }
    if !missing.is_empty() {
        install(&missing, systemd)?;
        let still = missing_packages(&wanted);
        if !still.is_empty() {
            let names: Vec<&str> = still.iter().map(|p| p.name).collect();
            bail!(
                "apt-get install ran, but dpkg still does not show {} installed; see apt-get's \
                 output above",
                names.join(" ")
            );
        }
    }
    let names: Vec<&str> = wanted.iter().map(|p| p.name).collect();
    let mut line = format!("ok: Debian packages {}", names.join(" "));
    if !ok.is_empty() {
        line.push_str("; ");
        line.push_str(&ok.join(", "));
    }
    say(&line);
    Ok(())
}

/// `apt-get update`, then `apt-get install -y` of `packages`, as root.
fn install(packages: &[&Package], systemd: bool) -> Result<()> {
    let names: Vec<&str> = packages.iter().map(|p| p.name).collect();
    for p in packages {
        say(&format!("missing Debian package {}: {}", p.name, p.why));
    }
    say(&format!(
        "installing {} (running as root with apt-get): apt-get update, then apt-get install -y",
        names.join(" ")
    ));
    crate::heartbeat::run(
        "prereqs",
        "apt-get update",
        Command::new("apt-get")
            .args(["-q", "update"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    crate::heartbeat::run(
        "prereqs",
        "apt-get install",
        Command::new("apt-get")
            .args(["-q", "install", "-y", "--no-install-recommends"])
            .args(&names)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    // The package starts its own service on systemd machines, which would hold the port.
    if names.contains(&"prometheus") && systemd {
        say("stopping the service the prometheus package started (the stack runs its own)");
        let _ = Command::new("systemctl")
            .args(["disable", "--now", "prometheus"])
            .status();
    }
    say(&format!("installed {}", names.join(" ")));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str) -> &'static Package {
        PACKAGES
            .iter()
            .find(|p| p.name == name)
            .unwrap_or(&PACKAGES[0])
    }

    #[test]
    fn finds_what_dpkg_does_not_show_installed() {
        // dpkg-query leaves unknown packages out of stdout; a removed one shows config-files.
        let answer = "curl installed\nunzip installed\nprometheus config-files\n\
                      libclang-dev not-installed\n";
        let wanted = ["curl", "unzip", "prometheus", "libclang-dev", "g++"];
        assert_eq!(
            missing_from_dpkg_answer(&wanted, answer),
            vec!["prometheus", "libclang-dev", "g++"]
        );
        assert!(missing_from_dpkg_answer(&wanted[..2], answer).is_empty());
        assert_eq!(missing_from_dpkg_answer(&["curl"], ""), vec!["curl"]);
        assert_eq!(
            installed_in_dpkg_answer("curl installed\ngarbage\n\n"),
            BTreeSet::from(["curl"])
        );
    }

    #[test]
    fn each_command_wants_its_packages() {
        let names = |n: Needs| wanted(n).iter().map(|p| p.name).collect::<Vec<_>>();
        assert_eq!(
            names(Needs::STACK),
            vec!["curl", "ca-certificates", "unzip", "prometheus"]
        );
        assert_eq!(names(Needs::BUILD), vec!["g++", "libclang-dev"]);
        assert_eq!(names(Needs::DEMO).len(), PACKAGES.len());
        assert_eq!(names(Needs::TEST), names(Needs::DEMO));
    }

    #[test]
    fn message_names_everything_and_one_command() {
        let go = Problem {
            what: "go 1.26 or newer".into(),
            found: "go 1.22 at /usr/bin/go".into(),
            fix: Fix::Text("https://go.dev/doc/install".into()),
        };
        let java = Problem {
            what: "java 17 or newer".into(),
            found: "not on PATH".into(),
            fix: Fix::Package("openjdk-17-jdk-headless"),
        };
        let m = message(
            "demo",
            &[pkg("libclang-dev"), pkg("prometheus")],
            &[go.clone(), java.clone()],
            Installer::Sudo,
            true,
        );
        assert!(m.contains("Debian package libclang-dev: bindgen"), "{m}");
        assert!(m.contains("Debian package prometheus: "), "{m}");
        assert!(
            m.contains("go 1.26 or newer (go 1.22 at /usr/bin/go): https://go.dev/doc/install"),
            "{m}"
        );
        assert!(
            m.contains(
                "\n  sudo apt-get install -y --no-install-recommends libclang-dev prometheus \
                 openjdk-17-jdk-headless\n"
            ),
            "{m}"
        );
        assert!(m.contains("sudo systemctl disable --now prometheus"), "{m}");
        assert_eq!(m.matches("apt-get install").count(), 1, "one command: {m}");

        // Without systemd no service to stop; as root no sudo.
        let m = message(
            "test",
            &[pkg("prometheus")],
            &[java],
            Installer::Root,
            false,
        );
        assert!(m.contains("\n  apt-get install -y --no-install-recommends prometheus openjdk-17-jdk-headless\n"), "{m}");
        assert!(!m.contains("systemctl"), "{m}");
        assert!(m.contains("installs missing Debian packages itself"), "{m}");

        // No apt: the packages by name.
        let m = message("stack up", &[pkg("unzip")], &[go], Installer::None, false);
        assert!(!m.contains("apt-get"), "{m}");
        assert!(
            m.contains("  - package unzip: unpacking OpenSearch\n"),
            "{m}"
        );
        assert!(m.contains("package manager: unzip"), "{m}");

        // A toolchain alone.
        let m = message(
            "test",
            &[],
            &[Problem {
                what: "cargo clippy".into(),
                found: "not installed".into(),
                fix: Fix::Text("rustup component add rustfmt clippy".into()),
            }],
            Installer::Root,
            false,
        );
        assert!(!m.contains("apt-get"), "{m}");
        assert!(
            m.contains("cargo clippy (not installed): rustup component add"),
            "{m}"
        );
    }

    #[test]
    fn parses_versions() {
        assert_eq!(
            go_version("go version go1.26.8 linux/amd64\n"),
            Some((1, 26))
        );
        assert_eq!(
            go_version("go version go1.22rc1 linux/amd64"),
            Some((1, 22))
        );
        assert_eq!(go_version("nonsense"), None);
        assert_eq!(
            java_major("openjdk version \"17.0.15\" 2025-04-15\nOpenJDK Runtime"),
            Some(17)
        );
        assert_eq!(java_major("java version \"1.8.0_292\""), Some(8));
        assert_eq!(java_major("openjdk version \"21\" 2023-09-19"), Some(21));
        assert_eq!(java_major("no quotes"), None);
        assert_eq!(node_major("v20.20.2\n"), Some(20));
        assert_eq!(node_major("20.1"), None);
    }
}
