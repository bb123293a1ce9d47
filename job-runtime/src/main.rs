//! The job runtime binary: reads the configuration the operator renders, then runs the job
//! (see [`tributary_runtime::app`]) until SIGTERM.

#[global_allocator]
static ALLOCATOR: tributary_runtime::Allocator = tributary_runtime::Allocator;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tributary_crds::job_config::{CONFIG_DIR, CONFIG_FILE, JobConfig, env};
use tributary_crds::secret::Secret;
use tributary_runtime::app::{self, Settings};
use tributary_runtime::source::assign::ordinal_from_pod_name;
use tributary_runtime::source::kinesis::SourceSettings;

#[derive(Parser, Debug)]
#[command(
    name = "tributary-runtime",
    version,
    about = "The Tributary job runtime"
)]
struct Args {
    /// Path of the job configuration rendered by the operator.
    #[arg(long, env = env::CONFIG_PATH, default_value_t = default_config_path())]
    config: String,
    /// Override of `runtime.stateDir` (the RocksDB folder).
    #[arg(long, env = "TRIBUTARY_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// This replica's ordinal; default: the numeric suffix of the pod name, else 0.
    #[arg(long, env = "TRIBUTARY_ORDINAL")]
    ordinal: Option<u32>,
    /// Pod name (from the downward API).
    #[arg(long, env = env::POD_NAME)]
    pod_name: Option<String>,
    /// Address the admin server binds (default: the pod IP, else all interfaces).
    #[arg(long, env = env::POD_IP)]
    pod_ip: Option<String>,
    /// Override of `runtime.adminPort`.
    #[arg(long, env = "TRIBUTARY_ADMIN_PORT")]
    admin_port: Option<u16>,
    /// How long the sinks may take to deliver at shutdown.
    #[arg(long, env = "TRIBUTARY_DRAIN_TIMEOUT_SECONDS", default_value_t = 20)]
    drain_timeout_seconds: u64,
    /// How often the Kinesis shards are re-listed (resharding discovery).
    #[arg(long, env = "TRIBUTARY_RELIST_SECONDS", default_value_t = 30)]
    relist_seconds: u64,
    /// Poll interval of an idle or caught-up shard, in milliseconds.
    #[arg(long, env = "TRIBUTARY_IDLE_POLL_MS", default_value_t = 1000)]
    idle_poll_ms: u64,
    /// Log format: text or json.
    #[arg(long, env = "TRIBUTARY_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

fn default_config_path() -> String {
    format!("{CONFIG_DIR}/{CONFIG_FILE}")
}

fn load_config(path: &PathBuf) -> anyhow::Result<JobConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the job configuration {}", path.display()))?;
    JobConfig::from_yaml(&text)
        .with_context(|| format!("invalid job configuration {}", path.display()))
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn settings(args: &Args, config: &JobConfig) -> anyhow::Result<Settings> {
    let ordinal = match (args.ordinal, &args.pod_name) {
        (Some(o), _) => o,
        (None, Some(pod)) => ordinal_from_pod_name(pod)
            .with_context(|| format!("cannot take the ordinal from the pod name {pod:?}"))?,
        (None, None) => 0,
    };
    Ok(Settings {
        state_dir: args
            .state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(&config.runtime.state_dir)),
        admin_addr: Settings::admin_addr(
            args.pod_ip.as_deref(),
            args.admin_port.unwrap_or(config.runtime.admin_port),
        ),
        ordinal,
        opensearch_username: std::env::var(env::OPENSEARCH_USERNAME).ok(),
        opensearch_password: std::env::var(env::OPENSEARCH_PASSWORD)
            .ok()
            .map(Secret::new),
        drain_timeout: Duration::from_secs(args.drain_timeout_seconds),
        control_token: std::env::var(env::CONTROL_TOKEN).ok().map(Secret::new),
        source: SourceSettings {
            relist_interval: Duration::from_secs(args.relist_seconds.max(1)),
            idle_interval: Duration::from_millis(args.idle_poll_ms.max(200)),
            ..SourceSettings::default()
        },
    })
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    init_logs(&args.log_format);
    // The AWS SDK and the OpenSearch client may bring different rustls providers.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let path = PathBuf::from(&args.config);
    let config = match load_config(&path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let settings = match settings(&args, &config) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(app::run(config, settings)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tributary_crds::StreamingEnrichment;

    #[test]
    fn loads_the_configuration_the_operator_renders() {
        let example = format!("{}/../examples/minimal.yaml", env!("CARGO_MANIFEST_DIR"));
        let se: StreamingEnrichment =
            serde_yaml::from_str(&std::fs::read_to_string(example).unwrap()).unwrap();
        let config = JobConfig::from_spec("ns", "sales", &se.spec, 2);
        let path = std::env::temp_dir().join(format!("tributary-job-{}.yaml", std::process::id()));
        std::fs::write(&path, config.to_yaml().unwrap()).unwrap();
        let loaded = load_config(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(loaded.unwrap(), config);
    }

    #[test]
    fn a_bad_file_is_an_error_naming_it() {
        let path = std::env::temp_dir().join(format!("tributary-bad-{}.yaml", std::process::id()));
        std::fs::write(&path, "pipeline: [").unwrap();
        let err = format!("{:#}", load_config(&path).unwrap_err());
        std::fs::remove_file(&path).unwrap();
        assert!(err.contains("invalid job configuration"), "{err}");
        let missing = format!(
            "{:#}",
            load_config(&PathBuf::from("/nonexistent")).unwrap_err()
        );
        assert!(missing.contains("cannot read"), "{missing}");
    }
}
