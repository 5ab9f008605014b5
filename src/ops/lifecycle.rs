//! `down`, `delete`, `status` and `ip`: the commands that act on an existing profile's
//! nodes without creating any.

use serde::Serialize;

use crate::Error;
use crate::cluster::{ClusterState, Role};
use crate::driver::{self, Driver, DriverKind, Owner, StopMode, VmState};
use crate::home::Home;
use crate::journal::{Journal, Resource};
use crate::kubeconfig;
use crate::profile::{self, Profile, ProfileError};
use crate::progress::Progress;

/// Opens the driver a saved cluster was made with.
pub fn open_driver(state: &ClusterState) -> Result<Box<dyn Driver>, Error> {
    let kind: DriverKind = state.driver.parse()?;
    Ok(driver::open(kind, state.libvirt_uri.as_deref())?)
}

/// `kubelab down`: stops every node gracefully (ACPI, then power off after the
/// backend's deadline), in parallel. Disks and addresses are kept.
pub fn down(profile: &Profile, wait_lock: bool) -> Result<Vec<String>, Error> {
    let _lock = profile.lock_existing(wait_lock)?;
    let state: ClusterState = profile.load_state()?;
    let driver = open_driver(&state)?;
    let owner = super::provision::owner(profile)?;
    super::in_parallel(&state.nodes, |n| Ok(driver.stop(&n.name, &owner, StopMode::Graceful)?))
        .into_iter()
        .collect::<Result<Vec<()>, _>>()?;
    Ok(state.nodes.iter().map(|n| n.name.clone()).collect())
}

/// Removes the journal's `entries`, all at once (a VM's power-off alone takes about a
/// second: QEMU exits and libvirt notices), forgetting each one removed.
fn remove_all(
    driver: &dyn Driver,
    journal: &Journal,
    entries: &[&Resource],
    owner: &Owner,
) -> Result<(), Error> {
    let results = super::in_parallel(entries, |entry| {
        match entry {
            Resource::Vm(name) => driver.delete(name, owner)?,
            Resource::Network(name) => driver.delete_network(name, owner)?,
        }
        Ok(())
    });
    // The journal is rewritten on each forget: one at a time.
    for (entry, result) in entries.iter().zip(results) {
        result?;
        journal.forget(entry)?;
    }
    Ok(())
}

/// What `delete` does with a profile whose profile.json or journal is corrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corrupt<'a> {
    /// Refuse (`PROFILE_STATE_CORRUPT`, whose hint names `delete --force`): the names
    /// in a tampered file must not choose what is deleted.
    Refuse,
    /// `delete --force`: sweep every compiled-in backend (libvirt at this URI, see
    /// `libvirt::resolve_uri`) for what carries the profile's owner marker.
    Sweep {
        /// `--libvirt-uri`.
        libvirt_uri: Option<&'a str>,
    },
}

/// `kubelab delete`: removes every resource the profile's journal lists (newest first),
/// the profile's entries in the user's kubeconfig, then the profile's directory.
/// Deleting a profile that does not exist is not an error. The hypervisor's copy of the
/// base image goes too unless another profile of this home, or anything on the
/// hypervisor (another home's disks), still uses it, so nothing is left behind.
/// A corrupt profile is refused or swept by its markers, as `corrupt` says.
pub fn delete(
    home: &Home,
    profile: &Profile,
    wait_lock: bool,
    corrupt: Corrupt<'_>,
    progress: &dyn Progress,
) -> Result<bool, Error> {
    if !profile.dir().exists() {
        return Ok(false);
    }
    let _lock = profile.lock(wait_lock)?;
    if !profile.dir().exists() {
        // Deleted by the command this one waited for.
        return Ok(false);
    }
    let journal = Journal::new(profile);
    match (load(profile, &journal), corrupt) {
        (Ok(Some((state, entries))), _) => {
            delete_listed(home, profile, &journal, &state, &entries)?
        }
        (Ok(None), _) => {}
        (Err(e), Corrupt::Sweep { libvirt_uri }) if is_corrupt(&e) => {
            progress.message(&format!(
                "warning: profile {} is corrupt ({}): removing what carries its owner marker",
                profile.name(),
                crate::error::chain(&e)
            ));
            sweep(profile, libvirt_uri, progress)?;
        }
        (Err(e), _) => return Err(e),
    }
    if corrupt != Corrupt::Refuse || kubeconfig::standalone_path(profile.dir()).exists() {
        // The profile's context leaves the user's kubeconfig; the one `up` switched away
        // from becomes current again. Entries are chosen by their marker, so a forced
        // delete needs no file of the profile to find them.
        let owner = super::kubeconfig::owner(home, profile)?;
        kubeconfig::uninstall(&super::kubeconfig::user_path()?, profile.dir(), &owner)?;
    }
    // Removed under the lock (which lives outside the directory, so a command waiting
    // on it keeps a valid lock and finds the profile gone).
    std::fs::remove_dir_all(profile.dir())
        .map_err(|source| Error::RemoveProfile { path: profile.dir().to_owned(), source })?;
    Ok(true)
}

