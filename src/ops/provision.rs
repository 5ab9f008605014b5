//! What `up` and `node add` share: the profile's network specs, a node's VM spec and
//! seed, and bringing nodes up in parallel (create or start, then wait for SSH with the
//! node's own host key). Every resource is recorded in the journal before it is created.

use std::fs;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bootstrap::{self, BootstrapError, Bootstrapper, BootstrapperKind};
use crate::cloudinit::{self, SeedSpec};
use crate::cluster::{ClusterState, NodeState, SSH_USER};
use crate::driver::{
    self, DiskSpec, Driver, NetworkKind, NetworkSpec, Nic, Owner, VmSpec, VmState,
};
use crate::image::catalog::Format;
use crate::journal::{Journal, Resource};
use crate::keys::{self, KeyPair, KnownHost};
use crate::profile::Profile;
use crate::progress::Progress;
use crate::ssh::{self, Target};
use crate::{Error, fsutil};

/// How long one phase of one node took (`--timings`).
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    /// The node.
    pub node: String,
    /// The phase: `seed`, `create`, `start`, `ssh`, ...
    pub phase: &'static str,
    /// Its duration in seconds.
    pub secs: f64,
}

/// The owner marker of `profile`'s objects: its home's id (made on first use) and name.
pub fn owner(profile: &Profile) -> Result<Owner, Error> {
    Ok(Owner::new(profile.home().id()?, profile.name()))
}

/// The profile's networks as the driver wants them: host-only (with a DHCP reservation
/// per node) and NAT.
pub fn network_specs(state: &ClusterState, owner: &Owner) -> [NetworkSpec; 2] {
    let (host_only, nat) = driver::network_names(&state.profile);
    let spec = |name: String, kind, cidr, hosts| NetworkSpec {
        bridge: driver::bridge_name(&name),
        name,
        owner: owner.clone(),
        kind,
        cidr,
        hosts,
    };
    let hosts = state
        .nodes
        .iter()
        .map(|n| driver::DhcpHost { mac: n.host_only_mac, ip: n.ip, name: n.name.clone() })
        .collect();
    [
        spec(host_only, NetworkKind::HostOnly, state.host_only_cidr, hosts),
        spec(nat, NetworkKind::Nat, state.nat_cidr, Vec::new()),
    ]
}

/// Refuses, before anything is created or recorded, a network or VM of the cluster's
/// names that exists and is not `owner`'s (another home's, another profile's, or not
/// kubelab's): so such an `up` leaves nothing behind, and `delete` never meets it.
pub fn check_owned(driver: &dyn Driver, state: &ClusterState, owner: &Owner) -> Result<(), Error> {
    for net in network_specs(state, owner) {
        driver.check_network(&net)?;
    }
    for node in &state.nodes {
        driver.check_vm(&node.name, owner)?;
    }
    Ok(())
}

/// Records and ensures both networks (self-healing: missing or inactive ones come back).
pub fn ensure_networks(
    driver: &dyn Driver,
    journal: &Journal,
    state: &ClusterState,
    owner: &Owner,
) -> Result<(), Error> {
    for net in network_specs(state, owner) {
        journal.record(&Resource::Network(net.name.clone()))?;
        driver.ensure_network(&net)?;
    }
    Ok(())
}

/// The directory of one node's files (host key, seed, console log).
pub fn node_dir(profile: &Profile, node: &str) -> PathBuf {
    profile.dir().join("nodes").join(node)
}

/// Rewrites the profile's `known_hosts` for the user's own `ssh`, one line per node at
/// its SSH address ([`Driver::ssh_address`]); a node whose VM does not exist yet is left
/// out until the next rewrite.
pub fn write_known_hosts(
    driver: &dyn Driver,
    profile: &Profile,
    state: &ClusterState,
) -> Result<PathBuf, Error> {
    let mut keys = Vec::new();
    for n in &state.nodes {
        let addr = match driver.ssh_address(&n.name, n.ip) {
            Err(driver::DriverError::NoSuchVm { .. }) => continue,
            addr => addr?,
        };
        keys.push((addr, keys::host_key(profile.dir(), &n.name)?));
    }
    let hosts: Vec<(String, u16, &KeyPair)> =
        keys.iter().map(|(a, k)| (a.ip().to_string(), a.port(), k)).collect();
    let hosts: Vec<KnownHost<'_>> = hosts
        .iter()
        .map(|(ip, port, k)| KnownHost { host: ip, port: *port, key: k.public_key() })
        .collect();
    Ok(keys::write_known_hosts(profile.dir(), &hosts)?)
}

