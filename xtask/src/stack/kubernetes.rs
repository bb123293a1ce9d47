//! The Kubernetes control plane of the local stack: etcd, kube-apiserver and
//! kube-controller-manager as plain processes on 127.0.0.1.
//!
//! The binaries are built from source through the Go module proxy (the modules in
//! `xtask/go/etcd` and `xtask/go/kubernetes`, go.sum committed) into the shared bin folder, once
//! per pinned version. A private CA and every certificate are generated once into the data folder
//! and kept across restarts; `$TRIBUTARY_HOME/stack/kubeconfig` is the admin kubeconfig (group
//! `system:masters`) that tests, kube-rs, kubectl and helm use.
//!
//! No kubelet and no scheduler run: controllers create Pods, which stay Pending.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::go::{all_built, go_build};
use super::{Component, Ctx, installed, progress, require_tool};
use crate::prereqs::Toolchain;

/// `k8s.io/kubernetes` version pinned in `xtask/go/kubernetes/go.mod` (staging modules at v0.36.3).
pub const KUBERNETES_VERSION: &str = "v1.36.3";
/// `go.etcd.io/etcd/server/v3` version pinned in `xtask/go/etcd/go.mod`.
pub const ETCD_VERSION: &str = "v3.6.16";

const API_PORT: u16 = 6443;
/// Not the usual 2379/2380, so a developer's own etcd does not collide with the stack's.
const ETCD_CLIENT_PORT: u16 = 12379;
const ETCD_PEER_PORT: u16 = 12380;
const KCM_PORT: u16 = 10257;
/// Only an internal range for Service ClusterIPs: nothing routes there.
const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The first IP of [`SERVICE_CIDR`], the ClusterIP of `default/kubernetes`.
const SERVICE_FIRST_IP: &str = "10.96.0.1";

const ETCD: &str = "etcd";
const APISERVER: &str = "kube-apiserver";
const KCM: &str = "kube-controller-manager";

pub struct Kubernetes;

impl Component for Kubernetes {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn install(&self, ctx: &Ctx) -> Result<()> {
        require_tool("curl", "apt-get install curl")?;
        go_build(
            ctx,
            "etcd",
            ETCD_VERSION,
            "-s -w",
            &[("go.etcd.io/etcd/server/v3", ETCD)],
        )?;
        go_build(
            ctx,
            "kubernetes",
            KUBERNETES_VERSION,
            &kube_ldflags(),
            &[
                ("k8s.io/kubernetes/cmd/kube-apiserver", APISERVER),
                ("k8s.io/kubernetes/cmd/kube-controller-manager", KCM),
            ],
        )
    }

    fn start(&self, ctx: &Ctx) -> Result<()> {
        if self.ready(ctx) {
            progress("kubernetes already running");
            return Ok(());
        }
        let data = ctx.data_dir("kubernetes")?;
        let pki = Pki::ensure(&data.join("pki"))?;
        std::fs::write(
            kubeconfig_path(ctx),
            pki.kubeconfig("admin", "admin.crt", "admin.key")?,
        )?;
        let kcm_kubeconfig = data.join("kube-controller-manager.kubeconfig");
        std::fs::write(
            &kcm_kubeconfig,
            pki.kubeconfig("kube-controller-manager", "kcm.crt", "kcm.key")?,
        )?;

        start_or_wait(
            ctx,
            ETCD,
            Duration::from_secs(60),
            etcd_cmd(ctx, &data),
            etcd_ready,
        )?;
        start_or_wait(
            ctx,
            APISERVER,
            Duration::from_secs(180),
            apiserver_cmd(ctx, &pki),
            || apiserver_ready(&pki),
        )?;
        start_or_wait(
            ctx,
            KCM,
            Duration::from_secs(120),
            kcm_cmd(ctx, &pki, &kcm_kubeconfig),
            || kcm_ready(&pki),
        )
    }

