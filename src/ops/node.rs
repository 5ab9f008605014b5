//! `kubelab node add` / `node delete`: grow or shrink a running cluster by one worker.

use std::time::Duration;

use crate::Error;
use crate::cluster::{ClusterError, ClusterState, NodeState, Role};
use crate::driver::{Driver, Owner};
use crate::home::Home;
use crate::image;
use crate::journal::Journal;
use crate::keys;
use crate::ops::lifecycle::open_driver;
use crate::ops::provision::{self, Timing};
use crate::ops::up::new_node;
use crate::profile::Profile;
use crate::progress::Progress;

/// How long `node add` waits for the new node to be Ready.
const READY_TIMEOUT: Duration = Duration::from_secs(900);

/// `kubelab node add`: a new worker with the next free name, booted, reachable and, with
/// the kubeadm bootstrapper, joined with a fresh token and Ready. A failure after the
/// node was saved rolls it back (VM, disks, seed, files, journal entry, DHCP
/// reservation and its entry in profile.json), so no phantom node is left for `up` to
/// resurrect or `status` to show.
pub fn add(
    home: &Home,
    profile: &Profile,
    ssh_timeout: Duration,
    wait_lock: bool,
    progress: &dyn Progress,
) -> Result<(NodeState, Vec<Timing>), Error> {
    let _lock = profile.lock_existing(wait_lock)?;
    let mut state: ClusterState = profile.load_state()?;
    let driver = open_driver(&state)?;
    // The image is cached already; this re-verifies it only if the file changed.
    let image = image::ensure(home, &state.image.request()?, progress)?;
    let image = image::convert::for_driver(home, image, driver.disk_format(), progress)?;
    let node = new_node(&state, state.free_index())?;
    state.nodes.push(node.clone());
    let owner = provision::owner(profile)?;
    provision::check_owned(&*driver, &state, &owner)?;
    profile.save_state(&state)?;
    let journal = Journal::new(profile);
    let added = join(
        &*driver,
        profile,
        &mut state,
        &node,
        &owner,
        &journal,
        image.path,
        ssh_timeout,
        progress,
    );
    if added.is_err() {
        state.nodes.retain(|n| n.name != node.name);
        if let Err(undo) = forget_node(&*driver, &journal, profile, &state, &node.name, &owner) {
            progress.message(&format!(
                "warning: cannot roll back node {}: {}; `kubelab node delete {}` removes it",
                node.name,
                crate::error::chain(&undo),
                node.name
            ));
        }
    }
    let timings = added?;
    warn_stale(profile, &state, progress);
    let node = state.nodes.iter().find(|n| n.name == node.name).cloned().unwrap_or(node);
    Ok((node, timings))
}

/// Brings `node` (saved in `state`) up and joins it; saves its instance id.
#[allow(clippy::too_many_arguments)] // the whole context of one node's provisioning
fn join(
    driver: &dyn Driver,
    profile: &Profile,
    state: &mut ClusterState,
    node: &NodeState,
    owner: &Owner,
    journal: &Journal,
    image_path: std::path::PathBuf,
    ssh_timeout: Duration,
    progress: &dyn Progress,
) -> Result<Vec<Timing>, Error> {
    let user_key = keys::user_key(profile.dir())?;
    provision::write_known_hosts(driver, profile, state)?;
    provision::ensure_networks(driver, journal, state, owner)?;
    let ctx = provision::Ctx {
        driver,
        profile,
        state,
        owner,
        journal,
        image_path,
        user_key: &user_key,
        ssh_timeout,
        progress,
    };
    let (created, mut timings) = provision::bring_up(&ctx, std::slice::from_ref(node))?;
    let saved = state.nodes.iter_mut().find(|n| n.name == node.name);
    if let (Some(fresh), Some(saved)) = (created.first(), saved) {
        saved.instance_id.clone_from(&fresh.instance_id);
    }
    profile.save_state(state)?;
    let joined = provision::with_bootstrapper(driver, profile, state, progress, |b, c| {
        b.add_node(c, &node.name, Some(READY_TIMEOUT))
    })?;
    timings.extend(joined);
    Ok(timings)
}

