//! The operator's one configuration: flags, each overridable from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use tributary_crds::secret::Secret;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "tributary-operator",
    version,
    about = "Runs StreamingEnrichment pipelines"
)]
pub struct OperatorConfig {
    /// Job runtime image for resources that name none.
    #[arg(long, env = "TRIBUTARY_RUNTIME_IMAGE", default_value = tributary_crds::DEFAULT_IMAGE)]
    pub runtime_image: String,

    /// Namespaces whose StreamingEnrichments this operator runs, comma-separated. Empty: every
    /// namespace (the chart then grants a ClusterRole; with a list, Roles in those namespaces).
    #[arg(long, env = "TRIBUTARY_WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,

    /// Address of the admin server (/metrics, /healthz, /readyz).
    #[arg(long, env = "TRIBUTARY_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,

    /// Log format.
    #[arg(long, env = "TRIBUTARY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Elect a leader through a coordination Lease, so several replicas can run safely.
    #[arg(long, env = "TRIBUTARY_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,

    /// Namespace of the leader Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,

    /// Name of the leader Lease.
    #[arg(
        long,
        env = "TRIBUTARY_LEASE_NAME",
        default_value = "tributary-operator-leader"
    )]
    pub lease_name: String,

    /// This replica's identity in the Lease (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// How often (seconds) a managed OpenSearch side is re-checked: template drift, and, without
    /// the ISM plugin, the operator's own rollover and retention.
    #[arg(
        long,
        env = "TRIBUTARY_OPENSEARCH_CHECK_INTERVAL_SECS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub opensearch_check_interval_secs: u64,

    /// File holding the control key: the secret every resource's control token is derived
    /// from (HMAC of the resource's UID). Without a key (file or `TRIBUTARY_CONTROL_KEY`) the
    /// operator cannot ask the job for a savepoint, so savepoint upgrades and rescales are
    /// refused; everything else works.
    #[arg(long, env = "TRIBUTARY_CONTROL_KEY_FILE")]
    pub control_key_file: Option<PathBuf>,

    /// The control key itself, as text (for tests that run the binary as a process; the file
    /// wins when both are set). Prefer the file: a flag's value shows in the process list.
    #[arg(long, env = "TRIBUTARY_CONTROL_KEY", hide_env_values = true)]
    pub control_key: Option<Secret>,

    /// How long (seconds) every replica has to complete its part of a savepoint before the
    /// operation is abandoned and the replicas read again.
    #[arg(
        long,
        env = "TRIBUTARY_SAVEPOINT_TIMEOUT_SECS",
        default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub savepoint_timeout_secs: u64,

    /// How often (seconds) each resource's Kinesis streams are looked at (the sales stream's
    /// shards, every stream's existence), besides after each spec change.
    #[arg(
        long,
        env = "TRIBUTARY_SOURCES_CHECK_INTERVAL_SECS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub sources_check_interval_secs: u64,
}

/// The control key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading the control key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the control key {0} is empty")]
    Empty(String),
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl OperatorConfig {
    /// The namespaces to watch, trimmed, without blanks or repeats; `None`: all of them.
    pub fn watch_scope(&self) -> Option<Vec<String>> {
        let mut list: Vec<String> = Vec::new();
        for ns in self.watch_namespaces.iter().map(|n| n.trim()) {
            if !ns.is_empty() && !list.iter().any(|n| n == ns) {
                list.push(ns.to_string());
            }
        }
        (!list.is_empty()).then_some(list)
    }

    /// The control key: the file's contents, else `TRIBUTARY_CONTROL_KEY`, without surrounding
    /// whitespace (a file written by an editor or `echo` ends in a newline). `None`: no key.
    pub fn load_control_key(&self) -> Result<Option<Vec<u8>>, KeyError> {
        let (text, from) = match (&self.control_key_file, &self.control_key) {
            (Some(path), _) => {
                let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
                    path: path.clone(),
                    source,
                })?;
                (bytes, format!("file {}", path.display()))
            }
            (None, Some(text)) => (
                text.expose().as_bytes().to_vec(),
                "TRIBUTARY_CONTROL_KEY".into(),
            ),
            (None, None) => return Ok(None),
        };
        let key = text.trim_ascii();
        if key.is_empty() {
            return Err(KeyError::Empty(from));
        }
        Ok(Some(key.to_vec()))
    }

    pub fn savepoint_timeout(&self) -> Duration {
        Duration::from_secs(self.savepoint_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> OperatorConfig {
        let mut argv = vec!["tributary-operator"];
        argv.extend_from_slice(args);
        OperatorConfig::try_parse_from(argv).unwrap()
    }

    #[test]
    fn the_control_key_comes_from_the_file_first_and_is_never_printed() {
        let dir = std::env::temp_dir().join(format!("tributary-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("key");
        std::fs::write(&file, "from-file\n").unwrap();
        let path = file.to_str().unwrap();

        let cfg = parse(&["--control-key-file", path, "--control-key", "from-text"]);
        assert_eq!(
            cfg.load_control_key().unwrap().as_deref(),
            Some(&b"from-file"[..])
        );
        assert!(!format!("{cfg:?}").contains("from-text"));

        let cfg = parse(&["--control-key", " from-text "]);
        assert_eq!(
            cfg.load_control_key().unwrap().as_deref(),
            Some(&b"from-text"[..])
        );
        assert!(!format!("{cfg:?}").contains("from-text"), "{cfg:?}");

        assert_eq!(parse(&[]).load_control_key().unwrap(), None);
        std::fs::write(&file, "\n").unwrap();
        let err = parse(&["--control-key-file", path])
            .load_control_key()
            .unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
        let missing = dir.join("missing");
        let err = parse(&["--control-key-file", missing.to_str().unwrap()])
            .load_control_key()
            .unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        assert_eq!(parse(&[]).savepoint_timeout(), Duration::from_secs(300));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn scope(args: &[&str]) -> Option<Vec<String>> {
        let mut argv = vec!["tributary-operator"];
        argv.extend_from_slice(args);
        OperatorConfig::try_parse_from(argv).unwrap().watch_scope()
    }

    #[test]
    fn watch_namespaces_default_to_all_and_parse_as_a_list() {
        assert_eq!(scope(&[]), None);
        assert_eq!(scope(&["--watch-namespaces", ""]), None);
        assert_eq!(scope(&["--watch-namespaces", " , "]), None);
        assert_eq!(scope(&["--watch-namespaces", "a"]), Some(vec!["a".into()]));
        assert_eq!(
            scope(&["--watch-namespaces", "a, b,a,,c"]),
            Some(vec!["a".into(), "b".into(), "c".into()])
        );
    }
}
