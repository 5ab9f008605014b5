//! The kvm2 backend: libvirt through the `virt` crate, one connection per driver.
//! Everything goes through libvirt's API (storage volumes, streams), so a remote URI
//! (`qemu+ssh://host/system`) works as well as a local one. libvirt errors are mapped
//! to typed [`DriverError`]s here, where their codes are known.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Mutex, Once};
use std::time::Duration;

use virt::connect::Connect;
use virt::error::{Error as VirtError, ErrorNumber};

use super::host::{self, decide_accel, probe_local};
use super::{AccelPolicy, Action, ConsoleTail, DiskFormat, Driver, DriverError, DriverKind};
use super::{HostReport, NetworkSpec, Owned, Owner, StopMode, VmSpec, VmState};
use crate::net::Ipv4Cidr;

mod console;
mod domain;
mod domain_xml;
mod export;
mod network;
mod snapshot;
mod storage;
mod xml;

pub use domain_xml::domain_xml;
pub use network::network_xml;
pub use storage::{POOL, base_volume, disk_volume, iso_volume, seed_volume};

/// The URI used when neither `--libvirt-uri` nor `LIBVIRT_DEFAULT_URI` is set.
pub const DEFAULT_URI: &str = "qemu:///system";
/// libvirt's own environment variable for the default URI.
pub const URI_ENV: &str = "LIBVIRT_DEFAULT_URI";
/// How long a graceful stop waits for the guest's ACPI shutdown before powering off.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// The connection URI: `flag` (`--libvirt-uri`), else `LIBVIRT_DEFAULT_URI`, else
/// [`DEFAULT_URI`]. Always explicit, so libvirt never guesses (it would try the session
/// daemon for non-root users).
pub fn resolve_uri(flag: Option<&str>) -> String {
    flag.map(str::to_owned)
        .or_else(|| std::env::var(URI_ENV).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| DEFAULT_URI.to_owned())
}

/// Where the `kubelab` pool keeps volumes: under the user's data directory for a
/// session daemon, else `/var/lib/libvirt/images/kubelab`, which QEMU (running as
/// `libvirt-qemu`) can read, unlike a 0700 home directory.
pub fn default_pool_path(uri: &str) -> String {
    match std::env::var("HOME") {
        Ok(home) if uri.contains("/session") => {
            format!("{home}/.local/share/libvirt/images/kubelab")
        }
        _ => "/var/lib/libvirt/images/kubelab".to_owned(),
    }
}

/// The libvirt backend.
pub struct LibvirtDriver {
    conn: Connect,
    uri: String,
    pool_path: String,
    stop_timeout: Duration,
    uploads: Mutex<()>,
}

/// How long opening a connection may take (a local daemon answers in milliseconds; a
/// remote one over SSH in seconds).
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Seconds between keepalive pings to libvirtd.
const KEEPALIVE_INTERVAL_SECS: i32 = 5;
/// Unanswered pings after which the connection is closed: a call to a daemon that
/// stopped answering fails after about 20 s.
const KEEPALIVE_COUNT: u32 = 3;

impl std::fmt::Debug for LibvirtDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibvirtDriver")
            .field("uri", &self.uri)
            .field("pool_path", &self.pool_path)
            .finish()
    }
}

impl LibvirtDriver {
    /// Connects to `uri`; an unreachable daemon or missing permission are their own
    /// errors, with hints.
    pub fn connect(uri: &str) -> Result<Self, DriverError> {
        static QUIET: Once = Once::new();
        QUIET.call_once(|| {
            // libvirt's default handler prints every error to stderr, even handled ones.
            virt::error::clear_error_callback();
            // Keepalive needs an event loop; it runs for the process's lifetime.
            if virt::event::event_register_default_impl().is_ok() {
                let _ = std::thread::Builder::new()
                    .name("libvirt-events".into())
                    .spawn(|| while virt::event::event_run_default_impl().is_ok() {});
            }
        });
        let conn = open_within(uri, OPEN_TIMEOUT)?;
        // The deadline on every call and upload stream: a daemon that stops answering
        // (stopped, hung, its host gone) closes the connection after KEEPALIVE_COUNT
        // unanswered pings, and the call waiting on it fails instead of waiting forever.
        // Drivers without keepalive (test:///) refuse it: nothing to wait on there.
        if let Err(e) = conn.set_keep_alive(KEEPALIVE_INTERVAL_SECS, KEEPALIVE_COUNT) {
            tracing::debug!(uri, error = %e, "no libvirt keepalive");
        }
        Ok(Self {
            conn,
            uri: uri.to_owned(),
            pool_path: default_pool_path(uri),
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            uploads: Mutex::new(()),
        })
    }

