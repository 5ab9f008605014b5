//! VM lifecycle on libvirt domains: create (disks + define), start, stop (ACPI with a
//! deadline, then power off), delete (domain and its own volumes), state and lease IP.
//! A domain is only touched when its kubelab marker names exactly this home, profile and
//! node (see `driver` on ownership).

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use virt::connect::Connect;
use virt::domain::{Domain, DomainState, DomainStateEnum};
use virt::enumutil::Enum;
use virt::error::ErrorNumber;
use virt::sys;

use super::console;
use super::domain_xml::domain_xml;
use super::storage::{self, POOL};
use super::xml::{domain_macs, legacy_marker_profile, marker_owner};
use super::{is_missing, lv};
use crate::driver::{
    Action, ConsoleTail, DiskSpec, DriverError, Object, Owner, StopMode, VmSpec, VmState,
};

/// How often `stop` polls the state while waiting for an ACPI shutdown.
const STOP_POLL: Duration = Duration::from_millis(250);

/// libvirt's state, many to one. NOSTATE is what libvirt reports before a domain's
/// first state is known (while it starts).
pub fn map_state(raw: DomainStateEnum) -> Result<VmState, String> {
    match raw {
        Enum::Known(DomainState::NoState) => Ok(VmState::Starting),
        Enum::Known(DomainState::Running | DomainState::Blocked) => Ok(VmState::Running),
        Enum::Known(DomainState::Paused | DomainState::PMSuspended) => Ok(VmState::Paused),
        Enum::Known(DomainState::Shutdown) => Ok(VmState::Stopping),
        Enum::Known(DomainState::Shutoff) => Ok(VmState::Stopped),
        Enum::Known(DomainState::Crashed) => Ok(VmState::Crashed),
        Enum::Unknown(raw) => Err(raw.to_string()),
    }
}

/// The domain `name`, `None` if it does not exist.
pub fn lookup(conn: &Connect, name: &str) -> Result<Option<Domain>, DriverError> {
    match conn.lookup_domain_by_name(name) {
        Ok(dom) => Ok(Some(dom)),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(lv(Action::InspectVm, name)(e)),
    }
}

/// The domain `name`, which must be node `name` of `owner`; `None` if it does not exist.
pub(super) fn lookup_ours(
    conn: &Connect,
    name: &str,
    owner: &Owner,
) -> Result<Option<Domain>, DriverError> {
    let Some(dom) = lookup(conn, name)? else { return Ok(None) };
    let xml = dom.xml_desc(0).map_err(lv(Action::InspectVm, name))?;
    match marker_owner(&xml) {
        Some(found) if found == owner.node(name) => Ok(Some(dom)),
        found => {
            let legacy = legacy_marker_profile(&xml);
            Err(DriverError::not_ours(Object::Vm, name, found, legacy.as_deref(), owner))
        }
    }
}

/// Ok if no domain `name` exists or it is node `name` of `owner`.
pub fn check(conn: &Connect, name: &str, owner: &Owner) -> Result<(), DriverError> {
    lookup_ours(conn, name, owner).map(drop)
}

/// Creates the VM's volumes and defines it; Ok if this owner's VM already exists.
/// `uploads` serializes base-image uploads, which parallel node creations share. A
/// `remote` hypervisor logs the console into the pool's directory (see `console`): the
/// one in the pool's definition, which may predate `pool_path`.
pub fn create(
    conn: &Connect,
    pool_path: &str,
    remote: bool,
    uploads: &Mutex<()>,
    vm: &VmSpec,
) -> Result<(), DriverError> {
    if lookup_ours(conn, &vm.name, &vm.owner)?.is_some() {
        return Ok(());
    }
    check_macs(conn, vm)?;
    let pool = storage::ensure_pool(conn, pool_path)?;
    let disk = storage::disk_volume(&vm.owner.home, &vm.name);
    let (shared, size_gib, src, is_base) = match &vm.disk {
        DiskSpec::Overlay { base_image, base_id, size_gib } => {
            (storage::base_volume(base_id), *size_gib, base_image, true)
        }
        DiskSpec::IsoWithDataDisk { iso, iso_id, size_gib } => {
            (storage::iso_volume(iso_id), *size_gib, iso, false)
        }
    };
    let shared_vol = {
        // A poisoned lock only means another upload failed; its volume was removed.
        let _guard = uploads.lock().unwrap_or_else(|p| p.into_inner());
        storage::ensure_uploaded(conn, &pool, &shared, src)?
    };
    if storage::find_volume(&pool, &disk)?.is_none() {
        storage::create_disk(&pool, &disk, size_gib, is_base.then_some(&shared_vol))?;
    }
    // The seed may have changed since an interrupted run: always upload it afresh.
    let seed = storage::seed_volume(&vm.owner.home, &vm.name);
    storage::delete_volume(&pool, &seed)?;
    storage::upload(conn, &pool, &seed, &vm.seed_iso)?;
    let console_dir = if remote {
        // A pool kubelab defined has the directory it gave.
        Some(storage::pool_dir(&pool)?.unwrap_or_else(|| pool_path.to_owned()))
    } else {
        None
    };
    conn.define_domain_xml(&domain_xml(vm, POOL, console_dir.as_deref()))
        .map(drop)
        .map_err(lv(Action::DefineVm, &vm.name))
}

