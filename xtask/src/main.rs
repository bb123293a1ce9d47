//! `cargo xtask`: the project's own command. Local stack, demo, generated files, tests.

mod agent;
mod bench;
mod demo;
mod r#gen;
mod generate;
mod heartbeat;
mod parquet_rows;
mod prereqs;
mod stack;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Tributary developer and CI command")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install, start, stop or probe the local stack of real servers.
    Stack {
        #[command(subcommand)]
        action: StackAction,
    },
    /// The main job: bring the local stack up and show how to reach each part.
    Demo,
    /// Format check, clippy, then every test against the local stack (what CI runs).
    Test {
        /// Leave the stack running afterwards (to rerun single tests quickly).
        #[arg(long)]
        keep_stack: bool,
    },
    /// Test tooling: the local node agent (a kubelet stand-in running pods as local processes),
    /// in the foreground. `stack up` starts one; see docs/development.md.
    NodeAgent(agent::Args),
    /// Regenerate every generated file (CRD YAML, the chart's copy, docs/reference.md) from the Rust
    /// types.
    Generate,
    /// Generate test data (`tributary-gen`) with the local stack's endpoints: `-- --help`.
    Gen(r#gen::Args),
    /// Benchmarks: `bench engine` (sales per second per core through the engine).
    Bench {
        #[command(subcommand)]
        what: bench::What,
    },
}

#[derive(Subcommand)]
enum StackAction {
    /// Install what is missing and start every server; a no-op when all are running.
    Up,
    /// Stop every server the stack started.
    Down,
    /// Probe every server; exit non-zero when one is not ready.
    Status,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let ctx = stack::Ctx::from_env()?;
    // Every prerequisite of the command first, before any build or download.
    use prereqs::{Needs, ensure};
    match cli.cmd {
        Cmd::Stack { action } => match action {
            StackAction::Up => {
                ensure(&ctx, Needs::STACK, "stack up")?;
                stack::up(&ctx)
            }
            StackAction::Down => stack::down(&ctx),
            StackAction::Status => {
                if !stack::status(&ctx)? {
                    std::process::exit(1);
                }
                Ok(())
            }
        },
        Cmd::Demo => {
            ensure(&ctx, Needs::DEMO, "demo")?;
            demo::run_demo(&ctx)
        }
        Cmd::Test { keep_stack } => {
            ensure(&ctx, Needs::TEST, "test")?;
            test::run(&ctx, keep_stack)
        }
        Cmd::Generate => generate::run(&ctx),
        Cmd::Gen(args) => {
            ensure(&ctx, Needs::BUILD, "gen")?;
            r#gen::run(&ctx, args)
        }
        Cmd::Bench { what } => {
            ensure(&ctx, Needs::BUILD, "bench")?;
            bench::run(&ctx, what)
        }
        Cmd::NodeAgent(args) => agent::run(&ctx, args),
    }
}
