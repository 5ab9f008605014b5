//! `kubelab ssh [NODE] [-- CMD]`, `kubelab logs [NODE]` and `kubelab tunnel`.

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

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

/// What `ssh --print-command -o json` prints: the argv, and the same as one
/// shell-quoted line.
#[derive(Serialize)]
struct SshCommand {
    argv: Vec<String>,
    command: String,
}

/// Runs the system `ssh` with the node's pinned host key; returns its exit status.
pub fn exec(ctx: &Ctx, args: SshArgs) -> Result<ExitCode, crate::Error> {
    let profile = ctx.profile()?;
    let argv = ops::ssh::ssh_target(&profile, args.node.as_deref(), &args.command, ctx.wait)?;
    if args.print_command {
        let argv: Vec<String> = argv.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        let line: Vec<String> = argv.iter().map(|a| process::shell_quote(a)).collect();
        let cmd = SshCommand { argv, command: line.join(" ") };
        ctx.emit(&cmd, |out, c| writeln!(out, "{}", c.command))?;
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

/// What `logs -o json` prints: `cloud_init` is null and `cloud_init_error` says why
/// when the node could not be reached.
#[derive(Serialize)]
struct LogsJson {
    console_path: std::path::PathBuf,
    console: String,
    cloud_init: Option<String>,
    cloud_init_error: Option<String>,
}

/// Prints the node's serial console log, then cloud-init's output if reachable.
pub fn exec_logs(ctx: &Ctx, args: LogsArgs) -> Result<(), crate::Error> {
    let logs = ops::ssh::logs(&ctx.profile()?, args.node.as_deref(), ctx.wait)?;
    let (cloud_init, cloud_init_error) = match logs.cloud_init {
        Ok(text) => (Some(text), None),
        Err(why) => (None, Some(why)),
    };
    let json = LogsJson {
        console_path: logs.console_path,
        console: logs.console,
        cloud_init,
        cloud_init_error,
    };
    ctx.emit(&json, |out, l| {
        let cloud_init = match (&l.cloud_init, &l.cloud_init_error) {
            (Some(text), _) => text.clone(),
            (None, why) => format!("(not reachable: {})\n", why.as_deref().unwrap_or("")),
        };
        write!(
            out,
            "==> serial console ({}) <==\n{}\n==> /var/log/cloud-init-output.log <==\n{cloud_init}",
            l.console_path.display(),
            l.console
        )
    })
}

/// Serves the profile's API-server tunnel in the foreground until the process ends.
pub fn exec_tunnel(ctx: &Ctx) -> Result<(), crate::Error> {
    let (tunnel, to) = ops::remote::tunnel(&ctx.profile()?)?;
    eprintln!(
        "kubelab tunnel: https://{} forwards to the API server at {to}; stop it with Ctrl-C",
        tunnel.local_addr()
    );
    tunnel.wait();
    Ok(())
}
