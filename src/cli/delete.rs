//! `kubelab delete [--all]`: remove a cluster and everything kubelab created for it.

use std::io::Write;

use clap::Args;

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
    let mut out = std::io::stdout().lock();
    for profile in &profiles {
        let existed = lifecycle::delete(&ctx.home, profile, ctx.wait)?;
        let text = if existed { "deleted" } else { "does not exist" };
        writeln!(out, "profile {}: {text}", profile.name()).map_err(crate::Error::Output)?;
    }
    Ok(())
}
