//! The VirtualBox backend, through `VBoxManage` (see `vboxmanage.rs`, the only code that
//! runs it). Each node is a VM registered under its node directory in the profile, in
//! the group `/kubelab-<profile>`; NIC 1 is NAT with an SSH forward on a free
//! 127.0.0.1 port (kept in the VM's own settings, read back by [`Driver::ssh_address`]),
//! NIC 2 joins the profile's host-only network; the base image is a multi-attach medium
//! under a per-node differencing disk. Pure Rust, no system libraries.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{
    AccelPolicy, Action, ConsoleTail, DiskFormat, DiskSpec, Driver, DriverError, DriverKind,
};
use super::{
    HostReport, HostWarning, NetworkKind, NetworkSpec, Object, Owned, Owner, StopMode, VmSpec,
    VmState,
};
use crate::net::Ipv4Cidr;
use crate::reason;

mod error;
mod export;
pub mod host;
pub mod known;
pub mod network;
pub mod parse;
mod snapshot;
pub mod vboxmanage;
pub mod vm;

pub use error::VBoxError;
use network::HostOnlyMode;
use vboxmanage::VBoxManage;

/// How long a graceful stop waits for the guest's ACPI shutdown before powering off.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `hostonlyif create` may take before kubelab suspects a hidden Windows
/// permission prompt (creating an adapter takes seconds otherwise).
pub const DEFAULT_HOSTONLY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a new host-only adapter may take to be listed (see `network::ensure`).
pub const DEFAULT_ADAPTER_WAIT: Duration = Duration::from_secs(30);
/// The name of a VM's log in its log folder.
const VBOX_LOG: &str = "VBox.log";

/// The VirtualBox backend.
#[derive(Debug)]
pub struct VirtualBoxDriver {
    vbox: VBoxManage,
    mode: HostOnlyMode,
    stop_timeout: Duration,
    hostonly_timeout: Duration,
    adapter_wait: Duration,
    /// Serializes preparing a shared base image and choosing forward ports.
    shared: Mutex<Vec<u16>>,
}

impl VirtualBoxDriver {
    /// Finds `VBoxManage` and checks its version.
    pub fn open() -> Result<Self, DriverError> {
        Ok(Self::new(VBoxManage::open().map_err(drv(Action::ReadCapabilities, "VirtualBox"))?))
    }

    /// The backend over `vbox`, in the host-only flavour `vbox` reported.
    pub fn new(vbox: VBoxManage) -> Self {
        Self {
            mode: vbox.host_only_mode(),
            vbox,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            hostonly_timeout: DEFAULT_HOSTONLY_TIMEOUT,
            adapter_wait: DEFAULT_ADAPTER_WAIT,
            shared: Mutex::new(Vec::new()),
        }
    }

    /// Sets how long `hostonlyif create` may take.
    pub fn with_hostonly_timeout(mut self, timeout: Duration) -> Self {
        self.hostonly_timeout = timeout;
        self
    }

    /// Sets how long a new host-only adapter may take to be listed.
    pub fn with_adapter_wait(mut self, wait: Duration) -> Self {
        self.adapter_wait = wait;
        self
    }

    fn info(&self, name: &str) -> Result<Option<parse::VmInfo>, DriverError> {
        self.vbox.show_vm_info(name).map_err(drv(Action::InspectVm, name))
    }

    /// The VM `name`, which must be node `name` of `owner` by its marker; `None` if it
    /// does not exist.
    fn info_ours(&self, name: &str, owner: &Owner) -> Result<Option<parse::VmInfo>, DriverError> {
        let Some(info) = self.info(name)? else { return Ok(None) };
        let found = self.marker(name)?;
        if found.as_ref() == Some(&owner.node(name)) {
            return Ok(Some(info));
        }
        // An older kubelab marked its VMs only by their group.
        let legacy = info.groups.contains(&vm::group(&owner.profile)).then_some(&owner.profile);
        Err(DriverError::not_ours(Object::Vm, name, found, legacy.map(String::as_str), owner))
    }