    /// Sets how long a graceful stop waits before powering off.
    pub fn with_stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Sets the directory of the `kubelab` pool when kubelab creates it.
    pub fn with_pool_path(mut self, path: impl Into<String>) -> Self {
        self.pool_path = path.into();
        self
    }

    /// The connection URI.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The libvirt library version, e.g. `libvirt 10.0.0` (for `kubelab doctor`).
    pub fn version(&self) -> Result<String, DriverError> {
        let v = self.conn.lib_version().map_err(lv(Action::ReadCapabilities, &self.uri))?;
        Ok(format!("libvirt {}.{}.{}", v / 1_000_000, v / 1000 % 1000, v % 1000))
    }

    /// KVM or TCG, from the hypervisor's capabilities and the local probe: the part of
    /// [`Driver::check_host`] that does not need `qemu-img`.
    pub fn accel(&self, policy: AccelPolicy) -> Result<HostReport, DriverError> {
        let caps = self.conn.capabilities().map_err(lv(Action::ReadCapabilities, &self.uri))?;
        decide_accel(&probe_local(is_local(&self.uri), offers_kvm(&caps))?, policy)
    }
}

/// Whether the hypervisor of `uri` runs on this machine (no host in the URI).
pub fn is_local(uri: &str) -> bool {
    url::Url::parse(uri)
        .map_or(true, |u| u.host_str().is_none_or(|h| h.is_empty() || h == "localhost"))
}

/// Whether the daemon of `uri` starts this host's dnsmasq for its networks: a local
/// QEMU daemon does; a remote one uses its own host's, and the test driver none.
pub fn uses_host_dnsmasq(uri: &str) -> bool {
    uri.starts_with("qemu") && is_local(uri)
}

