//! Disks as volumes of kubelab's own storage pool, so a remote libvirt works too:
//! base images and ISOs are uploaded once (`base-<id>.qcow2`, `iso-<id>.iso`) and shared
//! by every home; each node has a qcow2 overlay or blank data disk
//! (`node-<home>-<name>.qcow2`) and its seed (`node-<home>-<name>-seed.iso`). The
//! prefixes keep the two kinds from ever sharing a name; volumes carry no metadata, so
//! the home id in a node volume's name is its owner marker (two homes' node `lab` have
//! two disks). A shared volume is removed only when nothing uses it ([`user_of`]). On a
//! remote hypervisor a domain's console log is a file in the pool's directory too
//! (`<name>.console.log`, see `console`), which libvirt lists once the pool is
//! refreshed.
//! A shared volume is checked before reuse, since an interrupted upload leaves it behind
//! half-written (see [`ensure_uploaded`]).
//! Syntax: <https://libvirt.org/formatstorage.html>.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use virt::connect::Connect;
use virt::error::{Error as VirtError, ErrorNumber};
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;

use super::xml::{escape, pool_target_path, uses_volume};
use super::{is_missing, lv};
use crate::driver::{Action, DriverError};
use crate::home::HomeId;

/// The storage pool kubelab creates and uses for every profile.
pub const POOL: &str = "kubelab";
/// Upload chunk size.
const CHUNK: usize = 1 << 20;
const GIB: u64 = 1 << 30;
/// The block size of the completeness check: the local file's last block holding data
/// is read back from the volume.
const MARK: u64 = 64 << 10;

/// The boot disk (overlay or blank data disk) of node `node` of home `home`.
pub fn disk_volume(home: &HomeId, node: &str) -> String {
    format!("node-{home}-{node}.qcow2")
}

/// The cloud-init seed of node `node` of home `home`.
pub fn seed_volume(home: &HomeId, node: &str) -> String {
    format!("node-{home}-{node}-seed.iso")
}

