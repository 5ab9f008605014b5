//! `kubelab doctor`: checks this host for what `up` needs, each check with its state,
//! reason id and advice from the catalogue, so a user learns every problem at once
//! instead of one failed `up` at a time (issue 12). Checks only read the host; the one
//! write is a probe file in kubelab's home, removed at once.

use std::path::Path;

use serde::Serialize;

use crate::Error;
use crate::driver::{self, DriverKind};
use crate::home::Home;
use crate::net;
use crate::process::Tool;
use crate::reason::{self, Reason};

/// What to check.
#[derive(Debug, Clone, Default)]
pub struct DoctorOptions {
    /// `--driver`: check only this backend, and let only its failures (and the host's)
    /// fail the command; `None` checks every backend compiled in, and the default
    /// backend (what `up` uses without `--driver`) decides.
    pub driver: Option<DriverKind>,
    /// `--libvirt-uri` for the kvm2 checks.
    pub libvirt_uri: Option<String>,
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckState {
    /// Fine.
    Ok,
    /// `up` works, but slower or with a caveat.
    Warn,
    /// `up` with this driver fails.
    Fail,
}

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `host`, or the driver checked (`kvm2`, `virtualbox`).
    pub scope: &'static str,
    /// What was checked.
    pub name: &'static str,
    /// Its outcome.
    pub state: CheckState,
    /// What was found.
    pub message: String,
    /// The catalogue entry (id, exit code, advice) of a warning or failure.
    pub reason: Option<&'static Reason>,
}

impl Check {
    fn ok(scope: &'static str, name: &'static str, message: impl Into<String>) -> Self {
        Self { scope, name, state: CheckState::Ok, message: message.into(), reason: None }
    }

    fn bad(
        scope: &'static str,
        name: &'static str,
        state: CheckState,
        reason: &'static Reason,
        message: impl Into<String>,
    ) -> Self {
        Self { scope, name, state, message: message.into(), reason: Some(reason) }
    }

    /// A check that failed (or warns) with `err`: its reason and cause chain.
    fn error(scope: &'static str, name: &'static str, state: CheckState, err: Error) -> Self {
        let message = crate::error::chain(&err);
        Self::bad(scope, name, state, reason::reason(&err), message)
    }
}

/// Everything `doctor` found.
#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    /// The driver whose checks decide the outcome (with the host's).
    pub driver: Option<&'static str>,
    /// Every check, host first, then each driver's.
    pub checks: Vec<Check>,
}

impl DoctorReport {
    /// The first failed check of the host or of [`DoctorReport::driver`]: the command
    /// exits with its reason's code.
    pub fn failure(&self) -> Option<&Check> {
        self.checks.iter().find(|c| {
            c.state == CheckState::Fail && (c.scope == "host" || Some(c.scope) == self.driver)
        })
    }
}

/// Runs every check for `opts`.
pub fn doctor(home: &Home, opts: &DoctorOptions) -> DoctorReport {
    let mut checks = vec![check_home(home.root()), check_images(home), check_ssh()];
    let routes = net::read_host_routes();
    let kinds = match opts.driver {
        Some(kind) => vec![kind],
        None => DriverKind::all().to_vec(),
    };
    for kind in kinds {
        match kind {
            #[cfg(all(feature = "libvirt", target_os = "linux"))]
            DriverKind::Kvm2 => kvm2::checks(opts.libvirt_uri.as_deref(), &mut checks),
            #[cfg(feature = "virtualbox")]
            DriverKind::VirtualBox => virtualbox::checks(&mut checks),
        }
        checks.push(check_routes(kind, &routes));
    }
    let driver = opts.driver.or(DriverKind::default_kind().ok()).map(DriverKind::as_str);
    DoctorReport { driver, checks }
}

/// kubelab's home takes files (a probe file is written and removed).
fn check_home(root: &Path) -> Check {
    let probe = root.join(format!(".doctor-{}", std::process::id()));
    let written = std::fs::create_dir_all(root)
        .and_then(|()| std::fs::write(&probe, b""))
        .and_then(|()| std::fs::remove_file(&probe));
    match written {
        Ok(()) => Check::ok("host", "home", format!("{} is writable", root.display())),
        Err(e) => Check::bad(
            "host",
            "home",
            CheckState::Fail,
            &reason::HOST_HOME_IO,
            format!("cannot write in {}: {e}", root.display()),
        ),
    }
}

