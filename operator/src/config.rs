//! The operator's one configuration: flags, each overridable from the environment.

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};

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
}

#[cfg(test)]
mod tests {
    use super::*;

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
