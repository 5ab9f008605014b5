//! `image bake`'s copy of a powered-off node's disk: `VBoxManage clonemedium disk` of the
//! node's differencing VDI writes one standalone VMDK with its parent (the base image)
//! merged in (manual: "VBoxManage clonemedium"), which kubelab's VMs attach like any
//! base image. The clone is registered by VirtualBox as it is made, so it is closed
//! again (`closemedium`, file kept) before kubelab moves it into its cache.

use std::path::Path;

use super::{VirtualBoxDriver, drv, vm};
use crate::driver::{Action, DriverError, Owner, VmState};

/// Writes node `name`'s disk, flattened, to `dest` (which must not exist).
pub(super) fn export_disk(
    d: &VirtualBoxDriver,
    name: &str,
    owner: &Owner,
    dest: &Path,
) -> Result<(), DriverError> {
    let info =
        d.info_ours(name, owner)?.ok_or_else(|| DriverError::NoSuchVm { name: name.to_owned() })?;
    let now = vm::map_state(name, &info.state)?;
    if now != VmState::Stopped {
        return Err(DriverError::NotStopped { name: name.to_owned(), state: format!("{now:?}") });
    }
    let key = format!("{}-{}-0", vm::CONTROLLER, vm::DISK_PORT);
    let disk =
        info.media.get(&key).ok_or_else(|| DriverError::NoSuchVm { name: name.to_owned() })?;
    let dest_text = dest.to_string_lossy();
    d.vbox.clone_medium(disk, &dest_text, "VMDK").map_err(drv(Action::ExportDisk, name))?;
    d.vbox.close_medium("disk", &dest_text, false).map_err(drv(Action::ExportDisk, name))
}
