//! `kubelab node add` / `node delete`: grow or shrink a running cluster by one worker.

use std::time::Duration;

use crate::Error;
use crate::cluster::{ClusterError, ClusterState, NodeState, Role};
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
/// the kubeadm bootstrapper, joined with a fresh token and Ready.
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
    let node = new_node(&state, state.free_index())?;
    state.nodes.push(node.clone());
    let owner = provision::owner(profile)?;
    provision::check_owned(&*driver, &state, &owner)?;
    profile.save_state(&state)?;
    let user_key = keys::user_key(profile.dir())?;
    provision::write_known_hosts(&*driver, profile, &state)?;
    let journal = Journal::new(profile.dir());
    provision::ensure_networks(&*driver, &journal, &state, &owner)?;
    let ctx = provision::Ctx {
        driver: &*driver,
        profile,
        state: &state,
        owner: &owner,
        journal: &journal,
        image_path: image.path,
        user_key: &user_key,
        ssh_timeout,
        progress,
    };
    let (created, mut timings) = provision::bring_up(&ctx, std::slice::from_ref(&node))?;
    let node = created.into_iter().next().unwrap_or(node);
    if let Some(saved) = state.nodes.iter_mut().find(|n| n.name == node.name) {
        saved.instance_id.clone_from(&node.instance_id);
    }
    profile.save_state(&state)?;
    let joined = provision::with_bootstrapper(&*driver, profile, &state, progress, |b, c| {
        b.add_node(c, &node.name, Some(READY_TIMEOUT))
    })?;
    timings.extend(joined);
    Ok((node, timings))
}

/// `kubelab node delete NODE`: drains the worker and removes it from Kubernetes (kubeadm
/// bootstrapper), then removes its VM, disks, address reservation and files.
pub fn remove(profile: &Profile, node: &str, wait_lock: bool) -> Result<(), Error> {
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
    let journal = Journal::new(profile.dir());
    provision::remove_node(&*driver, &journal, profile, node, &owner)?;
    state.nodes.retain(|n| n.name != node);
    profile.save_state(&state)?;
    provision::ensure_networks(&*driver, &journal, &state, &owner)?;
    provision::write_known_hosts(&*driver, profile, &state)?;
    Ok(())
}
