//! `kubelab node add` / `kubelab node delete NODE`.

use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::Ctx;
use super::progress::CliProgress;
use crate::ops;

/// Arguments of `kubelab node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    #[command(subcommand)]
    command: NodeCommand,
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Add a worker node (named `<profile>-mNN`).
    Add {
        /// Seconds to wait for the node to answer SSH.
        #[arg(long, value_name = "SECS", default_value_t = 900)]
        ssh_timeout: u64,
        /// Print how long each phase took.
        #[arg(long)]
        timings: bool,
    },
    /// Delete a worker node and its disks.
    Delete {
        /// The node's name.
        node: String,
    },
}

/// Runs `kubelab node ...`.
pub fn exec(ctx: &Ctx, args: NodeArgs) -> Result<(), crate::Error> {
    let profile = ctx.profile()?;
    let mut out = std::io::stdout().lock();
    match args.command {
        NodeCommand::Add { ssh_timeout, timings } => {
            let progress = CliProgress::new();
            let secs = Duration::from_secs(ssh_timeout);
            let (node, phases) = ops::node::add(&ctx.home, &profile, secs, ctx.wait, &progress)?;
            writeln!(out, "added {} ({})", node.name, node.ip).map_err(crate::Error::Output)?;
            if timings {
                super::up::print_timings(&mut out, &phases)?;
            }
            Ok(())
        }
        NodeCommand::Delete { node } => {
            ops::node::remove(&profile, &node, ctx.wait)?;
            writeln!(out, "deleted {node}").map_err(crate::Error::Output)
        }
    }
}
