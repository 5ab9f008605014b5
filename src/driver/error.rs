//! `DriverError`: every way a backend can fail, typed so `reason.rs` can give advice.
//! Backend-specific causes (libvirt errors) travel as boxed sources.

use std::fmt;
use std::path::PathBuf;

use super::Owner;
use crate::net::NetError;
use crate::process::ProcessError;

/// A backend's underlying error (e.g. `virt::error::Error`), kept as the cause.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors from a hypervisor backend.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The daemon's socket is missing or refuses connections.
    #[error("cannot reach libvirt at {uri}")]
    Unreachable {
        /// The connection URI.
        uri: String,
        /// The backend's error.
        #[source]
        source: Cause,
    },
    /// libvirtd stopped answering: the connection did not open, or its keepalive found
    /// it silent, within the deadline.
    #[error("libvirt did not answer within {waited_secs} s (while kubelab tried to {doing})")]
    NoAnswer {
        /// What kubelab was doing.
        doing: String,
        /// The deadline.
        waited_secs: u64,
    },
    /// The daemon refused us for lack of permission.
    #[error("permission denied connecting to libvirt at {uri}")]
    PermissionDenied {
        /// The connection URI.
        uri: String,
        /// The backend's error.
        #[source]
        source: Cause,
    },
    /// Connecting failed for another reason (bad URI, unknown driver...).
    #[error("cannot connect to libvirt at {uri}")]
    Connect {
        /// The connection URI.
        uri: String,
        /// The backend's error.
        #[source]
        source: Cause,
    },
    /// The libvirt URI is not one kubelab connects with (see `driver::uri`).
    #[error("refusing libvirt URI {uri:?}: {why}")]
    RefusedUri {
        /// The URI.
        uri: String,
        /// What rule it breaks.
        why: String,
    },
    /// `--driver` names a backend that is not compiled in.
    #[error("unknown driver {name:?} (this kubelab has: {known})")]
    UnknownDriver {
        /// The name given.
        name: String,
        /// The drivers compiled in.
        known: String,
    },
    /// `qemu-img` is missing or broken.
    #[error("cannot run qemu-img")]
    QemuImg {
        /// The process error.
        #[source]
        source: ProcessError,
    },
    /// dnsmasq, which libvirt runs for each network, is not installed.
    #[error("dnsmasq not found (looked in: {searched})")]
    Dnsmasq {
        /// Where kubelab looked.
        searched: String,
    },
    /// KVM is not usable and the user asked for it (`--require-kvm`).
    #[error("KVM is not usable: {why}")]
    KvmUnavailable {
        /// What the probe found.
        why: String,
    },
    /// A host file needed by the preflight could not be read.
    #[error("cannot read {}", path.display())]
    ReadHost {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The host's routing table could not be read.
    #[error("cannot list the host's routes")]
    Routes {
        /// The parse or read error.
        #[source]
        source: NetError,
    },
    /// No candidate subnet is free.
    #[error("no {count} free /24 subnets among 192.168.39.0 and 192.168.50-254.0")]
    NoFreeSubnet {
        /// How many were needed.
        count: usize,
    },
    /// A network of that name exists with other settings.
    #[error("network {name} exists with {found}, expected {expected}")]
    NetworkConflict {
        /// The network.
        name: String,
        /// What it has.
        found: String,
        /// What kubelab asked for.
        expected: String,
    },
    /// The network exists but kubelab did not create it for this home and profile;
    /// kubelab leaves it alone.
    #[error("network {name} {}", owned_by(owner.as_ref()))]
    ForeignNetwork {
        /// The network.
        name: String,
        /// Its marker's owner, when another kubelab home or profile created it.
        owner: Option<Owner>,
    },
    /// The network could not be started.
    #[error("cannot start network {name}")]
    StartNetwork {
        /// The network.
        name: String,
        /// The backend's error.
        #[source]
        source: Cause,
    },
    /// A VM of that name exists but kubelab did not create it for this home, profile
    /// and node.
    #[error("VM {name} {}", owned_by(owner.as_ref()))]
    ForeignVm {
        /// The VM.
        name: String,
        /// Its marker's owner, when another kubelab home, profile or node created it.
        owner: Option<Owner>,
    },
    /// The object was made for this profile by a kubelab from before owner markers had
    /// a home id (see `driver` on ownership): kubelab cannot tell it from another home's
    /// profile of the same name, so it leaves it to the user.
    #[error("{what} {name} was made for profile {profile} by a kubelab from before owner markers")]
    Legacy {
        /// VM or network.
        what: Object,
        /// Its name.
        name: String,
        /// The profile its old marker names.
        profile: String,
    },
    /// Another VM already uses the MAC address kubelab derived.
    #[error("MAC address {mac} of VM {name} is already used by VM {other}")]
    MacConflict {
        /// The MAC address.
        mac: String,
        /// The VM being created.
        name: String,
        /// The VM using it.
        other: String,
    },
    /// The VM does not exist.
    #[error("VM {name} does not exist")]
    NoSuchVm {
        /// The VM.
        name: String,
    },
    /// The VM must be powered off for this (its disk is copied).
    #[error("VM {name} is {state}, not powered off")]
    NotStopped {
        /// The VM.
        name: String,
        /// What it is doing.
        state: String,
    },
    /// The VM has no snapshot of that name.
    #[error("VM {name} has no snapshot {snapshot}")]
    NoSuchSnapshot {
        /// The VM.
        name: String,
        /// The snapshot.
        snapshot: String,
    },
    /// The hypervisor reported a state this kubelab does not know.
    #[error("VM {name} is in an unknown state {raw}")]
    UnknownState {
        /// The VM.
        name: String,
        /// The raw state.
        raw: String,
    },
    /// A local file to upload could not be read.
    #[error("cannot read {}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A local file (an exported disk) could not be written.
    #[error("cannot write {}", path.display())]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A VirtualBox operation failed; the typed cause says why (VT-x, Hyper-V...).
    #[cfg(feature = "virtualbox")]
    #[error("cannot {action} {object}")]
    VirtualBox {
        /// What kubelab was doing.
        action: Action,
        /// What it was doing it to (VM, network, medium).
        object: String,
        /// The VirtualBox error (boxed: it is large and rare).
        #[source]
        source: Box<super::virtualbox::VBoxError>,
    },
    /// Another hypervisor operation failed.
    #[error("cannot {action} {object}")]
    Backend {
        /// What kubelab was doing.
        action: Action,
        /// What it was doing it to (VM, network, volume name).
        object: String,
        /// The backend's error.
        #[source]
        source: Cause,
    },
}

