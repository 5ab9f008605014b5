//! `kubelab up` (alias `start`): create the cluster or start it again.

use std::io::Write;
use std::time::Duration;

use clap::Args;

use super::progress::CliProgress;
use super::{Ctx, OutputFormat};
use crate::cluster;
use crate::driver::DriverKind;
use crate::net::Ipv4Cidr;
use crate::ops::{self, provision::Timing, up};

/// Arguments of `kubelab up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// The hypervisor backend.
    ///
    /// Default: the saved profile's, else kvm2. Changing it needs `kubelab delete`.
    #[arg(long, value_name = "NAME")]
    driver: Option<String>,

    /// Number of nodes, the control plane included.
    ///
    /// Default: 1 for a new profile. An existing profile keeps its nodes; use
    /// `kubelab node add` / `node delete` to change them.
    #[arg(short, long, value_name = "N")]
    nodes: Option<u32>,

    /// vCPUs per node (default 2).
    #[arg(long, value_name = "N")]
    cpus: Option<u32>,

    /// Memory per node: MiB, or with a unit (2g, 4096m); default 2g.
    ///
    /// At least 1g with kubeadm, 512m with --bootstrapper none.
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,

    /// Disk size per node: GiB, or with a unit (20g, 1t); default 20g.
    ///
    /// At least 4g with kubeadm, 1g with --bootstrapper none.
    #[arg(long, value_name = "SIZE")]
    disk: Option<String>,

    /// Boot image: a catalogue name (`kubelab image list`), a URL or a local file.
    ///
    /// Default: ubuntu-24.04. A URL needs --image-sha256 unless --insecure-skip-verify.
    /// A `.iso` boots as a live CD beside a blank data disk. `baked:VERSION` boots the
    /// newest image `kubelab image bake` made for that Kubernetes version.
    #[arg(long, value_name = "NAME|URL|PATH")]
    image: Option<String>,

    /// SHA-256 of the --image file.
    #[arg(long, value_name = "HEX")]
    image_sha256: Option<String>,

    /// Accept an --image URL without a digest.
    #[arg(long)]
    insecure_skip_verify: bool,

    /// What to run on the VMs once they answer SSH: kubeadm (default) or none.
    ///
    /// `kubeadm` makes a Kubernetes cluster and merges its context into your kubeconfig;
    /// `none` stops at VMs reachable over SSH (plain VM lab). Default: the saved
    /// profile's, else kubeadm.
    #[arg(long, value_name = "NAME", value_parser = ["none", "kubeadm"])]
    bootstrapper: Option<String>,

    /// Kubernetes version to install (vMAJOR.MINOR.PATCH).
    ///
    /// Default: the saved profile's, else v1.34.2. An image that ships kubeadm, kubelet and
    /// kubectl keeps its own (with a warning in the log if they differ).
    #[arg(long, value_name = "VERSION")]
    kubernetes_version: Option<String>,

    /// Kubernetes package repository for nodes whose image lacks kubeadm: a mirror of
    /// pkgs.k8s.io's layout (flat, signing key at Release.key); `{minor}` stands for the
    /// cluster's vMAJOR.MINOR.
    ///
    /// Default: the saved profile's, else https://pkgs.k8s.io/core:/stable:/{minor}/deb/.
    #[arg(long, value_name = "URL")]
    kubernetes_repo: Option<String>,

    /// A registry mirror the nodes pull container images through, e.g.
    /// http://10.0.0.1:5000 (written as the first host of each registry in containerd's
    /// certs.d). Nodes of a baked image pull nothing.
    #[arg(long, value_name = "URL")]
    registry_mirror: Option<String>,

    /// Wait until every node is Ready and kube-system's pods run (`--wait-ready=false`
    /// returns once kubeadm is done).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    wait_ready: bool,

    /// Seconds to wait for the nodes to be Ready.
    #[arg(long, value_name = "SECS", default_value_t = 900)]
    wait_timeout: u64,

    /// Merge the cluster's context into your kubeconfig without making it current.
    #[arg(long)]
    keep_context: bool,

    /// Subnet of the cluster's host-only network, e.g. 192.168.39.0/24.
    ///
    /// A private subnet (inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16) with a
    /// prefix from /16 to /28. Default: the first /24 that overlaps neither the host's
    /// routes nor another network of the hypervisor (VirtualBox: inside what
    /// /etc/vbox/networks.conf allows).
    #[arg(long, value_name = "CIDR")]
    network_cidr: Option<Ipv4Cidr>,

    /// libvirt connection URI.
    ///
    /// Default: $LIBVIRT_DEFAULT_URI, else qemu:///system.
    #[arg(long, value_name = "URI")]
    libvirt_uri: Option<String>,

    /// Fail instead of falling back to software emulation (TCG) when KVM is unusable.
    #[arg(long)]
    require_kvm: bool,

    /// Seconds to wait for each node to answer SSH.
    #[arg(long, value_name = "SECS", default_value_t = 900)]
    ssh_timeout: u64,

    /// Print how long each phase took, per node.
    #[arg(long)]
    timings: bool,

    /// Do not take the `clean` snapshot (for `kubelab reset`) once the cluster is ready.
    #[arg(long)]
    no_snapshot: bool,

    /// Boot --image itself even when a baked image of it (`kubelab image bake`) matches
    /// the cluster's Kubernetes version.
    #[arg(long)]
    no_baked: bool,
}