    /// The owner the VM `name`'s marker names; `None` without a valid one.
    fn marker(&self, name: &str) -> Result<Option<Owner>, DriverError> {
        let marker =
            self.vbox.get_extradata(name, vm::OWNER_KEY).map_err(drv(Action::InspectVm, name))?;
        Ok(marker.and_then(|m| Owner::parse_marker(&m).ok()))
    }

    /// A free 127.0.0.1 port no other node of this run was given.
    fn free_port(&self) -> Result<u16, VBoxError> {
        let mut given = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .map_err(|source| VBoxError::FreePort { source })?;
            let port =
                listener.local_addr().map_err(|source| VBoxError::FreePort { source })?.port();
            if !given.contains(&port) {
                given.push(port);
                return Ok(port);
            }
        }
    }

    /// Marks the base image multi-attach (once; it registers it too).
    fn prepare_base(&self, base: &Path) -> Result<(), VBoxError> {
        let _guard = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let file = base.to_string_lossy();
        let info = self.vbox.show_medium_info("disk", &file)?;
        if info.is_none_or(|m| m.kind != "multiattach") {
            self.vbox.modify_medium(&[file.into_owned(), "--type".into(), "multiattach".into()])?;
        }
        Ok(())
    }

    fn define(&self, spec: &VmSpec, node_dir: &Path) -> Result<(), DriverError> {
        let name = spec.name.as_str();
        let vb = drv(Action::DefineVm, name);
        let attachment =
            network::attachment(&self.vbox, self.mode, &spec.host_only.network, &spec.owner)?;
        let port = self.free_port().map_err(&vb)?;
        let boot_iso = matches!(spec.disk, DiskSpec::IsoWithDataDisk { .. });
        let nic2 = network::nic2_args(self.mode, &attachment);
        self.vbox.modify_vm(name, &vm::modify_vm_args(spec, port, nic2, boot_iso)).map_err(&vb)?;
        self.vbox.storagectl(name, &vm::add_controller_args()).map_err(&vb)?;
        let disk = node_dir.join(vm::DISK_FILE);
        let vol = drv(Action::CreateVolume, name);
        match &spec.disk {
            DiskSpec::Overlay { base_image, size_gib, .. } => {
                self.prepare_base(base_image).map_err(&vol)?;
                self.vbox
                    .create_medium(&vm::create_medium_args(&disk, Some(base_image), 0))
                    .map_err(&vol)?;
                let file = disk.to_string_lossy();
                let size_mib = size_gib * 1024;
                let current = self
                    .vbox
                    .show_medium_info("disk", &file)
                    .map_err(&vol)?
                    .and_then(|m| m.capacity_mib);
                if current.is_some_and(|c| c < size_mib) {
                    let resize = [file.into_owned(), "--resize".into(), size_mib.to_string()];
                    self.vbox.modify_medium(&resize).map_err(&vol)?;
                }
            }
            DiskSpec::IsoWithDataDisk { iso, size_gib, .. } => {
                self.vbox
                    .create_medium(&vm::create_medium_args(&disk, None, size_gib * 1024))
                    .map_err(&vol)?;
                self.vbox
                    .storage_attach(name, &vm::attach_args(vm::ISO_PORT, "dvddrive", iso))
                    .map_err(&vb)?;
            }
        }
        self.vbox
            .storage_attach(name, &vm::attach_args(vm::DISK_PORT, "hdd", &disk))
            .map_err(&vb)?;
        let seed = vm::attach_args(vm::SEED_PORT, "dvddrive", &spec.seed_iso);
        self.vbox.storage_attach(name, &seed).map_err(&vb)
    }

    /// Powers the VM off (ACPI first for [`StopMode::Graceful`]); its owner checked.
    fn power_off(
        &self,
        name: &str,
        info: &parse::VmInfo,
        mode: StopMode,
    ) -> Result<(), DriverError> {
        let vb = drv(Action::StopVm, name);
        match (vm::map_state(name, &info.state)?, mode) {
            (VmState::Stopped | VmState::Crashed, _) => Ok(()),
            _ if info.state == "saved" => self.vbox.discard_state(name).map_err(vb),
            (VmState::Running, StopMode::Graceful) => {
                self.vbox.control_vm(name, "acpipowerbutton").map_err(&vb)?;
                let deadline = Instant::now() + self.stop_timeout;
                while Instant::now() < deadline {
                    match self.info(name)? {
                        None => return Ok(()),
                        Some(i)
                            if matches!(
                                vm::map_state(name, &i.state)?,
                                VmState::Stopped | VmState::Crashed
                            ) =>
                        {
                            return Ok(());
                        }
                        Some(_) => std::thread::sleep(Duration::from_millis(500)),
                    }
                }
                self.vbox.control_vm(name, "poweroff").map_err(vb)
            }
            _ => self.vbox.control_vm(name, "poweroff").map_err(vb),
        }
    }

    /// Detaches, unregisters and deletes VM `name` (as `info` shows it, read again if
    /// `None`) and its own disk; its owner checked, or (clean-up in `create`) just made.
    fn remove(&self, name: &str, info: Option<parse::VmInfo>) -> Result<(), DriverError> {
        let Some(info) = info.map_or_else(|| self.info(name), |i| Ok(Some(i)))? else {
            return Ok(());
        };
        self.power_off(name, &info, StopMode::Force)?;
        let vb = drv(Action::DeleteVm, name);
        // Snapshots keep the node's disk as the parent of their images: deleted first
        // (children before parents, which VirtualBox requires), so what is detached and
        // closed below is the VM's one current disk again.
        let snapshots = self.vbox.snapshot_list(name).map_err(&vb)?;
        for snapshot in snapshots.iter().rev() {
            self.vbox.snapshot_delete(name, snapshot).map_err(&vb)?;
        }
        let info = if snapshots.is_empty() { info } else { self.info(name)?.unwrap_or(info) };
        let slot = |port: u32| info.media.get(&format!("{}-{port}-0", vm::CONTROLLER));
        // Detach everything first, so `unregistervm --delete` cannot touch shared media.
        let remove = ["--name".to_owned(), vm::CONTROLLER.to_owned(), "--remove".to_owned()];
        self.vbox.storagectl(name, &remove).or_else(ignore_missing_controller).map_err(&vb)?;
        self.vbox.unregister_vm(name).map_err(&vb)?;
        if let Some(disk) = slot(vm::DISK_PORT) {
            self.vbox.close_medium("disk", disk, true).map_err(drv(Action::DeleteVolume, disk))?;
        }
        if let Some(seed) = slot(vm::SEED_PORT) {
            // The seed file belongs to the node directory; only unregister it.
            self.vbox.close_medium("dvd", seed, false).map_err(drv(Action::DeleteVolume, seed))?;
        }
        Ok(())
    }

    /// Fails with `HOST_HYPERV_ENABLED` (after powering the VM off) when `VBox.log` shows
    /// the NEM fallback.
    fn check_nem(&self, name: &str, info: Option<parse::VmInfo>) -> Result<(), DriverError> {
        let Some(folder) = info.and_then(|i| i.log_folder) else { return Ok(()) };
        let log = std::fs::read_to_string(Path::new(&folder).join(VBOX_LOG)).unwrap_or_default();
        if let Some(line) = host::nem_fallback(&log) {
            let _ = self.vbox.control_vm(name, "poweroff");
            return Err(drv(Action::StartVm, name)(VBoxError::HyperV { evidence: line }));
        }
        Ok(())
    }
}

