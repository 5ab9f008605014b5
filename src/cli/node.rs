//! `kubelab node add` / `kubelab node delete NODE`.

use std::time::Duration;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::Ctx;
use super::progress::CliProgress;
use crate::cluster::NodeState;
use crate::ops::{self, provision::Timing};

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
    match args.command {
        NodeCommand::Add { ssh_timeout, timings: show_timings } => {
            let progress = CliProgress::new();
            let secs = Duration::from_secs(ssh_timeout);
            let (node, timings) = ops::node::add(&ctx.home, &profile, secs, ctx.wait, &progress)?;
            ctx.emit(&Added { node, timings }, |out, a| {
                writeln!(out, "added {} ({})", a.node.name, a.node.ip)?;
                if show_timings {
                    super::up::write_timings(out, &a.timings)?;
                }
                Ok(())
            })
        }
        NodeCommand::Delete { node } => {
            ops::node::remove(&profile, &node, ctx.wait, &CliProgress::new())?;
            ctx.emit(&Deleted { deleted: node }, |out, d| writeln!(out, "deleted {}", d.deleted))
        }
    }
}

/// What `node add -o json` prints: the node as saved, and the phases' timings.
#[derive(Serialize)]
struct Added {
    node: NodeState,
    timings: Vec<Timing>,
}

/// What `node delete -o json` prints.
#[derive(Serialize)]
struct Deleted {
    deleted: String,
}
