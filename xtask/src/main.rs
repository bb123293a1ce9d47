//! `cargo xtask`: the project's own command. Local stack, demo, generated files, tests.

mod generate;
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
    /// Regenerate every generated file (CRD YAML and the chart's copy) from the Rust types.
    Generate,
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
    match cli.cmd {
        Cmd::Stack { action } => match action {
            StackAction::Up => stack::up(&ctx),
            StackAction::Down => stack::down(&ctx),
            StackAction::Status => {
                if !stack::status(&ctx)? {
                    std::process::exit(1);
                }
                Ok(())
            }
        },
        Cmd::Demo => demo(&ctx),
        Cmd::Test { keep_stack } => test::run(&ctx, keep_stack),
        Cmd::Generate => generate::run(&ctx),
    }
}

fn demo(ctx: &stack::Ctx) -> Result<()> {
    stack::up(ctx)?;
    println!(
        "\nThe local stack is up. Endpoints ({}):",
        stack::env_path(ctx).display()
    );
    for (k, v) in stack::read_env(ctx)? {
        println!("  {k}={v}");
    }
    println!(
        "\nTry:\n  set -a; . {}; set +a\n  $KUBECTL get ns\n  curl -s \"$OPENSEARCH_URL/_cluster/health\"\n\nStop it with `cargo xtask stack down`.",
        stack::env_path(ctx).display()
    );
    Ok(())
}