/// What every node thread needs.
pub struct Ctx<'a> {
    /// The backend.
    pub driver: &'a dyn Driver,
    /// The profile (for its directory).
    pub profile: &'a Profile,
    /// The cluster's saved state.
    pub state: &'a ClusterState,
    /// The owner marker of the profile's objects.
    pub owner: &'a Owner,
    /// The journal.
    pub journal: &'a Journal,
    /// The cached boot image.
    pub image_path: PathBuf,
    /// The profile's user key.
    pub user_key: &'a KeyPair,
    /// How long to wait for a node's SSH.
    pub ssh_timeout: Duration,
    /// Where to report.
    pub progress: &'a dyn Progress,
}

/// Brings `nodes` up in parallel: creates missing VMs (with a fresh seed and instance
/// id), starts stopped ones, and waits until each answers SSH with its own host key.
/// Returns the nodes whose VM was created (their state has a new instance id) and the
/// phase timings.
pub fn bring_up(
    ctx: &Ctx<'_>,
    nodes: &[NodeState],
) -> Result<(Vec<NodeState>, Vec<Timing>), Error> {
    let created = Mutex::new(Vec::new());
    let timings = Mutex::new(Vec::new());
    super::in_parallel(nodes, |node| node_up(ctx, node, &created, &timings))
        .into_iter()
        .collect::<Result<Vec<()>, _>>()?;
    let mut timings = timings.into_inner().unwrap_or_default();
    timings.sort_by(|a: &Timing, b| a.node.cmp(&b.node));
    Ok((created.into_inner().unwrap_or_default(), timings))
}

fn node_up(
    ctx: &Ctx<'_>,
    node: &NodeState,
    created: &Mutex<Vec<NodeState>>,
    timings: &Mutex<Vec<Timing>>,
) -> Result<(), Error> {
    let phase = |name: &'static str, start: Instant| {
        let secs = start.elapsed().as_secs_f64();
        if let Ok(mut t) = timings.lock() {
            t.push(Timing { node: node.name.clone(), phase: name, secs });
        }
    };
    let report = |text: &str| ctx.progress.node_phase(&node.name, text);
    let state = ctx.driver.state(&node.name)?;
    if state == VmState::Missing {
        let start = Instant::now();
        report("writing seed");
        let mut fresh = node.clone();
        fresh.instance_id = cloudinit::instance_id(&node.name);
        let spec = vm_spec(ctx, &fresh)?;
        write_seed(ctx, &fresh, &spec.seed_iso)?;
        phase("seed", start);
        let start = Instant::now();
        report("creating VM");
        ctx.journal.record(&Resource::Vm(node.name.clone()))?;
        ctx.driver.create(&spec)?;
        phase("create", start);
        if let Ok(mut c) = created.lock() {
            c.push(fresh);
        }
    }
    if !matches!(state, VmState::Running | VmState::Starting) {
        let start = Instant::now();
        report("starting VM");
        ctx.driver.start(&node.name, ctx.owner)?;
        phase("start", start);
    }
    let start = Instant::now();
    report("waiting for SSH");
    wait_for_ssh(ctx.driver, ctx.profile, node, ctx.user_key, ctx.ssh_timeout, &report)?;
    phase("ssh", start);
    report("ready");
    Ok(())
}

/// How often the wait for SSH asks the hypervisor whether the VM still runs.
const STATE_POLL: Duration = Duration::from_secs(2);
/// How much of the console log a dead VM's error shows.
const CONSOLE_TAIL_BYTES: u64 = 2048;

