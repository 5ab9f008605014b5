//! `kubelab kubeconfig [--print|--path|--update]`: the profile's kubectl context.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

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

/// What `kubeconfig -o json` prints: `path` always (the standalone file, or with
/// --update the file merged into), `context` with --update, `kubeconfig` (the
/// document's text) with --print.
#[derive(Serialize)]
struct Printed {
    path: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kubeconfig: Option<String>,
}

/// Runs `kubelab kubeconfig`.
pub fn exec(ctx: &Ctx, args: KubeconfigArgs) -> Result<(), crate::Error> {
    let profile = ctx.profile()?;
    if args.path {
        let printed =
            Printed { path: kubeconfig::path(&profile)?, context: None, kubeconfig: None };
        return ctx.emit(&printed, |out, p| writeln!(out, "{}", p.path.display()));
    }
    if args.update {
        let path = kubeconfig::update(&ctx.home, &profile, &kubeconfig::user_path()?, ctx.wait)?;
        let context = Some(profile.name().to_string());
        let printed = Printed { path, context, kubeconfig: None };
        return ctx.emit(&printed, |out, p| {
            let context = p.context.as_deref().unwrap_or_default();
            writeln!(out, "kubectl context {context:?} merged into {}", p.path.display())
        });
    }
    let printed = Printed {
        path: kubeconfig::path(&profile)?,
        context: None,
        kubeconfig: Some(kubeconfig::print(&profile)?),
    };
    ctx.emit(&printed, |out, p| {
        out.write_all(p.kubeconfig.as_deref().unwrap_or_default().as_bytes())
    })
}