/// Every domain's name and definition; one removed since it was listed (by another
/// kubelab, or the user) is left out: listing must not fail on that.
pub fn all_domains(conn: &Connect) -> Result<Vec<(String, String)>, DriverError> {
    let uri = conn.uri().unwrap_or_default();
    let mut all = Vec::new();
    for dom in conn.list_all_domains(0).map_err(lv(Action::ListVms, &uri))? {
        let name = dom.name().map_err(lv(Action::ListVms, &uri))?;
        match dom.xml_desc(0) {
            Ok(xml) => all.push((name, xml)),
            Err(e) if is_missing(&e) => {}
            Err(e) => return Err(lv(Action::InspectVm, &name)(e)),
        }
    }
    Ok(all)
}

/// Refuses MACs another domain already uses (a 24-bit hash can collide).
fn check_macs(conn: &Connect, vm: &VmSpec) -> Result<(), DriverError> {
    let ours = [vm.nat.mac.to_string(), vm.host_only.mac.to_string()];
    for (other, xml) in all_domains(conn)? {
        if let Some(mac) = domain_macs(&xml).into_iter().find(|m| ours.contains(m)) {
            return Err(DriverError::MacConflict { mac, name: vm.name.clone(), other });
        }
    }
    Ok(())
}

/// Powers `owner`'s VM on; Ok if it runs.
pub fn start(conn: &Connect, name: &str, owner: &Owner) -> Result<(), DriverError> {
    let dom = lookup_ours(conn, name, owner)?
        .ok_or_else(|| DriverError::NoSuchVm { name: name.to_owned() })?;
    if dom.is_active().map_err(lv(Action::InspectVm, name))? {
        return Ok(());
    }
    dom.create().map(drop).map_err(lv(Action::StartVm, name))
}

/// Stops the VM: ACPI shutdown and up to `timeout` for it to power off, then (or for
/// [`StopMode::Force`] at once) power off. Ok if it is stopped or missing.
pub fn stop(
    conn: &Connect,
    name: &str,
    owner: &Owner,
    mode: StopMode,
    timeout: Duration,
) -> Result<(), DriverError> {
    let Some(dom) = lookup_ours(conn, name, owner)? else { return Ok(()) };
    let active = || dom.is_active().map_err(lv(Action::InspectVm, name));
    if !active()? {
        return Ok(());
    }
    if mode == StopMode::Graceful {
        dom.shutdown().map_err(lv(Action::StopVm, name))?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !active()? {
                return Ok(());
            }
            std::thread::sleep(STOP_POLL);
        }
        tracing::info!(vm = name, "ACPI shutdown timed out, powering off");
    }
    match dom.destroy() {
        Ok(()) => Ok(()),
        // It stopped by itself between the check and the power-off.
        Err(_) if !active()? => Ok(()),
        Err(e) => Err(lv(Action::StopVm, name)(e)),
    }
}

