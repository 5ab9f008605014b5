//! `kubelab up`: create the profile's cluster, or bring an existing one back. Lock, read
//! the saved state, validate and preflight (`doctor`'s cheap host checks, then the
//! driver's; nothing but the lock file is created before they pass), resolve the image, save the state (addresses chosen before boot), ensure
//! the networks and bring every node up in parallel. An interrupted `up` is resumed by
//! the next one.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::Error;
use crate::bootstrap::{self, BootstrapperKind};
use crate::cluster::{self, ClusterError, ClusterState, ImageState, NodeState, Role, limits};
use crate::driver::{self, AccelPolicy, DiskFormat, Driver, DriverKind, HostWarning};
use crate::home::Home;
use crate::image::catalog::{Digest, Kind};
use crate::image::{self, ImageRequest, ImageSource};
use crate::journal::Journal;
use crate::keys;
use crate::kubeconfig;
use crate::net::{Ipv4Cidr, MacAddr};
use crate::ops::provision::{self, Timing};
use crate::profile::{self, Profile, ProfileError};
use crate::progress::Progress;

/// The image `up` boots when none is given.
pub const DEFAULT_IMAGE: &str = "ubuntu-24.04";

/// What the user asked `up` for; `None` means "the saved value, else the default".
#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    /// The hypervisor backend.
    pub driver: Option<DriverKind>,
    /// `--libvirt-uri`.
    pub libvirt_uri: Option<String>,
    /// Number of nodes, control plane included.
    pub nodes: Option<u32>,
    /// vCPUs per node.
    pub cpus: Option<u32>,
    /// Memory per node.
    pub memory_mib: Option<u64>,
    /// Disk per node.
    pub disk_gib: Option<u64>,
    /// Catalogue name, URL or path.
    pub image: Option<String>,
    /// Expected SHA-256 of a URL or path image.
    pub image_sha256: Option<String>,
    /// Accept a URL without a digest.
    pub insecure_skip_verify: bool,
    /// The host-only network's subnet.
    pub network_cidr: Option<Ipv4Cidr>,
    /// Fail instead of falling back to TCG.
    pub require_kvm: bool,
    /// How long to wait for each node's SSH.
    pub ssh_timeout: Duration,
    /// Wait for a busy profile instead of failing.
    pub wait_lock: bool,
    /// `--bootstrapper`; `None` keeps the saved one (kubeadm for a new profile).
    pub bootstrapper: Option<BootstrapperKind>,
    /// `--kubernetes-version`; `None` keeps the saved one (the default for a new profile).
    pub kubernetes_version: Option<String>,
    /// `--kubernetes-repo`.
    pub kubernetes_repo: Option<String>,
    /// `--registry-mirror`.
    pub registry_mirror: Option<String>,
    /// How long to wait for every node to be Ready; `None` does not wait (`--wait=false`).
    pub wait_ready: Option<Duration>,
    /// `--keep-context`: merge the kubeconfig without making its context current.
    pub keep_context: bool,
    /// The kubeconfig to merge the cluster's context into (see `ops::kubeconfig`).
    pub kubeconfig: Option<PathBuf>,
    /// Take the `clean` snapshot once the cluster is ready (unless it has one).
    pub clean_snapshot: bool,
    /// `--no-baked`: boot the image asked for even when a baked image of it matches.
    pub no_baked: bool,
}

/// What `up` did.
#[derive(Debug, Serialize)]
pub struct UpReport {
    /// The cluster as saved.
    pub state: ClusterState,
    /// Nodes whose VM was created by this run.
    pub created: Vec<String>,
    /// Per node and phase, how long it took.
    pub timings: Vec<Timing>,
    /// The kubeconfig the cluster's context was merged into.
    pub kubeconfig: Option<PathBuf>,
    /// The `clean` snapshot, when this run took it.
    pub snapshot: Option<crate::snapshot::Record>,
}

