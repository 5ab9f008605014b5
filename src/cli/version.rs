//! `kubelab version`: the version and the backends compiled in.

use std::io::Write;

use serde::Serialize;

use super::{Ctx, OutputFormat};

#[derive(Serialize)]
struct Version {
    version: &'static str,
    drivers: Vec<&'static str>,
}

/// Prints the version, as text or JSON.
pub fn exec(ctx: &Ctx) -> Result<(), crate::Error> {
    let mut drivers = Vec::new();
    if cfg!(feature = "libvirt") {
        drivers.push("kvm2");
    }
    let version = Version { version: env!("CARGO_PKG_VERSION"), drivers };
    if ctx.output == OutputFormat::Json {
        return ctx.print_json(&version);
    }
    writeln!(std::io::stdout(), "kubelab {}", version.version).map_err(crate::Error::Output)
}
