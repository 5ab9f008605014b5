//! Disks as volumes of kubelab's own storage pool, so a remote libvirt works too:
//! base images and ISOs are uploaded once (`base-<id>.qcow2`, `iso-<id>.iso`) and shared;
//! each node has a qcow2 overlay or blank data disk (`node-<name>.qcow2`) and its seed
//! (`node-<name>-seed.iso`). The prefixes keep the two kinds from ever sharing a name.
//! Syntax: <https://libvirt.org/formatstorage.html>.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use virt::connect::Connect;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;

use super::xml::escape;
use super::{is_missing, lv};
use crate::driver::{Action, DriverError};

/// The storage pool kubelab creates and uses for every profile.
pub const POOL: &str = "kubelab";
/// Upload chunk size.
const CHUNK: usize = 1 << 20;
const GIB: u64 = 1 << 30;

/// The node's boot disk (overlay or blank data disk).
pub fn disk_volume(node: &str) -> String {
    format!("node-{node}.qcow2")
}

/// The node's cloud-init seed.
pub fn seed_volume(node: &str) -> String {
    format!("node-{node}-seed.iso")
}

/// A shared base disk image.
pub fn base_volume(id: &str) -> String {
    format!("base-{id}.qcow2")
}

/// A shared boot ISO.
pub fn iso_volume(id: &str) -> String {
    format!("iso-{id}.iso")
}

/// A directory pool at `path`.
pub fn pool_xml(name: &str, path: &str) -> String {
    format!(
        "<pool type='dir'>\n  <name>{}</name>\n  <target>\n    <path>{}</path>\n  </target>\n</pool>\n",
        escape(name),
        escape(path)
    )
}

/// A volume of `capacity` bytes in `format`; with `backing` (path, format), a
/// copy-on-write overlay. `compat` 1.1 (qcow2 v3) is what current QEMU and lazy
/// refcounts need; libvirt would otherwise pick 0.10 on some versions.
pub fn volume_xml(
    name: &str,
    capacity: u64,
    format: &str,
    backing: Option<(&str, &str)>,
) -> String {
    let compat = if format == "qcow2" { "    <compat>1.1</compat>\n" } else { "" };
    let backing = backing.map_or(String::new(), |(path, fmt)| {
        format!(
            "  <backingStore>\n    <path>{}</path>\n    <format type='{fmt}'/>\n  </backingStore>\n",
            escape(path)
        )
    });
    format!(
        "<volume>\n  <name>{}</name>\n  <capacity unit='bytes'>{capacity}</capacity>\n  \
         <allocation unit='bytes'>0</allocation>\n  <target>\n    <format type='{format}'/>\n{compat}  \
         </target>\n{backing}</volume>\n",
        escape(name)
    )
}

/// The pool, defined (directory `path`, built, autostarted) and started as needed.
/// Tolerates another process (or thread) doing the same at the same time.
pub fn ensure_pool(conn: &Connect, path: &str) -> Result<StoragePool, DriverError> {
    let fail = lv(Action::PreparePool, POOL);
    let pool = match conn.lookup_storage_pool_by_name(POOL) {
        Ok(pool) => pool,
        Err(e) if is_missing(&e) => match conn.define_storage_pool_xml(&pool_xml(POOL, path), 0) {
            Ok(pool) => {
                pool.build(0).map_err(&fail)?;
                pool.set_autostart(true).map_err(&fail)?;
                pool
            }
            Err(e) => conn.lookup_storage_pool_by_name(POOL).map_err(|_| fail(e))?,
        },
        Err(e) => return Err(fail(e)),
    };
    if !pool.is_active().map_err(&fail)?
        && let Err(e) = pool.create(0)
        && !pool.is_active().map_err(&fail)?
    {
        return Err(fail(e));
    }
    Ok(pool)
}

/// The volume `name`, or `None` if it does not exist.
pub fn find_volume(pool: &StoragePool, name: &str) -> Result<Option<StorageVol>, DriverError> {
    match pool.lookup_storage_vol_by_name(name) {
        Ok(vol) => Ok(Some(vol)),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(lv(Action::CreateVolume, name)(e)),
    }
}