    fn processes(&self) -> Vec<&'static str> {
        vec![ETCD, APISERVER, KCM]
    }

    fn ready(&self, ctx: &Ctx) -> bool {
        let Ok(data) = ctx.data_dir("kubernetes") else {
            return false;
        };
        let pki = Pki {
            dir: data.join("pki"),
        };
        etcd_ready() && apiserver_ready(&pki) && kcm_ready(&pki)
    }

    fn toolchains(&self, ctx: &Ctx) -> Vec<Toolchain> {
        let binaries = [
            (ETCD, ETCD_VERSION),
            (APISERVER, KUBERNETES_VERSION),
            (KCM, KUBERNETES_VERSION),
        ];
        if all_built(ctx, &binaries) {
            Vec::new()
        } else {
            vec![Toolchain::Go]
        }
    }

    fn env(&self, ctx: &Ctx) -> Vec<(&'static str, String)> {
        vec![
            ("KUBECONFIG", kubeconfig_path(ctx).display().to_string()),
            ("KUBERNETES_VERSION", KUBERNETES_VERSION.to_string()),
        ]
    }
}

/// The admin kubeconfig (`system:masters`), embedded certificates, server https://127.0.0.1:6443.
pub fn kubeconfig_path(ctx: &Ctx) -> PathBuf {
    ctx.stack_dir().join("kubeconfig")
}

/// Linker flags that stamp the version into the Kubernetes binaries: without them they report
/// `v0.0.0-master` and Helm's `kubeVersion` checks fail.
pub(super) fn kube_ldflags() -> String {
    let minor = KUBERNETES_VERSION.split('.').nth(1).unwrap_or_default();
    let mut flags = String::from("-s -w");
    for pkg in [
        "k8s.io/component-base/version",
        "k8s.io/client-go/pkg/version",
    ] {
        flags.push_str(&format!(
            " -X {pkg}.gitVersion={KUBERNETES_VERSION} -X {pkg}.gitMajor=1 \
             -X {pkg}.gitMinor={minor} -X {pkg}.gitTreeState=clean"
        ));
    }
    flags
}

// ---------------------------------------------------------------------------------------------
// Processes

fn start_or_wait(
    ctx: &Ctx,
    name: &str,
    timeout: Duration,
    cmd: Command,
    mut probe: impl FnMut() -> bool,
) -> Result<()> {
    if ctx.is_running(name) {
        if probe() {
            progress(&format!("{name} already running"));
            return Ok(());
        }
    } else {
        let pid = ctx.spawn(name, cmd)?;
        progress(&format!(
            "started {name} (pid {pid}), log {}",
            ctx.log_path(name).display()
        ));
    }
    ctx.wait_ready(name, timeout, probe)
}

fn bin(ctx: &Ctx, name: &str) -> PathBuf {
    ctx.bin_dir().join(name)
}

fn etcd_cmd(ctx: &Ctx, data: &Path) -> Command {
    let client = format!("http://127.0.0.1:{ETCD_CLIENT_PORT}");
    let peer = format!("http://127.0.0.1:{ETCD_PEER_PORT}");
    let mut cmd = Command::new(bin(ctx, ETCD));
    cmd.arg("--name=tributary")
        .arg(format!("--data-dir={}", data.join("etcd").display()))
        .arg(format!("--listen-client-urls={client}"))
        .arg(format!("--advertise-client-urls={client}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=tributary={peer}"))
        .arg("--initial-cluster-state=new")
        .arg("--log-level=warn");
    cmd
}

