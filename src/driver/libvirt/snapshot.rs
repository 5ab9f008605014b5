//! Snapshots of kubelab's domains: libvirt's internal qcow2 snapshots, memory included
//! for a running or paused domain (the vCPU and device state land in the node's own
//! overlay volume next to the disk's), disk-only for a stopped one.
//!
//! Why internal snapshots: libvirt 9.0 (Debian 12) takes *and reverts* them, memory
//! included, in one call each; external snapshots it could take but not revert
//! before 9.9, and save files plus overlay disks would be a second copy-on-write chain
//! that kubelab had to keep in step with each save file itself. Measured on two TCG
//! nodes of 1 GiB: save (both paused) 1.7 s, revert 1.8 s. The cost: a snapshot lives
//! inside the node's volume, so deleting the domain's volume deletes its snapshots, and
//! the disk space is counted there ([`disk_usage`]).
//!
//! libvirt names the snapshots `kubelab-<name>`, so a snapshot a user took of the
//! domain by hand with virsh is neither listed nor touched.

use std::time::SystemTime;

use virt::connect::Connect;
use virt::domain::Domain;
use virt::domain_snapshot::DomainSnapshot;
use virt::sys;

use super::domain::lookup_ours;
use super::storage;
use super::xml::escape;
use super::{is_missing, lv};
use crate::driver::{Action, DriverError, Owner, VmState};

/// Prefix of the libvirt name of every snapshot kubelab takes.
const PREFIX: &str = "kubelab-";

pub(super) fn ours(conn: &Connect, name: &str, owner: &Owner) -> Result<Domain, DriverError> {
    lookup_ours(conn, name, owner)?.ok_or_else(|| DriverError::NoSuchVm { name: name.to_owned() })
}

pub(super) fn state(dom: &Domain, name: &str) -> Result<VmState, DriverError> {
    let (raw, _) = dom.state().map_err(lv(Action::InspectVm, name))?;
    super::domain::map_state(raw)
        .map_err(|raw| DriverError::UnknownState { name: name.to_owned(), raw })
}

/// Pauses the running domain; Ok if it is paused.
pub fn pause(conn: &Connect, name: &str, owner: &Owner) -> Result<(), DriverError> {
    let dom = ours(conn, name, owner)?;
    if state(&dom, name)? == VmState::Paused {
        return Ok(());
    }
    dom.suspend().map_err(lv(Action::PauseVm, name))
}

/// Resumes the paused domain; Ok if it runs.
pub fn resume(conn: &Connect, name: &str, owner: &Owner) -> Result<(), DriverError> {
    let dom = ours(conn, name, owner)?;
    if state(&dom, name)? != VmState::Paused {
        return Ok(());
    }
    dom.resume().map_err(lv(Action::PauseVm, name))
}

/// Takes `kubelab-<snapshot>`: memory included when the domain is active (libvirt's
/// default for qcow2 disks); read-only disks (the seed and boot ISOs) are left out.
pub fn save(conn: &Connect, name: &str, owner: &Owner, snapshot: &str) -> Result<(), DriverError> {
    let dom = ours(conn, name, owner)?;
    let xml = format!(
        "<domainsnapshot><name>{}</name><description>taken by kubelab</description></domainsnapshot>",
        escape(&format!("{PREFIX}{snapshot}"))
    );
    dom.create_snapshot_xml(&xml, sys::VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)
        .map(drop)
        .map_err(lv(Action::SaveSnapshot, name))
}

fn find(dom: &Domain, name: &str, snapshot: &str) -> Result<Option<DomainSnapshot>, DriverError> {
    match Domain::lookup_snapshot_by_name(dom, &format!("{PREFIX}{snapshot}"), 0) {
        Ok(snap) => Ok(Some(snap)),
        Err(e) if e.code().is_known_and(|c| c == virt::error::ErrorNumber::NoDomainSnapshot) => {
            Ok(None)
        }
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(lv(Action::RestoreSnapshot, name)(e)),
    }
}

