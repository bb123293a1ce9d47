//! `cargo xtask bench engine [-- <flags>]`: the engine benchmark
//! (`job-runtime/examples/engine_bench.rs`), enriched sales per second per core.
//!
//! Built in the **dev** profile with the runtime and the CRD crate overridden to `opt-level = 3`,
//! one codegen unit (more inlining across the runtime's modules), without debug assertions or
//! overflow checks (`--config` on the command line): the
//! dependencies (RocksDB, serde_json, arrow, ...) are already optimised in dev (workspace
//! `Cargo.toml`), and the `release` / `bench` profiles or a custom one would each rebuild
//! RocksDB's C++ in their own target folder (about 25 minutes here). The overridden crates get
//! their own artefacts next to the plain dev ones, so this does not invalidate other builds.

use std::process::Command;

use anyhow::Result;
use clap::Subcommand;

use crate::stack::Ctx;

#[derive(Subcommand)]
pub enum What {
    /// Sales per second per core through the engine (in-memory source, RocksDB joins, encoded
    /// outputs, commits). Flags after `--` go to the benchmark (`-- --help` lists them).
    Engine {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Savepoint write and restore time and size for a large state on the local stack's S3
    /// (`job-runtime/examples/savepoint_bench.rs`; needs `cargo xtask stack up`).
    Savepoint {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Optimise the workspace crates of the benchmark inside the dev profile.
const OPTIMISED: [&str; 2] = ["tributary-runtime", "tributary-crds"];

pub fn run(ctx: &Ctx, what: What) -> Result<()> {
    let (example, args) = match what {
        What::Engine { args } => ("engine_bench", args),
        What::Savepoint { args } => ("savepoint_bench", args),
    };
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(&ctx.repo).arg("run");
    for krate in OPTIMISED {
        for setting in [
            "opt-level=3",
            "codegen-units=1",
            "debug-assertions=false",
            "overflow-checks=false",
        ] {
            cmd.arg("--config")
                .arg(format!("profile.dev.package.{krate}.{setting}"));
        }
    }
    cmd.args(["-p", "tributary-runtime", "--example", example, "--"])
        .args(args);
    crate::heartbeat::cargo("bench", &format!("cargo run {example}"), &mut cmd)
}
