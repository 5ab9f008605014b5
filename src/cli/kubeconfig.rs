//! `kubelab kubeconfig [--print|--path|--update]`: the profile's kubectl context.

use std::io::Write;

use clap::Args;

use super::Ctx;
use crate::ops::kubeconfig;

/// Arguments of `kubelab kubeconfig`.
#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct KubeconfigArgs {
    /// Print the profile's standalone kubeconfig (the default).
    #[arg(long)]
    print: bool,

    /// Print the standalone kubeconfig's path, e.g. for `KUBECONFIG=$(kubelab kubeconfig --path)`.
    #[arg(long)]
    path: bool,

    /// Merge the profile's context into your kubeconfig again and make it current.
    ///
    /// The file is the first of $KUBECONFIG, else ~/.kube/config.
    #[arg(long)]
    update: bool,
}

/// Runs `kubelab kubeconfig`.
pub fn exec(ctx: &Ctx, args: KubeconfigArgs) -> Result<(), crate::Error> {
    let profile = ctx.profile()?;
    let mut out = std::io::stdout().lock();
    let text = if args.path {
        format!("{}\n", kubeconfig::path(&profile)?.display())
    } else if args.update {
        let target = kubeconfig::update(&ctx.home, &profile, &kubeconfig::user_path()?)?;
        format!(
            "kubectl context {:?} merged into {}\n",
            profile.name().to_string(),
            target.display()
        )
    } else {
        kubeconfig::print(&profile)?
    };
    out.write_all(text.as_bytes()).map_err(crate::Error::Output)
}
