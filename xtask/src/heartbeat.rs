//! Heartbeats for long child processes: cargo prints nothing while one crate builds (RocksDB's C++
//! in librocksdb-sys's build script takes about 25 minutes on a cold cache), Go prints nothing
//! while it compiles Kubernetes, `mvn -q` and `npm ci` print nothing while they download, and
//! without a TTY there is no progress bar. [`Heartbeat`] prints one line every
//! [`INTERVAL`] with the elapsed time and what runs under the child right now, read from
//! `/proc`: the crates `rustc` compiles (`--crate-name`), the build scripts that run (with
//! RocksDB's C++ files compiled so far), the Go packages `compile` builds, Maven, npm, test
//! binaries. The child's own output is untouched.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How often a heartbeat line is printed.
pub const INTERVAL: Duration = Duration::from_secs(30);

/// What the heartbeat says when nothing it can name runs under the process.
const IDLE: &str = "nothing it can name runs under it right now";
/// The same for cargo, which holds a lock on the target folder while another cargo builds.
const CARGO_IDLE: &str = "nothing compiling under it right now (cargo is between steps, or \
                          waits for another cargo's lock on the target folder)";

/// Run `cmd` to completion (its output inherited, as with [`Command::status`]) with a heartbeat
/// line every [`INTERVAL`] on stderr; fail with the command line when it exits non-zero.
pub fn run(tag: &str, label: &str, cmd: &mut Command) -> Result<()> {
    run_with(tag, label, IDLE, cmd)
}

/// [`run`] for a cargo command (build, clippy, test).
pub fn cargo(tag: &str, label: &str, cmd: &mut Command) -> Result<()> {
    run_with(tag, label, CARGO_IDLE, cmd)
}

fn run_with(tag: &str, label: &str, idle: &'static str, cmd: &mut Command) -> Result<()> {
    let mut child = cmd.spawn().with_context(|| format!("running {cmd:?}"))?;
    let status = {
        let _beat = Heartbeat::every(tag, label, Some(child.id()), idle, INTERVAL);
        child.wait()?
    };
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Wait for `child` with a heartbeat line every [`INTERVAL`].
pub fn wait(tag: &str, label: &str, mut child: Child) -> Result<ExitStatus> {
    let _beat = Heartbeat::every(tag, label, Some(child.id()), IDLE, INTERVAL);
    Ok(child.wait()?)
}

/// [`wait`] for a cargo command.
pub fn wait_cargo(tag: &str, label: &str, mut child: Child) -> Result<ExitStatus> {
    let _beat = Heartbeat::cargo(tag, label, child.id());
    Ok(child.wait()?)
}

/// Prints a heartbeat line every [`INTERVAL`] until dropped.
pub struct Heartbeat {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeat {
    /// `[tag] label: still running after 4m30s; now: ...` every [`INTERVAL`]; the `now:` part
    /// names what runs under `pid` (nothing without a pid), `idle` when it finds nothing.
    pub fn start(tag: &str, label: &str, pid: Option<u32>) -> Self {
        Self::every(tag, label, pid, IDLE, INTERVAL)
    }

    /// [`Heartbeat::start`] for a cargo process.
    pub fn cargo(tag: &str, label: &str, pid: u32) -> Self {
        Self::every(tag, label, Some(pid), CARGO_IDLE, INTERVAL)
    }

    pub fn every(
        tag: &str,
        label: &str,
        pid: Option<u32>,
        idle: &'static str,
        interval: Duration,
    ) -> Self {
        Self::spawn(
            tag,
            label,
            interval,
            Box::new(move || pid.map(|pid| now_running(pid, idle))),
        )
    }

    /// [`Heartbeat::start`] whose lines end with what `detail` says (when it says something),
    /// e.g. the state of the pod a `helm install --wait` waits for.
    pub fn with_detail(
        tag: &str,
        label: &str,
        detail: impl Fn() -> Option<String> + Send + 'static,
    ) -> Self {
        Self::spawn(tag, label, INTERVAL, Box::new(detail))
    }

    fn spawn(
        tag: &str,
        label: &str,
        interval: Duration,
        detail: Box<dyn Fn() -> Option<String> + Send>,
    ) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let (tag, label) = (tag.to_string(), label.to_string());
        let started = Instant::now();
        let thread = std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                let mut line = format!(
                    "[{tag}] {label}: still running after {}",
                    elapsed(started.elapsed())
                );
                if let Some(d) = detail() {
                    line.push_str("; ");
                    line.push_str(&d);
                }
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "{line}");
                let _ = err.flush();
            }
        });
        Self {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `45s`, `4m05s`, `1h02m`.
pub fn elapsed(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// One thing running under the watched process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activity {
    /// `rustc` (or clippy-driver) compiling a crate.
    Rustc {
        krate: String,
        version: Option<String>,
        build_script: bool,
    },
    /// A build script running (`target/.../build/<package>-<hash>/build-script-build`).
    BuildScript {
        package: String,
    },
    /// Go's compiler on one package, or its linker.
    GoCompile {
        package: String,
    },
    GoLink,
    Maven,
    Npm,
    /// A test binary (`target/debug/deps/<name>-<hash>`).
    TestBinary {
        name: String,
    },
    /// A binary or example of the workspace (`target/debug/<name>`, `.../examples/<name>`)
    /// that `cargo run` started.
    Program {
        name: String,
    },
}

/// The file name of a path, as text.
fn file_name(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// `getrandom-a2eca43b8bf32c4d` -> `getrandom`: cargo's folder names end in a 16-digit hash.
fn strip_hash(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((base, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            base
        }
        _ => name,
    }
}

/// The value after `flag` in `argv`.
fn flag_value<'a>(argv: &'a [String], flag: &str) -> Option<&'a str> {
    argv.iter()
        .position(|a| a == flag)
        .and_then(|i| argv.get(i + 1))
        .map(String::as_str)
}

