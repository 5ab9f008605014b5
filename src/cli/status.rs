//! `kubelab status` and `kubelab ip`: the cluster's nodes, states and addresses.

use std::io::Write;

use clap::Args;
use serde::Serialize;

use super::{Ctx, OutputFormat};
use crate::ops::lifecycle;

/// Runs `kubelab status`.
pub fn exec(ctx: &Ctx) -> Result<(), crate::Error> {
    let status = lifecycle::status(&ctx.profile()?)?;
    if ctx.output == OutputFormat::Json {
        return ctx.print_json(&status);
    }
    let mut out = std::io::stdout().lock();
    let mut line = |text: String| writeln!(out, "{text}").map_err(crate::Error::Output);
    line(format!(
        "profile {} ({}, {}), image {}, network {}",
        status.profile,
        status.driver,
        serde_json::to_value(status.accel)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        status.image,
        status.network
    ))?;
    line(format!("{:<24} {:<14} {:<10} {:<16} SSH", "NODE", "ROLE", "STATE", "IP"))?;
    for n in &status.nodes {
        let role =
            if n.role == crate::cluster::Role::ControlPlane { "control-plane" } else { "worker" };
        line(format!("{:<24} {role:<14} {:<10} {:<16} {}", n.name, n.state, n.ip, n.ssh_port))?;
    }
    for (name, why) in status.nodes.iter().filter_map(|n| Some((&n.name, n.foreign.as_ref()?))) {
        line(format!("warning: node {name} is not this profile's VM: {why}"))?;
    }
    Ok(())
}

/// Arguments of `kubelab ip`.
#[derive(Debug, Args)]
pub struct IpArgs {
    /// The node (default: the control plane).
    node: Option<String>,
}

/// What `ip -o json` prints.
#[derive(Serialize)]
struct Ip {
    node: String,
    ip: std::net::Ipv4Addr,
}

/// Runs `kubelab ip`.
pub fn exec_ip(ctx: &Ctx, args: IpArgs) -> Result<(), crate::Error> {
    let (node, ip) = lifecycle::ip(&ctx.profile()?, args.node.as_deref())?;
    ctx.emit(&Ip { node, ip }, |out, i| writeln!(out, "{}", i.ip))
}
