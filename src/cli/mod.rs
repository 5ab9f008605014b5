//! Command-line definitions (clap derive) and printing; no logic. Each command is a
//! file here with its args and an `exec` that calls one `ops` function.

mod completion;
mod delete;
mod doctor;
mod down;
mod image;
mod kubeconfig;
mod list;
mod node;
mod progress;
mod snapshot;
mod ssh;
mod status;
mod up;
mod version;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::home::{self, Home};
use crate::profile::{DEFAULT_PROFILE, Profile, ProfileName};
use crate::reason;

/// Provision VM-based Kubernetes lab clusters on libvirt/QEMU-KVM and VirtualBox.
#[derive(Debug, Parser)]
#[command(name = "kubelab", version, about, max_term_width = 100)]
pub struct Cli {
    /// The profile (cluster) to act on.
    #[arg(short, long, global = true, env = "KUBELAB_PROFILE", default_value = DEFAULT_PROFILE)]
    profile: String,

    /// Where kubelab keeps profiles and its image cache.
    ///
    /// Default: `~/.kubelab` (`%USERPROFILE%\.kubelab` on Windows).
    #[arg(long, global = true, env = "KUBELAB_HOME", value_name = "DIR")]
    home: Option<PathBuf>,

    /// More log output on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Output format.
    ///
    /// With `json`, stdout holds exactly one JSON object: the command's result, or on
    /// failure `{"error": {"reason", "message", "hint", "exit_code"}}` (the text error
    /// still goes to stderr). `ssh` without --print-command and `completion` print no
    /// result of their own.
    #[arg(short, long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,

    /// Wait for a busy profile or cache entry instead of failing.
    ///
    /// Without it, a command that finds another kubelab holding the lock fails at once
    /// and names the holder's PID.
    #[arg(long, global = true)]
    wait: bool,

    #[command(subcommand)]
    command: Command,
}

/// The output formats of `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text.
    Text,
    /// One JSON document on stdout.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the cluster, or start it again (same nodes, same addresses).
    #[command(visible_alias = "start")]
    Up(up::UpArgs),
    /// Stop every node gracefully; disks and addresses are kept.
    #[command(visible_alias = "stop")]
    Down,
    /// Delete the cluster and everything kubelab created for it.
    Delete(delete::DeleteArgs),
    /// Show the nodes, their state and addresses.
    Status,
    /// Print a node's host-only IP address.
    Ip(status::IpArgs),
    /// Log in to a node, or run a command there, with its host key verified.
    Ssh(ssh::SshArgs),
    /// Print a node's serial console and cloud-init logs.
    Logs(ssh::LogsArgs),
    /// Forward the kubeconfig's 127.0.0.1 port to the API server of a cluster on a remote
    /// libvirt host, until interrupted.
    Tunnel,
    /// Add or delete worker nodes.
    Node(node::NodeArgs),
    /// List profiles.
    List,
    /// Print a shell completion script.
    Completion(completion::CompletionArgs),
    /// Image catalogue and cache: list, pull, rm.
    Image(image::ImageArgs),
    /// Print or re-merge the cluster's kubeconfig.
    Kubeconfig(kubeconfig::KubeconfigArgs),
    /// Whole-cluster snapshots: save, restore, list, delete.
    Snapshot(snapshot::SnapshotArgs),
    /// Bring the cluster back to the `clean` snapshot `up` took once it was ready.
    Reset,
    /// Print kubelab's version.
    Version,
    /// Check this host for what `up` needs, and say how to fix what is missing.
    Doctor(doctor::DoctorArgs),
}

/// What every command gets: the resolved global options.
pub struct Ctx {
    home: Home,
    profile: String,
    output: OutputFormat,
    wait: bool,
}

impl Ctx {
    /// The selected profile, its name validated (nothing is created).
    pub fn profile(&self) -> Result<Profile, crate::Error> {
        let name: ProfileName = self.profile.parse()?;
        Ok(Profile::new(&self.home, name))
    }