/// Runs `kubelab up`.
pub fn exec(ctx: &Ctx, args: UpArgs) -> Result<(), crate::Error> {
    let profile = ctx.profile()?;
    let opts = up::UpOptions {
        driver: args.driver.as_deref().map(str::parse::<DriverKind>).transpose()?,
        libvirt_uri: args.libvirt_uri,
        nodes: args.nodes,
        cpus: args.cpus,
        memory_mib: args.memory.as_deref().map(cluster::parse_memory_mib).transpose()?,
        disk_gib: args.disk.as_deref().map(cluster::parse_disk_gib).transpose()?,
        image: args.image,
        image_sha256: args.image_sha256,
        insecure_skip_verify: args.insecure_skip_verify,
        network_cidr: args.network_cidr,
        require_kvm: args.require_kvm,
        ssh_timeout: Duration::from_secs(args.ssh_timeout),
        wait_lock: ctx.wait,
        bootstrapper: args.bootstrapper.as_deref().map(str::parse).transpose()?,
        kubernetes_version: args.kubernetes_version,
        kubernetes_repo: args.kubernetes_repo,
        registry_mirror: args.registry_mirror,
        wait_ready: args.wait_ready.then(|| Duration::from_secs(args.wait_timeout)),
        keep_context: args.keep_context,
        clean_snapshot: !args.no_snapshot,
        no_baked: args.no_baked,
        // Without a home or $KUBECONFIG the context lives only in the profile.
        kubeconfig: ops::kubeconfig::user_path().ok(),
    };
    let progress = CliProgress::new();
    let report = up::up(&ctx.home, &profile, &opts, &progress)?;
    if ctx.output == OutputFormat::Json {
        return ctx.print_json(&report);
    }
    let mut out = std::io::stdout().lock();
    let write =
        |out: &mut dyn Write, text: String| writeln!(out, "{text}").map_err(crate::Error::Output);
    let state = &report.state;
    write(
        &mut out,
        format!(
            "{} is up: {} node(s) on {} ({:?})",
            state.profile,
            state.nodes.len(),
            state.driver,
            state.accel
        )
        .to_lowercase(),
    )?;
    for node in &state.nodes {
        write(&mut out, format!("  {:<24} {}", node.name, node.ip))?;
    }
    if let Some(path) = &report.kubeconfig {
        write(
            &mut out,
            format!("kubectl context {:?} merged into {}", state.profile, path.display()),
        )?;
        if let Some(port) = state.tunnel_port {
            write(
                &mut out,
                format!(
                    "the API server is on the libvirt host's private network: keep `kubelab \
                     -p {} tunnel` running for kubectl (it serves 127.0.0.1:{port})",
                    state.profile
                ),
            )?;
        }
    }
    if let Some(snapshot) = &report.snapshot {
        let mib = snapshot.disk_bytes as f64 / 1_048_576.0;
        write(
            &mut out,
            format!(
                "snapshot {:?} taken ({mib:.1} MiB): `kubelab reset` returns to it",
                snapshot.name
            ),
        )?;
    }
    if args.timings {
        write_timings(&mut out, &report.timings).map_err(crate::Error::Output)?;
    }
    Ok(())
}

/// Writes `--timings` as a table: node, phase, seconds.
pub fn write_timings(out: &mut dyn Write, timings: &[Timing]) -> std::io::Result<()> {
    writeln!(out, "timings:")?;
    for t in timings {
        writeln!(out, "  {:<24} {:<8} {:>7.1}s", t.node, t.phase, t.secs)?;
    }
    Ok(())
}
