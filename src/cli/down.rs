//! `kubelab down` (alias `stop`): stop every node, keeping disks and addresses.

use serde::Serialize;

use super::Ctx;
use crate::ops::lifecycle;

/// What `down -o json` prints.
#[derive(Serialize)]
struct Down {
    profile: String,
    stopped: Vec<String>,
}

/// Runs `kubelab down`.
pub fn exec(ctx: &Ctx) -> Result<(), crate::Error> {
    let profile = ctx.profile()?;
    let stopped = lifecycle::down(&profile, ctx.wait)?;
    let down = Down { profile: profile.name().to_string(), stopped };
    ctx.emit(&down, |out, d| writeln!(out, "stopped: {}", d.stopped.join(", ")))
}
