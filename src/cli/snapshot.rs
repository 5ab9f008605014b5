//! `kubelab snapshot save|restore|list|delete` and `kubelab reset`.

use clap::{Args, Subcommand};
use serde::Serialize;

use super::Ctx;
use super::progress::CliProgress;
use crate::ops::snapshot::{self, Restored};
use crate::snapshot::{CLEAN, Record, default_name, utc};

/// Arguments of `kubelab snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(Debug, Subcommand)]
enum SnapshotCommand {
    /// Snapshot the whole cluster: every node paused, captured (memory included when it
    /// runs) and resumed together.
    Save {
        /// Its name; default `snap-YYYYMMDD-HHMMSS` (UTC).
        name: Option<String>,
    },
    /// Bring the whole cluster back to a snapshot: clocks set, SSH and (kubeadm) every
    /// node Ready before it returns.
    Restore {
        /// The snapshot.
        name: String,
    },
    /// List the profile's snapshots.
    List,
    /// Delete a snapshot from every node.
    Delete {
        /// The snapshot.
        name: String,
    },
}

/// What `snapshot delete -o json` prints.
#[derive(Serialize)]
struct Deleted {
    deleted: String,
}

/// Runs `kubelab snapshot ...`.
pub fn exec(ctx: &Ctx, args: SnapshotArgs) -> Result<(), crate::Error> {
    let profile = ctx.profile()?;
    let progress = CliProgress::new();
    match args.command {
        SnapshotCommand::Save { name } => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let name = name.unwrap_or_else(|| default_name(now));
            let record = snapshot::save(&profile, &name, ctx.wait, &progress)?;
            ctx.emit(&record, |out, r| {
                writeln!(out, "saved snapshot {} of {} ({})", r.name, r.nodes.join(", "), size(r))
            })
        }
        SnapshotCommand::Restore { name } => exec_restore(ctx, &name),
        SnapshotCommand::List => {
            let listed = snapshot::list(&profile, ctx.wait, &progress)?;
            ctx.emit(&listed, |out, listed| {
                writeln!(
                    out,
                    "{:<24} {:<20} {:<7} {:<9} {:>10}  NODES",
                    "NAME", "TAKEN (UTC)", "MEMORY", "COMPLETE", "DISK"
                )?;
                for l in listed {
                    let r = &l.record;
                    let (date, time) = utc(r.created_unix);
                    writeln!(
                        out,
                        "{:<24} {:<20} {:<7} {:<9} {:>10}  {}",
                        r.name,
                        format!("{date} {time}"),
                        if r.memory { "yes" } else { "no" },
                        if l.complete { "yes" } else { "NO" },
                        mib(r.disk_bytes),
                        r.nodes.join(",")
                    )?;
                }
                Ok(())
            })
        }
        SnapshotCommand::Delete { name } => {
            snapshot::delete(&profile, &name, ctx.wait, &progress)?;
            ctx.emit(&Deleted { deleted: name }, |out, d| {
                writeln!(out, "deleted snapshot {}", d.deleted)
            })
        }
    }
}

/// Runs `kubelab snapshot restore NAME`, and `kubelab reset` with `clean`.
pub fn exec_restore(ctx: &Ctx, name: &str) -> Result<(), crate::Error> {
    let profile = ctx.profile()?;
    let progress = CliProgress::new();
    let restored: Restored = snapshot::restore(&profile, name, ctx.wait, &progress)?;
    ctx.emit(&restored, |out, r| {
        if r.running {
            writeln!(out, "restored snapshot {}: every node runs, clocks set", r.name)?;
        } else {
            writeln!(
                out,
                "restored snapshot {} (disks only): the cluster is stopped, `kubelab up` starts it",
                r.name
            )?;
        }
        super::up::write_timings(out, &r.timings)
    })
}

/// Runs `kubelab reset`.
pub fn exec_reset(ctx: &Ctx) -> Result<(), crate::Error> {
    exec_restore(ctx, CLEAN)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1_048_576.0)
}

fn size(record: &Record) -> String {
    let per_node = record.disk_bytes / record.nodes.len().max(1) as u64;
    format!("{} on disk, {} per node", mib(record.disk_bytes), mib(per_node))
}