/// What a process is, from its command line; `None` for anything not worth naming (shells,
/// C compilers under a build script, cargo itself), whose children are then looked at instead.
pub fn describe(argv: &[String]) -> Option<Activity> {
    let exe = file_name(argv.first()?);
    match exe {
        "rustc" | "clippy-driver" => {
            let krate = flag_value(argv, "--crate-name")?;
            // The source's folder names the package and, from a registry, its version:
            // `.../getrandom-0.3.4/build.rs`, `.../rustls-0.23.46/src/lib.rs`.
            let package_dir = argv.iter().find(|a| a.ends_with(".rs")).and_then(|src| {
                let mut parts = src.rsplit('/').skip(1);
                parts.find(|p| *p != "build" && *p != "src")
            });
            let (package, version) = match package_dir.and_then(|d| d.rsplit_once('-')) {
                Some((name, v)) if v.starts_with(|c: char| c.is_ascii_digit()) => {
                    (Some(name), Some(v.to_string()))
                }
                _ => (package_dir, None),
            };
            if krate == "build_script_build" {
                return Some(Activity::Rustc {
                    krate: package.unwrap_or("a package").to_string(),
                    version,
                    build_script: true,
                });
            }
            // A registry package by its package name, as cargo's `Compiling` lines say it.
            let name = match (&version, package) {
                (Some(_), Some(p)) => p,
                _ => krate,
            };
            Some(Activity::Rustc {
                krate: name.to_string(),
                version,
                build_script: false,
            })
        }
        "build-script-build" => {
            let path = argv.first()?;
            let mut parts = path.rsplit('/');
            parts.next();
            let dir = parts.next()?;
            Some(Activity::BuildScript {
                package: strip_hash(dir).to_string(),
            })
        }
        "compile" if argv.first()?.contains("/pkg/tool/") => Some(Activity::GoCompile {
            package: flag_value(argv, "-p").unwrap_or("?").to_string(),
        }),
        "link" if argv.first()?.contains("/pkg/tool/") => Some(Activity::GoLink),
        "java"
            if argv
                .iter()
                .any(|a| a.contains("plexus.classworlds") || a.contains("plexus-classworlds")) =>
        {
            Some(Activity::Maven)
        }
        "node" if argv.iter().any(|a| a.ends_with("npm-cli.js")) => Some(Activity::Npm),
        "npm" => Some(Activity::Npm),
        _ => {
            let path = argv.first()?;
            let mut parts = path.rsplit('/');
            let (name, deps, profile) = (parts.next()?, parts.next(), parts.next());
            if deps == Some("deps") && profile.is_some() && strip_hash(name) != name {
                Some(Activity::TestBinary {
                    name: strip_hash(name).to_string(),
                })
            } else if matches!(deps, Some("debug" | "release" | "examples"))
                && path.contains("/target/")
            {
                Some(Activity::Program {
                    name: strip_hash(name).to_string(),
                })
            } else {
                None
            }
        }
    }
}