fn apiserver_cmd(ctx: &Ctx, pki: &Pki) -> Command {
    let mut cmd = Command::new(bin(ctx, APISERVER));
    cmd.arg("--advertise-address=127.0.0.1")
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--secure-port={API_PORT}"))
        .arg(format!(
            "--etcd-servers=http://127.0.0.1:{ETCD_CLIENT_PORT}"
        ))
        .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
        .arg(format!("--client-ca-file={}", pki.path("ca.crt")))
        .arg(format!("--tls-cert-file={}", pki.path("apiserver.crt")))
        .arg(format!(
            "--tls-private-key-file={}",
            pki.path("apiserver.key")
        ))
        .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
        .arg(format!("--service-account-key-file={}", pki.path("sa.pub")))
        .arg(format!(
            "--service-account-signing-key-file={}",
            pki.path("sa.key")
        ))
        .arg(format!(
            "--requestheader-client-ca-file={}",
            pki.path("front-proxy-ca.crt")
        ))
        .arg("--requestheader-allowed-names=front-proxy-client")
        .arg("--requestheader-username-headers=X-Remote-User")
        .arg("--requestheader-group-headers=X-Remote-Group")
        .arg("--requestheader-extra-headers-prefix=X-Remote-Extra-")
        .arg(format!(
            "--proxy-client-cert-file={}",
            pki.path("front-proxy-client.crt")
        ))
        .arg(format!(
            "--proxy-client-key-file={}",
            pki.path("front-proxy-client.key")
        ))
        .arg("--authorization-mode=Node,RBAC")
        // The default plugins (NamespaceLifecycle, ServiceAccount, ResourceQuota, ...) stay on;
        // nothing in them needs a node.
        .arg("--enable-admission-plugins=NodeRestriction")
        .arg("--allow-privileged=true")
        // The `default/kubernetes` Endpoints cannot hold a loopback address; nothing in the
        // stack routes to it.
        .arg("--endpoint-reconciler-type=none")
        .arg("--profiling=false");
    cmd
}

fn kcm_cmd(ctx: &Ctx, pki: &Pki, kubeconfig: &Path) -> Command {
    let kubeconfig = kubeconfig.display();
    let mut cmd = Command::new(bin(ctx, KCM));
    cmd.arg(format!("--kubeconfig={kubeconfig}"))
        .arg(format!("--authentication-kubeconfig={kubeconfig}"))
        .arg(format!("--authorization-kubeconfig={kubeconfig}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--secure-port={KCM_PORT}"))
        .arg(format!("--tls-cert-file={}", pki.path("kcm-serving.crt")))
        .arg(format!(
            "--tls-private-key-file={}",
            pki.path("kcm-serving.key")
        ))
        .arg(format!("--client-ca-file={}", pki.path("ca.crt")))
        // The default set: statefulset, replicaset, deployment, garbagecollector, namespace,
        // serviceaccount, serviceaccount-token, job, ...
        .arg("--controllers=*")
        .arg("--use-service-account-credentials=true")
        .arg(format!("--root-ca-file={}", pki.path("ca.crt")))
        .arg(format!(
            "--service-account-private-key-file={}",
            pki.path("sa.key")
        ))
        .arg(format!(
            "--cluster-signing-cert-file={}",
            pki.path("ca.crt")
        ))
        .arg(format!("--cluster-signing-key-file={}", pki.path("ca.key")))
        .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
        .arg("--cluster-name=tributary")
        .arg("--leader-elect=false")
        .arg("--profiling=false");
    cmd
}

/// `curl` succeeded and its output contains `expect` (curl takes option values as separate
/// arguments, not `--opt=value`).
fn curl(args: &[String], expect: &str) -> bool {
    Command::new("curl")
        .args(["--silent", "--fail", "--max-time", "3"])
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(expect))
}

fn etcd_ready() -> bool {
    curl(
        &[format!("http://127.0.0.1:{ETCD_CLIENT_PORT}/health")],
        "\"health\":\"true\"",
    )
}

fn apiserver_ready(pki: &Pki) -> bool {
    pki.complete()
        && curl(
            &[
                "--cacert".into(),
                pki.path("ca.crt"),
                "--cert".into(),
                pki.path("admin.crt"),
                "--key".into(),
                pki.path("admin.key"),
                format!("https://127.0.0.1:{API_PORT}/readyz"),
            ],
            "ok",
        )
}

fn kcm_ready(pki: &Pki) -> bool {
    pki.complete()
        && curl(
            &[
                "--cacert".into(),
                pki.path("ca.crt"),
                format!("https://127.0.0.1:{KCM_PORT}/healthz"),
            ],
            "ok",
        )
}

// ---------------------------------------------------------------------------------------------
// Building Go binaries

/// A client or serving certificate of the PKI.
struct Leaf {
    /// `<stem>.crt` and `<stem>.key`.
    stem: &'static str,
    /// The stem of the issuing CA.
    ca: &'static str,
    cn: &'static str,
    org: Option<&'static str>,
    sans: &'static [&'static str],
    server: bool,
}

