//! `kubelab list`: the profiles and their saved state.

use std::io::Write;

use super::{Ctx, OutputFormat};
use crate::ops;

/// Prints the profiles as a table or JSON.
pub fn exec(ctx: &Ctx) -> Result<(), crate::Error> {
    let profiles = ops::list(&ctx.home)?;
    if ctx.output == OutputFormat::Json {
        return ctx.print_json(&profiles);
    }
    let mut out = std::io::stdout().lock();
    if profiles.is_empty() {
        return writeln!(out, "no profiles; `kubelab up` creates one")
            .map_err(crate::Error::Output);
    }
    for p in &profiles {
        let detail = match (&p.state, &p.error) {
            (_, Some(error)) => format!("error: {error}"),
            (Some(state), None) => {
                state.get("driver").and_then(|d| d.as_str()).unwrap_or("-").to_owned()
            }
            (None, None) => "-".to_owned(),
        };
        writeln!(out, "{:<24} {detail}", p.name).map_err(crate::Error::Output)?;
    }
    Ok(())
}