/// The parent pid from a `/proc/<pid>/stat` line (the command may hold spaces and parentheses).
pub fn parse_ppid(stat: &str) -> Option<u32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The processes under `root` that [`describe`] names, in pid order: a named process's own
/// children are not looked at (a build script's compilers belong to the build script).
pub fn named_under(
    root: u32,
    parents: &[(u32, u32)],
    mut describe_pid: impl FnMut(u32) -> Option<Activity>,
) -> Vec<(u32, Activity)> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for &(pid, ppid) in parents {
        children.entry(ppid).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or_default() {
            match describe_pid(c) {
                Some(a) => out.push((c, a)),
                None => stack.push(c),
            }
        }
    }
    out.sort_by_key(|(pid, _)| *pid);
    out
}

/// RocksDB's C++ build: objects compiled so far and the number of sources, when known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CxxProgress {
    pub objects: Option<usize>,
    pub sources: Option<usize>,
}

/// One activity as text.
pub fn render(a: &Activity, rocksdb: CxxProgress) -> String {
    match a {
        Activity::Rustc {
            krate,
            version,
            build_script,
        } => {
            let v = version.as_ref().map_or(String::new(), |v| format!(" {v}"));
            if *build_script {
                format!("{krate}{v}'s build script (compiling it)")
            } else {
                format!("{krate}{v}")
            }
        }
        Activity::BuildScript { package } if package == "librocksdb-sys" => {
            let files = match (rocksdb.objects, rocksdb.sources) {
                (Some(n), Some(total)) => format!(", {n} of about {total} files done"),
                (Some(n), None) => format!(", {n} files done"),
                _ => String::new(),
            };
            format!(
                "librocksdb-sys's build script: RocksDB's C++{files} (about 25 minutes on a cold \
                 cache, once per machine)"
            )
        }
        Activity::BuildScript { package } => format!("{package}'s build script"),
        Activity::GoCompile { package } => format!("go package {package}"),
        Activity::GoLink => "the Go linker".into(),
        Activity::Maven => "Maven (downloading from Maven Central into ~/.m2)".into(),
        Activity::Npm => "npm".into(),
        Activity::TestBinary { name } => format!("test binary {name}"),
        Activity::Program { name } => format!("{name} (built; running)"),
    }
}

/// `now: a, b, c and 2 more`, or `idle` when nothing runs.
pub fn summary(names: &[String], idle: &str) -> String {
    const SHOWN: usize = 4;
    match names.len() {
        0 => idle.to_string(),
        n if n <= SHOWN => format!("now: {}", names.join(", ")),
        n => format!("now: {} and {} more", names[..SHOWN].join(", "), n - SHOWN),
    }
}

fn read_argv(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

fn read_env_var(pid: u32, key: &str) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    raw.split(|b| *b == 0).find_map(|kv| {
        let kv = String::from_utf8_lossy(kv);
        kv.strip_prefix(key)?.strip_prefix('=').map(str::to_string)
    })
}

fn all_parents() -> Vec<(u32, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((pid, parse_ppid(&stat)?))
        })
        .collect()
}

/// Object files under `dir` (one level of sub-folders).
fn count_objects(dir: &Path) -> Option<usize> {
    let mut n = 0;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            n += std::fs::read_dir(&p)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "o"))
                .count();
        } else if p.extension().is_some_and(|x| x == "o") {
            n += 1;
        }
    }
    Some(n)
}

/// The progress of a running librocksdb-sys build script, from its environment.
fn rocksdb_progress(pid: u32) -> CxxProgress {
    let objects = read_env_var(pid, "OUT_DIR").and_then(|d| count_objects(&PathBuf::from(d)));
    let sources = read_env_var(pid, "CARGO_MANIFEST_DIR").and_then(|d| {
        let list = std::fs::read_to_string(Path::new(&d).join("rocksdb_lib_sources.txt")).ok()?;
        Some(list.lines().filter(|l| !l.trim().is_empty()).count())
    });
    CxxProgress { objects, sources }
}