/// Creates volume `name` from the local file `src` (raw bytes, uploaded over a libvirt
/// stream); a failed upload removes the volume so the next run starts over.
pub fn upload(
    conn: &Connect,
    pool: &StoragePool,
    name: &str,
    src: &Path,
) -> Result<StorageVol, DriverError> {
    let read_err = |source| DriverError::ReadFile { path: src.to_owned(), source };
    let mut file = File::open(src).map_err(read_err)?;
    let len = file.metadata().map_err(read_err)?.len();
    let vol = StorageVol::create_xml(pool, &volume_xml(name, len, "raw", None), 0)
        .map_err(lv(Action::CreateVolume, name))?;
    let result = send(conn, &vol, &mut file, len, name, src);
    if result.is_err() {
        let _ = vol.delete(0);
    }
    result.map(|()| vol)
}

fn send(
    conn: &Connect,
    vol: &StorageVol,
    file: &mut File,
    len: u64,
    name: &str,
    src: &Path,
) -> Result<(), DriverError> {
    let fail = lv(Action::UploadVolume, name);
    let stream = Stream::new(conn, 0).map_err(&fail)?;
    vol.upload(&stream, 0, len, 0).map_err(&fail)?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(source) => {
                let _ = stream.abort();
                return Err(DriverError::ReadFile { path: src.to_owned(), source });
            }
        };
        let mut sent = 0;
        while sent < n {
            match stream.send(&buf[sent..n]) {
                Ok(k) if k > 0 => sent += k as usize,
                Ok(_) => continue,
                Err(e) => {
                    let _ = stream.abort();
                    return Err(fail(e));
                }
            }
        }
    }
    stream.finish().map_err(fail)
}

/// Creates the node's disk `name` of `size_gib`: a qcow2 overlay over `base` when given,
/// else a blank qcow2.
pub fn create_disk(
    pool: &StoragePool,
    name: &str,
    size_gib: u64,
    base: Option<&StorageVol>,
) -> Result<StorageVol, DriverError> {
    let fail = lv(Action::CreateVolume, name);
    let base_path = base.map(StorageVol::path).transpose().map_err(&fail)?;
    let backing = base_path.as_deref().map(|p| (p, "qcow2"));
    StorageVol::create_xml(pool, &volume_xml(name, size_gib * GIB, "qcow2", backing), 0)
        .map_err(fail)
}

/// Deletes volume `name`; Ok if it does not exist.
pub fn delete_volume(pool: &StoragePool, name: &str) -> Result<(), DriverError> {
    match pool.lookup_storage_vol_by_name(name) {
        Ok(vol) => vol.delete(0).map_err(lv(Action::DeleteVolume, name)),
        Err(e) if is_missing(&e) => Ok(()),
        Err(e) => Err(lv(Action::DeleteVolume, name)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::libvirt::xml::assert_golden;

    #[test]
    fn volume_names_have_kind_prefixes() {
        assert_eq!(disk_volume("lab-m02"), "node-lab-m02.qcow2");
        assert_eq!(seed_volume("lab"), "node-lab-seed.iso");
        assert_eq!(base_volume("ab12"), "base-ab12.qcow2");
        assert_eq!(iso_volume("cd34"), "iso-cd34.iso");
    }

    #[test]
    fn overlay_volume_matches_golden() {
        let xml = volume_xml(
            "node-lab.qcow2",
            20 * GIB,
            "qcow2",
            Some(("/pool/base-ab12.qcow2", "qcow2")),
        );
        assert_golden("volume-overlay.xml", &xml);
    }

    #[test]
    fn pool_and_raw_volume_xml() {
        assert_golden("pool.xml", &pool_xml(POOL, "/var/lib/libvirt/images/kubelab"));
        let raw = volume_xml("node-lab-seed.iso", 4096, "raw", None);
        assert!(raw.contains("<format type='raw'/>") && !raw.contains("compat"));
    }
}
