//! The job runtime binary. For now it only reads and checks its configuration: the sources,
//! state and sinks are wired in the next steps, so it refuses to pretend it processes anything.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tributary_crds::job_config::{CONFIG_DIR, CONFIG_FILE, JobConfig, env};

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

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let path = PathBuf::from(&args.config);
    match load_config(&path) {
        Ok(config) => {
            eprintln!(
                "loaded job configuration for {}/{} from {}; the processing loop is not \
                 implemented yet, exiting",
                config.pipeline.namespace,
                config.pipeline.name,
                path.display()
            );
            // Not a success: a pod running this build must not look healthy.
            std::process::ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
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
