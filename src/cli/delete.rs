//! `kubelab delete [--all] [--force]`: remove a cluster and everything kubelab created
//! for it.

use clap::Args;
use serde::Serialize;

use super::Ctx;
use super::progress::CliProgress;
use crate::ops::lifecycle::{self, Corrupt};
use crate::profile::{self, Profile};
use crate::progress::Progress;

/// Arguments of `kubelab delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Delete every profile, not only the selected one.
    #[arg(long)]
    all: bool,
    /// Also delete a profile whose profile.json or journal is corrupt: everything on the
    /// hypervisors whose owner marker names this home and profile goes, found without
    /// reading the profile's files.
    #[arg(long)]
    force: bool,
    /// The libvirt URI `--force` sweeps (default: `LIBVIRT_DEFAULT_URI`, else
    /// qemu:///system).
    #[arg(long, requires = "force")]
    libvirt_uri: Option<String>,
}

/// Runs `kubelab delete`.
pub fn exec(ctx: &Ctx, args: DeleteArgs) -> Result<(), crate::Error> {
    let profiles = if args.all {
        let mut names = Vec::new();
        for summary in profile::list(&ctx.home)? {
            names.push(Profile::new(&ctx.home, summary.name.parse()?));
        }
        names
    } else {
        vec![ctx.profile()?]
    };
    let corrupt = match args.force {
        true => Corrupt::Sweep { libvirt_uri: args.libvirt_uri.as_deref() },
        false => Corrupt::Refuse,
    };
    let progress = CliProgress::new();
    let mut deleted = Deleted { profiles: Vec::new() };
    for profile in &profiles {
        let name = profile.name().to_string();
        let existed = match lifecycle::delete(&ctx.home, profile, ctx.wait, corrupt, &progress) {
            Ok(existed) => Some(existed),
            // One corrupt profile does not keep `--all` from deleting the others.
            Err(e) if args.all && lifecycle::is_corrupt(&e) => {
                progress.message(&format!(
                    "warning: profile {name} kept: {}; `kubelab delete --force -p {name}` \
                     removes it",
                    crate::error::chain(&e)
                ));
                None
            }
            Err(e) => return Err(e),
        };
        deleted.profiles.push(Outcome { name, existed });
    }
    ctx.emit(&deleted, |out, d| {
        for p in &d.profiles {
            let text = match p.existed {
                Some(true) => "deleted",
                Some(false) => "does not exist",
                None => "kept: corrupt (see the warning)",
            };
            writeln!(out, "profile {}: {text}", p.name)?;
        }
        Ok(())
    })
}

/// What `delete -o json` prints: each profile asked for, and whether it existed (`null`:
/// kept by `--all` because it is corrupt).
#[derive(Serialize)]
struct Deleted {
    profiles: Vec<Outcome>,
}

#[derive(Serialize)]
struct Outcome {
    name: String,
    existed: Option<bool>,
}