/// Whether `err` says a file of the profile cannot be trusted (`delete --force` is the
/// way out), as opposed to failing to read it.
pub fn is_corrupt(err: &Error) -> bool {
    crate::reason::reason(err).id == crate::reason::PROFILE_STATE_CORRUPT.id
}

/// The profile's state and journal; `None` when it has neither (nothing was created).
fn load(
    profile: &Profile,
    journal: &Journal,
) -> Result<Option<(ClusterState, Vec<Resource>)>, Error> {
    let entries = journal.entries()?;
    match profile.load_state::<ClusterState>() {
        Ok(state) => Ok(Some((state, entries))),
        Err(ProfileError::NotFound { .. }) if entries.is_empty() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes what the journal lists, then the base image unless another profile uses it.
fn delete_listed(
    home: &Home,
    profile: &Profile,
    journal: &Journal,
    state: &ClusterState,
    entries: &[Resource],
) -> Result<(), Error> {
    let driver = open_driver(state)?;
    let owner = super::provision::owner(profile)?;
    // The VMs first: they use the networks.
    let (vms, networks): (Vec<&Resource>, Vec<&Resource>) =
        entries.iter().rev().partition(|e| matches!(e, Resource::Vm(_)));
    remove_all(&*driver, journal, &vms, &owner)?;
    remove_all(&*driver, journal, &networks, &owner)?;
    let sha256 = serde_json::Value::from(state.image.sha256.clone());
    let shared = profile::list(home)?.iter().any(|p| {
        p.name != state.profile
            && p.state.as_ref().and_then(|s| s.pointer("/image/sha256")) == Some(&sha256)
    });
    if !shared {
        driver.delete_image(&state.image.sha256)?;
    }
    Ok(())
}

/// `delete --force`'s hypervisor step: on every compiled-in backend, removes each VM
/// (with its disks) and network whose marker names this home and profile. A backend
/// that cannot be reached is skipped with a warning (a host without VirtualBox is
/// common); the base image is kept, since which one the profile used is unknown.
fn sweep(
    profile: &Profile,
    libvirt_uri: Option<&str>,
    progress: &dyn Progress,
) -> Result<(), Error> {
    let owner = super::provision::owner(profile)?;
    for &kind in DriverKind::all() {
        let driver = match driver::open(kind, libvirt_uri) {
            Ok(driver) => driver,
            Err(e) => {
                progress.message(&format!(
                    "warning: {kind}: not swept ({}): objects of profile {} there, if any, \
                     are left",
                    crate::error::chain(&e),
                    profile.name()
                ));
                continue;
            }
        };
        let owned = driver.owned(&owner)?;
        super::in_parallel(&owned.vms, |name| Ok(driver.delete(name, &owner)?))
            .into_iter()
            .collect::<Result<Vec<()>, Error>>()?;
        for name in &owned.networks {
            driver.delete_network(name, &owner)?;
        }
    }
    Ok(())
}

/// One node as `kubelab status` shows it.
#[derive(Debug, Serialize)]
pub struct NodeStatus {
    /// The node's name.
    pub name: String,
    /// Control plane or worker.
    pub role: Role,
    /// What the hypervisor reports ([`state_name`]), or `foreign`.
    pub state: &'static str,
    /// Its host-only address.
    pub ip: std::net::Ipv4Addr,
    /// Its SSH port (on the host-only address for kvm2, on 127.0.0.1 for VirtualBox's
    /// port forward; 0 when the VM does not exist or is foreign).
    pub ssh_port: u16,
    /// Why the VM of its name is not this node's (another's, or an older kubelab's),
    /// when `state` is `foreign`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub foreign: Option<String>,
}

/// The whole profile as `kubelab status` shows it.
#[derive(Debug, Serialize)]
pub struct Status {
    /// The profile.
    pub profile: String,
    /// The driver.
    pub driver: String,
    /// KVM, TCG or VirtualBox.
    pub accel: driver::Accel,
    /// The boot image as given.
    pub image: String,
    /// The host-only subnet.
    pub network: String,
    /// Every node, control plane first.
    pub nodes: Vec<NodeStatus>,
}

/// `kubelab status`: the saved cluster with each node's live state. A VM of a node's
/// name that another owner's marker names (or none) is shown as `foreign`, never as
/// this node.
pub fn status(profile: &Profile) -> Result<Status, Error> {
    let state: ClusterState = profile.load_state()?;
    let driver = open_driver(&state)?;
    let owner = super::provision::owner(profile)?;
    let nodes: Result<Vec<_>, _> =
        state.nodes.iter().map(|n| node_status(&*driver, &owner, n)).collect();
    // Profiles made before VirtualBox reported its own accel saved `kvm`.
    let accel = if state.driver == "virtualbox" { driver::Accel::VirtualBox } else { state.accel };
    Ok(Status {
        profile: state.profile.clone(),
        driver: state.driver.clone(),
        accel,
        image: state.image.source.clone(),
        network: state.host_only_cidr.to_string(),
        nodes: nodes?,
    })
}

fn node_status(
    driver: &dyn Driver,
    owner: &Owner,
    node: &crate::cluster::NodeState,
) -> Result<NodeStatus, Error> {
    let status = |state, ssh_port, foreign| NodeStatus {
        name: node.name.clone(),
        role: node.role,
        state,
        ip: node.ip,
        ssh_port,
        foreign,
    };
    match driver.check_vm(&node.name, owner) {
        Err(e @ (driver::DriverError::ForeignVm { .. } | driver::DriverError::Legacy { .. })) => {
            return Ok(status("foreign", 0, Some(e.to_string())));
        }
        checked => checked?,
    }
    let ssh_port = match driver.ssh_address(&node.name, node.ip) {
        Ok(addr) => addr.port(),
        Err(driver::DriverError::NoSuchVm { .. }) => 0,
        Err(e) => return Err(e.into()),
    };
    Ok(status(state_name(driver.state(&node.name)?), ssh_port, None))
}

/// How `status` and errors name a VM state.
pub fn state_name(state: VmState) -> &'static str {
    match state {
        VmState::Missing => "missing",
        VmState::Stopped => "stopped",
        VmState::Starting => "starting",
        VmState::Running => "running",
        VmState::Paused => "paused",
        VmState::Stopping => "stopping",
        VmState::Crashed => "crashed",
    }
}

/// `kubelab ip [NODE]`: a node's name and host-only address (the control plane's by
/// default). Refused if a VM of that name exists that is not this node's: the address
/// would lead the user to another's VM.
pub fn ip(profile: &Profile, node: Option<&str>) -> Result<(String, std::net::Ipv4Addr), Error> {
    let state: ClusterState = profile.load_state()?;
    let node = state.node(node)?;
    open_driver(&state)?.check_vm(&node.name, &super::provision::owner(profile)?)?;
    Ok((node.name.clone(), node.ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::mem::{Marker, MemDriver};
    use crate::ops::fixture::Lab;
    use crate::reason;

    fn delete(lab: &Lab, hv: &MemDriver, name: &str) -> Result<bool, Error> {
        let _installed = hv.install();
        super::delete(&lab.home, &lab.profile(name), false, Corrupt::Refuse, &())
    }

    /// Two homes on one hypervisor: the second's profile of the same name is refused
    /// and leaves the first's objects alone; deleting another of its profiles keeps the
    /// base image the first still uses.
    #[test]
    fn two_homes_never_touch_each_others_objects() {
        let (a, b, hv) = (Lab::new(), Lab::new(), MemDriver::new());
        a.created(&hv, "lab", 2);
        let (vms, networks) = (format!("{:?}", hv.vms()), format!("{:?}", hv.networks()));
        let err = b.up(&hv, "lab", &b.options(1)).unwrap_err();
        assert_eq!(reason::reason(&err).id, reason::DRV_NET_NOT_KUBELAB.id, "{err}");
        assert!(!b.profile("lab").dir().exists());
        b.created(&hv, "dev", 1);
        assert!(delete(&b, &hv, "dev").unwrap());
        assert_eq!((format!("{:?}", hv.vms()), format!("{:?}", hv.networks())), (vms, networks));
        assert_eq!(hv.images().len(), 1, "home a's disks still use the base image");
        assert!(delete(&a, &hv, "lab").unwrap());
        assert!(hv.vms().is_empty() && hv.networks().is_empty() && hv.images().is_empty());
    }

    /// A profile copied from another home names that home's VMs in its journal: its
    /// delete is refused by their markers.
    #[test]
    fn delete_of_a_profile_copied_from_another_home_is_refused() {
        let (a, b, hv) = (Lab::new(), Lab::new(), MemDriver::new());
        a.created(&hv, "lab", 1);
        let (from, to) = (a.profile("lab"), b.profile("lab"));
        std::fs::create_dir_all(to.dir()).unwrap();
        for file in ["profile.json", "journal.jsonl"] {
            std::fs::copy(from.dir().join(file), to.dir().join(file)).unwrap();
        }
        let err = delete(&b, &hv, "lab").unwrap_err();
        assert_eq!(reason::reason(&err).id, reason::DRV_VM_NOT_KUBELAB.id, "{err}");
        assert_eq!(hv.vms().len(), 1);
        assert_eq!(hv.networks().len(), 2);
    }

    /// `delete --force`'s sweep removes what carries the profile's marker, found without
    /// its (corrupt) files, and nothing of another home or profile.
    #[test]
    fn forced_delete_sweeps_by_markers() {
        let (a, b, hv) = (Lab::new(), Lab::new(), MemDriver::new());
        a.created(&hv, "lab", 2);
        a.created(&hv, "dev", 1);
        b.created(&hv, "other", 1);
        std::fs::write(a.profile("lab").dir().join("profile.json"), "{").unwrap();
        let _installed = hv.install();
        sweep(&a.profile("lab"), None, &()).unwrap();
        assert_eq!(hv.vms().keys().collect::<Vec<_>>(), ["dev", "other"]);
        let networks = hv.networks().into_keys().collect::<Vec<_>>();
        assert_eq!(
            networks,
            ["kubelab-dev", "kubelab-dev.nat", "kubelab-other", "kubelab-other.nat"]
        );
    }

    /// A VM of the node's name that another home made (here: after this profile's own
    /// VM went) is shown as foreign, naming its owner; `ip` refuses it.
    #[test]
    fn status_and_ip_do_not_take_another_owners_vm_for_the_node() {
        let (a, b, hv) = (Lab::new(), Lab::new(), MemDriver::new());
        a.created(&hv, "lab", 2);
        let other = crate::ops::provision::owner(&b.profile("lab")).unwrap();
        hv.add_vm("lab-m02", Marker::Owner(other.node("lab-m02")));
        let _installed = hv.install();
        let profile = a.profile("lab");
        let status = status(&profile).unwrap();
        let [cp, worker] = &status.nodes[..] else { panic!("{:?}", status.nodes) };
        assert_eq!((cp.state, cp.foreign.as_deref()), ("stopped", None));
        assert_eq!((worker.state, worker.ssh_port), ("foreign", 0));
        let why = worker.foreign.as_deref().unwrap();
        assert!(why.contains(&format!("home {} profile lab", other.home)), "{why}");
        assert_eq!(ip(&profile, None).unwrap().0, "lab");
        let err = ip(&profile, Some("lab-m02")).unwrap_err();
        assert_eq!(reason::reason(&err).id, reason::DRV_VM_NOT_KUBELAB.id, "{err}");
    }

    /// A profile whose VM and networks an older kubelab made (marked with the profile
    /// only): `status` shows the VM as foreign, `delete` refuses it (the hint says how to
    /// remove it) and keeps the profile; once the user removed
    /// them, `delete` finishes.
    #[test]
    fn pre_marker_profile_is_left_to_the_user_then_deleted() {
        let (lab, hv) = (Lab::new(), MemDriver::new());
        let state = lab.created(&hv, "lab", 1);
        let legacy = || Marker::Legacy("lab".into());
        hv.add_vm("lab", legacy());
        hv.add_network("kubelab-lab", state.host_only_cidr, legacy());
        hv.add_network("kubelab-lab.nat", state.nat_cidr, legacy());
        let profile = lab.profile("lab");
        let node = {
            let _installed = hv.install();
            status(&profile).unwrap().nodes.remove(0)
        };
        assert_eq!(node.state, "foreign");
        assert!(node.foreign.as_deref().unwrap().contains("before owner markers"), "{node:?}");
        let err = delete(&lab, &hv, "lab").unwrap_err();
        assert!(matches!(err, Error::Driver(driver::DriverError::Legacy { .. })), "{err:?}");
        assert_eq!(reason::reason(&err).id, reason::DRV_VM_NOT_KUBELAB.id, "{err}");
        assert!(reason::DRV_VM_NOT_KUBELAB.advice.contains("virsh undefine NAME"));
        assert_eq!((hv.vms().len(), hv.networks().len()), (1, 2), "left as they were");
        assert!(profile.dir().exists());
        let removed_by_the_user = MemDriver::new();
        assert!(delete(&lab, &removed_by_the_user, "lab").unwrap());
        assert!(!profile.dir().exists());
    }
}
