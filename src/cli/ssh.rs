//! `kubelab ssh [NODE] [-- CMD]` and `kubelab logs [NODE]`.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::Ctx;
use crate::ops;
use crate::process;

/// Arguments of `kubelab ssh`.
#[derive(Debug, Args)]
pub struct SshArgs {
    /// The node (default: the control plane).
    node: Option<String>,

    /// Print the `ssh` command line instead of running it (for scripts and IDEs).
    #[arg(long)]
    print_command: bool,

    /// A command to run on the node instead of a login shell.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

/// Runs the system `ssh` with the node's pinned host key; returns its exit status.
pub fn exec(ctx: &Ctx, args: SshArgs) -> Result<ExitCode, crate::Error> {
    let argv = ops::ssh::ssh_target(&ctx.profile()?, args.node.as_deref(), &args.command)?;
    if args.print_command {
        let line: Vec<String> =
            argv.iter().map(|a| process::shell_quote(&a.to_string_lossy())).collect();
        writeln!(std::io::stdout(), "{}", line.join(" ")).map_err(crate::Error::Output)?;
        return Ok(ExitCode::SUCCESS);
    }
    let code = process::run_interactive(&argv)?;
    Ok(ExitCode::from(code))
}

/// Arguments of `kubelab logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The node (default: the control plane).
    node: Option<String>,
}

/// Prints the node's serial console log, then cloud-init's output if reachable.
pub fn exec_logs(ctx: &Ctx, args: LogsArgs) -> Result<(), crate::Error> {
    let logs = ops::ssh::logs(&ctx.profile()?, args.node.as_deref())?;
    let mut out = std::io::stdout().lock();
    let cloud_init = logs.cloud_init.unwrap_or_else(|why| format!("(not reachable: {why})\n"));
    write!(
        out,
        "==> serial console ({}) <==\n{}\n==> /var/log/cloud-init-output.log <==\n{cloud_init}",
        logs.console_path.display(),
        logs.console
    )
    .map_err(crate::Error::Output)
}