/// The image cache: what is there already (a cache kubelab cannot read is a warning:
/// `up` would fail on that entry only).
fn check_images(home: &Home) -> Check {
    match crate::image::list(home) {
        Ok(list) => {
            let catalog =
                list.catalog.iter().flat_map(|i| &i.formats).filter(|f| f.cached.is_some());
            let count = catalog.count() + list.other.len();
            Check::ok("host", "image cache", format!("{count} cached image(s)"))
        }
        Err(e) => Check::error("host", "image cache", CheckState::Warn, e.into()),
    }
}

/// The user's `ssh`, which `kubelab ssh` runs (kubelab's own connections need none).
fn check_ssh() -> Check {
    match Tool::new("ssh").run(["-V"]) {
        // OpenSSH prints its version on stderr.
        Ok(out) => Check::ok("host", "ssh client", out.stderr.trim().to_owned()),
        Err(e) => Check::error("host", "ssh client", CheckState::Warn, e.into()),
    }
}

/// The host's routes: kvm2 cannot choose subnets without them; VirtualBox goes on with
/// its own networks (see `driver::taken_subnets`).
fn check_routes(kind: DriverKind, routes: &Result<Vec<net::Ipv4Cidr>, net::NetError>) -> Check {
    let scope = kind.as_str();
    match routes {
        Ok(routes) => Check::ok(scope, "host routes", format!("{} IPv4 routes read", routes.len())),
        Err(e) => {
            let state =
                if driver::routes_optional(kind) { CheckState::Warn } else { CheckState::Fail };
            let message = format!("cannot list the host's routes: {}", crate::error::chain(e));
            Check::bad(scope, "host routes", state, &reason::DRV_ROUTES_UNREADABLE, message)
        }
    }
}

#[cfg(all(feature = "libvirt", target_os = "linux"))]
mod kvm2 {
    //! libvirt reachable and its version, KVM or TCG, `/dev/kvm`, `qemu-img`.

    use super::{Check, CheckState};
    use crate::driver::host::{self, DEV_KVM};
    use crate::driver::libvirt::{self, LibvirtDriver};
    use crate::driver::{Accel, AccelPolicy, DriverError, uri};
    use crate::reason;

    const SCOPE: &str = "kvm2";

    pub(super) fn checks(flag_uri: Option<&str>, checks: &mut Vec<Check>) {
        let uri = libvirt::resolve_uri(flag_uri);
        let connected = uri::check(&uri)
            .map_err(|why| DriverError::RefusedUri { uri: uri.clone(), why })
            .and_then(|()| LibvirtDriver::connect(&uri));
        match connected {
            Ok(driver) => {
                let version = driver.version().unwrap_or_else(|e| e.to_string());
                checks.push(Check::ok(SCOPE, "libvirt", format!("{uri} answers ({version})")));
                accel(&driver, checks);
            }
            Err(e) => checks.push(Check::error(SCOPE, "libvirt", CheckState::Fail, e.into())),
        }
        checks.push(match host::check_qemu_img() {
            Ok(()) => Check::ok(SCOPE, "qemu-img", "found"),
            Err(e) => Check::error(SCOPE, "qemu-img", CheckState::Fail, e.into()),
        });
    }

    /// KVM or the TCG fallback, and whether `/dev/kvm` has the group libvirt expects.
    fn accel(driver: &LibvirtDriver, checks: &mut Vec<Check>) {
        let report = match driver.accel(AccelPolicy::Auto) {
            Ok(report) => report,
            Err(e) => {
                checks.push(Check::error(SCOPE, "acceleration", CheckState::Fail, e.into()));
                return;
            }
        };
        let tcg = report.warnings.iter().find(|w| w.reason == &reason::HOST_KVM_UNAVAILABLE);
        checks.push(match (report.accel, tcg) {
            // libvirt never reports VirtualBox's own hypervisor.
            (Accel::Kvm | Accel::VirtualBox, _) => Check::ok(SCOPE, "acceleration", "KVM"),
            (Accel::Tcg, Some(w)) => {
                Check::bad(SCOPE, "acceleration", CheckState::Warn, w.reason, w.message.clone())
            }
            (Accel::Tcg, None) => Check::ok(SCOPE, "acceleration", "TCG, as KUBELAB_ACCEL says"),
        });
        let group = report.warnings.iter().find(|w| w.reason == &reason::HOST_KVM_DEVICE_GROUP);
        checks.push(match group {
            Some(w) => Check::bad(SCOPE, DEV_KVM, CheckState::Warn, w.reason, w.message.clone()),
            None if std::path::Path::new(DEV_KVM).exists() => {
                Check::ok(SCOPE, DEV_KVM, "present, group kvm")
            }
            None => Check::bad(
                SCOPE,
                DEV_KVM,
                CheckState::Warn,
                &reason::HOST_KVM_UNAVAILABLE,
                format!("{DEV_KVM} does not exist (no KVM module, or virtualization is off)"),
            ),
        });
    }
}

