//! `kubelab doctor`: one line per check of this host, exit code of the first failure
//! that matters (see `ops::doctor`).

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::Ctx;
use crate::driver::DriverKind;
use crate::ops::doctor::{self, CheckState, DoctorOptions, DoctorReport};

/// Arguments of `kubelab doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Check only this backend (kvm2, virtualbox).
    ///
    /// Default: every backend compiled in. The command fails when a check of the host
    /// or of this backend fails (without --driver: of the backend `up` uses by default);
    /// warnings never fail it.
    #[arg(long, value_name = "NAME")]
    driver: Option<String>,

    /// libvirt connection URI for the kvm2 checks.
    ///
    /// Default: $LIBVIRT_DEFAULT_URI, else qemu:///system.
    #[arg(long, value_name = "URI")]
    libvirt_uri: Option<String>,
}

/// Runs the checks and prints them; exits with the first relevant failure's code.
pub fn exec(ctx: &Ctx, args: DoctorArgs) -> Result<ExitCode, crate::Error> {
    let opts = DoctorOptions {
        driver: args.driver.as_deref().map(str::parse::<DriverKind>).transpose()?,
        libvirt_uri: args.libvirt_uri,
    };
    let report = doctor::doctor(&ctx.home, &opts);
    ctx.emit(&report, print)?;
    Ok(report.failure().and_then(|c| c.reason).map_or(ExitCode::SUCCESS, |r| r.exit_code.into()))
}

fn print(out: &mut dyn Write, report: &DoctorReport) -> std::io::Result<()> {
    for check in &report.checks {
        let state = match check.state {
            CheckState::Ok => "ok",
            CheckState::Warn => "warn",
            CheckState::Fail => "FAIL",
        };
        writeln!(out, "{state:<5} {:<11} {:<21} {}", check.scope, check.name, check.message)?;
        if let Some(r) = check.reason {
            writeln!(out, "      hint ({}): {}", r.id, r.advice)?;
        }
    }
    Ok(())
}