/// Runs `up` for `profile`.
pub fn up(
    home: &Home,
    profile: &Profile,
    opts: &UpOptions,
    progress: &dyn Progress,
) -> Result<UpReport, Error> {
    let started = Instant::now();
    // The lock comes first and the saved state is read under it: an `up --wait` queued
    // behind a `node add` must see the node added, not save the copy it read before.
    // The lock file lives outside the profile (see `Home::locks_dir`), so taking it
    // creates nothing in the profile.
    let _lock = profile.lock(opts.wait_lock)?;
    let saved = load_saved(profile)?;
    let request = validate(opts, saved.as_ref())?;
    if let Some(saved) = &saved {
        check_consistent(saved, opts)?;
    }
    // The cheap host checks of `doctor` that would make this `up` fail.
    warn(progress, &super::doctor::preflight(home)?);
    // An existing cluster keeps booting the image it was created with.
    let request = match &saved {
        Some(saved) if opts.image.is_none() => saved.image.request()?,
        Some(_) => request,
        None => prefer_baked(home, opts, request, progress)?,
    };
    let kind = match (opts.driver, &saved) {
        (Some(kind), _) => kind,
        (None, Some(saved)) => saved.driver.parse()?,
        (None, None) => DriverKind::default_kind()?,
    };
    let uri = saved.as_ref().and_then(|s| s.libvirt_uri.clone()).or(opts.libvirt_uri.clone());
    let driver = driver::open(kind, uri.as_deref())?;
    let policy = if opts.require_kvm { AccelPolicy::RequireKvm } else { AccelPolicy::Auto };
    let host = driver.check_host(policy)?;
    let request = in_driver_format(request, driver.disk_format())?;
    warn(progress, &host.warnings);
    let kubeconfig_owner = super::kubeconfig::owner(home, profile)?;
    let bootstrapper = match (opts.bootstrapper, &saved) {
        (Some(kind), _) => kind,
        (None, Some(saved)) => saved.bootstrapper.parse()?,
        (None, None) => BootstrapperKind::Kubeadm,
    };
    if let Some(path) = opts.kubeconfig.as_ref().filter(|_| bootstrapper != BootstrapperKind::None)
    {
        // A foreign entry with the profile's name is refused before anything is created.
        kubeconfig::check_free(path, &kubeconfig_owner)?;
    }

    let fresh = saved.is_none();
    let result = (|| {
        // A remote libvirt host: its key pinned in the profile, its own tools, routes and
        // CPU checked over SSH (this machine's say nothing about it).
        let remote = match super::remote::jump(profile, driver.location().as_deref())? {
            Some(jump) => {
                profile.create_dir()?;
                super::remote::ensure_pinned(&jump)?;
                let facts = super::remote::check_host(&jump)?;
                let report = super::remote::accel(&host, &facts, policy)?;
                if report.accel != host.accel {
                    warn(progress, &report.warnings);
                }
                Some((facts.routes, report.accel))
            }
            None => None,
        };
        let accel = remote.as_ref().map_or(host.accel, |(_, accel)| *accel);
        let image = image::ensure(home, &request, progress)?;
        // The profile records the image pulled; the nodes boot it in the driver's format.
        let boot = image::convert::for_driver(home, image.clone(), driver.disk_format(), progress)?;
        // Subnets are chosen, saved and their networks made under the home's networks
        // lock: two profiles created at once would otherwise both see the same subnet
        // free (a profile's subnets are taken from the moment its state is saved). It is
        // held for seconds, so it is always waited for.
        let networks = home.lock_networks(true)?;
        let state = match saved {
            Some(state) => state,
            None => {
                let image = ImageState {
                    // Never the URL's credentials: profile.json is shown by `status`.
                    source: image::download::redact(opts.image.as_deref().unwrap_or(DEFAULT_IMAGE)),
                    sha256: image.sha256.clone(),
                    format: image.format,
                    baked: baked_version(&request).map(str::to_owned),
                };
                let remote_routes = remote.as_ref().map(|(routes, _)| routes.clone());
                let (mut taken, warning) = driver::taken_subnets(&*driver, remote_routes)?;
                warn(progress, warning.as_slice());
                taken.extend(saved_subnets(home, profile));
                let uri = driver.location().or(uri.clone());
                let mut state = new_state(profile, opts, kind, uri, accel, image, &taken)?;
                if remote.is_some() {
                    state.tunnel_port = Some(super::remote::choose_tunnel_port(home)?);
                }
                state
            }
        };
        let owner = provision::owner(profile)?;
        // Before anything is saved, made or recorded: a name taken by another home,
        // profile or the user, or a subnet the hypervisor refuses, fails here and leaves
        // nothing behind, so the next `up` may ask for other settings.
        provision::check_owned(&*driver, &state, &owner)?;
        profile.save_state(&state)?;
        provision::ensure_networks(&*driver, &Journal::new(profile), &state, &owner)?;
        drop(networks);
        converge(&*driver, profile, state, boot.path, opts, &kubeconfig_owner, progress)
    })();
    if fresh && result.is_err() && Journal::new(profile).entries().is_ok_and(|e| e.is_empty()) {
        // A new profile that failed before creating anything leaves nothing behind. Its
        // lock is not in this directory, so a command queued on it keeps a valid lock.
        let _ = std::fs::remove_dir_all(profile.dir());
    }
    let mut report = result?;
    report.timings.push(Timing {
        node: "total".into(),
        phase: "up",
        secs: started.elapsed().as_secs_f64(),
    });
    Ok(report)
}

