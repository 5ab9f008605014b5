//! The `Driver` trait: what kubelab asks of a hypervisor (VMs, their disks, the
//! profile's networks), the plain data it passes (`VmSpec`, `NetworkSpec`), and the
//! naming rules that mark what kubelab created. Backends live in sub-directories;
//! a backend knows nothing of Kubernetes.
//!
//! # Ownership: never touch what is not yours
//!
//! One hypervisor is shared by many kubelab homes (each with a random id, see
//! `home::Home::id`), their profiles, and the user's own VMs; names alone cannot tell
//! them apart (two homes both have a profile `lab`, so both want a VM `lab` and a
//! network `kubelab-lab`). So every object kubelab creates carries an [`Owner`] marker
//! naming the home, the profile and, for a VM, the node:
//!
//! | object | marker |
//! |---|---|
//! | libvirt domain | `<metadata><kubelab:owner home=.. profile=.. node=../>` |
//! | libvirt network | the same element, without `node` |
//! | libvirt node volumes | the home id in the name: `node-<home>-<node>.qcow2` (volumes have no metadata) |
//! | libvirt console log volume (remote URI) | none: `<node>.console.log`, removed only while the owned domain that names it as its `<serial><log>` still exists |
//! | libvirt base image/ISO volume | shared by every home (named by digest); removed only when no volume's backing store and no domain's disk uses it |
//! | VirtualBox VM | extra data `kubelab/owner` = `HOME/PROFILE/NODE` |
//! | VirtualBox node disk | lives in the home's node directory, attached to that VM only |
//! | VirtualBox base medium | the home's cached image file; closed only when it has no child disk |
//! | VirtualBox host-only adapter | global extra data `kubelab/hostonly/<adapter>` = `created|found HOME/PROFILE...` (its users) |
//! | VirtualBox host-only network (7.x, macOS) | global extra data `kubelab/hostonlynet/<name>` = `HOME/PROFILE` |
//!
//! (kubelab configures no VirtualBox DHCP server: nodes have static addresses.)
//!
//! Every backend action that changes an object (adopt in `create`/`ensure_network`,
//! `start`, `stop`, `delete`, `delete_network`) first reads the marker and fails with
//! [`DriverError::ForeignVm`] or [`DriverError::ForeignNetwork`], changing nothing, unless
//! it names exactly this owner; an object without a marker (the user's, or made by a
//! kubelab from before markers had a home id) is foreign too. `up` and `node add` run
//! [`Driver::check_vm`] and [`Driver::check_network`] over every object they will make
//! before they make any, so a name taken by another home is refused up front.
//!
//! ## Profiles from before the markers
//!
//! A kubelab from before home ids marked libvirt domains and networks with
//! `<kubelab:profile>NAME</kubelab:profile>` alone, VirtualBox VMs with their group
//! `/kubelab-NAME` alone, and named node volumes `node-<node>.qcow2`. Such a marker
//! cannot tell this home's old cluster from another home's profile of the same name, so
//! kubelab neither touches nor adopts these objects: when one carries the profile's name
//! it fails with [`DriverError::Legacy`] (reasons `DRV_VM_NOT_KUBELAB` and
//! `DRV_NET_NOT_KUBELAB`), whose hints give the `virsh`/`VBoxManage` commands that
//! remove them; the user, who knows whose they
//! are, runs them, and `kubelab delete` then removes the rest. `status` shows such a VM
//! as `foreign`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::net::{self, Ipv4Cidr, MacAddr};
use crate::reason::Reason;

/// The CPU's hardware virtualization (VT-x/AMD-V, nested), read from Linux.
pub mod cpu;
mod error;
#[cfg(all(feature = "libvirt", target_os = "linux"))]
pub mod host;
mod owner;
// libvirt (the `virt` crate) is a Linux-only dependency: other targets leave it out.
#[cfg(all(feature = "libvirt", target_os = "linux"))]
pub mod libvirt;
/// An in-memory hypervisor that `open` returns in unit tests (see [`mem::installed`]).
#[cfg(test)]
pub mod mem;
/// The VirtualBox backend (`VBoxManage`).
#[cfg(feature = "virtualbox")]
pub mod virtualbox;

pub mod uri;

pub use error::{Action, Cause, DriverError, Object};
pub use owner::Owner;