/// Waits until `node` answers SSH with its pinned host key, asking the hypervisor every
/// [`STATE_POLL`] whether its VM still runs: one that crashed, paused or shut off fails
/// within seconds, with its state and the tail of its console log, instead of after
/// the whole `timeout`.
pub fn wait_for_ssh(
    driver: &dyn Driver,
    profile: &Profile,
    node: &NodeState,
    user_key: &KeyPair,
    timeout: Duration,
    report: &dyn Fn(&str),
) -> Result<ssh::Connection, Error> {
    let target = ssh_target(driver, profile, node)?;
    let mut asked = Instant::now();
    let mut down = None;
    let waited = ssh::wait_until_reachable(&target, user_key, timeout, &mut |wait, _| {
        report(&format!("waiting for SSH: {wait}"));
        if asked.elapsed() < STATE_POLL {
            return ControlFlow::Continue(());
        }
        asked = Instant::now();
        match driver.state(&node.name) {
            Ok(
                state @ (VmState::Crashed | VmState::Paused | VmState::Stopped | VmState::Missing),
            ) => {
                down = Some(state);
                ControlFlow::Break(())
            }
            _ => ControlFlow::Continue(()),
        }
    });
    if let Some(state) = down {
        let mut console_tail = match console_tail(Some(driver), profile, node, CONSOLE_TAIL_BYTES) {
            Ok((_, Some(tail))) => tail,
            Ok((log, None)) => format!("(cannot read {})", log.display()),
            Err(e) => format!("(cannot read the console log: {})", crate::error::chain(&e)),
        };
        if let Some(tail) = driver.log_tail(&node.name, CONSOLE_TAIL_BYTES) {
            console_tail.push_str("\nthe end of the hypervisor's log of the VM:\n");
            console_tail.push_str(&tail);
        }
        return Err(Error::VmDown {
            node: node.name.clone(),
            state: super::lifecycle::state_name(state),
            console_tail,
        });
    }
    Ok(waited?)
}

/// The last `max_bytes` of `node`'s serial console log and its path: the hypervisor's
/// copy when it keeps one (a remote libvirt: [`Driver::console_tail`]), else the
/// profile's file, `None` when that cannot be read. Without a `driver` (the hypervisor
/// cannot be reached) the profile's file is all there is to read.
pub fn console_tail(
    driver: Option<&dyn Driver>,
    profile: &Profile,
    node: &NodeState,
    max_bytes: u64,
) -> Result<(PathBuf, Option<String>), Error> {
    if let Some(driver) = driver
        && let Some(tail) = driver.console_tail(&node.name, &owner(profile)?, max_bytes)?
    {
        return Ok((tail.path, Some(tail.text)));
    }
    let log = node_dir(profile, &node.name).join("console.log");
    let text = fsutil::read_tail(&log, max_bytes);
    Ok((log, text))
}

/// Where and how to reach `node` over SSH ([`Driver::ssh_address`]), trusting only its
/// own host key.
pub fn ssh_target(
    driver: &dyn Driver,
    profile: &Profile,
    node: &NodeState,
) -> Result<Target, Error> {
    let host_key = keys::host_key(profile.dir(), &node.name)?;
    Ok(Target {
        node: node.name.clone(),
        addr: driver.ssh_address(&node.name, node.ip)?,
        user: SSH_USER.to_owned(),
        host_key: host_key.public_key().clone(),
        jump: super::remote::node_jump(profile, node)?,
    })
}

fn vm_spec(ctx: &Ctx<'_>, node: &NodeState) -> Result<VmSpec, Error> {
    let state = ctx.state;
    let dir = node_dir(ctx.profile, &node.name);
    fsutil::create_private_dir(ctx.profile.dir(), &dir)
        .map_err(|source| Error::NodeDir { path: dir.clone(), source })?;
    let disk = if state.image.format == Format::Iso {
        DiskSpec::IsoWithDataDisk {
            iso: ctx.image_path.clone(),
            iso_id: state.image.sha256.clone(),
            size_gib: state.disk_gib,
        }
    } else {
        DiskSpec::Overlay {
            base_image: ctx.image_path.clone(),
            base_id: state.image.sha256.clone(),
            size_gib: state.disk_gib,
        }
    };
    let [host_only, nat] = network_specs(state, ctx.owner);
    Ok(VmSpec {
        name: node.name.clone(),
        owner: ctx.owner.clone(),
        accel: state.accel,
        cpus: state.cpus,
        memory_mib: state.memory_mib,
        disk,
        seed_iso: dir.join("seed.iso"),
        serial_log: dir.join("console.log"),
        nat: Nic { network: nat.name, mac: node.nat_mac },
        host_only: Nic { network: host_only.name, mac: node.host_only_mac },
    })
}