/// Checks every option before anything is created; sizes are checked as the cluster
/// will have them (flag, else saved, else default) against its bootstrapper's floor.
fn validate(opts: &UpOptions, saved: Option<&ClusterState>) -> Result<ImageRequest, Error> {
    if let Some(n) = opts.nodes {
        cluster::check_range("--nodes", n.into(), 1, cluster::MAX_NODES.into())?;
    }
    if let Some(cidr) = opts.network_cidr {
        limits::check_cidr("--network-cidr", cidr)?;
    }
    let bootstrapper = match (opts.bootstrapper, saved) {
        (Some(kind), _) => kind,
        (None, Some(saved)) => saved.bootstrapper.parse()?,
        (None, None) => BootstrapperKind::Kubeadm,
    };
    limits::check_sizes(
        bootstrapper,
        opts.cpus.or(saved.map(|s| s.cpus)).unwrap_or(cluster::DEFAULT_CPUS),
        opts.memory_mib.or(saved.map(|s| s.memory_mib)).unwrap_or(cluster::DEFAULT_MEMORY_MIB),
        opts.disk_gib.or(saved.map(|s| s.disk_gib)).unwrap_or(cluster::DEFAULT_DISK_GIB),
    )?;
    if let Some(version) = &opts.kubernetes_version {
        bootstrap::check_version(version)?;
    }
    if let Some(repo) = &opts.kubernetes_repo {
        bootstrap::check_repo(repo)?;
    }
    if let Some(mirror) = &opts.registry_mirror {
        bootstrap::check_mirror(mirror)?;
    }
    let source = ImageSource::parse(opts.image.as_deref().unwrap_or(DEFAULT_IMAGE))?;
    if let (ImageSource::Baked(baked), Some(asked)) = (&source, &opts.kubernetes_version)
        && baked != asked
    {
        let image = format!("{}{baked}", image::baked::PREFIX);
        let (baked, asked) = (baked.clone(), asked.clone());
        return Err(ClusterError::BakedVersion { image, baked, asked }.into());
    }
    let sha256 = opts
        .image_sha256
        .as_deref()
        .map(|hex| Digest::parse(image::catalog::Algorithm::Sha256, hex))
        .transpose()?;
    Ok(ImageRequest {
        source,
        format: None,
        sha256,
        insecure_skip_verify: opts.insecure_skip_verify,
        max_size_bytes: image::DEFAULT_MAX_SIZE_BYTES,
    })
}

/// A new kubeadm cluster boots a baked image of its image and Kubernetes version when
/// the cache has one (unless `--no-baked`), saying so: its nodes then install and pull
/// nothing.
fn prefer_baked(
    home: &Home,
    opts: &UpOptions,
    request: ImageRequest,
    progress: &dyn Progress,
) -> Result<ImageRequest, Error> {
    let kubeadm = opts.bootstrapper.is_none_or(|b| b == BootstrapperKind::Kubeadm);
    if opts.no_baked || !kubeadm || matches!(request.source, ImageSource::Baked(_)) {
        return Ok(request);
    }
    let source = image::download::redact(opts.image.as_deref().unwrap_or(DEFAULT_IMAGE));
    let version =
        opts.kubernetes_version.as_deref().unwrap_or(bootstrap::DEFAULT_KUBERNETES_VERSION);
    let pinned = request.sha256.as_ref().map(|d| d.hex.as_str());
    let Some(found) = image::baked::matching(home, &source, pinned, version)? else {
        return Ok(request);
    };
    progress.message(&format!(
        "using {} (sha256:{}, baked {} from {}): nodes install and pull nothing; \
         --no-baked boots {source} itself",
        found.baked.image_name(),
        &found.image.sha256[..12],
        found.baked.baked_at,
        found.baked.base.source,
    ));
    Ok(ImageRequest {
        source: ImageSource::Baked(found.baked.kubernetes_version),
        format: Some(found.image.format),
        sha256: Some(Digest::parse(image::catalog::Algorithm::Sha256, &found.image.sha256)?),
        ..request
    })
}

/// The Kubernetes version of a baked image request.
fn baked_version(request: &ImageRequest) -> Option<&str> {
    match &request.source {
        ImageSource::Baked(version) => Some(version),
        _ => None,
    }
}

/// A catalogue disk image is pulled in the format the driver boots (qcow2 for kvm2,
/// VMDK for VirtualBox); URLs and paths keep the format their name says.
fn in_driver_format(request: ImageRequest, disk: DiskFormat) -> Result<ImageRequest, Error> {
    let ImageSource::Catalog(name) = &request.source else { return Ok(request) };
    if request.format.is_some() || image::catalog::find(name)?.kind != Kind::Disk {
        return Ok(request);
    }
    Ok(ImageRequest { format: Some(image::convert::disk_image_format(disk)), ..request })
}