/// The node of `owner`'s profile whose disk or seed volume is named `volume`, if it is
/// one: the home id must be `owner`'s and the node a node name of its profile.
pub fn node_of_volume(volume: &str, owner: &crate::driver::Owner) -> Option<String> {
    let rest = volume.strip_prefix(&format!("node-{}-", owner.home))?;
    let node = rest.strip_suffix("-seed.iso").or_else(|| rest.strip_suffix(".qcow2"))?;
    let found =
        crate::driver::Owner::from_parts(&owner.home.to_string(), &owner.profile, Some(node));
    found.is_ok().then(|| node.to_owned())
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

/// kubelab's pool, if it exists (nothing is created).
pub fn find_pool(conn: &Connect) -> Result<Option<StoragePool>, DriverError> {
    match conn.lookup_storage_pool_by_name(POOL) {
        Ok(pool) => Ok(Some(pool)),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(lv(Action::PreparePool, POOL)(e)),
    }
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

/// The volume `name` holding the local file `src`: reused when an earlier upload
/// completed, else (missing, or left half-written by an interrupted run) uploaded afresh.
///
/// libvirt cannot rename a volume, and a half-written one already has its full size
/// (libvirt sizes the file up front), so completeness is read from the content: an
/// upload writes in order, so when the file's last bytes that are not zero are in the
/// volume, everything before them is too (and what follows is zeros either way). One
/// small read-back per reuse, no copy.
pub fn ensure_uploaded(
    conn: &Connect,
    pool: &StoragePool,
    name: &str,
    src: &Path,
) -> Result<StorageVol, DriverError> {
    let Some(vol) = find_volume(pool, name)? else { return upload(conn, pool, name, src) };
    let read_err = |source| DriverError::ReadFile { path: src.to_owned(), source };
    let mark = File::open(src).and_then(|mut f| last_data(&mut f)).map_err(read_err)?;
    match holds_all(mark, |offset, len| read_volume(conn, &vol, offset, len)) {
        Ok(true) => return Ok(vol),
        Ok(false) => {
            tracing::info!(volume = name, "incomplete (interrupted upload): uploading again")
        }
        // A backend that cannot read volumes back (libvirt's test driver) cannot tell.
        Err(e) if e.code().is_known_and(|c| c == ErrorNumber::NoSupport) => return Ok(vol),
        Err(e) => return Err(lv(Action::VerifyVolume, name)(e)),
    }
    vol.delete(0).map_err(lv(Action::DeleteVolume, name))?;
    upload(conn, pool, name, src)
}

/// The last bytes of `file` that are not all zeros: the offset of their [`MARK`]-aligned
/// block and its bytes up to the last non-zero one; `None` for a file of zeros.
fn last_data(file: &mut (impl Read + Seek)) -> io::Result<Option<(u64, Vec<u8>)>> {
    let mut end = file.seek(SeekFrom::End(0))?;
    while end > 0 {
        let start = (end - 1) / MARK * MARK;
        file.seek(SeekFrom::Start(start))?;
        let mut block = vec![0; usize::try_from(end - start).unwrap_or(0)];
        file.read_exact(&mut block)?;
        if let Some(last) = block.iter().rposition(|&b| b != 0) {
            block.truncate(last + 1);
            return Ok(Some((start, block)));
        }
        end = start;
    }
    Ok(None)
}

/// Whether a volume holds all of a file whose [`last_data`] is `mark`, reading the
/// volume's bytes at an offset with `read_at`.
fn holds_all<E>(
    mark: Option<(u64, Vec<u8>)>,
    read_at: impl FnOnce(u64, usize) -> Result<Vec<u8>, E>,
) -> Result<bool, E> {
    match mark {
        Some((offset, bytes)) => Ok(read_at(offset, bytes.len())? == bytes),
        None => Ok(true),
    }
}

/// Up to `len` bytes of the volume from `offset` (fewer if it ends first).
fn read_volume(
    conn: &Connect,
    vol: &StorageVol,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>, VirtError> {
    let stream = Stream::new(conn, 0)?;
    vol.download(&stream, offset, len as u64, 0)?;
    let mut out = Vec::with_capacity(len);
    let mut buf = vec![0u8; len.clamp(1, CHUNK)];
    loop {
        match stream.recv(&mut buf) {
            Ok(n) if n > 0 => out.extend_from_slice(&buf[..n.unsigned_abs()]),
            Ok(_) => break,
            Err(e) => {
                let _ = stream.abort();
                return Err(e);
            }
        }
    }
    stream.finish()?;
    Ok(out)
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

/// What still uses the shared volume `vol` of `pool`: the name of the first other
/// volume whose backing store it is or domain with it as a disk (any home's, any pool's
/// volume, any domain, kubelab's or not), `None` if nothing does.
pub fn user_of(
    conn: &Connect,
    pool: &StoragePool,
    vol: &StorageVol,
    name: &str,
) -> Result<Option<String>, DriverError> {
    let fail = lv(Action::DeleteVolume, name);
    let path = vol.path().map_err(&fail)?;
    let pool_name = pool.name().map_err(&fail)?;
    let pools = conn.list_all_storage_pools(0).map_err(&fail)?;
    for other_pool in pools.iter().filter(|p| p.is_active().unwrap_or(false)) {
        for other in other_pool.list_all_volumes(0).map_err(&fail)? {
            let other_name = other.name().map_err(&fail)?;
            let xml = other.xml_desc(0).map_err(&fail)?;
            if other.path().map_err(&fail)? != path && uses_volume(&xml, &pool_name, name, &path) {
                return Ok(Some(format!("volume {other_name}")));
            }
        }
    }
    for (dom, xml) in super::domain::all_domains(conn)? {
        if uses_volume(&xml, &pool_name, name, &path) {
            return Ok(Some(format!("VM {dom}")));
        }
    }
    Ok(None)
}

/// Deletes the shared volume `name` unless something uses it ([`user_of`]); Ok if it
/// does not exist.
pub fn delete_unused(conn: &Connect, pool: &StoragePool, name: &str) -> Result<(), DriverError> {
    let Some(vol) = find_volume(pool, name)? else { return Ok(()) };
    if let Some(user) = user_of(conn, pool, &vol, name)? {
        tracing::info!(volume = name, user, "kept: still in use");
        return Ok(());
    }
    vol.delete(0).map_err(lv(Action::DeleteVolume, name))
}

/// The directory of a directory pool (its `<target><path>`); `None` for a pool without
/// one.
pub fn pool_dir(pool: &StoragePool) -> Result<Option<String>, DriverError> {
    let xml = pool.xml_desc(0).map_err(lv(Action::PreparePool, POOL))?;
    Ok(pool_target_path(&xml))
}

/// Re-reads the pool's directory, so a file a libvirt daemon wrote there (a console log)
/// is listed as a volume. A pool busy with another job (an upload) refuses; the volumes
/// it already lists are then all there is to find.
pub fn refresh(pool: &StoragePool) {
    if let Err(e) = pool.refresh(0) {
        tracing::debug!(pool = POOL, error = %e, "not refreshed");
    }
}

/// The last `max_bytes` of volume `vol` (named `name`), downloaded over a stream, and
/// whether they start after its beginning.
pub fn read_tail(
    conn: &Connect,
    vol: &StorageVol,
    name: &str,
    max_bytes: u64,
) -> Result<(Vec<u8>, bool), DriverError> {
    let fail = lv(Action::ReadVolume, name);
    let len = vol.info().map_err(&fail)?.capacity;
    if len == 0 {
        // A download of length 0 would mean "to the end", whatever it has grown to.
        return Ok((Vec::new(), false));
    }
    let start = len.saturating_sub(max_bytes);
    let bytes = read_volume(conn, vol, start, usize::try_from(len - start).unwrap_or(usize::MAX))
        .map_err(fail)?;
    Ok((bytes, start > 0))
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

    #[test]
    fn node_volumes_name_their_home_and_node() {
        let owner =
            crate::driver::Owner::new("0123456789abcdef".parse().unwrap(), &"lab".parse().unwrap());
        let home = &owner.home;
        for node in ["lab", "lab-m02"] {
            assert_eq!(node_of_volume(&disk_volume(home, node), &owner).as_deref(), Some(node));
            assert_eq!(node_of_volume(&seed_volume(home, node), &owner).as_deref(), Some(node));
        }
        let other_home = "fedcba9876543210".parse().unwrap();
        for volume in [
            disk_volume(&other_home, "lab"),
            disk_volume(home, "lab2"),
            disk_volume(home, "lab-x"),
            base_volume("lab"),
            "node-0123456789abcdef-lab.raw".to_owned(),
        ] {
            assert_eq!(node_of_volume(&volume, &owner), None, "{volume}");
        }
    }
    use crate::driver::libvirt::xml::assert_golden;

    #[test]
    fn volume_names_have_kind_prefixes_and_the_home() {
        let home: HomeId = "0123456789abcdef".parse().unwrap();
        assert_eq!(disk_volume(&home, "lab-m02"), "node-0123456789abcdef-lab-m02.qcow2");
        assert_eq!(seed_volume(&home, "lab"), "node-0123456789abcdef-lab-seed.iso");
        let other: HomeId = "fedcba9876543210".parse().unwrap();
        assert_ne!(disk_volume(&home, "lab"), disk_volume(&other, "lab"));
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

    /// A volume an upload of `file` left after writing its first `written` bytes.
    fn partial(file: &[u8], written: usize) -> Vec<u8> {
        let mut vol = file[..written].to_vec();
        vol.resize(file.len(), 0);
        vol
    }

    fn check(file: &[u8], vol: &[u8]) -> bool {
        let mark = last_data(&mut io::Cursor::new(file)).unwrap();
        holds_all(mark, |offset, len| -> Result<_, ()> {
            let start = usize::try_from(offset).unwrap().min(vol.len());
            Ok(vol[start..(start + len).min(vol.len())].to_vec())
        })
        .unwrap()
    }

    #[test]
    fn last_data_skips_trailing_zero_blocks() {
        let mark = usize::try_from(MARK).unwrap();
        assert_eq!(last_data(&mut io::Cursor::new(Vec::new())).unwrap(), None);
        assert_eq!(last_data(&mut io::Cursor::new(vec![0u8; 3 * mark])).unwrap(), None);
        let mut file = vec![0u8; 3 * mark + 10];
        file[mark + 5] = 7;
        file[mark + 9] = 9;
        let (offset, bytes) = last_data(&mut io::Cursor::new(&file)).unwrap().unwrap();
        assert_eq!(offset, MARK);
        assert_eq!(bytes.len(), 10);
        assert_eq!(bytes[9], 9);
    }

    #[test]
    fn only_a_complete_upload_is_reused() {
        let mark = usize::try_from(MARK).unwrap();
        // Data, then zero padding over more than a block, as at the end of an ISO.
        let mut file: Vec<u8> = (0..5 * mark).map(|i| (i % 251) as u8 | 1).collect();
        file.resize(7 * mark + 100, 0);
        assert!(check(&file, &file));
        for written in [0, 1, mark, 5 * mark - 1] {
            assert!(!check(&file, &partial(&file, written)), "{written} bytes written");
        }
        // Once the last non-zero byte is written, the rest is zeros in both.
        assert!(check(&file, &partial(&file, 5 * mark)));
        // A volume cut short (or of another file) is not reused either.
        assert!(!check(&file, &file[..4 * mark]));
        let mut other = file.clone();
        other[5 * mark - 1] ^= 0xff;
        assert!(!check(&file, &other));
        assert!(check(&vec![0u8; mark], &[]), "a file of zeros needs no bytes");
    }

    #[test]
    fn pool_and_raw_volume_xml() {
        assert_golden("pool.xml", &pool_xml(POOL, "/var/lib/libvirt/images/kubelab"));
        let raw = volume_xml("node-lab-seed.iso", 4096, "raw", None);
        assert!(raw.contains("<format type='raw'/>") && !raw.contains("compat"));
    }
}