#[cfg(feature = "virtualbox")]
mod virtualbox {
    //! VBoxManage found and its version, host-only networking, networks.conf.

    use super::{Check, CheckState};
    use crate::driver::virtualbox::VirtualBoxDriver;
    use crate::driver::virtualbox::network::{self, NETWORKS_CONF};
    use crate::driver::virtualbox::vboxmanage::VBoxManage;
    use crate::driver::{Action, Driver, DriverError};
    use crate::reason;

    const SCOPE: &str = "virtualbox";

    pub(super) fn checks(checks: &mut Vec<Check>) {
        let vbox = match VBoxManage::open() {
            Ok(vbox) => vbox,
            Err(source) => {
                let err = DriverError::VirtualBox {
                    action: Action::ReadCapabilities,
                    object: "VirtualBox".into(),
                    source: Box::new(source),
                };
                checks.push(Check::error(SCOPE, "VBoxManage", CheckState::Fail, err.into()));
                return;
            }
        };
        checks.push(Check::ok(SCOPE, "VBoxManage", format!("VirtualBox {}", vbox.version())));
        let driver = VirtualBoxDriver::new(vbox);
        checks.push(match driver.used_subnets() {
            Ok(_) => Check::ok(SCOPE, "host-only networking", "VBoxManage lists its networks"),
            Err(e) => Check::error(SCOPE, "host-only networking", CheckState::Fail, e.into()),
        });
        checks.push(match network::host_ranges() {
            Ok(None) => Check::ok(SCOPE, "host-only ranges", "any (Windows has no networks.conf)"),
            Ok(Some(ranges)) if ranges.is_empty() => Check::bad(
                SCOPE,
                "host-only ranges",
                CheckState::Fail,
                &reason::HOST_VBOX_HOSTONLY_RANGE,
                format!("{NETWORKS_CONF} allows no IPv4 range"),
            ),
            Ok(Some(ranges)) => {
                let shown: Vec<String> = ranges.iter().map(ToString::to_string).collect();
                Check::ok(SCOPE, "host-only ranges", shown.join(" "))
            }
            Err(e) => Check::error(SCOPE, "host-only ranges", CheckState::Warn, e.into()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_host_and_the_deciding_driver_fail_the_command() {
        let fail = |scope| Check::bad(scope, "x", CheckState::Fail, &reason::KUBELAB_BUG, "");
        let report = DoctorReport {
            driver: Some("virtualbox"),
            checks: vec![Check::ok("host", "home", ""), fail("kvm2")],
        };
        assert!(report.failure().is_none());
        let report = DoctorReport { checks: vec![fail("kvm2"), fail("virtualbox")], ..report };
        assert_eq!(report.failure().map(|c| c.scope), Some("virtualbox"));
        let report = DoctorReport { driver: None, checks: vec![fail("host")] };
        assert_eq!(report.failure().map(|c| c.scope), Some("host"));
    }

    #[test]
    fn home_that_is_a_file_fails() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let check = check_home(&file);
        assert_eq!(
            (check.state, check.reason.map(|r| r.id)),
            (CheckState::Fail, Some("HOST_HOME_IO"))
        );
        assert_eq!(check_home(dir.path()).state, CheckState::Ok);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "the probe is removed");
    }

    #[cfg(feature = "virtualbox")]
    #[test]
    fn unreadable_routes_warn_for_virtualbox() {
        let err = Err(net::NetError::RoutesUnsupported { os: "plan9" });
        let check = check_routes(DriverKind::VirtualBox, &err);
        assert_eq!(check.state, CheckState::Warn);
        assert_eq!(check.reason.map(|r| r.id), Some("DRV_ROUTES_UNREADABLE"));
        assert!(check.message.contains("plan9"), "{}", check.message);
    }

    #[cfg(all(feature = "libvirt", target_os = "linux"))]
    #[test]
    fn unreadable_routes_fail_kvm2() {
        let err = Err(net::NetError::RoutesUnsupported { os: "plan9" });
        assert_eq!(check_routes(DriverKind::Kvm2, &err).state, CheckState::Fail);
    }
}