impl Driver for LibvirtDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Kvm2
    }

    fn location(&self) -> Option<String> {
        Some(self.uri.clone())
    }

    fn check_host(&self, policy: AccelPolicy) -> Result<HostReport, DriverError> {
        // The daemon's host runs qemu-img for the overlays: a remote one's is checked
        // there, over SSH (`ops::remote::check_host`).
        if is_local(&self.uri) {
            host::check_qemu_img()?;
        }
        if uses_host_dnsmasq(&self.uri) {
            host::check_dnsmasq()?;
        }
        self.accel(policy)
    }

    fn disk_format(&self) -> DiskFormat {
        DiskFormat::Qcow2
    }

    fn used_subnets(&self) -> Result<Vec<Ipv4Cidr>, DriverError> {
        Ok(network::all_subnets(&self.conn)?.into_iter().flat_map(|(_, s)| s).collect())
    }

    fn check_network(&self, net: &NetworkSpec) -> Result<(), DriverError> {
        network::check(&self.conn, &net.name, &net.owner)
    }

    fn ensure_network(&self, net: &NetworkSpec) -> Result<(), DriverError> {
        network::ensure(&self.conn, net)
    }

    fn delete_network(&self, name: &str, owner: &Owner) -> Result<(), DriverError> {
        network::delete(&self.conn, name, owner)
    }

    fn check_vm(&self, name: &str, owner: &Owner) -> Result<(), DriverError> {
        domain::check(&self.conn, name, owner)
    }

    fn create(&self, vm: &VmSpec) -> Result<(), DriverError> {
        domain::create(&self.conn, &self.pool_path, !is_local(&self.uri), &self.uploads, vm)
    }

    fn start(&self, name: &str, owner: &Owner) -> Result<(), DriverError> {
        domain::start(&self.conn, name, owner)
    }

    fn stop(&self, name: &str, owner: &Owner, mode: StopMode) -> Result<(), DriverError> {
        domain::stop(&self.conn, name, owner, mode, self.stop_timeout)
    }

    fn delete(&self, name: &str, owner: &Owner) -> Result<(), DriverError> {
        domain::delete(&self.conn, name, owner)
    }

    fn owned(&self, owner: &Owner) -> Result<Owned, DriverError> {
        Ok(Owned {
            vms: domain::owned(&self.conn, owner)?,
            networks: network::owned(&self.conn, owner)?,
        })
    }

    fn delete_image(&self, image_id: &str) -> Result<(), DriverError> {
        domain::delete_image(&self.conn, image_id)
    }

    fn state(&self, name: &str) -> Result<VmState, DriverError> {
        domain::state(&self.conn, name)
    }

    fn ip(&self, name: &str) -> Result<Option<IpAddr>, DriverError> {
        domain::ip(&self.conn, name)
    }

    fn ssh_address(&self, _name: &str, host_only_ip: Ipv4Addr) -> Result<SocketAddr, DriverError> {
        // The host reaches the guest's sshd directly on the host-only network.
        Ok(SocketAddr::new(host_only_ip.into(), 22))
    }

    fn log_tail(&self, _name: &str, _max_bytes: u64) -> Option<String> {
        // QEMU's own log is libvirtd's (root-only on the system daemon); the serial
        // console log, which says why a guest died, is `console_tail`'s.
        None
    }

    fn console_tail(
        &self,
        name: &str,
        owner: &Owner,
        max_bytes: u64,
    ) -> Result<Option<ConsoleTail>, DriverError> {
        domain::console_tail(&self.conn, name, owner, max_bytes)
    }

    fn pause(&self, name: &str, owner: &Owner) -> Result<(), DriverError> {
        snapshot::pause(&self.conn, name, owner)
    }

    fn resume(&self, name: &str, owner: &Owner) -> Result<(), DriverError> {
        snapshot::resume(&self.conn, name, owner)
    }

    fn snapshot_save(&self, name: &str, owner: &Owner, snap: &str) -> Result<(), DriverError> {
        snapshot::save(&self.conn, name, owner, snap)
    }

    fn snapshot_restore(&self, name: &str, owner: &Owner, snap: &str) -> Result<(), DriverError> {
        snapshot::restore(&self.conn, name, owner, snap)
    }

    fn snapshot_delete(&self, name: &str, owner: &Owner, snap: &str) -> Result<(), DriverError> {
        snapshot::delete(&self.conn, name, owner, snap)
    }

    fn snapshots(&self, name: &str, owner: &Owner) -> Result<Vec<String>, DriverError> {
        snapshot::list(&self.conn, name, owner)
    }

    fn disk_usage(&self, name: &str, owner: &Owner) -> Result<u64, DriverError> {
        snapshot::disk_usage(&self.conn, name, owner)
    }

    fn set_guest_time(
        &self,
        name: &str,
        owner: &Owner,
        now: std::time::SystemTime,
    ) -> Result<bool, DriverError> {
        snapshot::set_time(&self.conn, name, owner, now)
    }

    fn export_disk(&self, name: &str, owner: &Owner, dest: &Path) -> Result<(), DriverError> {
        export::export_disk(&self.conn, name, owner, dest)
    }
}

/// Whether host capabilities list KVM guests (`<domain type='kvm'/>` under a guest).
fn offers_kvm(caps_xml: &str) -> bool {
    caps_xml.contains("<domain type='kvm'")
}

/// Opens `uri`, waiting at most `timeout`: `virConnectOpen` itself has no deadline, and
/// a daemon that accepts the socket but never answers (stopped, hung) would block it
/// forever. On timeout the opening thread is left blocked; the command ends with the
/// error.
fn open_within(uri: &str, timeout: Duration) -> Result<Connect, DriverError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let owned = uri.to_owned();
    std::thread::Builder::new()
        .name("libvirt-open".into())
        .spawn(move || {
            let _ = tx.send(Connect::open(Some(&owned)));
        })
        .map_err(|e| DriverError::Connect { uri: uri.to_owned(), source: e.into() })?;
    match rx.recv_timeout(timeout) {
        Ok(opened) => opened.map_err(|e| connect_error(uri, e)),
        Err(_) => Err(DriverError::NoAnswer {
            doing: format!("connect to {uri}"),
            waited_secs: timeout.as_secs(),
        }),
    }
}