impl Driver for VirtualBoxDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::VirtualBox
    }

    fn check_host(&self, _policy: AccelPolicy) -> Result<HostReport, DriverError> {
        if let Some(evidence) = self.vbox.kernel_driver_warning() {
            let source = VBoxError::KernelDriver { module: "vboxdrv", evidence: evidence.into() };
            return Err(drv(Action::ReadCapabilities, "VirtualBox")(source));
        }
        let mut warnings = Vec::new();
        #[cfg(windows)]
        if let Some(evidence) = host::hyperv_evidence(&host::probe_windows()) {
            warnings.push(HostWarning { reason: &reason::HOST_HYPERV_ENABLED, message: evidence });
        }
        if network::host_ranges()?.is_some_and(|ranges| ranges.is_empty()) {
            warnings.push(HostWarning {
                reason: &reason::HOST_VBOX_HOSTONLY_RANGE,
                message: format!("{} allows no IPv4 host-only range", network::NETWORKS_CONF),
            });
        }
        // VirtualBox always runs guests with VT-x/AMD-V (no software fallback since 6.1).
        Ok(HostReport { accel: super::Accel::VirtualBox, warnings })
    }

    fn disk_format(&self) -> DiskFormat {
        DiskFormat::Vmdk
    }

    fn used_subnets(&self) -> Result<Vec<Ipv4Cidr>, DriverError> {
        let vb = drv(Action::ListNetworks, "VirtualBox");
        let mut used: Vec<Ipv4Cidr> = match self.mode {
            HostOnlyMode::Adapter => self
                .vbox
                .list_hostonlyifs()
                .map_err(&vb)?
                .iter()
                .filter_map(|i| prefix(i.ip, i.netmask))
                .collect(),
            HostOnlyMode::Network => self
                .vbox
                .list_hostonlynets()
                .map_err(&vb)?
                .iter()
                .filter_map(|n| prefix(n.lower_ip, n.netmask))
                .collect(),
        };
        if let Some(ranges) = network::host_ranges()? {
            used.extend(network::refused_candidates(&ranges));
        }
        Ok(used)
    }

    fn check_network(&self, net: &NetworkSpec) -> Result<(), DriverError> {
        if net.kind == NetworkKind::Nat {
            return Ok(());
        }
        // A subnet networks.conf refuses fails here, before `up` saves the profile.
        if let Some(ranges) = network::host_ranges()? {
            network::check_allowed(&net.cidr, &ranges)
                .map_err(drv(Action::DefineNetwork, &net.name))?;
        }
        network::check(&self.vbox, self.mode, &net.name, &net.owner)
    }

    fn ensure_network(&self, net: &NetworkSpec) -> Result<(), DriverError> {
        if net.kind == NetworkKind::Nat {
            return Ok(()); // Each VM's NIC 1 has its own NAT engine.
        }
        network::check(&self.vbox, self.mode, &net.name, &net.owner)?;
        let ranges = network::host_ranges()?;
        let (create, visible) = (self.hostonly_timeout, self.adapter_wait);
        network::ensure(&self.vbox, self.mode, net, ranges.as_deref(), create, visible)
            .map_err(drv(Action::DefineNetwork, &net.name))
    }

    fn delete_network(&self, name: &str, owner: &Owner) -> Result<(), DriverError> {
        if name != super::network_names(&owner.profile).0 {
            return Ok(()); // Only the host-only network exists in VirtualBox (see above).
        }
        network::check(&self.vbox, self.mode, name, owner)?;
        network::delete(&self.vbox, self.mode, name, owner)
            .map_err(drv(Action::DeleteNetwork, name))
    }

    fn check_vm(&self, name: &str, owner: &Owner) -> Result<(), DriverError> {
        self.info_ours(name, owner).map(drop)
    }

    fn create(&self, spec: &VmSpec) -> Result<(), DriverError> {
        if self.info_ours(&spec.name, &spec.owner)?.is_some() {
            return Ok(());
        }
        if let DiskSpec::Overlay { base_image, .. } = &spec.disk
            && !vm::attachable(base_image)
        {
            let source = VBoxError::DiskFormat { path: base_image.clone() };
            return Err(drv(Action::DefineVm, &spec.name)(source));
        }
        let node_dir = spec.seed_iso.parent().map_or_else(PathBuf::new, Path::to_path_buf);
        self.vbox
            .create_vm(&spec.name, &node_dir, &vm::group(&spec.owner.profile))
            .map_err(drv(Action::DefineVm, &spec.name))?;
        // Marked first, so every later step (and the clean-up below) acts on it as ours.
        let marker = spec.owner.node(&spec.name).marker();
        let marked = self
            .vbox
            .set_extradata(&spec.name, vm::OWNER_KEY, Some(&marker))
            .map_err(drv(Action::DefineVm, &spec.name));
        // A half-made VM would look "stopped" to the next `up`: remove it and its disk.
        marked.and_then(|()| self.define(spec, &node_dir)).inspect_err(|_| {
            let _ = self.remove(&spec.name, None);
            let disk = node_dir.join(vm::DISK_FILE);
            let _ = self.vbox.close_medium("disk", &disk.to_string_lossy(), true);
        })
    }

    fn start(&self, name: &str, owner: &Owner) -> Result<(), DriverError> {
        let info = self
            .info_ours(name, owner)?
            .ok_or_else(|| DriverError::NoSuchVm { name: name.to_owned() })?;
        let vb = drv(Action::StartVm, name);
        match vm::map_state(name, &info.state)? {
            VmState::Running | VmState::Starting => return Ok(()),
            VmState::Paused if info.state == "paused" => {
                return self.vbox.control_vm(name, "resume").map_err(vb);
            }
            _ => self.vbox.start_vm(name).map_err(vb)?,
        }
        self.check_nem(name, self.info(name)?)
    }

    fn stop(&self, name: &str, owner: &Owner, mode: StopMode) -> Result<(), DriverError> {
        let Some(info) = self.info_ours(name, owner)? else { return Ok(()) };
        self.power_off(name, &info, mode)
    }

    fn delete(&self, name: &str, owner: &Owner) -> Result<(), DriverError> {
        match self.info_ours(name, owner)? {
            Some(info) => self.remove(name, Some(info)),
            None => Ok(()),
        }
    }

    fn owned(&self, owner: &Owner) -> Result<Owned, DriverError> {
        let mut vms = Vec::new();
        for name in self.vbox.list_vms().map_err(drv(Action::ListVms, "VirtualBox"))? {
            if self.marker(&name)? == Some(owner.node(&name)) {
                vms.push(name);
            }
        }
        let networks = network::owned(&self.vbox, self.mode, owner)
            .map_err(drv(Action::ListNetworks, "VirtualBox"))?;
        Ok(Owned { vms, networks })
    }

    fn delete_image(&self, image_id: &str) -> Result<(), DriverError> {
        let fail = drv(Action::DeleteVolume, image_id);
        for kind in ["hdds", "dvds"] {
            let media = self.vbox.list_media(kind).map_err(&fail)?;
            for m in media
                .iter()
                .filter(|m| Path::new(&m.location).file_stem().is_some_and(|s| s == image_id))
            {
                // Another home's cached copy of the same image may still be the base of
                // its VMs' disks: `list` does not show children, `showmediuminfo` does.
                let medium = if kind == "hdds" { "disk" } else { "dvd" };
                let info = self.vbox.show_medium_info(medium, &m.location).map_err(&fail)?;
                if info.is_some_and(|i| i.has_children) {
                    tracing::info!(medium = m.location, "kept: it has child disks");
                    continue;
                }
                // The file is the image cache's; VirtualBox only forgets it.
                self.vbox.close_medium(medium, &m.location, false).map_err(&fail)?;
            }
        }
        Ok(())
    }

    fn state(&self, name: &str) -> Result<VmState, DriverError> {
        match self.info(name)? {
            None => Ok(VmState::Missing),
            Some(info) => vm::map_state(name, &info.state),
        }
    }

    fn ip(&self, _name: &str) -> Result<Option<IpAddr>, DriverError> {
        // VirtualBox reports guest addresses only through the Guest Additions, which
        // kubelab's images do not have.
        Ok(None)
    }

    fn ssh_address(&self, name: &str, _host_only_ip: Ipv4Addr) -> Result<SocketAddr, DriverError> {
        let info =
            self.info(name)?.ok_or_else(|| DriverError::NoSuchVm { name: name.to_owned() })?;
        let port = info.ssh_port().ok_or_else(|| DriverError::NoSuchVm {
            name: format!("{name} (no SSH port forward)"),
        })?;
        Ok(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port))
    }

    fn log_tail(&self, name: &str, max_bytes: u64) -> Option<String> {
        // VBox.log, in the VM's log folder (never followed through a link).
        let folder = self.vbox.show_vm_info(name).ok()??.log_folder?;
        crate::fsutil::read_tail(&Path::new(&folder).join(VBOX_LOG), max_bytes)
    }

    fn console_tail(
        &self,
        _name: &str,
        _owner: &Owner,
        _max_bytes: u64,
    ) -> Result<Option<ConsoleTail>, DriverError> {
        // VirtualBox runs on this host and writes the UART to the profile's file.
        Ok(None)
    }

    fn pause(&self, name: &str, owner: &Owner) -> Result<(), DriverError> {
        snapshot::pause(self, name, owner)
    }

    fn resume(&self, name: &str, owner: &Owner) -> Result<(), DriverError> {
        snapshot::resume(self, name, owner)
    }

    fn snapshot_save(&self, name: &str, owner: &Owner, snap: &str) -> Result<(), DriverError> {
        snapshot::save(self, name, owner, snap)
    }

    fn snapshot_restore(&self, name: &str, owner: &Owner, snap: &str) -> Result<(), DriverError> {
        snapshot::restore(self, name, owner, snap)
    }

    fn snapshot_delete(&self, name: &str, owner: &Owner, snap: &str) -> Result<(), DriverError> {
        snapshot::delete(self, name, owner, snap)
    }

    fn export_disk(&self, name: &str, owner: &Owner, dest: &Path) -> Result<(), DriverError> {
        export::export_disk(self, name, owner, dest)
    }

    fn snapshots(&self, name: &str, owner: &Owner) -> Result<Vec<String>, DriverError> {
        snapshot::list(self, name, owner)
    }

    fn disk_usage(&self, name: &str, owner: &Owner) -> Result<u64, DriverError> {
        snapshot::disk_usage(self, name, owner)
    }

    fn set_guest_time(
        &self,
        _name: &str,
        _owner: &Owner,
        _now: std::time::SystemTime,
    ) -> Result<bool, DriverError> {
        // Only the Guest Additions set a guest's clock, and kubelab's images have none:
        // `ops` sets it over SSH.
        Ok(false)
    }
}

/// The subnet of an address and netmask.
fn prefix(ip: Ipv4Addr, mask: Ipv4Addr) -> Option<Ipv4Cidr> {
    let bits = u8::try_from(u32::from(mask).count_ones()).ok()?;
    Ipv4Cidr::containing(ip, bits).ok()
}

/// A VM created without its controller has nothing to detach.
fn ignore_missing_controller(err: VBoxError) -> Result<(), VBoxError> {
    match &err {
        VBoxError::Command { source: crate::process::ProcessError::Failed { stderr, .. } }
            if stderr.contains("Could not find a storage controller")
                || stderr.contains("No storage controller") =>
        {
            Ok(())
        }
        _ => Err(err),
    }
}

/// Maps a [`VBoxError`] of `action` on `object` to [`DriverError::VirtualBox`].
pub(crate) fn drv(action: Action, object: &str) -> impl Fn(VBoxError) -> DriverError + '_ {
    move |source| DriverError::VirtualBox {
        action,
        object: object.to_owned(),
        source: Box::new(source),
    }
}
