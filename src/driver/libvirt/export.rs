//! `image bake`'s copy of a stopped node's disk: libvirt clones the node's overlay
//! volume into a new standalone qcow2 volume of the pool (`virStorageVolCreateXMLFrom`
//! runs `qemu-img convert`, which reads through the backing chain, so the base image is
//! merged in), and the clone is downloaded over a libvirt stream, so the same code
//! works for a remote libvirt. The clone is removed afterwards, also on failure.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use virt::connect::Connect;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;

use super::lv;
use super::snapshot::{ours, state};
use super::storage;
use crate::driver::{Action, DriverError, Owner, VmState};

/// Receive buffer of the download.
const CHUNK: usize = 1 << 20;

/// Writes node `name`'s disk, flattened, to `dest` (created; it must not exist).
pub fn export_disk(
    conn: &Connect,
    name: &str,
    owner: &Owner,
    dest: &Path,
) -> Result<(), DriverError> {
    let dom = ours(conn, name, owner)?;
    let now = state(&dom, name)?;
    if now != VmState::Stopped {
        return Err(DriverError::NotStopped { name: name.to_owned(), state: format!("{now:?}") });
    }
    let missing = || DriverError::NoSuchVm { name: name.to_owned() };
    let pool = storage::find_pool(conn)?.ok_or_else(missing)?;
    let volume = storage::disk_volume(&owner.home, name);
    let src = storage::find_volume(&pool, &volume)?.ok_or_else(missing)?;
    let capacity = src.info().map_err(lv(Action::InspectVm, &volume))?.capacity;
    let clone_name = format!("export-{}-{name}.qcow2", owner.home);
    // A clone left by an export that was killed would make the create fail.
    storage::delete_volume(&pool, &clone_name)?;
    let xml = storage::volume_xml(&clone_name, capacity, "qcow2", None);
    let clone =
        StorageVol::create_xml_from(&pool, &xml, &src, 0).map_err(lv(Action::ExportDisk, name))?;
    let result = download(conn, &clone, dest, name);
    let removed = clone.delete(0).map_err(lv(Action::DeleteVolume, &clone_name));
    result.and(removed)
}

fn download(conn: &Connect, vol: &StorageVol, dest: &Path, name: &str) -> Result<(), DriverError> {
    let write_err = |source| DriverError::WriteFile { path: dest.to_owned(), source };
    let mut file = File::create_new(dest).map_err(write_err)?;
    let fail = lv(Action::ExportDisk, name);
    let stream = Stream::new(conn, 0).map_err(&fail)?;
    vol.download(&stream, 0, 0, 0).map_err(&fail)?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        match stream.recv(&mut buf) {
            Ok(n) if n > 0 => {
                if let Err(e) = file.write_all(&buf[..n.unsigned_abs()]) {
                    let _ = stream.abort();
                    return Err(write_err(e));
                }
            }
            Ok(_) => break,
            Err(e) => {
                let _ = stream.abort();
                return Err(fail(e));
            }
        }
    }
    stream.finish().map_err(&fail)?;
    file.sync_all().map_err(write_err)
}