fn write_seed(ctx: &Ctx<'_>, node: &NodeState, path: &std::path::Path) -> Result<(), Error> {
    let host_key = keys::host_key(ctx.profile.dir(), &node.name)?;
    let spec = SeedSpec {
        hostname: node.name.clone(),
        instance_id: node.instance_id.clone(),
        user: SSH_USER.to_owned(),
        user_public_key: ctx.user_key.public_openssh()?,
        host_key_private: host_key.private_openssh()?,
        host_key_public: host_key.public_openssh()?,
        nat_mac: node.nat_mac.to_string(),
        hostonly_mac: node.host_only_mac.to_string(),
        hostonly_address: node.ip,
        hostonly_prefix: ctx.state.host_only_cidr.prefix(),
        extra_user_data: None,
    };
    let files = cloudinit::render(&spec)?;
    cloudinit::write_iso(&files, path)?;
    Ok(())
}

/// Removes a node's VM (and its disks), its journal entry and its files.
pub fn remove_node(
    driver: &dyn Driver,
    journal: &Journal,
    profile: &Profile,
    node: &str,
    owner: &Owner,
) -> Result<(), Error> {
    driver.delete(node, owner)?;
    journal.forget(&Resource::Vm(node.to_owned()))?;
    let dir = node_dir(profile, node);
    match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::NodeDir { path: dir, source: e })
        }
        _ => Ok(()),
    }
}

/// Runs `run` with the profile's bootstrapper and the cluster as it sees it: every node
/// whose VM exists, with the driver's SSH address for it.
pub fn with_bootstrapper<T>(
    driver: &dyn Driver,
    profile: &Profile,
    state: &ClusterState,
    progress: &dyn Progress,
    run: impl FnOnce(&dyn Bootstrapper, &bootstrap::Cluster<'_>) -> Result<T, BootstrapError>,
) -> Result<T, Error> {
    let kind: BootstrapperKind = state.bootstrapper.parse()?;
    let bootstrapper = bootstrap::open(kind);
    let user_key = keys::user_key(profile.dir())?;
    let mut nodes = Vec::new();
    // `none` talks to no node: asking the driver for their addresses could only fail.
    let talks = kind != BootstrapperKind::None;
    for n in state.nodes.iter().filter(|_| talks) {
        let ssh = match ssh_target(driver, profile, n) {
            Err(Error::Driver(driver::DriverError::NoSuchVm { .. })) => continue,
            target => target?,
        };
        nodes.push(bootstrap::Node { name: n.name.clone(), role: n.role, ip: n.ip, ssh });
    }
    let version =
        state.kubernetes_version.as_deref().unwrap_or(bootstrap::DEFAULT_KUBERNETES_VERSION);
    let cluster = bootstrap::Cluster {
        name: &state.profile,
        dir: profile.dir(),
        nodes: &nodes,
        networks: &[state.host_only_cidr, state.nat_cidr],
        subnets: state.pod_cidr.zip(state.service_cidr),
        kubernetes_version: version,
        kubernetes_repo: &bootstrap::repo_url(
            state.kubernetes_repo.as_deref().unwrap_or(bootstrap::DEFAULT_KUBERNETES_REPO),
            version,
        ),
        prepared: state.image.baked.as_deref() == Some(version),
        registry_mirror: state.registry_mirror.as_deref(),
        cpus: state.cpus,
        memory_mib: state.memory_mib,
        user_key: &user_key,
        progress,
    };
    Ok(run(&*bootstrapper, &cluster)?)
}