/// Sorts a failed `virConnectOpen` by what the user must do.
fn connect_error(uri: &str, err: VirtError) -> DriverError {
    let uri = uri.to_owned();
    let message = err.message();
    if err
        .code()
        .is_known_and(|c| matches!(c, ErrorNumber::AuthFailed | ErrorNumber::AuthCancelled))
        || message.contains("Permission denied")
    {
        DriverError::PermissionDenied { uri, source: err.into() }
    } else if message.contains("No such file or directory")
        || message.contains("Connection refused")
    {
        DriverError::Unreachable { uri, source: err.into() }
    } else {
        DriverError::Connect { uri, source: err.into() }
    }
}

/// Whether the error says the object does not exist.
fn is_missing(err: &VirtError) -> bool {
    err.code().is_known_and(|c| {
        matches!(
            c,
            ErrorNumber::NoDomain
                | ErrorNumber::NoNetwork
                | ErrorNumber::NoStoragePool
                | ErrorNumber::NoStorageVolume
        )
    })
}

/// Maps a libvirt error of `action` on `object` to [`DriverError::Backend`], or to
/// [`DriverError::NoAnswer`] when the keepalive closed a silent daemon's connection.
fn lv(action: Action, object: &str) -> impl Fn(VirtError) -> DriverError + '_ {
    move |e| {
        if e.message().contains("keepalive timeout") {
            let waited_secs = u64::from(KEEPALIVE_COUNT + 1) * KEEPALIVE_INTERVAL_SECS as u64;
            return DriverError::NoAnswer { doing: format!("{action} {object}"), waited_secs };
        }
        DriverError::Backend { action, object: object.to_owned(), source: e.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_prefers_flag_then_env_then_default() {
        assert_eq!(resolve_uri(Some("test:///default")), "test:///default");
        // The env var is only read, never set, here: other tests run in parallel.
        let expected =
            std::env::var(URI_ENV).ok().filter(|v| !v.is_empty()).unwrap_or(DEFAULT_URI.into());
        assert_eq!(resolve_uri(None), expected);
    }

    #[test]
    fn only_a_local_qemu_daemon_needs_this_hosts_dnsmasq() {
        for uri in
            ["qemu:///system", "qemu+unix:///system?socket=/run/x", "qemu://localhost/system"]
        {
            assert!(uses_host_dnsmasq(uri), "{uri}");
        }
        for uri in ["test:///default", "qemu+ssh://root@lab/system"] {
            assert!(!uses_host_dnsmasq(uri), "{uri}");
        }
    }

    #[test]
    fn pool_path_depends_on_daemon_kind() {
        assert_eq!(default_pool_path("qemu:///system"), "/var/lib/libvirt/images/kubelab");
        assert_eq!(default_pool_path("qemu+ssh://h/system"), "/var/lib/libvirt/images/kubelab");
        if let Ok(home) = std::env::var("HOME") {
            assert_eq!(
                default_pool_path("qemu:///session"),
                format!("{home}/.local/share/libvirt/images/kubelab")
            );
        }
    }

    #[test]
    fn a_daemon_that_never_answers_fails_the_open_at_its_deadline() {
        // A socket that accepts and then says nothing, like a stopped libvirtd.
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("libvirt-sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let uri = format!("qemu+unix:///system?socket={}", socket.display());
        let start = std::time::Instant::now();
        let err = open_within(&uri, Duration::from_millis(500)).unwrap_err();
        assert!(matches!(err, DriverError::NoAnswer { waited_secs: 0, .. }), "{err:?}");
        assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
        assert!(err.to_string().contains(&format!("connect to {uri}")), "{err}");
        drop(listener);
    }

    #[test]
    fn kvm_offer_is_read_from_capabilities() {
        let caps =
            "<guest><arch name='x86_64'><domain type='qemu'/>\n<domain type='kvm'/></arch></guest>";
        assert!(offers_kvm(caps));
        assert!(!offers_kvm("<guest><arch name='x86_64'><domain type='qemu'/></arch></guest>"));
    }
}