/// Removes `node` (already out of `state`): its VM, disks and files, then saves
/// `state` and brings the networks' reservations and known_hosts in line with it.
fn forget_node(
    driver: &dyn Driver,
    journal: &Journal,
    profile: &Profile,
    state: &ClusterState,
    node: &str,
    owner: &Owner,
) -> Result<(), Error> {
    provision::remove_node(driver, journal, profile, node, owner)?;
    profile.save_state(state)?;
    provision::ensure_networks(driver, journal, state, owner)?;
    provision::write_known_hosts(driver, profile, state)?;
    Ok(())
}

/// `kubelab node delete NODE`: drains the worker and removes it from Kubernetes (kubeadm
/// bootstrapper), then removes its VM, disks, address reservation and files.
pub fn remove(
    profile: &Profile,
    node: &str,
    wait_lock: bool,
    progress: &dyn Progress,
) -> Result<(), Error> {
    let _lock = profile.lock_existing(wait_lock)?;
    let mut state: ClusterState = profile.load_state()?;
    let found = state.node(Some(node))?;
    if found.role == Role::ControlPlane {
        return Err(ClusterError::ControlPlane { node: node.to_owned() }.into());
    }
    let driver = open_driver(&state)?;
    let owner = provision::owner(profile)?;
    // Refused before Kubernetes drains it, if the VM of that name is not this node's.
    driver.check_vm(node, &owner)?;
    // Out of Kubernetes (drained) before the VM goes.
    provision::with_bootstrapper(&*driver, profile, &state, &(), |b, c| b.remove_node(c, node))?;
    state.nodes.retain(|n| n.name != node);
    forget_node(&*driver, &Journal::new(profile), profile, &state, node, &owner)?;
    warn_stale(profile, &state, progress);
    Ok(())
}

/// Says which snapshots hold another node set now (a restore refuses them).
fn warn_stale(profile: &Profile, state: &ClusterState, progress: &dyn Progress) {
    for name in super::snapshot::stale(profile, state) {
        progress.message(&format!(
            "note: snapshot {name:?} holds other nodes than the cluster now has: `snapshot restore` refuses it"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::mem::{Marker, MemDriver, When};
    use crate::journal::Resource;
    use crate::ops::fixture::Lab;
    use crate::reason;

    fn add(lab: &Lab, hv: &MemDriver) -> Result<(NodeState, Vec<Timing>), Error> {
        let _installed = hv.install();
        super::add(&lab.home, &lab.profile("lab"), Duration::ZERO, false, &())
    }

    #[test]
    fn failed_node_add_removes_what_it_created() {
        let (lab, hv) = (Lab::new(), MemDriver::new());
        let before = lab.created(&hv, "lab", 1);
        hv.fail("start", When::Object("lab-m02".into()));
        add(&lab, &hv).unwrap_err();
        assert!(hv.calls().contains(&("create", "lab-m02".into())));
        assert_eq!(hv.vms().keys().collect::<Vec<_>>(), ["lab"]);
        assert_eq!(hv.volumes().len(), 1);
        assert_eq!(hv.networks()["kubelab-lab"].hosts.len(), 1, "its reservation is gone");
        let profile = lab.profile("lab");
        assert_eq!(profile.load_state::<ClusterState>().unwrap(), before);
        let journal = Journal::new(&profile).entries().unwrap();
        assert!(!journal.contains(&Resource::Vm("lab-m02".into())), "{journal:?}");
        assert!(!provision::node_dir(&profile, "lab-m02").exists());
    }

    #[test]
    fn node_add_refuses_a_name_taken_by_another_vm() {
        let (lab, hv) = (Lab::new(), MemDriver::new());
        let before = lab.created(&hv, "lab", 1);
        hv.add_vm("lab-m02", Marker::None);
        let err = add(&lab, &hv).unwrap_err();
        assert_eq!(reason::reason(&err).id, reason::DRV_VM_NOT_KUBELAB.id, "{err}");
        assert!(!hv.calls().contains(&("create", "lab-m02".into())));
        assert_eq!(hv.vms()["lab-m02"].marker, Marker::None, "the user's VM is left as it was");
        assert_eq!(lab.profile("lab").load_state::<ClusterState>().unwrap(), before);
    }
}
