//! An in-memory hypervisor for unit tests of `ops` (issue 10): VMs, networks, shared
//! base images and node volumes with their owner markers, checked as the real backends
//! check them, plus injectable failures and pauses. A test installs it on its thread
//! ([`MemDriver::install`]) and every `driver::open` there returns it, so `ops` run
//! unchanged and without root.
//!
//! A VM is a record with a [`VmState`] and its snapshots; a new kind of call is one
//! more method that goes through `MemDriver::enter` (counted, failable, pausable) and
//! edits that record.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    Accel, AccelPolicy, Action, ConsoleTail, DiskFormat, DiskSpec, Driver, DriverError, DriverKind,
    HostReport, NAME_PREFIX, NetworkSpec, Object, Owned, Owner, StopMode, VmSpec, VmState,
};
use crate::net::Ipv4Cidr;

thread_local! {
    static INSTALLED: RefCell<Option<MemDriver>> = const { RefCell::new(None) };
}

/// The driver installed on this thread, which `driver::open` returns instead of a real
/// backend.
pub fn installed() -> Option<MemDriver> {
    INSTALLED.with(|d| d.borrow().clone())
}

/// One hypervisor, shared by its clones (and so by threads and homes).
#[derive(Debug, Clone, Default)]
pub struct MemDriver {
    world: Arc<Mutex<World>>,
}

/// An object's marker, as a backend reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker {
    /// None: the user's object.
    None,
    /// kubelab's owner marker.
    Owner(Owner),
    /// An older kubelab's marker, naming only a profile.
    Legacy(String),
}

impl Marker {
    /// Ok if it names `want`; else the backends' refusal (`owner` is the caller's).
    fn check(
        &self,
        what: Object,
        name: &str,
        want: &Owner,
        owner: &Owner,
    ) -> Result<(), DriverError> {
        let (found, legacy) = match self {
            Marker::None => (None, None),
            Marker::Owner(found) => (Some(found.clone()), None),
            Marker::Legacy(profile) => (None, Some(profile.as_str())),
        };
        if found.as_ref() == Some(want) {
            return Ok(());
        }
        Err(DriverError::not_ours(what, name, found, legacy, owner))
    }
}

/// A VM as the hypervisor holds it.
#[derive(Debug, Clone)]
pub struct MemVm {
    /// Its marker.
    pub marker: Marker,
    /// What it is doing.
    pub state: VmState,
    /// The spec it was created from (`None` for one a test put there).
    pub spec: Option<VmSpec>,
    /// Its snapshots, with the state each was taken in (memory is kept when that was
    /// running or paused).
    pub snapshots: BTreeMap<String, VmState>,
    /// The console log the hypervisor keeps itself, as a remote libvirt does
    /// ([`MemDriver::keep_console`]); `None`: the log is the profile's file.
    pub console: Option<String>,
}

/// A network as the hypervisor holds it.
#[derive(Debug, Clone)]
pub struct MemNetwork {
    /// Its marker.
    pub marker: Marker,
    /// Its subnet.
    pub cidr: Ipv4Cidr,
    /// Its DHCP reservations: (MAC, address).
    pub hosts: Vec<(String, Ipv4Addr)>,
}

/// Which calls of a method fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum When {
    /// Only the n-th (from 1).
    Nth(usize),
    /// Every call on this VM or network.
    Object(String),
}

/// A call paused by [`MemDriver::pause`].
#[derive(Debug)]
pub struct Paused {
    entered: Receiver<()>,
    resume: Sender<()>,
}

impl Paused {
    /// Blocks until the paused call has been entered.
    pub fn wait_entered(&self) {
        self.entered.recv().expect("the paused call was never made");
    }

    /// Lets the paused call go on (dropping `self` does too).
    pub fn resume(self) {
        let _ = self.resume.send(());
    }
}

/// Uninstalls the driver from its thread when dropped.
#[derive(Debug)]
pub struct Installed(());

impl Drop for Installed {
    fn drop(&mut self) {
        INSTALLED.with(|d| d.borrow_mut().take());
    }
}