/// Removes `owner`'s VM (powered off first, with its managed save, NVRAM and snapshot
/// metadata: the snapshots themselves live in its volume) and its own volumes, its
/// console log in the pool included; Ok if already gone. Leftover volumes of a missing
/// VM are removed too: their names carry the home's id. (The console log's does not, so
/// it goes while the domain still proves it is this owner's.)
pub fn delete(conn: &Connect, name: &str, owner: &Owner) -> Result<(), DriverError> {
    if let Some(dom) = lookup_ours(conn, name, owner)? {
        stop(conn, name, owner, StopMode::Force, Duration::ZERO)?;
        console::delete(conn, &dom, name)?;
        let flags = sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | sys::VIR_DOMAIN_UNDEFINE_NVRAM
            | sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA;
        match dom.undefine_flags(flags) {
            Ok(()) => {}
            // Drivers without managed save or NVRAM reject the flags: nothing to remove.
            Err(e)
                if e.code().is_known_and(|c| {
                    matches!(c, ErrorNumber::InvalidArg | ErrorNumber::NoSupport)
                }) =>
            {
                dom.undefine_flags(sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
                    .map_err(lv(Action::DeleteVm, name))?;
            }
            Err(e) => return Err(lv(Action::DeleteVm, name)(e)),
        }
    }
    let Some(pool) = storage::find_pool(conn)? else { return Ok(()) };
    storage::delete_volume(&pool, &storage::disk_volume(&owner.home, name))?;
    storage::delete_volume(&pool, &storage::seed_volume(&owner.home, name))
}

/// The end of the console log of `owner`'s VM when it logs into the pool (a remote
/// hypervisor); `None` when it logs into the profile's file, or is missing. Only a log
/// in the pool needs the domain to be `owner`'s: the profile's file is its own.
pub fn console_tail(
    conn: &Connect,
    name: &str,
    owner: &Owner,
    max_bytes: u64,
) -> Result<Option<ConsoleTail>, DriverError> {
    let Some(dom) = lookup(conn, name)? else { return Ok(None) };
    console::tail(conn, &dom, name, max_bytes, || check(conn, name, owner))
}

/// The nodes of `owner`'s profile with a domain marked as theirs, or a leftover node
/// volume (its name carries the home id and a node name of the profile: see
/// [`storage::node_of_volume`]), which [`delete`] removes as well.
pub fn owned(conn: &Connect, owner: &Owner) -> Result<Vec<String>, DriverError> {
    let mut nodes = Vec::new();
    for (name, xml) in all_domains(conn)? {
        if marker_owner(&xml) == Some(owner.node(&name)) {
            nodes.push(name);
        }
    }
    if let Some(pool) = storage::find_pool(conn)? {
        for vol in pool.list_all_volumes(0).map_err(lv(Action::ListVms, POOL))? {
            let name = vol.name().map_err(lv(Action::ListVms, POOL))?;
            if let Some(node) = storage::node_of_volume(&name, owner)
                && !nodes.contains(&node)
            {
                nodes.push(node);
            }
        }
    }
    Ok(nodes)
}

/// Removes a shared base image or ISO volume unless a volume or domain (of any home)
/// still uses it; Ok if gone or kept.
pub fn delete_image(conn: &Connect, image_id: &str) -> Result<(), DriverError> {
    let Some(pool) = storage::find_pool(conn)? else { return Ok(()) };
    storage::delete_unused(conn, &pool, &storage::base_volume(image_id))?;
    storage::delete_unused(conn, &pool, &storage::iso_volume(image_id))
}

/// The VM's state; [`VmState::Missing`] if it does not exist.
pub fn state(conn: &Connect, name: &str) -> Result<VmState, DriverError> {
    let Some(dom) = lookup(conn, name)? else { return Ok(VmState::Missing) };
    let (raw, _reason) = dom.state().map_err(lv(Action::InspectVm, name))?;
    map_state(raw).map_err(|raw| DriverError::UnknownState { name: name.to_owned(), raw })
}

/// The IPv4 address of the host-only NIC (the second) in libvirt's DHCP leases.
pub fn ip(conn: &Connect, name: &str) -> Result<Option<IpAddr>, DriverError> {
    let Some(dom) = lookup(conn, name)? else { return Ok(None) };
    let fail = lv(Action::InspectVm, name);
    if !dom.is_active().map_err(&fail)? {
        return Ok(None);
    }
    let Some(mac) = domain_macs(&dom.xml_desc(0).map_err(&fail)?).into_iter().nth(1) else {
        return Ok(None);
    };
    let ifaces =
        dom.interface_addresses(sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, 0).map_err(&fail)?;
    Ok(ifaces
        .iter()
        .filter(|i| i.hwaddr.as_deref().is_some_and(|h| h.eq_ignore_ascii_case(&mac)))
        .flat_map(|i| &i.addrs)
        .filter(|a| a.typed == i64::from(sys::VIR_IP_ADDR_TYPE_IPV4))
        .find_map(|a| a.addr.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_libvirt_state_maps() {
        let cases = [
            (DomainState::NoState, VmState::Starting),
            (DomainState::Running, VmState::Running),
            (DomainState::Blocked, VmState::Running),
            (DomainState::Paused, VmState::Paused),
            (DomainState::PMSuspended, VmState::Paused),
            (DomainState::Shutdown, VmState::Stopping),
            (DomainState::Shutoff, VmState::Stopped),
            (DomainState::Crashed, VmState::Crashed),
        ];
        for (raw, want) in cases {
            assert_eq!(map_state(Enum::Known(raw)), Ok(want), "{raw:?}");
        }
        assert_eq!(map_state(Enum::Unknown(42)), Err("42".to_owned()));
    }
}