const LEAVES: &[Leaf] = &[
    Leaf {
        stem: "apiserver",
        ca: "ca",
        cn: "kube-apiserver",
        org: None,
        sans: &[
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            SERVICE_FIRST_IP,
        ],
        server: true,
    },
    Leaf {
        stem: "kcm-serving",
        ca: "ca",
        cn: "kube-controller-manager",
        org: None,
        sans: &["127.0.0.1", "localhost"],
        server: true,
    },
    Leaf {
        stem: "admin",
        ca: "ca",
        cn: "tributary-admin",
        org: Some("system:masters"),
        sans: &[],
        server: false,
    },
    Leaf {
        stem: "kcm",
        ca: "ca",
        cn: "system:kube-controller-manager",
        org: None,
        sans: &[],
        server: false,
    },
    // The API server's client identity towards aggregated API servers; with the front-proxy CA
    // in `extension-apiserver-authentication`, delegated authentication (the controller-manager's
    // own secure port) works without complaints.
    Leaf {
        stem: "front-proxy-client",
        ca: "front-proxy-ca",
        cn: "front-proxy-client",
        org: None,
        sans: &[],
        server: false,
    },
];

/// The stack's private PKI in one folder, generated once and kept across restarts. Files that are
/// missing are generated (signed by the existing CA, whose key is kept); a new CA re-issues its
/// certificates. ECDSA P-256 keys throughout: Go, rustls/ring and curl accept them, and the
/// service-account tokens are ES256.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn read(&self, file: &str) -> Result<String> {
        std::fs::read_to_string(self.dir.join(file))
            .with_context(|| format!("reading {}", self.dir.join(file).display()))
    }

    fn has(&self, file: &str) -> bool {
        installed(&self.dir.join(file))
    }

    fn has_pair(&self, stem: &str) -> bool {
        self.has(&format!("{stem}.crt")) && self.has(&format!("{stem}.key"))
    }

    fn complete(&self) -> bool {
        ["ca", "front-proxy-ca"]
            .iter()
            .chain(LEAVES.iter().map(|l| &l.stem))
            .all(|stem| self.has_pair(stem))
            && self.has("sa.key")
            && self.has("sa.pub")
    }

    /// Write a file atomically (temporary file, then rename); keys are private to the user.
    fn write(&self, file: &str, body: &str) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let tmp = self.dir.join(format!("{file}.tmp"));
        std::fs::write(&tmp, body)?;
        if file.ends_with(".key") {
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        }
        std::fs::rename(&tmp, self.dir.join(file))?;
        Ok(())
    }

    fn ensure(dir: &Path) -> Result<Pki> {
        let pki = Pki {
            dir: dir.to_path_buf(),
        };
        if pki.complete() {
            return Ok(pki);
        }
        progress(&format!("generating certificates in {}", dir.display()));
        std::fs::create_dir_all(dir)?;
        let ca = pki.ca("ca", "tributary-ca")?;
        let front_proxy_ca = pki.ca("front-proxy-ca", "tributary-front-proxy-ca")?;
        for leaf in LEAVES {
            let (issuer, fresh) = if leaf.ca == "ca" {
                (&ca.0, ca.1)
            } else {
                (&front_proxy_ca.0, front_proxy_ca.1)
            };
            if fresh || !pki.has_pair(leaf.stem) {
                let params = cert_params(leaf.cn, leaf.org, leaf.sans)?;
                pki.leaf(issuer, leaf.stem, params, leaf.server)?;
            }
        }
        if !(pki.has("sa.key") && pki.has("sa.pub")) {
            let sa = KeyPair::generate()?;
            pki.write("sa.key", &sa.serialize_pem())?;
            pki.write("sa.pub", &sa.public_key_pem())?;
        }
        Ok(pki)
    }

    /// Load the CA `<stem>.crt/.key`, or create it; true when created.
    fn ca(&self, stem: &str, cn: &str) -> Result<(Issuer<'static, KeyPair>, bool)> {
        let mut params = cert_params(cn, None, &[])?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        if self.has_pair(stem) {
            let key = KeyPair::from_pem(&self.read(&format!("{stem}.key"))?)?;
            // Signing needs the subject and the key only, both as when the CA was created.
            return Ok((Issuer::new(params, key), false));
        }
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        self.write(&format!("{stem}.key"), &key.serialize_pem())?;
        self.write(&format!("{stem}.crt"), &cert.pem())?;
        Ok((Issuer::new(params, key), true))
    }

    fn leaf(
        &self,
        issuer: &Issuer<'_, KeyPair>,
        stem: &str,
        mut params: CertificateParams,
        server: bool,
    ) -> Result<()> {
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, issuer)?;
        self.write(&format!("{stem}.key"), &key.serialize_pem())?;
        self.write(&format!("{stem}.crt"), &cert.pem())
    }

    /// A kubeconfig with the CA and the client certificate embedded (base64), as both kube-rs and
    /// kubectl read it.
    fn kubeconfig(&self, user: &str, cert: &str, key: &str) -> Result<String> {
        let ca = base64(self.read("ca.crt")?.as_bytes());
        let cert = base64(self.read(cert)?.as_bytes());
        let key = base64(self.read(key)?.as_bytes());
        Ok(format!(
            "apiVersion: v1
kind: Config
clusters:
- name: tributary
  cluster:
    server: https://127.0.0.1:{API_PORT}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: tributary
  context:
    cluster: tributary
    user: {user}
current-context: tributary
"
        ))
    }
}

