//! One container of a pod, supervised like the kubelet does: start (image -> binary, env,
//! mounts), probe, restart per `restartPolicy` with back-off, stop on request.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::Api;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::Shared;
use super::env::{self, Facts, Sources};
use super::image;
use super::probe::{self, Tracker, Verdict};
use super::process::{self, Launch, Proc};
use super::status::{ContainerRuntime, PodRuntime, State};
use super::volumes;

/// `Some(grace)` once the pod is being stopped.
pub type Stop = watch::Receiver<Option<Duration>>;

/// Why a container could not start (reported as its waiting reason).
struct NotStarted {
    reason: &'static str,
    message: String,
}

fn not_started(reason: &'static str, message: impl ToString) -> NotStarted {
    NotStarted {
        reason,
        message: message.to_string(),
    }
}

/// How one run ended.
struct Ended {
    code: Option<i32>,
    message: Option<String>,
    stopped: bool,
}

pub struct Cx {
    pub shared: Arc<Shared>,
    pub pod: Arc<Pod>,
    pub index: usize,
    pub volumes: BTreeMap<String, PathBuf>,
    pub rt: Arc<Mutex<PodRuntime>>,
    pub notify: Arc<Notify>,
    pub log: PathBuf,
}

pub fn now() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second()
}

/// The pod's termination grace period (default 30s).
pub fn grace(pod: &Pod) -> Duration {
    let s = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

impl Cx {
    fn container(&self) -> Container {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.get(self.index).cloned())
            .unwrap_or_default()
    }

    fn update(&self, f: impl FnOnce(&mut ContainerRuntime)) {
        {
            let mut rt = self.rt.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = rt.containers.get_mut(self.index) {
                f(c);
            }
        }
        self.notify.notify_one();
    }

    fn current(&self) -> Option<ContainerRuntime> {
        let rt = self.rt.lock().unwrap_or_else(|e| e.into_inner());
        rt.containers.get(self.index).cloned()
    }

    fn pod_ip(&self) -> String {
        self.rt.lock().unwrap_or_else(|e| e.into_inner()).ip.clone()
    }

    fn note(&self, line: &str) {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
        {
            let _ = writeln!(
                f,
                "[node-agent] {} {line}",
                k8s_openapi::jiff::Timestamp::now()
            );
        }
    }

    /// Supervise the container until the pod stops or the restart policy says it is done.
    /// `adopted` is a process a previous agent started.
    pub async fn supervise(self, mut adopted: Option<Proc>, mut stop: Stop) {
        let c = self.container();
        let policy = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        let backoff = self.shared.backoff;
        let mut restarts_since_reset = 0u32;
        loop {
            if stop.borrow().is_some() {
                return;
            }
            let proc = match adopted.take() {
                Some(p) => p,
                None => match self.start(&c).await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::info!(pod = %self.pod.metadata.name.as_deref().unwrap_or_default(),
                            container = %c.name, reason = e.reason, "{}", e.message);
                        self.update(|s| {
                            s.state = State::Waiting {
                                reason: e.reason.into(),
                                message: Some(e.message),
                            }
                        });
                        if wait_or_stop(Duration::from_secs(3), &mut stop).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            let started_at = match self.current().map(|s| s.state) {
                Some(State::Running { started_at }) => started_at,
                _ => now(),
            };
            let pid = proc.pid();
            self.update(|s| {
                s.state = State::Running { started_at };
                s.pid = Some(pid);
                s.start_ticks = process::start_ticks(pid);
            });
            let began = Instant::now();
            let ended = self.run(&c, proc, &mut stop).await;
            let code = ended.code.unwrap_or(255);
            let (reason, message) = match (ended.code, ended.message) {
                (None, _) => (
                    "Unknown",
                    Some(
                        "exit status unknown: the process was adopted after an agent restart"
                            .into(),
                    ),
                ),
                (Some(0), m) => ("Completed", m),
                (Some(_), m) => ("Error", m),
            };
            self.note(&format!("{} exited with code {code}", c.name));
            let terminated = State::Terminated {
                exit_code: code,
                reason: reason.into(),
                message,
                started_at,
                finished_at: now(),
            };
            self.update(|s| {
                s.state = terminated.clone();
                s.ready = false;
                s.started = false;
                s.pid = None;
                s.start_ticks = None;
            });
            let restart = match policy.as_str() {
                "Never" => false,
                "OnFailure" => code != 0,
                _ => true,
            };
            if ended.stopped || !restart {
                return;
            }
            if backoff.resets(began.elapsed()) {
                restarts_since_reset = 0;
            }
            let delay = backoff.delay(restarts_since_reset);
            restarts_since_reset = restarts_since_reset.saturating_add(1);
            if !delay.is_zero() {
                let message = format!(
                    "back-off {}s restarting failed container={} pod={}",
                    delay.as_secs(),
                    c.name,
                    self.pod.metadata.name.as_deref().unwrap_or_default()
                );
                self.update(|s| {
                    s.last = Some(terminated.clone());
                    s.state = State::Waiting {
                        reason: "CrashLoopBackOff".into(),
                        message: Some(message),
                    };
                });
                if wait_or_stop(delay, &mut stop).await {
                    return;
                }
            }
            self.update(|s| {
                s.last = Some(terminated);
                s.restart_count += 1;
                s.state = State::Waiting {
                    reason: "ContainerCreating".into(),
                    message: None,
                };
            });
        }
    }

    async fn start(&self, c: &Container) -> Result<Proc, NotStarted> {
        let launch = self.launch(c).await?;
        process::spawn(&launch).map_err(|e| not_started("RunContainerError", e))
    }

    async fn launch(&self, c: &Container) -> Result<Launch, NotStarted> {
        let shared = &self.shared;
        let image_ref = c.image.as_deref().unwrap_or_default();
        let name = image::binary_name(image_ref)
            .ok_or_else(|| not_started("InvalidImageName", format!("image {image_ref:?}")))?;
        let entry = image::find_binary(&shared.search, name).ok_or_else(|| {
            not_started(
                "ImageNotMapped",
                format!(
                    "image {image_ref} maps to the binary `{name}`, which is not in the node \
                     agent's search path {}",
                    shared.search_display()
                ),
            )
        })?;
        self.update(|s| s.binary = Some(entry.display().to_string()));
        let ns = self.pod.metadata.namespace.clone().unwrap_or_default();
        let (cms, secrets) = env::referenced(c);
        let mut sources = Sources::default();
        let api_err = |e: kube::Error| not_started("CreateContainerConfigError", e);
        let cm_api: Api<ConfigMap> = Api::namespaced(shared.client.clone(), &ns);
        for n in cms {
            if let Some(cm) = cm_api.get_opt(&n).await.map_err(api_err)? {
                sources.config_maps.insert(n, cm.data.unwrap_or_default());
            }
        }
        let secret_api: Api<Secret> = Api::namespaced(shared.client.clone(), &ns);
        for n in secrets {
            if let Some(s) = secret_api.get_opt(&n).await.map_err(api_err)? {
                let data = s.data.unwrap_or_default().into_iter();
                let data = data.map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()));
                sources.secrets.insert(n, data.collect());
            }
        }
        let pod_ip = self.pod_ip();
        let facts = Facts {
            pod: &self.pod,
            pod_ip: &pod_ip,
            host_ip: &shared.host_ip,
            node_name: &shared.node,
        };
        let hostname = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.hostname.clone())
            .or_else(|| self.pod.metadata.name.clone())
            .unwrap_or_default();
        let env = env::resolve(c, &facts, &sources, &shared.base_env(&hostname))
            .map_err(|e| not_started("CreateContainerConfigError", e))?;
        let expand = |v: &Option<Vec<String>>| -> Vec<String> {
            v.iter().flatten().map(|s| env::expand(s, &env)).collect()
        };
        let argv = image::argv(&entry, &expand(&c.command), &expand(&c.args), |n| {
            image::find_binary(&shared.search, n)
        });
        let mounts = volumes::mounts(c, &self.volumes)
            .map_err(|e| not_started("CreateContainerConfigError", e))?;
        Ok(Launch {
            argv,
            env,
            mounts,
            hostname,
            workdir: c.working_dir.clone().unwrap_or_else(|| "/".into()),
            log: self.log.clone(),
        })
    }

    /// Wait for the process while running its probes; kill it when a startup or liveness probe
    /// fails or the pod stops.
    async fn run(&self, c: &Container, mut proc: Proc, stop: &mut Stop) -> Ended {
        let t0 = Instant::now();
        let pod_grace = grace(&self.pod);
        let tracker = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
            p.as_ref().map(|p| {
                let g = p.termination_grace_period_seconds.map_or(pod_grace, |s| {
                    Duration::from_secs(u64::try_from(s).unwrap_or(0))
                });
                (Tracker::new(probe::spec(p, c), t0), g)
            })
        };
        let mut startup = tracker(&c.startup_probe);
        let mut liveness = tracker(&c.liveness_probe);
        let mut readiness = tracker(&c.readiness_probe);
        let mut started = startup.is_none();
        let no_readiness = readiness.is_none();
        self.update(|s| {
            s.started = started;
            s.ready = started && no_readiness;
        });
        let pid = proc.pid();
        let ip = self.pod_ip();
        loop {
            let due = [
                startup.as_ref().filter(|_| !started),
                liveness.as_ref().filter(|_| started),
                readiness.as_ref().filter(|_| started),
            ]
            .into_iter()
            .flatten()
            .map(|(t, _)| t.next)
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                code = proc.wait() => {
                    return Ended { code, message: None, stopped: false };
                }
                _ = stop.changed() => {
                    let g = stop.borrow().unwrap_or(pod_grace);
                    let code = proc.terminate(g).await;
                    return Ended { code, message: None, stopped: true };
                }
                _ = tokio::time::sleep_until(due) => {}
            }
            let now = Instant::now();
            if !started {
                if let Some((t, g)) = startup.as_mut().filter(|(t, _)| t.next <= now) {
                    let r = probe::check(&t.spec.action, &ip, pid, t.spec.timeout).await;
                    match t.record(r.is_ok(), Instant::now()) {
                        Verdict::Succeeded => {
                            started = true;
                            let ready = no_readiness;
                            self.update(|s| {
                                s.started = true;
                                s.ready = ready;
                            });
                        }
                        Verdict::Failed => {
                            let why =
                                format!("Startup probe failed: {}", r.err().unwrap_or_default());
                            return self.kill(&mut proc, *g, why).await;
                        }
                        Verdict::Unchanged => {}
                    }
                }
                continue;
            }
            if let Some((t, g)) = liveness.as_mut().filter(|(t, _)| t.next <= now) {
                let r = probe::check(&t.spec.action, &ip, pid, t.spec.timeout).await;
                if t.record(r.is_ok(), Instant::now()) == Verdict::Failed {
                    let why = format!("Liveness probe failed: {}", r.err().unwrap_or_default());
                    return self.kill(&mut proc, *g, why).await;
                }
            }
            if let Some((t, _)) = readiness.as_mut().filter(|(t, _)| t.next <= now) {
                let r = probe::check(&t.spec.action, &ip, pid, t.spec.timeout).await;
                match t.record(r.is_ok(), Instant::now()) {
                    Verdict::Succeeded => self.update(|s| s.ready = true),
                    Verdict::Failed => self.update(|s| s.ready = false),
                    Verdict::Unchanged => {}
                }
            }
        }
    }

    async fn kill(&self, proc: &mut Proc, grace: Duration, why: String) -> Ended {
        tracing::info!(pod = %self.pod.metadata.name.as_deref().unwrap_or_default(), "{why}; killing the container");
        self.note(&why);
        let code = proc.terminate(grace).await;
        Ended {
            code,
            message: Some(why),
            stopped: false,
        }
    }
}

/// Sleep for `d`; true when the pod was stopped meanwhile.
async fn wait_or_stop(d: Duration, stop: &mut Stop) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => stop.borrow().is_some(),
        _ = stop.changed() => true,
    }
}