/// Prefix of every network (and the storage pool) kubelab creates, so it never touches
/// one it did not create.
pub const NAME_PREFIX: &str = "kubelab-";

/// The hypervisor backends compiled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    /// libvirt with QEMU (KVM or TCG), through the `virt` crate.
    #[cfg(all(feature = "libvirt", target_os = "linux"))]
    Kvm2,
    /// VirtualBox, through `VBoxManage`.
    #[cfg(feature = "virtualbox")]
    VirtualBox,
}

impl DriverKind {
    /// The driver's name as users type it (`--driver kvm2`).
    pub fn as_str(self) -> &'static str {
        match self {
            #[cfg(all(feature = "libvirt", target_os = "linux"))]
            Self::Kvm2 => "kvm2",
            #[cfg(feature = "virtualbox")]
            Self::VirtualBox => "virtualbox",
        }
    }

    /// The backend a new profile uses without `--driver`: the first one compiled in.
    pub fn default_kind() -> Result<Self, DriverError> {
        Self::all().first().copied().ok_or_else(|| DriverError::UnknownDriver {
            name: "(default)".into(),
            known: "none: this kubelab was built without drivers".into(),
        })
    }

    /// Every backend compiled in, in the order `up` prefers them.
    pub fn all() -> &'static [DriverKind] {
        &[
            #[cfg(all(feature = "libvirt", target_os = "linux"))]
            Self::Kvm2,
            #[cfg(feature = "virtualbox")]
            Self::VirtualBox,
        ]
    }
}

impl std::str::FromStr for DriverKind {
    type Err = DriverError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::all().iter().copied().find(|k| k.as_str() == name).ok_or_else(|| {
            DriverError::UnknownDriver {
                name: name.to_owned(),
                known: Self::all().iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", "),
            }
        })
    }
}

impl std::fmt::Display for DriverKind {
    #[cfg_attr(not(all(feature = "libvirt", target_os = "linux")), allow(unused_variables))]
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            #[cfg(all(feature = "libvirt", target_os = "linux"))]
            DriverKind::Kvm2 => f.write_str("kvm2"),
            #[cfg(feature = "virtualbox")]
            DriverKind::VirtualBox => f.write_str("virtualbox"),
        }
    }
}

/// The disk image format a backend boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    /// QEMU copy-on-write (libvirt).
    Qcow2,
    /// VMware disk, which VirtualBox attaches directly (it also takes VDI and VHD).
    Vmdk,
}

/// How guest code runs: QEMU's two ways under libvirt, or VirtualBox's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization (libvirt domain type `kvm`).
    Kvm,
    /// Software emulation (libvirt domain type `qemu`): slow but works everywhere.
    Tcg,
    /// VirtualBox's own hypervisor on VT-x/AMD-V (it has no software fallback since
    /// 6.1); only the VirtualBox backend reports it.
    VirtualBox,
}

/// What the user allows when KVM is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccelPolicy {
    /// Use KVM when usable, else TCG with a warning.
    Auto,
    /// Fail with `HOST_KVM_UNAVAILABLE` instead of falling back (`--require-kvm`).
    RequireKvm,
}

/// The outcome of the preflight checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostReport {
    /// The acceleration VMs will use (put it in [`VmSpec::accel`]).
    pub accel: Accel,
    /// Problems worth telling the user that do not stop `up`.
    pub warnings: Vec<HostWarning>,
}

/// A preflight problem that does not stop `up`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostWarning {
    /// Its catalogue entry (id and advice).
    pub reason: &'static Reason,
    /// What was found.
    pub message: String,
}

/// One VM to create: plain data, validated by `ops`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// The VM's name (the node name, e.g. `kubelab-m02`).
    pub name: String,
    /// The home and profile it belongs to; written into the VM, with the node's name,
    /// as kubelab's marker.
    pub owner: Owner,
    /// KVM or TCG, from [`HostReport::accel`].
    pub accel: Accel,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// The boot disk.
    pub disk: DiskSpec,
    /// The cloud-init NoCloud seed ISO, a local file written by kubelab.
    pub seed_iso: PathBuf,
    /// Where the serial console is logged: a file of the profile, which the hypervisor
    /// writes when it runs on this machine (a remote libvirt logs into its own pool
    /// instead: see [`Driver::console_tail`]).
    pub serial_log: PathBuf,
    /// First NIC: egress through NAT.
    pub nat: Nic,
    /// Second NIC: the cluster's host-only network, with a static address.
    pub host_only: Nic,
}