fn cert_params(cn: &str, org: Option<&str>, sans: &[&str]) -> Result<CertificateParams> {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    if let Some(org) = org {
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
    }
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    Ok(params)
}

/// Standard base64 with padding (kubeconfig `*-data` fields).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    /// The version constants (build markers, `KUBERNETES_VERSION`) match the committed go.mod files.
    #[test]
    fn pinned_versions_match_go_mod() -> Result<()> {
        let go = Path::new(env!("CARGO_MANIFEST_DIR")).join("go");
        let k8s = std::fs::read_to_string(go.join("kubernetes/go.mod"))?;
        assert!(k8s.contains(&format!("require k8s.io/kubernetes {KUBERNETES_VERSION}\n")));
        let staging = KUBERNETES_VERSION.replacen("v1.", "v0.", 1);
        let replaces = k8s.lines().filter(|l| l.contains(" => ")).count();
        assert!(replaces >= 30, "only {replaces} staging replaces");
        for line in k8s.lines().filter(|l| l.contains(" => ")) {
            assert!(line.ends_with(&format!(" {staging}")), "{line}");
        }
        let etcd = std::fs::read_to_string(go.join("etcd/go.mod"))?;
        assert!(etcd.contains(&format!("go.etcd.io/etcd/server/v3 {ETCD_VERSION}")));
        Ok(())
    }

    #[test]
    fn pki_is_generated_once() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("tributary-pki-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pki = Pki::ensure(&dir.join("pki"))?;
        let ca = pki.read("ca.crt")?;
        for f in [
            "ca.key",
            "apiserver.crt",
            "apiserver.key",
            "admin.crt",
            "admin.key",
            "kcm.crt",
            "kcm.key",
            "kcm-serving.crt",
            "kcm-serving.key",
            "front-proxy-ca.crt",
            "front-proxy-client.key",
            "sa.key",
            "sa.pub",
        ] {
            assert!(installed(&dir.join("pki").join(f)), "{f} missing");
        }
        assert!(pki.complete());
        let admin = pki.read("admin.crt")?;
        let again = Pki::ensure(&dir.join("pki"))?;
        assert_eq!(again.read("ca.crt")?, ca);
        assert_eq!(again.read("admin.crt")?, admin);
        // A missing certificate is re-issued by the kept CA.
        std::fs::remove_file(dir.join("pki/admin.crt"))?;
        let again = Pki::ensure(&dir.join("pki"))?;
        assert!(again.complete());
        assert_eq!(again.read("ca.crt")?, ca);
        assert_ne!(again.read("admin.crt")?, admin);
        let kubeconfig = again.kubeconfig("admin", "admin.crt", "admin.key")?;
        assert!(kubeconfig.contains("certificate-authority-data: LS0t"));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
