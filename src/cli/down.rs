//! `kubelab down` (alias `stop`): stop every node, keeping disks and addresses.

use std::io::Write;

use super::Ctx;
use crate::ops::lifecycle;

/// Runs `kubelab down`.
pub fn exec(ctx: &Ctx) -> Result<(), crate::Error> {
    let stopped = lifecycle::down(&ctx.profile()?, ctx.wait)?;
    writeln!(std::io::stdout(), "stopped: {}", stopped.join(", ")).map_err(crate::Error::Output)
}