/// How a VM's disk is made from an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSpec {
    /// A copy-on-write overlay over a cached disk image (already in [`Driver::disk_format`]).
    Overlay {
        /// The local cached base image.
        base_image: PathBuf,
        /// Its digest; names the shared base volume, so it is uploaded once.
        base_id: String,
        /// The overlay's virtual size in GiB.
        size_gib: u64,
    },
    /// Boot an ISO read-only, with a blank data disk.
    IsoWithDataDisk {
        /// The local cached ISO.
        iso: PathBuf,
        /// Its digest; names the shared ISO volume.
        iso_id: String,
        /// The data disk's size in GiB.
        size_gib: u64,
    },
}

/// One network interface of a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// The network it joins ([`NetworkSpec::name`]).
    pub network: String,
    /// Its MAC address, usually [`MacAddr::derive`].
    pub mac: MacAddr,
}

/// One of a profile's networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    /// Its name, from [`network_names`].
    pub name: String,
    /// The home and profile it belongs to; written into the network as kubelab's marker.
    pub owner: Owner,
    /// NAT (egress) or host-only (cluster traffic).
    pub kind: NetworkKind,
    /// Its subnet; the host takes `.1`.
    pub cidr: Ipv4Cidr,
    /// The host bridge's name, from [`bridge_name`].
    pub bridge: String,
    /// DHCP reservations; kept in sync by [`Driver::ensure_network`].
    pub hosts: Vec<DhcpHost>,
}

/// The two kinds of profile network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkKind {
    /// Forwarded to the host's uplink with NAT, DHCP for the whole subnet.
    Nat,
    /// Isolated: only the host and the VMs, DHCP only for reserved hosts.
    HostOnly,
}

/// A DHCP reservation: this MAC always gets this address and hostname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpHost {
    /// The VM's MAC on this network.
    pub mac: MacAddr,
    /// Its reserved address.
    pub ip: Ipv4Addr,
    /// Its hostname (the node name).
    pub name: String,
}

/// What a VM is doing, as the hypervisor reports it (never stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    /// The VM is not defined.
    Missing,
    /// Defined and powered off.
    Stopped,
    /// Powering on.
    Starting,
    /// Running.
    Running,
    /// Paused or suspended.
    Paused,
    /// Shutting down.
    Stopping,
    /// Crashed.
    Crashed,
}

/// What a backend holds of one profile, found by owner markers alone
/// ([`Driver::owned`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owned {
    /// Nodes whose VM, or a leftover disk of it, is marked for the profile.
    pub vms: Vec<String>,
    /// The profile's networks that carry its marker.
    pub networks: Vec<String>,
}

/// The end of a VM's serial console log, read from the hypervisor's own copy
/// ([`Driver::console_tail`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleTail {
    /// The log's path on the hypervisor's host.
    pub path: PathBuf,
    /// Its last bytes (lossily UTF-8, a line cut by the limit dropped); empty while the
    /// VM has not logged anything.
    pub text: String,
}

/// How to stop a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// ACPI shutdown, then power off if it has not stopped by the backend's deadline.
    Graceful,
    /// Power off at once.
    Force,
}

