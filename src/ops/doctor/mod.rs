//! `kubelab doctor`: checks this host for what `up` needs, each check with its state,
//! reason id and advice from the catalogue, so a user learns every problem at once
//! instead of one failed `up` at a time (issue 12). Checks only read the host; the one
//! write is a probe file in kubelab's home, removed at once. [`preflight`] is the cheap
//! part that `up` runs before it creates anything.
//!
//! Each submodule reads its host facts in one place and judges them in pure functions,
//! tested on captured contents.

#[cfg(all(feature = "libvirt", target_os = "linux"))]
mod kvm2;
mod profiles;
mod proxy;
#[cfg(feature = "virtualbox")]
mod virtualbox;

use std::path::Path;

use serde::Serialize;

use crate::Error;
use crate::driver::{self, DriverKind, HostWarning};
use crate::home::{Home, HomeError, Space};
use crate::net::{self, HostRoute, Ipv4Cidr};
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
    let mut checks =
        vec![check_home(home.root()), check_space(home), check_images(home), check_ssh()];
    let routes = net::read_route_table();
    let (found, subnets) = profiles::checks(home, routes.as_deref().ok());
    checks.extend(found);
    checks.push(proxy::check(|name| std::env::var(name).ok(), &proxy_subnets(subnets)));
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

/// The cheap host checks that would make `up` fail, run before it creates anything:
/// the home's free space (an error below one image); its warnings (little space, a
/// proxy that NO_PROXY does not bypass for the clusters) for `up` to print.
pub fn preflight(home: &Home) -> Result<Vec<HostWarning>, Error> {
    let mut warnings = Vec::new();
    if let Space::Low { free_mib } = home.check_space()? {
        warnings.push(HostWarning {
            reason: &reason::HOST_DISK_SPACE,
            message: low_space(home, free_mib),
        });
    }
    let subnets = proxy_subnets(profiles::host_only_subnets(home));
    let proxy = proxy::check(|name| std::env::var(name).ok(), &subnets);
    if let (CheckState::Warn, Some(reason)) = (proxy.state, proxy.reason) {
        warnings.push(HostWarning { reason, message: proxy.message });
    }
    Ok(warnings)
}

/// The subnets NO_PROXY must cover: the saved profiles' host-only subnets, else the
/// range a new profile's comes from.
fn proxy_subnets(saved: Vec<Ipv4Cidr>) -> Vec<Ipv4Cidr> {
    if saved.is_empty() { vec![proxy::new_profile_range()] } else { saved }
}

fn low_space(home: &Home, free_mib: u64) -> String {
    let low_mib = crate::home::space::LOW_FREE_BYTES >> 20;
    format!(
        "only {free_mib} MiB free in the file system of {}: a small cluster needs about {low_mib} MiB",
        home.root().display()
    )
}

/// Free space in the home's file system: a failure below one image, a warning below a
/// small cluster (see `home::space`).
fn check_space(home: &Home) -> Check {
    let name = "disk space";
    match home.check_space() {
        Ok(Space::Enough { free_mib }) => {
            Check::ok("host", name, format!("{free_mib} MiB free in {}", home.root().display()))
        }
        Ok(Space::Low { free_mib }) => Check::bad(
            "host",
            name,
            CheckState::Warn,
            &reason::HOST_DISK_SPACE,
            low_space(home, free_mib),
        ),
        Ok(Space::Unknown) => Check::ok("host", name, "not measured on this OS"),
        Err(e @ HomeError::LowSpace { .. }) => {
            Check::error("host", name, CheckState::Fail, e.into())
        }
        Err(e) => Check::error("host", name, CheckState::Warn, e.into()),
    }
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
fn check_routes(kind: DriverKind, routes: &Result<Vec<HostRoute>, net::NetError>) -> Check {
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
