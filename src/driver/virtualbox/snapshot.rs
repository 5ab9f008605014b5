//! Snapshots of kubelab's VirtualBox VMs (manual: "VBoxManage snapshot", "VBoxManage
//! controlvm"). `ops::snapshot` pauses every node first, so a snapshot of a running
//! cluster holds each VM's saved state (its memory) and one of a stopped cluster its
//! disks only. VirtualBox cannot restore into a running or paused VM, so a restore
//! powers it off first; an online snapshot then leaves the VM `saved`, which
//! [`resume`] starts from its saved state (no boot).
//!
//! kubelab's snapshots are named `kubelab-<name>`, so one the user took by hand is
//! neither listed nor touched; VirtualBox allows duplicate names, so kubelab refuses one
//! itself (a duplicate would make restore and delete pick either).

use std::path::Path;

use super::parse::VmInfo;
use super::{VBoxError, VirtualBoxDriver, drv, vm};
use crate::driver::{Action, DriverError, Owner, StopMode};

/// Prefix of the VirtualBox name of every snapshot kubelab takes.
const PREFIX: &str = "kubelab-";
/// How deep [`tree_bytes`] looks into a Snapshots folder (VirtualBox keeps it flat).
const MAX_DEPTH: u32 = 3;

impl VirtualBoxDriver {
    /// `owner`'s VM `name`, which must exist.
    fn existing(&self, name: &str, owner: &Owner) -> Result<VmInfo, DriverError> {
        self.info_ours(name, owner)?.ok_or_else(|| DriverError::NoSuchVm { name: name.to_owned() })
    }

    /// Whether the VM has a snapshot named `full` (its VirtualBox name).
    fn has_snapshot(&self, name: &str, full: &str) -> Result<bool, DriverError> {
        let names = self.vbox.snapshot_list(name).map_err(drv(Action::InspectVm, name))?;
        Ok(names.iter().any(|n| n == full))
    }
}

/// Pauses the running VM; Ok if it is paused or saved.
pub(super) fn pause(d: &VirtualBoxDriver, name: &str, owner: &Owner) -> Result<(), DriverError> {
    match d.existing(name, owner)?.state.as_str() {
        "paused" | "saved" => Ok(()),
        _ => d.vbox.control_vm(name, "pause").map_err(drv(Action::PauseVm, name)),
    }
}

/// Resumes a paused VM, starts a saved one from its saved state; Ok otherwise.
pub(super) fn resume(d: &VirtualBoxDriver, name: &str, owner: &Owner) -> Result<(), DriverError> {
    let fail = drv(Action::PauseVm, name);
    match d.existing(name, owner)?.state.as_str() {
        "paused" => d.vbox.control_vm(name, "resume").map_err(fail),
        "saved" => d.vbox.start_vm(name).map_err(fail),
        _ => Ok(()),
    }
}

/// Takes `kubelab-<snapshot>`; fails if the VM has one of that name.
pub(super) fn save(
    d: &VirtualBoxDriver,
    name: &str,
    owner: &Owner,
    snapshot: &str,
) -> Result<(), DriverError> {
    d.existing(name, owner)?;
    let full = format!("{PREFIX}{snapshot}");
    let fail = drv(Action::SaveSnapshot, name);
    if d.has_snapshot(name, &full)? {
        return Err(fail(VBoxError::SnapshotExists { snapshot: full }));
    }
    d.vbox.snapshot_take(name, &full, "taken by kubelab").map_err(fail)
}

/// Returns the VM to `kubelab-<snapshot>`, powering it off first: it is then `saved`
/// (online snapshot) or powered off (disks only).
pub(super) fn restore(
    d: &VirtualBoxDriver,
    name: &str,
    owner: &Owner,
    snapshot: &str,
) -> Result<(), DriverError> {
    let info = d.existing(name, owner)?;
    let full = format!("{PREFIX}{snapshot}");
    if !d.has_snapshot(name, &full)? {
        return Err(DriverError::NoSuchSnapshot {
            name: name.to_owned(),
            snapshot: snapshot.to_owned(),
        });
    }
    d.power_off(name, &info, StopMode::Force)?;
    d.vbox.snapshot_restore(name, &full).map_err(drv(Action::RestoreSnapshot, name))
}

/// Deletes `kubelab-<snapshot>`; Ok if the VM or the snapshot is missing.
pub(super) fn delete(
    d: &VirtualBoxDriver,
    name: &str,
    owner: &Owner,
    snapshot: &str,
) -> Result<(), DriverError> {
    if d.info_ours(name, owner)?.is_none() {
        return Ok(());
    }
    let full = format!("{PREFIX}{snapshot}");
    if !d.has_snapshot(name, &full)? {
        return Ok(());
    }
    d.vbox.snapshot_delete(name, &full).map_err(drv(Action::DeleteSnapshot, name))
}

/// The names (without the prefix, sorted) of kubelab's snapshots of the VM.
pub(super) fn list(
    d: &VirtualBoxDriver,
    name: &str,
    owner: &Owner,
) -> Result<Vec<String>, DriverError> {
    if d.info_ours(name, owner)?.is_none() {
        return Ok(Vec::new());
    }
    let all = d.vbox.snapshot_list(name).map_err(drv(Action::InspectVm, name))?;
    let mut names: Vec<String> =
        all.iter().filter_map(|n| n.strip_prefix(PREFIX)).map(str::to_owned).collect();
    names.sort();
    Ok(names)
}

/// Bytes of the VM's own files that snapshots grow: its disk in the node directory
/// (beside the seed, as `create` put it) and the files of its Snapshots folder
/// (differencing images, saved states). Unreadable files count as 0: the figure is
/// informational.
pub(super) fn disk_usage(
    d: &VirtualBoxDriver,
    name: &str,
    owner: &Owner,
) -> Result<u64, DriverError> {
    let Some(info) = d.info_ours(name, owner)? else { return Ok(0) };
    let seed = info.media.get(&format!("{}-{}-0", vm::CONTROLLER, vm::SEED_PORT));
    let disk = seed
        .and_then(|s| Path::new(s).parent().map(|dir| dir.join(vm::DISK_FILE)))
        .and_then(|disk| std::fs::symlink_metadata(disk).ok())
        .filter(std::fs::Metadata::is_file)
        .map_or(0, |m| m.len());
    let snapshots = info.snapshot_folder.map_or(0, |dir| tree_bytes(Path::new(&dir), MAX_DEPTH));
    Ok(disk + snapshots)
}

/// Bytes of the regular files under `dir`, at most `depth` folders down; links are
/// neither followed nor counted.
fn tree_bytes(dir: &Path, depth: u32) -> u64 {
    if !std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_file() => entry.metadata().map_or(0, |m| m.len()),
            Ok(t) if t.is_dir() && depth > 0 => tree_bytes(&entry.path(), depth - 1),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn tree_bytes_counts_regular_files_only_and_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("{a}.vdi"), [0u8; 100]).unwrap();
        std::fs::create_dir_all(root.join("1/2/3/4")).unwrap();
        std::fs::write(root.join("1/x.sav"), [0u8; 10]).unwrap();
        std::fs::write(root.join("1/2/3/4/deep"), [0u8; 1000]).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("big"), [0u8; 5000]).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("link-dir")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("big"), root.join("link-file")).unwrap();
        assert_eq!(tree_bytes(root, MAX_DEPTH), 110, "links and too deep files not counted");
        assert_eq!(tree_bytes(&root.join("link-dir"), MAX_DEPTH), 0, "a linked folder");
        assert_eq!(tree_bytes(&root.join("missing"), MAX_DEPTH), 0);
    }
}