/// A hypervisor backend. Object-safe (`Box<dyn Driver>`) and shareable across the
/// per-node threads of `up`.
pub trait Driver: Send + Sync {
    /// Which backend this is.
    fn kind(&self) -> DriverKind;
    /// The hypervisor host its VMs live on, as the profile records it (libvirt: the
    /// resolved connection URI); `None` where that is always this machine.
    fn location(&self) -> Option<String> {
        None
    }
    /// Preflight: the hypervisor is reachable and usable; chooses KVM or TCG.
    fn check_host(&self, policy: AccelPolicy) -> Result<HostReport, DriverError>;
    /// The disk format `image/` must convert base images to.
    fn disk_format(&self) -> DiskFormat;
    /// Subnets of the hypervisor's networks (all of them, kubelab's included), for
    /// [`pick_subnets`].
    fn used_subnets(&self) -> Result<Vec<Ipv4Cidr>, DriverError>;
    /// Ok if no network of `net.name` exists, or it is `net.owner`'s; else
    /// [`DriverError::ForeignNetwork`]. Changes nothing.
    fn check_network(&self, net: &NetworkSpec) -> Result<(), DriverError>;
    /// Makes the network exist, be active and hold exactly `net.hosts` as reservations:
    /// defines a missing one, starts an inactive one. Fails if a network of that name
    /// has another subnet or is not `net.owner`'s.
    fn ensure_network(&self, net: &NetworkSpec) -> Result<(), DriverError>;
    /// Stops and removes `owner`'s network `name`; Ok if it is already gone.
    fn delete_network(&self, name: &str, owner: &Owner) -> Result<(), DriverError>;
    /// Ok if no VM `name` exists or it is node `name` of `owner`; else
    /// [`DriverError::ForeignVm`]. Changes nothing.
    fn check_vm(&self, name: &str, owner: &Owner) -> Result<(), DriverError>;
    /// Creates the VM's disks and defines it (not started); Ok if it already exists
    /// and is `vm.owner`'s.
    fn create(&self, vm: &VmSpec) -> Result<(), DriverError>;
    /// Powers `owner`'s VM on; Ok if it is running.
    fn start(&self, name: &str, owner: &Owner) -> Result<(), DriverError>;
    /// Powers `owner`'s VM off; Ok if it is stopped or missing.
    fn stop(&self, name: &str, owner: &Owner, mode: StopMode) -> Result<(), DriverError>;
    /// Removes `owner`'s VM and its own disks (not the shared base image); Ok if already
    /// gone.
    fn delete(&self, name: &str, owner: &Owner) -> Result<(), DriverError>;
    /// Every node (VM or leftover node disk) and network whose marker names `owner`'s
    /// home and profile, found without any name from the profile's files: `delete
    /// --force` removes a profile whose profile.json or journal cannot be trusted this
    /// way, passing each to [`Driver::delete`] or [`Driver::delete_network`].
    fn owned(&self, owner: &Owner) -> Result<Owned, DriverError>;
    /// Removes the hypervisor's copy of a base image or ISO (`base_id`/`iso_id`) unless
    /// something still uses it (another home's VMs included); Ok if gone or kept.
    fn delete_image(&self, image_id: &str) -> Result<(), DriverError>;
    /// The VM's state.
    fn state(&self, name: &str) -> Result<VmState, DriverError>;
    /// The host-only address the hypervisor has seen the VM use (diagnostics; kubelab
    /// knows the static address already), `None` if unknown.
    fn ip(&self, name: &str) -> Result<Option<IpAddr>, DriverError>;
    /// Where the VM's sshd is reached from this host: `host_only_ip:22` (libvirt), or a
    /// 127.0.0.1 port forwarded to the guest's port 22 (VirtualBox's NAT NIC).
    fn ssh_address(&self, name: &str, host_only_ip: Ipv4Addr) -> Result<SocketAddr, DriverError>;
    /// The last `max_bytes` of the hypervisor's own log of the VM (VirtualBox's VBox.log),
    /// for the error when it stops unexpectedly; `None` when the backend has none to
    /// read. The serial console log is [`Driver::console_tail`]'s.
    fn log_tail(&self, name: &str, max_bytes: u64) -> Option<String>;
    /// The last `max_bytes` of the serial console log of `owner`'s VM `name` when the
    /// hypervisor keeps it where this host cannot read it as a file (a remote libvirt
    /// logs into kubelab's storage pool, issue 15); `None` when the log is
    /// [`VmSpec::serial_log`], the profile's file, which `ops` reads itself (and when the
    /// VM is missing).
    fn console_tail(
        &self,
        name: &str,
        owner: &Owner,
        max_bytes: u64,
    ) -> Result<Option<ConsoleTail>, DriverError>;
    /// Pauses `owner`'s running VM (its memory stays); Ok if it is paused already.
    fn pause(&self, name: &str, owner: &Owner) -> Result<(), DriverError>;
    /// Runs `owner`'s VM that [`Driver::pause`] or [`Driver::snapshot_restore`] left
    /// paused (or saved); Ok if it runs.
    fn resume(&self, name: &str, owner: &Owner) -> Result<(), DriverError>;
    /// Takes snapshot `snapshot` of `owner`'s VM: its disks, and its memory when it runs
    /// or is paused (`ops::snapshot` pauses every node first, so they agree in time).
    /// Fails if the VM has a snapshot of that name.
    fn snapshot_save(&self, name: &str, owner: &Owner, snapshot: &str) -> Result<(), DriverError>;
    /// Returns `owner`'s VM to `snapshot`, and leaves it paused when the snapshot holds
    /// memory (ready for [`Driver::resume`]), stopped when it does not.
    fn snapshot_restore(
        &self,
        name: &str,
        owner: &Owner,
        snapshot: &str,
    ) -> Result<(), DriverError>;
    /// Removes snapshot `snapshot` of `owner`'s VM; Ok if it has none of that name.
    fn snapshot_delete(&self, name: &str, owner: &Owner, snapshot: &str)
    -> Result<(), DriverError>;
    /// The names of kubelab's snapshots of `owner`'s VM (none if it is missing).
    fn snapshots(&self, name: &str, owner: &Owner) -> Result<Vec<String>, DriverError>;
    /// Bytes that the VM's own disks (its snapshots included) take on the hypervisor's
    /// host; 0 if it is missing.
    fn disk_usage(&self, name: &str, owner: &Owner) -> Result<u64, DriverError>;
    /// Sets the running guest's clock to `now` through a guest agent; `Ok(false)` when no
    /// agent answers (the caller then sets it over SSH).
    fn set_guest_time(
        &self,
        name: &str,
        owner: &Owner,
        now: std::time::SystemTime,
    ) -> Result<bool, DriverError>;
    /// Writes the boot disk of `owner`'s stopped VM to the local file `dest`: one
    /// standalone image in [`Driver::disk_format`], its base image merged in (`image
    /// bake` stores it as a new base). Fails if the VM is not stopped.
    fn export_disk(
        &self,
        name: &str,
        owner: &Owner,
        dest: &std::path::Path,
    ) -> Result<(), DriverError>;
}

