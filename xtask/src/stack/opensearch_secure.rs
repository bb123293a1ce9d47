//! A second OpenSearch node with the security plugin ON, for the tests of roles and field-level
//! security: https://127.0.0.1:9201, its own cluster, data folder and configuration folder.
//!
//! It runs an install of its own, made by `opensearch.rs`'s installer from
//! `xtask/maven/opensearch-secure/` (pom.xml and checksums) into
//! `$TRIBUTARY_HOME/opensearch-secure/`: OpenSearch 2.19.4 (the integ-test distribution and the
//! module jars of that version, all on Maven Central) with opensearch-security 2.19.4.0 exactly
//! as published, whose descriptor asks for OpenSearch 2.19.4. The plugin calls into core
//! internals (field-level security filters `_source` with `XContentMapValues`), so it runs only on
//! the core it was built for: on the first node's 2.19.6 the first search under a role with
//! field-level security killed the node with `NoSuchMethodError`. 2.19.4.0 is the newest
//! opensearch-security 2.x on Central; the first node keeps 2.19.6 (security disabled).
//!
//! The node runs with `OPENSEARCH_PATH_CONF` pointing at a copy of the install's `config/`
//! where `stack up` adds:
//! - TLS for transport and HTTP, as the plugin requires: a CA and a node certificate made with
//!   rcgen (PKCS#8 keys; the node certificate serves and authenticates the transport, so it has
//!   both server and client usages);
//! - `internal_users.yml` with one user, `admin` (reserved, backend role `admin`, which the
//!   default `roles_mapping.yml` maps to `all_access`), whose password is generated once and
//!   hashed with the plugin's own `tools/hash.sh`;
//! - `plugins.security.allow_default_init_securityindex: true`, so the node writes its security
//!   index from those files on first start (no securityadmin run).
//!
//! The configuration folder records what it was made for (see [`configured_for`]): another install
//! makes `stack up` redo it and empty the node's data (OpenSearch refuses to open data a newer
//! version wrote; the security index is rewritten from the files on the next start).
//!
//! `stack.env` gets the URL, the admin user and password, the CA's path and the node's version.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use super::opensearch::{Dist, install, install_dir, java_home, running_as_root, toolchains};
use super::{Component, Ctx, progress, require_tool};
use crate::prereqs::Toolchain;

/// OpenSearch 2.19.4 with opensearch-security 2.19.4.0 unmodified: the newest security plugin of
/// the 2.x line (Java 17) on Maven Central, on the core version it was built for.
const DIST: Dist = Dist {
    name: NAME,
    version: "2.19.4",
    security_version: "2.19.4.0",
    security_range: None,
    layout: 1,
};
/// Bump when `prepare` writes the configuration differently, so existing ones are redone.
const CONFIG_LAYOUT: u32 = 1;

const HOST: &str = "127.0.0.1";
const HTTP_PORT: u16 = 9201;
const TRANSPORT_PORT: u16 = 9301;
const NAME: &str = "opensearch-secure";
const ADMIN: &str = "admin";
const NODE_CN: &str = "tributary-opensearch-secure";
/// Half the first node's heap: this node holds a few test indices only.
const HEAP: &str = "-Xms512m -Xmx512m";

pub struct OpenSearchSecure;

fn conf_dir(ctx: &Ctx) -> Result<PathBuf> {
    Ok(ctx.data_dir(NAME)?.join("config"))
}

fn url() -> String {
    format!("https://{HOST}:{HTTP_PORT}")
}

fn password(ctx: &Ctx) -> Result<String> {
    let p = ctx.data_dir(NAME)?.join("admin-password");
    Ok(std::fs::read_to_string(&p)
        .with_context(|| format!("reading {}", p.display()))?
        .trim()
        .to_string())
}

/// 16 random bytes as hex, with the classes OpenSearch's password rules ask for.
fn new_password() -> Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!("Tr-{hex}-Z9"))
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

fn params(cn: &str, sans: &[&str]) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2124, 1, 1);
    Ok(p)
}