fn load_saved(profile: &Profile) -> Result<Option<ClusterState>, Error> {
    match profile.load_state() {
        Ok(state) => Ok(Some(state)),
        Err(ProfileError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Refuses flags that contradict the saved profile (changing them needs `delete`).
fn check_consistent(saved: &ClusterState, opts: &UpOptions) -> Result<(), ClusterError> {
    let differs = |what: &'static str, saved_value: String, asked: Option<String>| match asked {
        Some(asked) if asked != saved_value => Err(ClusterError::Contradicts {
            profile: saved.profile.clone(),
            what,
            saved: saved_value,
            asked,
        }),
        _ => Ok(()),
    };
    differs("--driver", saved.driver.clone(), opts.driver.map(|d| d.as_str().to_owned()))?;
    differs("--image", saved.image.source.clone(), opts.image.clone())?;
    differs("--nodes", saved.nodes.len().to_string(), opts.nodes.map(|n| n.to_string()))?;
    differs("--cpus", saved.cpus.to_string(), opts.cpus.map(|n| n.to_string()))?;
    differs(
        "--memory (MiB)",
        saved.memory_mib.to_string(),
        opts.memory_mib.map(|n| n.to_string()),
    )?;
    differs("--disk (GiB)", saved.disk_gib.to_string(), opts.disk_gib.map(|n| n.to_string()))?;
    differs(
        "--network-cidr",
        saved.host_only_cidr.to_string(),
        opts.network_cidr.map(|c| c.to_string()),
    )?;
    differs(
        "--bootstrapper",
        saved.bootstrapper.clone(),
        opts.bootstrapper.map(|b| b.as_str().to_owned()),
    )?;
    differs(
        "--kubernetes-version",
        saved.kubernetes_version.clone().unwrap_or_default(),
        opts.kubernetes_version.clone(),
    )?;
    differs(
        "--kubernetes-repo",
        saved.kubernetes_repo.clone().unwrap_or_default(),
        opts.kubernetes_repo.clone(),
    )?;
    differs(
        "--registry-mirror",
        saved.registry_mirror.clone().unwrap_or_default(),
        opts.registry_mirror.clone(),
    )?;
    differs(
        "--libvirt-uri",
        saved.libvirt_uri.clone().unwrap_or_default(),
        opts.libvirt_uri.clone(),
    )
}

/// The subnets saved by the home's other profiles: taken even before their networks
/// exist (a profile whose state cannot be read is skipped). A VirtualBox profile's NAT
/// subnet is inside each of its VMs only, so it takes nothing from the host.
fn saved_subnets(home: &Home, profile: &Profile) -> Vec<Ipv4Cidr> {
    let profiles = profile::list(home).unwrap_or_default();
    let others = profiles.iter().filter(|p| p.name != profile.name().as_str());
    others
        .filter_map(|p| p.state.as_ref())
        .flat_map(|state| {
            let own_nat = state.pointer("/driver").and_then(|d| d.as_str()) == Some("virtualbox");
            let keys: &[&str] =
                if own_nat { &["/host_only_cidr"] } else { &["/host_only_cidr", "/nat_cidr"] };
            keys.iter().map(|key| state.pointer(key)).collect::<Vec<_>>()
        })
        .filter_map(|cidr| cidr?.as_str()?.parse().ok())
        .collect()
}

/// A new profile's `(host_only, nat)` subnets, overlapping nothing in `taken`: the
/// host-only one is `requested` (`--network-cidr`) or the first free candidate; the
/// NAT one is the backend's own ([`driver::fixed_nat_subnet`], so VirtualBox needs a
/// single free /24) or the next free candidate.
fn choose_networks(
    kind: DriverKind,
    requested: Option<Ipv4Cidr>,
    taken: &[Ipv4Cidr],
) -> Result<(Ipv4Cidr, Ipv4Cidr), Error> {
    let fixed_nat = driver::fixed_nat_subnet(kind);
    let count = if fixed_nat.is_some() { 1 } else { 2 };
    let mut used = taken.to_vec();
    used.extend(fixed_nat);
    let free = |used: &[Ipv4Cidr]| {
        crate::net::choose_subnets(used, 1)
            .and_then(|v| v.first().copied())
            .ok_or(driver::DriverError::NoFreeSubnet { count })
    };
    let host_only = match requested {
        Some(cidr) => {
            if let Some(other) = used.iter().find(|t| t.overlaps(&cidr)) {
                let (cidr, other) = (cidr.to_string(), other.to_string());
                return Err(ClusterError::CidrInUse { cidr, other }.into());
            }
            cidr
        }
        None => free(&used)?,
    };
    used.push(host_only);
    let nat = match fixed_nat {
        Some(nat) => nat,
        None => free(&used)?,
    };
    Ok((host_only, nat))
}

/// The state of a new cluster: subnets chosen free of `taken` (the host's routes, the
/// hypervisor's networks and the subnets the home's other profiles saved); addresses
/// and MACs fixed before any VM exists.
fn new_state(
    profile: &Profile,
    opts: &UpOptions,
    kind: DriverKind,
    libvirt_uri: Option<String>,
    accel: driver::Accel,
    image: ImageState,
    taken: &[Ipv4Cidr],
) -> Result<ClusterState, Error> {
    let (host_only_cidr, nat_cidr) = choose_networks(kind, opts.network_cidr, taken)?;
    let name = profile.name().to_string();
    let bootstrapper = opts.bootstrapper.unwrap_or(BootstrapperKind::Kubeadm);
    // Pods and services get subnets that none of the host's routes, the hypervisor's
    // networks, the home's profiles nor this cluster's own networks use: a node could
    // not reach a host network hidden behind a service subnet.
    let (pod_cidr, service_cidr) = if bootstrapper == BootstrapperKind::None {
        (None, None)
    } else {
        let mut taken = taken.to_vec();
        taken.extend([host_only_cidr, nat_cidr]);
        let (pods, services) = bootstrap::choose_subnets(&taken).ok_or_else(|| {
            let taken = taken.iter().map(ToString::to_string).collect::<Vec<_>>();
            bootstrap::BootstrapError::NoSubnet { taken: taken.join(", ") }
        })?;
        (Some(pods), Some(services))
    };
    let mut state = ClusterState {
        format: cluster::STATE_FORMAT,
        profile: name.clone(),
        driver: kind.as_str().to_owned(),
        libvirt_uri,
        accel,
        bootstrapper: bootstrapper.as_str().to_owned(),
        kubernetes_version: (bootstrapper != BootstrapperKind::None).then(|| {
            let baked = image.baked.clone();
            opts.kubernetes_version
                .clone()
                .or(baked)
                .unwrap_or_else(|| bootstrap::DEFAULT_KUBERNETES_VERSION.to_owned())
        }),
        kubernetes_repo: opts
            .kubernetes_repo
            .clone()
            .filter(|_| bootstrapper != BootstrapperKind::None),
        registry_mirror: opts
            .registry_mirror
            .clone()
            .filter(|_| bootstrapper != BootstrapperKind::None),
        image,
        cpus: opts.cpus.unwrap_or(cluster::DEFAULT_CPUS),
        memory_mib: opts.memory_mib.unwrap_or(cluster::DEFAULT_MEMORY_MIB),
        disk_gib: opts.disk_gib.unwrap_or(cluster::DEFAULT_DISK_GIB),
        host_only_cidr,
        nat_cidr,
        pod_cidr,
        service_cidr,
        tunnel_port: None,
        nodes: Vec::new(),
    };
    for index in 0..opts.nodes.unwrap_or(1) {
        let node = new_node(&state, index)?;
        state.nodes.push(node);
    }
    Ok(state)
}

/// Node `index` of `state`: its name, role, static address and MACs.
pub fn new_node(state: &ClusterState, index: u32) -> Result<NodeState, Error> {
    let name = cluster::node_name(&state.profile, index);
    let ip = state
        .host_only_cidr
        .node_ip(index)
        .ok_or(ClusterError::SubnetFull { cidr: state.host_only_cidr.to_string(), index })?;
    Ok(NodeState {
        role: if index == 0 { Role::ControlPlane } else { Role::Worker },
        ip,
        nat_mac: MacAddr::derive(&state.profile, &name, 0),
        host_only_mac: MacAddr::derive(&state.profile, &name, 1),
        instance_id: String::new(),
        host: state.libvirt_uri.clone(),
        name,
    })
}

/// Makes the saved cluster real (its networks exist): keys, every node up; saves what
/// changed.
fn converge(
    driver: &dyn Driver,
    profile: &Profile,
    mut state: ClusterState,
    image_path: std::path::PathBuf,
    opts: &UpOptions,
    kubeconfig_owner: &kubeconfig::Owner,
    progress: &dyn Progress,
) -> Result<UpReport, Error> {
    // The networks were made, and every name checked against its owner, by the caller.
    let owner = provision::owner(profile)?;
    // A snapshot save cut short may have left nodes paused.
    super::snapshot::repair(profile, driver, &state, progress)?;
    let user_key = keys::user_key(profile.dir())?;
    // The cluster's secrets (CA, token) exist before any node boots.
    bootstrap::open(state.bootstrapper.parse()?).prepare(profile.dir())?;
    provision::write_known_hosts(driver, profile, &state)?;
    let journal = Journal::new(profile);
    let ctx = provision::Ctx {
        driver,
        profile,
        state: &state,
        owner: &owner,
        journal: &journal,
        image_path,
        user_key: &user_key,
        ssh_timeout: opts.ssh_timeout,
        progress,
    };
    let nodes = state.nodes.clone();
    let (created, mut timings) = provision::bring_up(&ctx, &nodes)?;
    for fresh in &created {
        if let Some(node) = state.nodes.iter_mut().find(|n| n.name == fresh.name) {
            node.instance_id.clone_from(&fresh.instance_id);
        }
    }
    profile.save_state(&state)?;
    let outcome = provision::with_bootstrapper(driver, profile, &state, progress, |b, c| {
        b.bootstrap(c, opts.wait_ready)
    })?;
    timings.extend(outcome.timings);
    timings.sort_by(|a, b| a.node.cmp(&b.node));
    let kubeconfig = match outcome.admin_conf {
        Some(admin_conf) => {
            install_kubeconfig(profile, &state, &admin_conf, opts, kubeconfig_owner)?
        }
        None => None,
    };
    let snapshot = clean_snapshot(driver, profile, &state, opts, progress, &mut timings)?;
    let created = created.into_iter().map(|n| n.name).collect();
    Ok(UpReport { state, created, timings, kubeconfig, snapshot })
}

/// Takes the `clean` snapshot that `reset` returns to, once the cluster is ready: every
/// node answers SSH and, with a bootstrapper, every node was waited for until Ready.
fn clean_snapshot(
    driver: &dyn Driver,
    profile: &Profile,
    state: &ClusterState,
    opts: &UpOptions,
    progress: &dyn Progress,
    timings: &mut Vec<Timing>,
) -> Result<Option<crate::snapshot::Record>, Error> {
    if !opts.clean_snapshot {
        return Ok(None);
    }
    if opts.wait_ready.is_none() && state.bootstrapper != BootstrapperKind::None.as_str() {
        progress.message("no clean snapshot: the nodes were not waited for (--wait-ready=false)");
        return Ok(None);
    }
    let start = Instant::now();
    let taken = super::snapshot::take_clean(profile, driver, state, progress)?;
    if taken.is_some() {
        let secs = start.elapsed().as_secs_f64();
        timings.push(Timing { node: "all".into(), phase: "snapshot", secs });
    }
    Ok(taken)
}

/// Points kubeadm's admin.conf at the control plane's host-only address, keeps a copy in
/// the profile and merges it into `opts.kubeconfig` (current unless `--keep-context`).
fn install_kubeconfig(
    profile: &Profile,
    state: &ClusterState,
    admin_conf: &str,
    opts: &UpOptions,
    owner: &kubeconfig::Owner,
) -> Result<Option<PathBuf>, Error> {
    let server = super::remote::api_server_url(state)?;
    match &opts.kubeconfig {
        Some(path) => {
            kubeconfig::install(
                path,
                profile.dir(),
                admin_conf,
                owner,
                &server,
                !opts.keep_context,
            )?;
            Ok(Some(path.clone()))
        }
        None => {
            let entries = kubeconfig::entries_from_admin_conf(admin_conf, owner, &server)?;
            kubeconfig::write_standalone(profile.dir(), &entries)?;
            Ok(None)
        }
    }
}

fn warn(progress: &dyn Progress, warnings: &[HostWarning]) {
    for w in warnings {
        progress
            .message(&format!("warning ({}): {} ({})", w.reason.id, w.message, w.reason.advice));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::mem::{Marker, MemDriver, When};
    use crate::image::catalog::Format;
    use crate::ops::fixture::Lab;
    use crate::ops::lifecycle::{self, Corrupt};
    use crate::reason;

    fn cidr(text: &str) -> Ipv4Cidr {
        text.parse().unwrap()
    }

    /// VirtualBox 7's `networks.conf` of `* 10.0.0.0/8` refuses every 192.168 candidate;
    /// the one subnet asked for is enough, the NAT one being VirtualBox's own.
    #[cfg(feature = "virtualbox")]
    #[test]
    fn virtualbox_needs_one_allowed_subnet() {
        use crate::driver::virtualbox::network::{allowed_ranges, refused_candidates};
        let taken = refused_candidates(&allowed_ranges(Some("* 10.0.0.0/8\n")));
        let kind = DriverKind::VirtualBox;
        let chosen = choose_networks(kind, Some(cidr("10.20.30.0/24")), &taken).unwrap();
        assert_eq!(chosen, (cidr("10.20.30.0/24"), cidr("10.0.2.0/24")));
        let err = choose_networks(kind, None, &taken).unwrap_err();
        assert!(matches!(err, Error::Driver(driver::DriverError::NoFreeSubnet { count: 1 })));
        // One free candidate is enough without --network-cidr too.
        let all_but_one: Vec<Ipv4Cidr> =
            crate::net::candidate_subnets().filter(|c| *c != cidr("192.168.57.0/24")).collect();
        let chosen = choose_networks(kind, None, &all_but_one).unwrap();
        assert_eq!(chosen, (cidr("192.168.57.0/24"), cidr("10.0.2.0/24")));
        // The guests' NAT subnet cannot also be the host-only one.
        let err = choose_networks(kind, Some(cidr("10.0.2.0/24")), &[]).unwrap_err();
        assert!(matches!(err, Error::Cluster(ClusterError::CidrInUse { .. })), "{err:?}");
    }

    /// kvm2 makes its NAT network itself, on a second free subnet.
    #[cfg(all(feature = "libvirt", target_os = "linux"))]
    #[test]
    fn kvm2_needs_two_free_subnets() {
        let kind = DriverKind::Kvm2;
        let chosen = choose_networks(kind, None, &[cidr("192.168.39.0/24")]).unwrap();
        assert_eq!(chosen, (cidr("192.168.50.0/24"), cidr("192.168.51.0/24")));
        let chosen = choose_networks(kind, Some(cidr("10.20.30.0/24")), &[]).unwrap();
        assert_eq!(chosen, (cidr("10.20.30.0/24"), cidr("192.168.39.0/24")));
        let all_but_one: Vec<Ipv4Cidr> =
            crate::net::candidate_subnets().filter(|c| *c != cidr("192.168.57.0/24")).collect();
        let err = choose_networks(kind, None, &all_but_one).unwrap_err();
        assert!(matches!(err, Error::Driver(driver::DriverError::NoFreeSubnet { count: 2 })));
        let err = choose_networks(kind, Some(cidr("192.168.39.0/24")), &all_but_one).unwrap_err();
        assert!(matches!(err, Error::Cluster(ClusterError::CidrInUse { .. })), "{err:?}");
    }

    /// Stores a baked image of the fixture's image for `version` in `lab`'s cache.
    fn bake(lab: &Lab, version: &str) -> image::baked::BakedImage {
        use sha2::Digest as _;
        let base_sha = hex::encode(sha2::Sha256::digest(b"not really a disk image"));
        let baked = image::baked::Baked {
            kubernetes_version: version.into(),
            base: image::baked::Base { source: "elsewhere".into(), sha256: base_sha },
            driver: "kvm2".into(),
            baked_at: "2026-12-02T07:00:00Z".into(),
            packages: Default::default(),
            images: Default::default(),
        };
        let write = |part: &std::path::Path| std::fs::write(part, format!("baked {version}"));
        image::baked::store(&lab.home, Format::Qcow2, baked, write).unwrap().unwrap()
    }

    #[test]
    fn new_kubeadm_cluster_boots_the_matching_baked_image_unless_told_not_to() {
        let (lab, hv) = (Lab::new(), MemDriver::new());
        let baked = bake(&lab, "v1.34.2");
        bake(&lab, "v1.33.1");
        let kubeadm = UpOptions {
            bootstrapper: Some(BootstrapperKind::Kubeadm),
            image_sha256: Some(baked.baked.base.sha256.clone()),
            ..lab.options(1)
        };
        hv.fail("start", When::Object("lab".into()));
        lab.up(&hv, "lab", &kubeadm).unwrap_err();
        let state: ClusterState = lab.profile("lab").load_state().unwrap();
        assert_eq!(state.image.baked.as_deref(), Some("v1.34.2"));
        assert_eq!(state.image.sha256, baked.image.sha256);
        assert_eq!(state.kubernetes_version.as_deref(), Some("v1.34.2"));
        // The saved profile finds the same baked image again.
        assert!(matches!(state.image.request().unwrap().source, ImageSource::Baked(_)));

        hv.fail("start", When::Object("other".into()));
        lab.up(&hv, "other", &UpOptions { no_baked: true, ..kubeadm.clone() }).unwrap_err();
        let state: ClusterState = lab.profile("other").load_state().unwrap();
        assert_eq!((state.image.baked, state.image.sha256), (None, baked.baked.base.sha256));
    }

    #[test]
    fn baked_image_of_another_version_or_none_is_refused_before_anything_is_made() {
        let (lab, hv) = (Lab::new(), MemDriver::new());
        bake(&lab, "v1.33.1");
        let asked = UpOptions {
            bootstrapper: Some(BootstrapperKind::Kubeadm),
            image: Some("baked:v1.33.1".into()),
            kubernetes_version: Some("v1.34.2".into()),
            ..lab.options(1)
        };
        let err = lab.up(&hv, "lab", &asked).unwrap_err();
        assert_eq!(reason::reason(&err).id, reason::BAKE_VERSION_MISMATCH.id, "{err}");
        let missing =
            UpOptions { image: Some("baked:v1.35.0".into()), kubernetes_version: None, ..asked };
        let err = lab.up(&hv, "lab", &missing).unwrap_err();
        assert_eq!(reason::reason(&err).id, reason::BAKE_NOT_FOUND.id, "{err}");
        assert!(!lab.profile("lab").dir().exists());
        assert!(hv.vms().is_empty() && hv.networks().is_empty());
    }

    #[test]
    fn fresh_up_refused_before_creating_anything_leaves_only_the_lock() {
        let (lab, hv) = (Lab::new(), MemDriver::new());
        hv.add_vm("lab", Marker::None); // the user's own VM
        let err = lab.up(&hv, "lab", &lab.options(1)).unwrap_err();
        assert_eq!(reason::reason(&err).id, reason::DRV_VM_NOT_KUBELAB.id, "{err}");
        assert!(!lab.profile("lab").dir().exists());
        assert!(lab.home.locks_dir().join("lab.lock").exists(), "a waiter may hold it");
        assert_eq!(hv.vms().keys().collect::<Vec<_>>(), ["lab"]);
        assert!(hv.networks().is_empty() && hv.images().is_empty());
        assert!(hv.calls().iter().all(|(method, _)| !method.starts_with("ensure")));
    }

    #[test]
    fn failed_fresh_up_leaves_nothing_its_delete_cannot_find() {
        let (lab, hv) = (Lab::new(), MemDriver::new());
        hv.fail("create", When::Object("lab-m02".into()));
        hv.fail("start", When::Object("lab".into()));
        lab.up(&hv, "lab", &lab.options(2)).unwrap_err();
        assert_eq!(hv.networks().len(), 2);
        let _installed = hv.install();
        assert!(
            lifecycle::delete(&lab.home, &lab.profile("lab"), false, Corrupt::Refuse, &()).unwrap()
        );
        assert!(hv.vms().is_empty() && hv.networks().is_empty(), "{:?}", hv.vms());
        assert!(hv.volumes().is_empty() && hv.images().is_empty());
        assert!(lab.home.locks_dir().join("lab.lock").exists());
    }

    /// A second `up` of a profile being created fails at once without `--wait`; with it,
    /// it runs after the first and resumes its cluster instead of making another.
    #[test]
    fn second_up_of_one_profile_fails_or_waits() {
        let (lab, hv) = (Lab::new(), MemDriver::new());
        hv.fail("start", When::Object("lab".into()));
        let creating = hv.pause("create");
        std::thread::scope(|s| {
            let first = s.spawn(|| lab.up(&hv, "lab", &lab.options(1)));
            creating.wait_entered();
            let busy = lab.up(&hv, "lab", &lab.options(1)).unwrap_err();
            assert_eq!(reason::reason(&busy).id, reason::PROFILE_BUSY.id, "{busy}");
            let queued =
                s.spawn(|| lab.up(&hv, "lab", &UpOptions { wait_lock: true, ..lab.options(1) }));
            creating.resume();
            first.join().unwrap().unwrap_err();
            let err = queued.join().unwrap().unwrap_err();
            assert!(crate::error::chain(&err).contains("injected failure of start"), "{err}");
        });
        let creates = hv.calls().into_iter().filter(|(method, _)| *method == "create").count();
        assert_eq!(creates, 1, "the queued up found the VM made by the first");
    }

    /// Two profiles created at once, one of them choosing its subnets while the other
    /// is on its way: the home's networks lock makes them choose one after the other.
    #[test]
    fn profiles_created_at_once_get_distinct_subnets() {
        let (lab, hv) = (Lab::new(), MemDriver::new());
        let choosing = hv.pause("used_subnets");
        let states = std::thread::scope(|s| {
            let a = s.spawn(|| lab.created(&hv, "a", 1));
            choosing.wait_entered();
            let b = s.spawn(|| lab.created(&hv, "b", 1));
            choosing.resume();
            [a.join().unwrap(), b.join().unwrap()]
        });
        let [a, b] = &states;
        // (VirtualBox's NAT subnet is the same in every VM, so only host-only ones count.)
        assert!(!a.host_only_cidr.overlaps(&b.host_only_cidr), "{a:?}\n{b:?}");
    }
}