/// Opens the backend `kind`. `libvirt_uri` is `--libvirt-uri` (see
/// `libvirt::resolve_uri` for the fallbacks).
#[cfg_attr(not(all(feature = "libvirt", target_os = "linux")), allow(unused_variables))]
pub fn open(kind: DriverKind, libvirt_uri: Option<&str>) -> Result<Box<dyn Driver>, DriverError> {
    // The seam of `ops`' unit tests: their thread's in-memory hypervisor, whatever the
    // profile's driver says.
    #[cfg(test)]
    if let Some(driver) = mem::installed() {
        return Ok(Box::new(driver));
    }
    match kind {
        #[cfg(all(feature = "libvirt", target_os = "linux"))]
        DriverKind::Kvm2 => {
            let uri = libvirt::resolve_uri(libvirt_uri);
            // Checked here, where every URI passes: the flag's, the environment's and
            // the saved profile's (that one is also checked when the file is loaded).
            uri::check(&uri).map_err(|why| DriverError::RefusedUri { uri: uri.clone(), why })?;
            Ok(Box::new(libvirt::LibvirtDriver::connect(&uri)?))
        }
        #[cfg(feature = "virtualbox")]
        DriverKind::VirtualBox => Ok(Box::new(virtualbox::VirtualBoxDriver::open()?)),
    }
}

/// Every driver name a profile may record, compiled in or not.
pub const DRIVER_NAMES: &[&str] = &["kvm2", "virtualbox"];

/// The profile's networks: `(host_only, nat)` = `kubelab-<profile>` and
/// `kubelab-<profile>.nat`. The `.` cannot occur in a profile name, so profile `a-nat`
/// and the NAT network of profile `a` can never share a name.
pub fn network_names(profile: &str) -> (String, String) {
    (format!("{NAME_PREFIX}{profile}"), format!("{NAME_PREFIX}{profile}.nat"))
}

/// The host bridge of a network: `kl` + 10 hex digits of SHA-256(network name), within
/// Linux's 15-byte interface name limit and unique per network.
pub fn bridge_name(network: &str) -> String {
    let digest = Sha256::digest(network.as_bytes());
    format!("kl{}", &hex::encode(digest)[..10])
}

/// The subnets a new profile must not overlap: the host's routes and every network of
/// the hypervisor. Where the routes cannot be read at all (an OS or sandbox that hides
/// them), VirtualBox goes on with the networks it reports itself (host-only adapters or
/// networks, and the ranges networks.conf refuses), and a warning says so; kvm2 fails,
/// since on Linux `/proc/net/route` is always there. `remote_routes` are the routes of
/// a hypervisor on another host (read there), which then count instead of this host's.
pub fn taken_subnets(
    driver: &dyn Driver,
    remote_routes: Option<Vec<Ipv4Cidr>>,
) -> Result<(Vec<Ipv4Cidr>, Option<HostWarning>), DriverError> {
    let routes = remote_routes.map_or_else(net::read_host_routes, Ok);
    with_routes(driver.kind(), driver.used_subnets()?, routes)
}