/// CA and node certificate, written once.
fn write_certs(conf: &Path) -> Result<()> {
    if conf.join("node.pem").is_file() && conf.join("root-ca.pem").is_file() {
        return Ok(());
    }
    let mut ca = params("tributary-opensearch-ca", &[])?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let mut node = params(NODE_CN, &["localhost", HOST])?;
    node.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    node.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    node.use_authority_key_identifier_extension = true;
    let node_key = KeyPair::generate()?;
    let node_cert = node.signed_by(&node_key, &issuer)?;
    std::fs::write(conf.join("root-ca.pem"), ca_cert.pem())?;
    std::fs::write(conf.join("node.pem"), node_cert.pem())?;
    std::fs::write(conf.join("node-key.pem"), node_key.serialize_pem())?;
    Ok(())
}

/// The bcrypt hash of `password`, by the plugin's own tool.
fn hash(ctx: &Ctx, password: &str) -> Result<String> {
    let java = java_home()?;
    let tool = install_dir(ctx, &DIST).join("plugins/opensearch-security/tools/hash.sh");
    let out = Command::new("bash")
        .arg(&tool)
        .args(["-p", password])
        .env("JAVA_HOME", &java)
        .env("OPENSEARCH_JAVA_HOME", &java)
        .output()
        .with_context(|| format!("running {}", tool.display()))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("$2"))
        .map(str::to_string)
        .with_context(|| {
            format!(
                "{} printed no hash: {}",
                tool.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

const SETTINGS: &str = "
# Written by `cargo xtask stack up` (xtask/src/stack/opensearch_secure.rs).
plugins.security.ssl.transport.pemcert_filepath: node.pem
plugins.security.ssl.transport.pemkey_filepath: node-key.pem
plugins.security.ssl.transport.pemtrustedcas_filepath: root-ca.pem
plugins.security.ssl.transport.enforce_hostname_verification: false
plugins.security.ssl.http.enabled: true
plugins.security.ssl.http.pemcert_filepath: node.pem
plugins.security.ssl.http.pemkey_filepath: node-key.pem
plugins.security.ssl.http.pemtrustedcas_filepath: root-ca.pem
plugins.security.allow_default_init_securityindex: true
plugins.security.restapi.roles_enabled: [\"all_access\"]
plugins.security.check_snapshot_restore_write_privileges: true
# No audit sink in a test stack (the default one logs an error at start).
plugins.security.audit.type: noop
";

/// What the configuration folder's marker says: the install and configuration it was made for.
fn configured_for() -> String {
    format!(
        "opensearch {} security {} layout {} config {CONFIG_LAYOUT}\n",
        DIST.version, DIST.security_version, DIST.layout
    )
}

fn configured_marker(ctx: &Ctx) -> Result<PathBuf> {
    Ok(conf_dir(ctx)?.join(".tributary-configured"))
}

fn is_configured(ctx: &Ctx) -> Result<bool> {
    Ok(std::fs::read_to_string(configured_marker(ctx)?).is_ok_and(|m| m == configured_for()))
}

/// The configuration folder: the install's, plus TLS, the admin user and the settings above.
/// Made anew, with empty node data, when it was made for another install.
fn prepare(ctx: &Ctx) -> Result<PathBuf> {
    let conf = conf_dir(ctx)?;
    if !is_configured(ctx)? {
        let data = ctx.data_dir(NAME)?.join("data");
        if data.exists() {
            progress(&format!(
                "{NAME}: configuration made for another install; emptying {}",
                data.display()
            ));
            std::fs::remove_dir_all(&data)
                .with_context(|| format!("removing {}", data.display()))?;
        }
        let _ = std::fs::remove_dir_all(&conf);
        copy_dir(&install_dir(ctx, &DIST).join("config"), &conf)?;
        write_certs(&conf)?;
        let pw = new_password()?;
        let users = format!(
            "---\n_meta:\n  type: \"internalusers\"\n  config_version: 2\n\n{ADMIN}:\n  hash: \"{}\"\n  \
             reserved: true\n  backend_roles:\n  - \"admin\"\n  description: \"tributary stack admin\"\n",
            hash(ctx, &pw)?
        );
        std::fs::write(conf.join("opensearch-security/internal_users.yml"), users)?;
        let mut yml = std::fs::read_to_string(conf.join("opensearch.yml"))?;
        yml.push_str(SETTINGS);
        yml.push_str(&format!("plugins.security.nodes_dn: [\"CN={NODE_CN}\"]\n"));
        std::fs::write(conf.join("opensearch.yml"), yml)?;
        std::fs::write(ctx.data_dir(NAME)?.join("admin-password"), &pw)?;
        std::fs::write(configured_marker(ctx)?, configured_for())?;
    }
    Ok(conf)
}

impl Component for OpenSearchSecure {
    fn name(&self) -> &'static str {
        NAME
    }

    fn install(&self, ctx: &Ctx) -> Result<()> {
        require_tool("curl", "apt-get install -y curl")?;
        install(ctx, &DIST)?;
        if ctx.is_running(NAME) && !is_configured(ctx)? {
            bail!(
                "the running {NAME} was configured for another install ({}); \
                 stop it first: cargo xtask stack down",
                configured_marker(ctx)?.display()
            );
        }
        Ok(())
    }

    fn start(&self, ctx: &Ctx) -> Result<()> {
        if self.ready(ctx) {
            progress("opensearch-secure already running");
            return Ok(());
        }
        if !ctx.is_running(NAME) {
            let conf = prepare(ctx)?;
            let data = ctx.data_dir(NAME)?;
            for d in ["data", "logs", "tmp"] {
                std::fs::create_dir_all(data.join(d))?;
            }
            let java = java_home()?;
            let bin = install_dir(ctx, &DIST).join("bin/opensearch");
            let mut cmd = if running_as_root() {
                let mut c = Command::new("unshare");
                c.args(["--user", "--map-user=1000", "--map-group=1000", "--"])
                    .arg(&bin);
                c
            } else {
                Command::new(&bin)
            };
            for s in [
                "cluster.name=tributary-secure".to_string(),
                "node.name=tributary-secure-0".into(),
                "discovery.type=single-node".into(),
                format!("network.host={HOST}"),
                format!("http.port={HTTP_PORT}"),
                format!("transport.port={TRANSPORT_PORT}"),
                format!("path.data={}", data.join("data").display()),
                format!("path.logs={}", data.join("logs").display()),
                "cluster.routing.allocation.disk.threshold_enabled=false".into(),
            ] {
                cmd.arg(format!("-E{s}"));
            }
            cmd.env("JAVA_HOME", &java)
                .env("OPENSEARCH_JAVA_HOME", &java)
                .env("OPENSEARCH_PATH_CONF", &conf)
                .env(
                    "OPENSEARCH_JAVA_OPTS",
                    format!(
                        "{HEAP} -XX:HeapDumpPath={tmp} -XX:ErrorFile={logs}/hs_err_pid%p.log",
                        tmp = data.join("tmp").display(),
                        logs = data.join("logs").display()
                    ),
                )
                .env("OPENSEARCH_TMPDIR", data.join("tmp"))
                .current_dir(&data);
            let pid = ctx.spawn(NAME, cmd)?;
            progress(&format!("{NAME} started (pid {pid})"));
        }
        ctx.wait_ready(NAME, Duration::from_secs(240), || self.ready(ctx))
    }

    fn processes(&self) -> Vec<&'static str> {
        vec![NAME]
    }

    /// Ready when the admin can authenticate: TLS up and the security index initialised.
    fn ready(&self, ctx: &Ctx) -> bool {
        let (Ok(pw), Ok(conf)) = (password(ctx), conf_dir(ctx)) else {
            return false;
        };
        Command::new("curl")
            .args(["-sf", "-o", "/dev/null", "--max-time", "5", "--cacert"])
            .arg(conf.join("root-ca.pem"))
            .arg("-u")
            .arg(format!("{ADMIN}:{pw}"))
            .arg(format!("{}/_plugins/_security/authinfo", url()))
            .status()
            .is_ok_and(|s| s.success())
    }

    fn toolchains(&self, ctx: &Ctx) -> Vec<Toolchain> {
        toolchains(ctx, &DIST)
    }

    fn env(&self, ctx: &Ctx) -> Vec<(&'static str, String)> {
        let conf = conf_dir(ctx).unwrap_or_default();
        vec![
            ("OPENSEARCH_SECURE_URL", url()),
            ("OPENSEARCH_SECURE_VERSION", DIST.version.to_string()),
            ("OPENSEARCH_SECURE_ADMIN_USER", ADMIN.to_string()),
            (
                "OPENSEARCH_SECURE_ADMIN_PASSWORD",
                password(ctx).unwrap_or_default(),
            ),
            (
                "OPENSEARCH_SECURE_CA",
                conf.join("root-ca.pem").display().to_string(),
            ),
        ]
    }
}
