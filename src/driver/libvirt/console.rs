//! The serial console log of a domain on a remote hypervisor (issue 15). The profile's
//! file ([`VmSpec::serial_log`](crate::driver::VmSpec)) is on this machine, where a
//! remote QEMU cannot write, so a remote domain logs into kubelab's pool directory
//! instead, as `<name>.console.log`: libvirt then lists the file as a volume of the pool,
//! and it is read (over a stream) and deleted through libvirt like any volume. A local
//! domain keeps logging to the profile's file, which `ops` reads itself.
//!
//! Volumes carry no owner, so the log volume is only ever taken to be the one a domain
//! of kubelab's writes: the domain's `<serial><log file>` must be exactly
//! `<pool dir>/<name>.console.log` ([`logs_into`]). Its name has none of the prefixes of
//! the other volumes (`node-`, `base-`, `iso-`), so it is never taken for a node disk
//! or an image.

use std::path::Path;

use virt::connect::Connect;
use virt::domain::Domain;
use virt::storage_vol::StorageVol;

use super::storage;
use super::xml::serial_log_file;
use super::{Action, lv};
use crate::driver::{ConsoleTail, DriverError};

/// The console-log volume of domain `name`.
pub fn volume(name: &str) -> String {
    format!("{name}.console.log")
}

/// Where domain `name` logs its console on a remote hypervisor whose pool directory is
/// `pool_dir`.
pub fn path_in(pool_dir: &str, name: &str) -> String {
    Path::new(pool_dir).join(volume(name)).to_string_lossy().into_owned()
}

/// The console-log path of domain `name`, defined by `domain_xml`, when it is
/// [`path_in`] the pool directory `pool_dir`; `None` when it logs anywhere else (a local
/// domain, into the profile's file).
pub fn logs_into(domain_xml: &str, pool_dir: &str, name: &str) -> Option<String> {
    let file = serial_log_file(domain_xml)?;
    (Path::new(&file) == Path::new(&path_in(pool_dir, name))).then_some(file)
}

/// The console log of `dom` (domain `name`) when it logs into kubelab's pool: its path
/// and its volume, `None` until QEMU has created the file. The pool is refreshed first,
/// since libvirt lists a file its daemons wrote only after a refresh.
fn find(
    conn: &Connect,
    dom: &Domain,
    name: &str,
) -> Result<Option<(String, Option<StorageVol>)>, DriverError> {
    let Some(pool) = storage::find_pool(conn)? else { return Ok(None) };
    let Some(dir) = storage::pool_dir(&pool)? else { return Ok(None) };
    let xml = dom.xml_desc(0).map_err(lv(Action::InspectVm, name))?;
    let Some(path) = logs_into(&xml, &dir, name) else { return Ok(None) };
    storage::refresh(&pool);
    Ok(Some((path, storage::find_volume(&pool, &volume(name))?)))
}

/// The last `max_bytes` of the console log of `dom` (domain `name`) when it logs into
/// kubelab's pool and `check_owner` passes; `None` when it logs into the profile's file.
pub fn tail(
    conn: &Connect,
    dom: &Domain,
    name: &str,
    max_bytes: u64,
    check_owner: impl FnOnce() -> Result<(), DriverError>,
) -> Result<Option<ConsoleTail>, DriverError> {
    let Some((path, vol)) = find(conn, dom, name)? else { return Ok(None) };
    check_owner()?;
    let text = match vol {
        Some(vol) => {
            let (bytes, cut) = storage::read_tail(conn, &vol, &volume(name), max_bytes)?;
            crate::fsutil::tail_text(&bytes, cut)
        }
        None => String::new(),
    };
    Ok(Some(ConsoleTail { path: path.into(), text }))
}

/// Deletes the console-log volume of kubelab's domain `dom` (`name`), if it logs into
/// the pool; called before the domain is undefined, while its definition still proves
/// whose the volume is.
pub fn delete(conn: &Connect, dom: &Domain, name: &str) -> Result<(), DriverError> {
    match find(conn, dom, name)? {
        Some((_, Some(vol))) => vol.delete(0).map_err(lv(Action::DeleteVolume, &volume(name))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(log: &str) -> String {
        format!(
            "<domain><name>lab</name><devices><serial type='pty'>\
             <log file='{log}' append='on'/></serial></devices></domain>"
        )
    }

    #[test]
    fn the_log_volume_is_named_after_its_domain_in_the_pool_directory() {
        assert_eq!(volume("lab-m02"), "lab-m02.console.log");
        assert_eq!(path_in("/var/lib/kubelab", "lab"), "/var/lib/kubelab/lab.console.log");
        assert_eq!(path_in("/var/lib/kubelab/", "lab"), "/var/lib/kubelab/lab.console.log");
    }

    /// Only exactly `<pool dir>/<its own name>.console.log` is a domain's log volume.
    #[test]
    fn only_the_domains_own_log_in_the_pool_is_its_volume() {
        let pool = "/pool";
        assert_eq!(
            logs_into(&domain("/pool/lab.console.log"), pool, "lab").as_deref(),
            Some("/pool/lab.console.log")
        );
        assert_eq!(
            logs_into(&domain("/pool//lab.console.log"), "/pool/", "lab").as_deref(),
            Some("/pool//lab.console.log"),
            "the same path, spelled otherwise"
        );
        for (log, name) in [
            // A local domain logs into the profile's file.
            ("/home/u/.kubelab/profiles/lab/nodes/lab/console.log", "lab"),
            // Another domain's log, or the right name elsewhere.
            ("/pool/lab-m02.console.log", "lab"),
            ("/pool/sub/lab.console.log", "lab"),
            ("/other/lab.console.log", "lab"),
            ("/pool/lab.console.log.1", "lab"),
            // A volume of another kind.
            ("/pool/node-0123456789abcdef-lab.qcow2", "lab"),
        ] {
            assert_eq!(logs_into(&domain(log), pool, name), None, "{log}");
        }
        let no_log = "<domain><name>lab</name><devices><serial type='pty'/></devices></domain>";
        assert_eq!(logs_into(no_log, pool, "lab"), None);
    }
}