/// `used` (the hypervisor's subnets) and the host's `routes`, as [`taken_subnets`]
/// returns them for `kind`.
fn with_routes(
    kind: DriverKind,
    mut taken: Vec<Ipv4Cidr>,
    routes: Result<Vec<Ipv4Cidr>, net::NetError>,
) -> Result<(Vec<Ipv4Cidr>, Option<HostWarning>), DriverError> {
    let warning = match routes {
        Ok(routes) => {
            taken.extend(routes);
            None
        }
        Err(source) if routes_optional(kind) => Some(HostWarning {
            reason: &crate::reason::DRV_ROUTES_UNREADABLE,
            message: crate::error::chain(&DriverError::Routes { source }),
        }),
        Err(source) => return Err(DriverError::Routes { source }),
    };
    Ok((taken, warning))
}

/// Whether `kind` may choose subnets without the host's routes: VirtualBox runs on
/// Windows and macOS too, where they come from a command that can fail.
pub fn routes_optional(kind: DriverKind) -> bool {
    match kind {
        #[cfg(all(feature = "libvirt", target_os = "linux"))]
        DriverKind::Kvm2 => false,
        #[cfg(feature = "virtualbox")]
        DriverKind::VirtualBox => true,
    }
}

/// The NAT subnet a backend fixes itself, so a profile needs no free subnet for it:
/// VirtualBox gives NIC 1 its own NAT engine on 10.0.2.0/24 in every VM (manual,
/// "Network Address Translation (NAT)"); kvm2's NAT network is kubelab's, on a subnet
/// it picks (`None`).
pub fn fixed_nat_subnet(kind: DriverKind) -> Option<Ipv4Cidr> {
    match kind {
        #[cfg(all(feature = "libvirt", target_os = "linux"))]
        DriverKind::Kvm2 => None,
        #[cfg(feature = "virtualbox")]
        DriverKind::VirtualBox => Ipv4Cidr::new(Ipv4Addr::new(10, 0, 2, 0), 24).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_and_bridge_names() {
        let (host_only, nat) = network_names("lab");
        assert_eq!((host_only.as_str(), nat.as_str()), ("kubelab-lab", "kubelab-lab.nat"));
        assert_ne!(network_names("lab-nat").0, network_names("lab").1);
        let bridge = bridge_name("kubelab-lab");
        assert_eq!(bridge.len(), 12);
        assert!(bridge.starts_with("kl"));
        assert_ne!(bridge, bridge_name("kubelab-lab.nat"));
    }

    fn unreadable() -> Result<Vec<Ipv4Cidr>, net::NetError> {
        Err(net::NetError::RoutesUnsupported { os: "plan9" })
    }

    /// Without the host's routes VirtualBox goes on with its own networks, and warns.
    #[cfg(feature = "virtualbox")]
    #[test]
    fn virtualbox_goes_on_without_routes() {
        let own: Ipv4Cidr = "192.168.56.0/24".parse().unwrap();
        let (taken, warning) =
            with_routes(DriverKind::VirtualBox, vec![own], unreadable()).unwrap();
        assert_eq!(taken, [own]);
        let warning = warning.unwrap();
        assert_eq!(warning.reason.id, "DRV_ROUTES_UNREADABLE");
        assert!(warning.message.contains("plan9"), "{}", warning.message);
        let route: Ipv4Cidr = "10.1.1.0/24".parse().unwrap();
        let (taken, warning) =
            with_routes(DriverKind::VirtualBox, vec![own], Ok(vec![route])).unwrap();
        assert_eq!((taken, warning), (vec![own, route], None));
    }

    /// kvm2 fails: on Linux `/proc/net/route` is always there.
    #[cfg(all(feature = "libvirt", target_os = "linux"))]
    #[test]
    fn kvm2_needs_the_routes() {
        let err = with_routes(DriverKind::Kvm2, vec![], unreadable()).unwrap_err();
        assert!(matches!(err, DriverError::Routes { .. }), "{err:?}");
    }
}
