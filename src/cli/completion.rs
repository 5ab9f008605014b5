//! `kubelab completion <shell>`: a completion script on stdout.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;

/// Arguments of `kubelab completion`.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to complete for.
    shell: Shell,
}

/// Writes the completion script for the chosen shell.
pub fn exec(args: CompletionArgs) -> Result<(), crate::Error> {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "kubelab", &mut std::io::stdout());
    Ok(())
}