#[derive(Debug, Default)]
struct World {
    vms: BTreeMap<String, MemVm>,
    networks: BTreeMap<String, MemNetwork>,
    /// Shared base images and ISOs, by id.
    images: BTreeSet<String>,
    /// Node disks, by home and node, with the image they use.
    volumes: BTreeMap<(String, String), String>,
    /// Every call, in order: (method, object).
    calls: Vec<(&'static str, String)>,
    faults: Vec<(&'static str, When)>,
    pauses: Vec<(&'static str, Sender<()>, Receiver<()>)>,
}

impl MemDriver {
    /// An empty hypervisor.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `driver::open` on this thread return this hypervisor until the guard drops.
    pub fn install(&self) -> Installed {
        INSTALLED.with(|d| *d.borrow_mut() = Some(self.clone()));
        Installed(())
    }

    /// Makes `method` (`"start"`, `"create"`...) fail when `when` says.
    pub fn fail(&self, method: &'static str, when: When) {
        self.lock().faults.push((method, when));
    }

    /// Pauses the next call of `method` on entry, before it reads or changes anything,
    /// until the returned handle resumes it.
    pub fn pause(&self, method: &'static str) -> Paused {
        let (entered_tx, entered) = channel();
        let (resume, resume_rx) = channel();
        self.lock().pauses.push((method, entered_tx, resume_rx));
        Paused { entered, resume }
    }

    /// Puts a VM there as another home, an older kubelab or the user would.
    pub fn add_vm(&self, name: &str, marker: Marker) {
        let vm = MemVm {
            marker,
            state: VmState::Stopped,
            spec: None,
            snapshots: BTreeMap::new(),
            console: None,
        };
        self.lock().vms.insert(name.to_owned(), vm);
    }

    /// Puts a network there as another home, an older kubelab or the user would.
    pub fn add_network(&self, name: &str, cidr: Ipv4Cidr, marker: Marker) {
        let net = MemNetwork { marker, cidr, hosts: Vec::new() };
        self.lock().networks.insert(name.to_owned(), net);
    }

    /// Sets VM `name`'s state, as a boot or a crash would (it must exist).
    pub fn set_state(&self, name: &str, state: VmState) {
        if let Some(vm) = self.lock().vms.get_mut(name) {
            vm.state = state;
        }
    }

    /// Makes VM `name` (it must exist) log its console where the hypervisor keeps it,
    /// as a remote libvirt does, with `text` logged so far.
    pub fn keep_console(&self, name: &str, text: &str) {
        if let Some(vm) = self.lock().vms.get_mut(name) {
            vm.console = Some(text.to_owned());
        }
    }

    /// The VMs, by name.
    pub fn vms(&self) -> BTreeMap<String, MemVm> {
        self.lock().vms.clone()
    }

    /// The networks, by name.
    pub fn networks(&self) -> BTreeMap<String, MemNetwork> {
        self.lock().networks.clone()
    }

    /// The shared images' ids.
    pub fn images(&self) -> BTreeSet<String> {
        self.lock().images.clone()
    }

    /// The node disks: (home, node).
    pub fn volumes(&self) -> Vec<(String, String)> {
        self.lock().volumes.keys().cloned().collect()
    }

    /// The calls made so far: (method, object).
    pub fn calls(&self) -> Vec<(&'static str, String)> {
        self.lock().calls.clone()
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a call of `method` on `object`, waits if it is paused, and fails it as
    /// [`DriverError::Backend`] of `action` if a fault matches; else the world, locked.
    fn enter(
        &self,
        method: &'static str,
        action: Action,
        object: &str,
    ) -> Result<MutexGuard<'_, World>, DriverError> {
        let pause = {
            let mut w = self.lock();
            let i = w.pauses.iter().position(|(m, ..)| *m == method);
            i.map(|i| w.pauses.remove(i))
        };
        if let Some((_, entered, resume)) = pause {
            let _ = entered.send(());
            let _ = resume.recv();
        }
        let mut w = self.lock();
        w.calls.push((method, object.to_owned()));
        let nth = w.calls.iter().filter(|(m, _)| *m == method).count();
        let fails = w.faults.iter().any(|(m, when)| {
            *m == method
                && match when {
                    When::Nth(n) => *n == nth,
                    When::Object(o) => o == object,
                }
        });
        if fails {
            let source = format!("injected failure of {method} call {nth}").into();
            return Err(DriverError::Backend { action, object: object.to_owned(), source });
        }
        Ok(w)
    }
}

impl World {
    /// Whether VM `name` exists and is node `name` of `owner`; an error if another's.
    fn ours(&self, name: &str, owner: &Owner) -> Result<bool, DriverError> {
        let Some(vm) = self.vms.get(name) else { return Ok(false) };
        vm.marker.check(Object::Vm, name, &owner.node(name), owner).map(|()| true)
    }

    /// Whether network `name` exists and is `owner`'s; an error if another's.
    fn ours_network(&self, name: &str, owner: &Owner) -> Result<bool, DriverError> {
        let Some(net) = self.networks.get(name) else { return Ok(false) };
        net.marker.check(Object::Network, name, owner, owner).map(|()| true)
    }

    /// `owner`'s VM `name`, which must exist.
    fn ours_mut(&mut self, name: &str, owner: &Owner) -> Result<&mut MemVm, DriverError> {
        if !self.ours(name, owner)? {
            return Err(DriverError::NoSuchVm { name: name.to_owned() });
        }
        self.vms.get_mut(name).ok_or_else(|| DriverError::NoSuchVm { name: name.to_owned() })
    }

    /// The address reserved for the VM's host-only MAC, if it has one.
    fn reserved_ip(&self, name: &str) -> Option<Ipv4Addr> {
        let spec = self.vms.get(name)?.spec.as_ref()?;
        let net = self.networks.get(&spec.host_only.network)?;
        let mac = spec.host_only.mac.to_string();
        net.hosts.iter().find(|(m, _)| *m == mac).map(|(_, ip)| *ip)
    }
}

impl Driver for MemDriver {
    fn kind(&self) -> DriverKind {
        *DriverKind::all().first().expect("a driver compiled in")
    }

    fn check_host(&self, _policy: AccelPolicy) -> Result<HostReport, DriverError> {
        drop(self.enter("check_host", Action::ReadCapabilities, "")?);
        Ok(HostReport { accel: Accel::Tcg, warnings: Vec::new() })
    }

    fn disk_format(&self) -> DiskFormat {
        DiskFormat::Qcow2
    }

    fn used_subnets(&self) -> Result<Vec<Ipv4Cidr>, DriverError> {
        let w = self.enter("used_subnets", Action::ListNetworks, "")?;
        Ok(w.networks.values().map(|n| n.cidr).collect())
    }

    fn check_network(&self, net: &NetworkSpec) -> Result<(), DriverError> {
        let w = self.enter("check_network", Action::InspectNetwork, &net.name)?;
        w.ours_network(&net.name, &net.owner).map(drop)
    }

    fn ensure_network(&self, net: &NetworkSpec) -> Result<(), DriverError> {
        let mut w = self.enter("ensure_network", Action::DefineNetwork, &net.name)?;
        w.ours_network(&net.name, &net.owner)?;
        let hosts = net.hosts.iter().map(|h| (h.mac.to_string(), h.ip)).collect();
        let found = w.networks.entry(net.name.clone()).or_insert_with(|| MemNetwork {
            marker: Marker::Owner(net.owner.clone()),
            cidr: net.cidr,
            hosts: Vec::new(),
        });
        if found.cidr != net.cidr {
            return Err(DriverError::NetworkConflict {
                name: net.name.clone(),
                found: found.cidr.to_string(),
                expected: net.cidr.to_string(),
            });
        }
        found.hosts = hosts;
        Ok(())
    }

    fn delete_network(&self, name: &str, owner: &Owner) -> Result<(), DriverError> {
        let mut w = self.enter("delete_network", Action::DeleteNetwork, name)?;
        if !name.starts_with(NAME_PREFIX) {
            return Err(DriverError::ForeignNetwork { name: name.to_owned(), owner: None });
        }
        if w.ours_network(name, owner)? {
            w.networks.remove(name);
        }
        Ok(())
    }

    fn check_vm(&self, name: &str, owner: &Owner) -> Result<(), DriverError> {
        self.enter("check_vm", Action::InspectVm, name)?.ours(name, owner).map(drop)
    }

    fn create(&self, vm: &VmSpec) -> Result<(), DriverError> {
        let mut w = self.enter("create", Action::DefineVm, &vm.name)?;
        if w.ours(&vm.name, &vm.owner)? {
            return Ok(());
        }
        let (DiskSpec::Overlay { base_id: image, .. }
        | DiskSpec::IsoWithDataDisk { iso_id: image, .. }) = &vm.disk;
        w.images.insert(image.clone());
        w.volumes.insert((vm.owner.home.to_string(), vm.name.clone()), image.clone());
        let marker = Marker::Owner(vm.owner.node(&vm.name));
        w.vms.insert(
            vm.name.clone(),
            MemVm {
                marker,
                state: VmState::Stopped,
                spec: Some(vm.clone()),
                snapshots: BTreeMap::new(),
                console: None,
            },
        );
        Ok(())
    }

    fn start(&self, name: &str, owner: &Owner) -> Result<(), DriverError> {
        self.enter("start", Action::StartVm, name)?.ours_mut(name, owner)?.state = VmState::Running;
        Ok(())
    }

    fn stop(&self, name: &str, owner: &Owner, _mode: StopMode) -> Result<(), DriverError> {
        let mut w = self.enter("stop", Action::StopVm, name)?;
        if w.ours(name, owner)? {
            w.ours_mut(name, owner)?.state = VmState::Stopped;
        }
        Ok(())
    }

    fn delete(&self, name: &str, owner: &Owner) -> Result<(), DriverError> {
        let mut w = self.enter("delete", Action::DeleteVm, name)?;
        if w.ours(name, owner)? {
            w.vms.remove(name);
        }
        w.volumes.remove(&(owner.home.to_string(), name.to_owned()));
        Ok(())
    }

    fn owned(&self, owner: &Owner) -> Result<Owned, DriverError> {
        let w = self.enter("owned", Action::ListVms, &owner.profile)?;
        let mut vms: BTreeSet<String> = w
            .vms
            .iter()
            .filter(|(name, vm)| vm.marker == Marker::Owner(owner.node(name)))
            .map(|(name, _)| name.clone())
            .collect();
        // A leftover disk is the node's if its home is ours and its node of the profile.
        let home = owner.home.to_string();
        let leftovers = w.volumes.keys().filter(|(h, node)| {
            *h == home && Owner::from_parts(&home, &owner.profile, Some(node)).is_ok()
        });
        vms.extend(leftovers.map(|(_, node)| node.clone()));
        let networks = w.networks.iter().filter(|(_, n)| n.marker == Marker::Owner(owner.clone()));
        Ok(Owned {
            vms: vms.into_iter().collect(),
            networks: networks.map(|(name, _)| name.clone()).collect(),
        })
    }

    fn delete_image(&self, image_id: &str) -> Result<(), DriverError> {
        let mut w = self.enter("delete_image", Action::DeleteVolume, image_id)?;
        if !w.volumes.values().any(|used| used == image_id) {
            w.images.remove(image_id);
        }
        Ok(())
    }

    fn state(&self, name: &str) -> Result<VmState, DriverError> {
        let w = self.enter("state", Action::InspectVm, name)?;
        Ok(w.vms.get(name).map_or(VmState::Missing, |vm| vm.state))
    }

    fn ip(&self, name: &str) -> Result<Option<IpAddr>, DriverError> {
        let w = self.enter("ip", Action::InspectVm, name)?;
        let running = w.vms.get(name).is_some_and(|vm| vm.state == VmState::Running);
        Ok(w.reserved_ip(name).filter(|_| running).map(IpAddr::V4))
    }

    fn ssh_address(&self, name: &str, host_only_ip: Ipv4Addr) -> Result<SocketAddr, DriverError> {
        let w = self.enter("ssh_address", Action::InspectVm, name)?;
        if !w.vms.contains_key(name) {
            return Err(DriverError::NoSuchVm { name: name.to_owned() });
        }
        Ok(SocketAddr::new(host_only_ip.into(), 22))
    }

    fn log_tail(&self, _name: &str, _max_bytes: u64) -> Option<String> {
        None // no hypervisor log here
    }

    fn console_tail(
        &self,
        name: &str,
        owner: &Owner,
        max_bytes: u64,
    ) -> Result<Option<ConsoleTail>, DriverError> {
        let w = self.enter("console_tail", Action::ReadVolume, name)?;
        let Some(text) = w.vms.get(name).and_then(|vm| vm.console.clone()) else {
            return Ok(None); // the profile's file
        };
        w.ours(name, owner)?;
        let start = text.len().saturating_sub(usize::try_from(max_bytes).unwrap_or(usize::MAX));
        Ok(Some(ConsoleTail {
            path: format!("/pool/{name}.console.log").into(),
            text: crate::fsutil::tail_text(&text.as_bytes()[start..], start > 0),
        }))
    }

    fn pause(&self, name: &str, owner: &Owner) -> Result<(), DriverError> {
        let mut w = self.enter("pause", Action::PauseVm, name)?;
        let vm = w.ours_mut(name, owner)?;
        match vm.state {
            VmState::Running | VmState::Paused => vm.state = VmState::Paused,
            other => return Err(not_running(name, Action::PauseVm, other)),
        }
        Ok(())
    }

    fn resume(&self, name: &str, owner: &Owner) -> Result<(), DriverError> {
        let mut w = self.enter("resume", Action::PauseVm, name)?;
        let vm = w.ours_mut(name, owner)?;
        match vm.state {
            VmState::Running | VmState::Paused => vm.state = VmState::Running,
            other => return Err(not_running(name, Action::PauseVm, other)),
        }
        Ok(())
    }

    fn snapshot_save(&self, name: &str, owner: &Owner, snapshot: &str) -> Result<(), DriverError> {
        let mut w = self.enter("snapshot_save", Action::SaveSnapshot, name)?;
        let vm = w.ours_mut(name, owner)?;
        if vm.snapshots.contains_key(snapshot) {
            let source = format!("snapshot {snapshot} exists").into();
            return Err(DriverError::Backend {
                action: Action::SaveSnapshot,
                object: name.to_owned(),
                source,
            });
        }
        vm.snapshots.insert(snapshot.to_owned(), vm.state);
        Ok(())
    }

    fn snapshot_restore(
        &self,
        name: &str,
        owner: &Owner,
        snapshot: &str,
    ) -> Result<(), DriverError> {
        let mut w = self.enter("snapshot_restore", Action::RestoreSnapshot, name)?;
        let vm = w.ours_mut(name, owner)?;
        let taken = vm.snapshots.get(snapshot).ok_or_else(|| DriverError::NoSuchSnapshot {
            name: name.to_owned(),
            snapshot: snapshot.to_owned(),
        })?;
        vm.state = match taken {
            VmState::Running | VmState::Paused => VmState::Paused,
            _ => VmState::Stopped,
        };
        Ok(())
    }

    fn snapshot_delete(
        &self,
        name: &str,
        owner: &Owner,
        snapshot: &str,
    ) -> Result<(), DriverError> {
        let mut w = self.enter("snapshot_delete", Action::DeleteSnapshot, name)?;
        w.ours_mut(name, owner)?.snapshots.remove(snapshot);
        Ok(())
    }

    fn snapshots(&self, name: &str, owner: &Owner) -> Result<Vec<String>, DriverError> {
        let w = self.enter("snapshots", Action::InspectVm, name)?;
        if !w.ours(name, owner)? {
            return Ok(Vec::new());
        }
        Ok(w.vms[name].snapshots.keys().cloned().collect())
    }

    fn disk_usage(&self, name: &str, owner: &Owner) -> Result<u64, DriverError> {
        let w = self.enter("disk_usage", Action::InspectVm, name)?;
        if !w.ours(name, owner)? {
            return Ok(0);
        }
        // A made-up size: 1 MiB for the disk and each snapshot.
        Ok((1 + w.vms[name].snapshots.len() as u64) << 20)
    }

    fn set_guest_time(
        &self,
        name: &str,
        owner: &Owner,
        _now: std::time::SystemTime,
    ) -> Result<bool, DriverError> {
        let mut w = self.enter("set_guest_time", Action::SetGuestTime, name)?;
        match w.ours_mut(name, owner)?.state {
            // Every VM here has a guest agent.
            VmState::Running => Ok(true),
            other => Err(not_running(name, Action::SetGuestTime, other)),
        }
    }

    fn export_disk(
        &self,
        name: &str,
        owner: &Owner,
        dest: &std::path::Path,
    ) -> Result<(), DriverError> {
        let mut w = self.enter("export_disk", Action::ExportDisk, name)?;
        let vm = w.ours_mut(name, owner)?;
        if vm.state != VmState::Stopped {
            let state = format!("{:?}", vm.state);
            return Err(DriverError::NotStopped { name: name.to_owned(), state });
        }
        // Made-up bytes that name the VM, so a test can tell whose disk it got.
        std::fs::write(dest, format!("mem disk of {name}\n"))
            .map_err(|source| DriverError::WriteFile { path: dest.to_owned(), source })
    }
}

/// What a backend says when `action` needs a running VM and `name` is in `state`.
fn not_running(name: &str, action: Action, state: VmState) -> DriverError {
    let source = format!("VM is {state:?}, not running").into();
    DriverError::Backend { action, object: name.to_owned(), source }
}