/// What runs under `pid` now, as the heartbeat's `now:` part (`idle` when nothing).
pub fn now_running(pid: u32, idle: &str) -> String {
    let found = named_under(pid, &all_parents(), |p| describe(&read_argv(p)?));
    let names: Vec<String> = found
        .iter()
        .map(|(p, a)| {
            let progress = match a {
                Activity::BuildScript { package } if package == "librocksdb-sys" => {
                    rocksdb_progress(*p)
                }
                _ => CxxProgress::default(),
            };
            render(a, progress)
        })
        .collect();
    summary(&names, idle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn names_rustc_crates_and_build_scripts() {
        let tc = "/root/.rustup/toolchains/1.95.0-x86_64-unknown-linux-gnu/bin";
        assert_eq!(
            describe(&argv(&format!(
                "{tc}/rustc --crate-name kube_client --edition=2024 /r/kube-client-5.0.0/src/lib.rs"
            ))),
            Some(Activity::Rustc {
                krate: "kube-client".into(),
                version: Some("5.0.0".into()),
                build_script: false
            })
        );
        assert_eq!(
            describe(&argv(&format!(
                "{tc}/rustc --crate-name build_script_build --edition=2021 \
                 /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/getrandom-0.3.4/build.rs"
            ))),
            Some(Activity::Rustc {
                krate: "getrandom".into(),
                version: Some("0.3.4".into()),
                build_script: true
            })
        );
        assert_eq!(
            describe(&argv(
                "/w/clippy-driver /w/rustc --crate-name tributary_runtime --edition=2024 \
                 /work/main/job-runtime/src/lib.rs"
            )),
            Some(Activity::Rustc {
                krate: "tributary_runtime".into(),
                version: None,
                build_script: false
            })
        );
        assert_eq!(
            describe(&argv(
                "/root/.cache/tributary/target/debug/build/librocksdb-sys-0123456789abcdef/build-script-build"
            )),
            Some(Activity::BuildScript {
                package: "librocksdb-sys".into()
            })
        );
    }

    #[test]
    fn names_go_maven_npm_and_test_binaries() {
        assert_eq!(
            describe(&argv(
                "/usr/local/go/pkg/tool/linux_amd64/compile -o /tmp/b001/_pkg_.a -trimpath x \
                 -p k8s.io/api/core/v1 -lang=go1.26"
            )),
            Some(Activity::GoCompile {
                package: "k8s.io/api/core/v1".into()
            })
        );
        assert_eq!(
            describe(&argv("/usr/local/go/pkg/tool/linux_amd64/link -o /tmp/x")),
            Some(Activity::GoLink)
        );
        assert_eq!(
            describe(&argv(
                "/usr/lib/jvm/java-17/bin/java -classpath /usr/share/maven/boot/plexus-classworlds-2.x.jar \
                 org.codehaus.plexus.classworlds.launcher.Launcher -q"
            )),
            Some(Activity::Maven)
        );
        assert_eq!(
            describe(&argv("node /usr/share/nodejs/npm/bin/npm-cli.js ci")),
            Some(Activity::Npm)
        );
        assert_eq!(
            describe(&argv(
                "/root/.cache/tributary/target/debug/deps/e2e-0123456789abcdef --test-threads 2"
            )),
            Some(Activity::TestBinary { name: "e2e".into() })
        );
        assert_eq!(
            describe(&argv(
                "/root/.cache/tributary/target/debug/tributary-gen --sales 5"
            )),
            Some(Activity::Program {
                name: "tributary-gen".into()
            })
        );
        assert_eq!(
            describe(&argv(
                "/root/.cache/tributary/target/debug/examples/engine_bench-0123456789abcdef"
            )),
            Some(Activity::Program {
                name: "engine_bench".into()
            })
        );
        for other in [
            "/usr/bin/cc -c foo.c",
            "/usr/lib/gcc/x86_64-linux-gnu/12/cc1plus -quiet x.cc",
            "/root/.rustup/toolchains/1.95.0/bin/cargo build",
            "/bin/sh -c true",
            "/usr/lib/jvm/java-17/bin/java -jar opensearch.jar",
        ] {
            assert_eq!(describe(&argv(other)), None, "{other}");
        }
        assert_eq!(describe(&[]), None);
    }

    #[test]
    fn parses_the_parent_pid() {
        assert_eq!(
            parse_ppid("7229 (rustc) S 3372 7229 3372 0 -1 4194304"),
            Some(3372)
        );
        assert_eq!(
            parse_ppid("42 (a (weird) name) R 7 42 42 0"),
            Some(7),
            "the command may hold spaces and parentheses"
        );
        assert_eq!(parse_ppid("garbage"), None);
    }

    #[test]
    fn walks_the_tree_down_to_named_processes() {
        // 100 cargo -> 101 rustc, 102 build script -> 103 sh -> 104 cc1plus; 200 is elsewhere.
        let parents = [(101, 100), (102, 100), (103, 102), (104, 103), (200, 1)];
        let mut asked = Vec::new();
        let found = named_under(100, &parents, |p| {
            asked.push(p);
            match p {
                101 => Some(Activity::Rustc {
                    krate: "tokio".into(),
                    version: None,
                    build_script: false,
                }),
                102 => Some(Activity::BuildScript {
                    package: "librocksdb-sys".into(),
                }),
                _ => None,
            }
        });
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].0, 101);
        assert_eq!(found[1].0, 102);
        asked.sort_unstable();
        assert_eq!(
            asked,
            vec![101, 102],
            "a named process's children are not asked"
        );
        assert!(named_under(999, &parents, |_| None).is_empty());
    }

    #[test]
    fn renders_rocksdb_with_its_progress() {
        let rocks = Activity::BuildScript {
            package: "librocksdb-sys".into(),
        };
        let line = render(
            &rocks,
            CxxProgress {
                objects: Some(120),
                sources: Some(343),
            },
        );
        assert!(
            line.contains("RocksDB's C++, 120 of about 343 files done"),
            "{line}"
        );
        assert!(line.contains("about 25 minutes on a cold cache"), "{line}");
        assert!(!render(&rocks, CxxProgress::default()).contains("files done"));
        let rustls = |version: Option<&str>, build_script| Activity::Rustc {
            krate: "rustls".into(),
            version: version.map(str::to_string),
            build_script,
        };
        let none = CxxProgress::default();
        assert_eq!(
            render(&rustls(Some("0.23.46"), false), none),
            "rustls 0.23.46"
        );
        assert_eq!(render(&rustls(None, false), none), "rustls");
        assert_eq!(
            render(&rustls(Some("0.23.46"), true), none),
            "rustls 0.23.46's build script (compiling it)"
        );
        assert_eq!(
            render(
                &Activity::BuildScript {
                    package: "ring".into()
                },
                CxxProgress::default()
            ),
            "ring's build script"
        );
    }

    #[test]
    fn summarises_and_formats_time() {
        assert_eq!(summary(&[], "idle"), "idle");
        let names: Vec<String> = ["a", "b", "c", "d", "e", "f"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(summary(&names[..2], ""), "now: a, b");
        assert_eq!(summary(&names, ""), "now: a, b, c, d and 2 more");
        assert_eq!(elapsed(Duration::from_secs(45)), "45s");
        assert_eq!(elapsed(Duration::from_secs(245)), "4m05s");
        assert_eq!(elapsed(Duration::from_secs(3720)), "1h02m");
    }

    #[test]
    fn sees_its_own_child() -> anyhow::Result<()> {
        // A real process tree: this test's child is not named, so nothing is found under it,
        // and the tree walk over /proc does not fail.
        let mut child = Command::new("sleep").arg("5").spawn()?;
        let me = std::process::id();
        let found = named_under(me, &all_parents(), |p| {
            read_argv(p).map(|a| Activity::TestBinary { name: a.join(" ") })
        });
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            found.iter().any(|(pid, _)| *pid == child.id()),
            "{found:?} lacks the sleep child {}",
            child.id()
        );
        Ok(())
    }
}