impl DriverError {
    /// The refusal of `what` `name`, which is not `owner`'s: [`DriverError::Legacy`] if it
    /// has no marker but `legacy` names `owner`'s profile (an older kubelab's marker,
    /// read by the backend), else foreign, naming the marker's owner `found`.
    pub fn not_ours(
        what: Object,
        name: &str,
        found: Option<Owner>,
        legacy: Option<&str>,
        owner: &Owner,
    ) -> Self {
        let name = name.to_owned();
        match (found, legacy) {
            (None, Some(profile)) if profile == owner.profile => {
                Self::Legacy { what, name, profile: profile.to_owned() }
            }
            (owner, _) => match what {
                Object::Vm => Self::ForeignVm { name, owner },
                Object::Network => Self::ForeignNetwork { name, owner },
            },
        }
    }
}

/// The kinds of object an owner marker is checked on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    /// A VM.
    Vm,
    /// A network.
    Network,
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Object::Vm => "VM",
            Object::Network => "network",
        })
    }
}

/// How a foreign object's owner is told: by its marker, or as not kubelab's at all.
fn owned_by(owner: Option<&Owner>) -> String {
    owner.map_or("has no kubelab owner marker (not created by this kubelab)".to_owned(), |o| {
        format!("belongs to {o}")
    })
}

/// The step of a [`DriverError::Backend`] failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Reading host or domain capabilities.
    ReadCapabilities,
    /// Listing networks.
    ListNetworks,
    /// Reading a network's definition.
    InspectNetwork,
    /// Defining a network.
    DefineNetwork,
    /// Adding or removing a DHCP reservation.
    UpdateNetwork,
    /// Stopping or undefining a network.
    DeleteNetwork,
    /// Defining or starting the storage pool.
    PreparePool,
    /// Creating a volume.
    CreateVolume,
    /// Uploading a file into a volume.
    UploadVolume,
    /// Reading a volume back to check an earlier upload completed.
    VerifyVolume,
    /// Reading a volume's bytes (a console log kept in the pool).
    ReadVolume,
    /// Deleting a volume.
    DeleteVolume,
    /// Listing VMs.
    ListVms,
    /// Reading a VM's definition or state.
    InspectVm,
    /// Defining a VM.
    DefineVm,
    /// Starting a VM.
    StartVm,
    /// Stopping a VM.
    StopVm,
    /// Undefining a VM.
    DeleteVm,
    /// Pausing or resuming a VM.
    PauseVm,
    /// Taking a snapshot.
    SaveSnapshot,
    /// Reverting to a snapshot.
    RestoreSnapshot,
    /// Deleting a snapshot.
    DeleteSnapshot,
    /// Setting a guest's clock through its agent.
    SetGuestTime,
    /// Copying a VM's disk out of the hypervisor.
    ExportDisk,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::ReadCapabilities => "read the capabilities of",
            Action::ListNetworks => "list the networks of",
            Action::InspectNetwork => "inspect network",
            Action::DefineNetwork => "define network",
            Action::UpdateNetwork => "update the DHCP reservations of network",
            Action::DeleteNetwork => "delete network",
            Action::PreparePool => "prepare storage pool",
            Action::CreateVolume => "create volume",
            Action::UploadVolume => "upload volume",
            Action::VerifyVolume => "verify volume",
            Action::ReadVolume => "read volume",
            Action::DeleteVolume => "delete volume",
            Action::ListVms => "list the VMs of",
            Action::InspectVm => "inspect VM",
            Action::DefineVm => "define VM",
            Action::StartVm => "start VM",
            Action::StopVm => "stop VM",
            Action::DeleteVm => "delete VM",
            Action::PauseVm => "pause or resume VM",
            Action::SaveSnapshot => "take a snapshot of VM",
            Action::RestoreSnapshot => "restore a snapshot of VM",
            Action::DeleteSnapshot => "delete a snapshot of VM",
            Action::SetGuestTime => "set the guest clock of VM",
            Action::ExportDisk => "export the disk of VM",
        })
    }
}
