//! `cargo xtask`: the project's own command. Local stack, demo, tests.

mod stack;

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
    }
}
