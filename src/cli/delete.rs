//! `kubelab delete [--all]`: remove a cluster and everything kubelab created for it.

use clap::Args;
use serde::Serialize;

use super::Ctx;
use crate::ops::lifecycle;
use crate::profile::{self, Profile};

/// Arguments of `kubelab delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Delete every profile, not only the selected one.
    #[arg(long)]
    all: bool,
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
    let mut deleted = Deleted { profiles: Vec::new() };
    for profile in &profiles {
        let existed = lifecycle::delete(&ctx.home, profile, ctx.wait)?;
        deleted.profiles.push(Outcome { name: profile.name().to_string(), existed });
    }
    ctx.emit(&deleted, |out, d| {
        for p in &d.profiles {
            let text = if p.existed { "deleted" } else { "does not exist" };
            writeln!(out, "profile {}: {text}", p.name)?;
        }
        Ok(())
    })
}

/// What `delete -o json` prints: each profile asked for, and whether it existed.
#[derive(Serialize)]
struct Deleted {
    profiles: Vec<Outcome>,
}

#[derive(Serialize)]
struct Outcome {
    name: String,
    existed: bool,
}
