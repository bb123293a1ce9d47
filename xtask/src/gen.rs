//! `cargo xtask gen -- <flags>`: build and run `tributary-gen` (the runtime crate's generator
//! binary) with the local stack's endpoints and credentials from `stack.env`, when the stack
//! has written one. Flags after `--` go to `tributary-gen` (`--help` lists them).

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::stack::{self, Ctx};

#[derive(clap::Args)]
pub struct Args {
    /// Flags for `tributary-gen` (after `--`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// The stack variables `tributary-gen` reads (its flags' `env` names).
const PASSED: [&str; 7] = [
    "KINESIS_ENDPOINT",
    "AWS_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "S3_ENDPOINT",
    "S3_REGION",
    "S3_ACCESS_KEY_ID",
];

pub fn run(ctx: &Ctx, args: Args) -> Result<()> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(&ctx.repo).args([
        "run",
        "--quiet",
        "-p",
        "tributary-runtime",
        "--bin",
        "tributary-gen",
        "--",
    ]);
    cmd.args(&args.args);
    match stack::read_env(ctx) {
        Ok(vars) => {
            for (k, v) in vars {
                // Variables already set in the caller's environment win.
                let wanted = PASSED.contains(&k.as_str()) || k == "S3_SECRET_ACCESS_KEY";
                if wanted && std::env::var_os(&k).is_none() {
                    cmd.env(k, v);
                }
            }
        }
        Err(_) => eprintln!("no stack.env: endpoints and credentials come from the environment"),
    }
    // Not `run_checked`: its error shows the command with its environment (the secrets).
    let child = cmd.spawn().context("running cargo")?;
    let status = crate::heartbeat::wait_cargo("gen", "cargo run tributary-gen", child)?;
    if !status.success() {
        bail!("tributary-gen failed ({status})");
    }
    Ok(())
}