    /// Writes `value` as pretty JSON on stdout.
    fn print_json(&self, value: &impl serde::Serialize) -> Result<(), crate::Error> {
        print_json(value)
    }

    /// Prints what a command returns: `value` as one JSON object with `-o json`, else
    /// the lines `text` writes.
    fn emit<T: serde::Serialize>(
        &self,
        value: &T,
        text: impl FnOnce(&mut dyn Write, &T) -> std::io::Result<()>,
    ) -> Result<(), crate::Error> {
        if self.output == OutputFormat::Json {
            return self.print_json(value);
        }
        text(&mut std::io::stdout().lock(), value).map_err(crate::Error::Output)
    }
}

/// Writes `value` as pretty JSON on stdout.
fn print_json(value: &impl serde::Serialize) -> Result<(), crate::Error> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value).map_err(|e| crate::Error::Output(e.into()))?;
    writeln!(out).map_err(crate::Error::Output)
}

/// Parses the command line, runs the command and reports a failure.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    // reqwest is built without a default TLS provider; ring builds fast and is enough.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let output = cli.output;
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            report(&err);
            if output == OutputFormat::Json {
                let _ = print_json(&ErrorReport::new(&err));
            }
            ExitCode::from(reason::exit_code(&err))
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, crate::Error> {
    let home = match cli.home {
        Some(dir) => Home::new(dir),
        None => Home::new(
            home::default_root(cfg!(windows), |var| std::env::var_os(var))
                .ok_or(crate::Error::NoHome)?,
        ),
    };
    let ctx = Ctx { home, profile: cli.profile, output: cli.output, wait: cli.wait };
    let done = match cli.command {
        Command::Up(args) => up::exec(&ctx, args),
        Command::Down => down::exec(&ctx),
        Command::Delete(args) => delete::exec(&ctx, args),
        Command::Status => status::exec(&ctx),
        Command::Ip(args) => status::exec_ip(&ctx, args),
        Command::Ssh(args) => return ssh::exec(&ctx, args),
        Command::Doctor(args) => return doctor::exec(&ctx, args),
        Command::Logs(args) => ssh::exec_logs(&ctx, args),
        Command::Tunnel => ssh::exec_tunnel(&ctx),
        Command::Node(args) => node::exec(&ctx, args),
        Command::List => list::exec(&ctx),
        Command::Completion(args) => completion::exec(args),
        Command::Image(args) => image::exec(&ctx, args),
        Command::Kubeconfig(args) => kubeconfig::exec(&ctx, args),
        Command::Snapshot(args) => snapshot::exec(&ctx, args),
        Command::Reset => snapshot::exec_reset(&ctx),
        Command::Version => version::exec(&ctx),
    };
    done.map(|()| ExitCode::SUCCESS)
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KUBELAB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// A failure as `-o json` prints it on stdout.
#[derive(serde::Serialize)]
struct ErrorReport {
    error: ErrorBody,
}

#[derive(serde::Serialize)]
struct ErrorBody {
    /// The reason id (`PROFILE_BUSY`, ...).
    reason: &'static str,
    /// The error and its causes, joined by `: `.
    message: String,
    /// The reason's advice.
    hint: &'static str,
    /// The process's exit code.
    exit_code: u8,
}

impl ErrorReport {
    fn new(err: &crate::Error) -> Self {
        let r = reason::reason(err);
        Self {
            error: ErrorBody {
                reason: r.id,
                message: crate::error::chain(err),
                hint: r.advice,
                exit_code: r.exit_code,
            },
        }
    }
}

/// Prints `error: ...`, each cause as `caused by: ...`, and the reason's hint.
fn report(err: &crate::Error) {
    let mut out = std::io::stderr().lock();
    let _ = writeln!(out, "error: {err}");
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let _ = writeln!(out, "caused by: {cause}");
        source = cause.source();
    }
    let r = reason::reason(err);
    let _ = writeln!(out, "hint ({}): {}", r.id, r.advice);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