/// Reverts to `kubelab-<snapshot>`: paused when it holds memory, stopped otherwise (a
/// disk-only snapshot must not boot the domain: the REVERT_PAUSED flag would).
pub fn restore(
    conn: &Connect,
    name: &str,
    owner: &Owner,
    snapshot: &str,
) -> Result<(), DriverError> {
    let dom = ours(conn, name, owner)?;
    let snap = find(&dom, name, snapshot)?.ok_or_else(|| DriverError::NoSuchSnapshot {
        name: name.to_owned(),
        snapshot: snapshot.to_owned(),
    })?;
    let fail = lv(Action::RestoreSnapshot, name);
    let with_memory = has_memory(&snap.xml_desc(0).map_err(&fail)?);
    let flags = if with_memory { sys::VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED } else { 0 };
    snap.revert(flags).map_err(fail)
}

/// Whether a snapshot's XML says it was taken of an active domain (so holds memory).
fn has_memory(xml: &str) -> bool {
    let Ok(doc) = roxmltree::Document::parse(xml) else { return false };
    let state = doc.root_element().children().find(|n| n.has_tag_name("state"));
    state.and_then(|s| s.text()).is_some_and(|s| s != "shutoff")
}

/// Deletes `kubelab-<snapshot>`; Ok if the domain or the snapshot is missing.
pub fn delete(
    conn: &Connect,
    name: &str,
    owner: &Owner,
    snapshot: &str,
) -> Result<(), DriverError> {
    let Some(dom) = lookup_ours(conn, name, owner)? else { return Ok(()) };
    match find(&dom, name, snapshot)? {
        Some(snap) => snap.delete(0).map_err(lv(Action::DeleteSnapshot, name)),
        None => Ok(()),
    }
}

/// The names (without the prefix) of kubelab's snapshots of the domain.
pub fn list(conn: &Connect, name: &str, owner: &Owner) -> Result<Vec<String>, DriverError> {
    let Some(dom) = lookup_ours(conn, name, owner)? else { return Ok(Vec::new()) };
    let fail = lv(Action::InspectVm, name);
    let mut names = Vec::new();
    for snap in dom.list_all_snapshots(0).map_err(&fail)? {
        if let Some(ours) = snap.name().map_err(&fail)?.strip_prefix(PREFIX) {
            names.push(ours.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Bytes allocated to the node's own volume (its internal snapshots live in it).
pub fn disk_usage(conn: &Connect, name: &str, owner: &Owner) -> Result<u64, DriverError> {
    if lookup_ours(conn, name, owner)?.is_none() {
        return Ok(0);
    }
    let Some(pool) = storage::find_pool(conn)? else { return Ok(0) };
    let volume = storage::disk_volume(&owner.home, name);
    let Some(vol) = storage::find_volume(&pool, &volume)? else { return Ok(0) };
    Ok(vol.info().map_err(lv(Action::InspectVm, &volume))?.allocation)
}

/// Sets the guest's clock through the QEMU guest agent; `Ok(false)` when the domain
/// has no agent connected (libvirt answers at once: the channel is disconnected).
pub fn set_time(
    conn: &Connect,
    name: &str,
    owner: &Owner,
    now: SystemTime,
) -> Result<bool, DriverError> {
    let dom = ours(conn, name, owner)?;
    let since = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    let nanos = i32::try_from(since.subsec_nanos()).unwrap_or(0);
    match dom.set_time(secs, nanos, 0) {
        Ok(()) => Ok(true),
        Err(e) => {
            tracing::debug!(vm = name, error = %e, "no guest agent to set the clock");
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_read_from_the_snapshot_state() {
        let xml = |state| {
            format!(
                "<domainsnapshot><name>x</name><state>{state}</state><domain><state>shutoff</state></domain></domainsnapshot>"
            )
        };
        assert!(has_memory(&xml("running")));
        assert!(has_memory(&xml("paused")));
        assert!(!has_memory(&xml("shutoff")));
        assert!(!has_memory("not xml"));
    }
}
