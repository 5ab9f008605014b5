//! libvirt reachable and its version, KVM or TCG (and why, from the CPU), `/dev/kvm`,
//! `qemu-img`, and dnsmasq for a local daemon.

use super::{Check, CheckState};
use crate::driver::cpu::{self, Virtualization};
use crate::driver::host::{self, DEV_KVM};
use crate::driver::libvirt::{self, LibvirtDriver};
use crate::driver::{Accel, AccelPolicy, DriverError, HostReport, uri};
use crate::ops::remote;
use crate::reason;
use crate::ssh::{Jump, JumpError};

const SCOPE: &str = "kvm2";

/// Appends the kvm2 checks for the daemon at `flag_uri` (else the default URI).
pub(super) fn checks(flag_uri: Option<&str>, checks: &mut Vec<Check>) {
    let uri = libvirt::resolve_uri(flag_uri);
    let connected = uri::check(&uri)
        .map_err(|why| DriverError::RefusedUri { uri: uri.clone(), why })
        .and_then(|()| LibvirtDriver::connect(&uri));
    // The CPU is this host's: it says why KVM is missing only for a local daemon.
    let local = libvirt::is_local(&uri);
    let cpu = local.then(cpu::read).flatten();
    // A remote host's own checks, also when libvirt does not answer (they may say why).
    let remote = if local { None } else { remote_host(&uri, checks) };
    match connected {
        Ok(driver) => {
            // A daemon that took the connection but stopped answering fails here (the
            // keepalive closes it: DRV_CALL_TIMEOUT).
            checks.push(match driver.version() {
                Ok(version) => Check::ok(SCOPE, "libvirt", format!("{uri} answers ({version})")),
                Err(e) => Check::error(SCOPE, "libvirt", CheckState::Fail, e.into()),
            });
            let report = driver.accel(AccelPolicy::Auto).and_then(|report| match &remote {
                Some(facts) => host::remote_accel(&report, facts.nested, AccelPolicy::Auto),
                None => Ok(report),
            });
            accel(report, cpu, checks);
        }
        Err(e) => {
            checks.push(Check::error(SCOPE, "libvirt", CheckState::Fail, e.into()));
            // Without the daemon's capabilities, judge KVM from this host alone.
            if local {
                let report = host::probe_local(true, true)
                    .and_then(|probe| host::decide_accel(&probe, AccelPolicy::Auto));
                accel(report, cpu, checks);
            }
        }
    }
    checks.push(match host::check_qemu_img() {
        Ok(()) => Check::ok(SCOPE, "qemu-img", "found"),
        Err(e) => Check::error(SCOPE, "qemu-img", CheckState::Fail, e.into()),
    });
    checks.push(if libvirt::uses_host_dnsmasq(&uri) {
        match host::check_dnsmasq() {
            Ok(path) => Check::ok(SCOPE, "dnsmasq", path.display().to_string()),
            Err(e) => Check::error(SCOPE, "dnsmasq", CheckState::Fail, e.into()),
        }
    } else {
        let why = format!("not needed for {uri} (only a local QEMU daemon runs this host's)");
        Check::ok(SCOPE, "dnsmasq", why)
    });
}

/// The remote libvirt host's own checks, as `up` makes them over SSH: its key in the
/// user's known_hosts, its tools; what it says of itself (whether it is a VM) when they
/// pass.
fn remote_host(uri: &str, checks: &mut Vec<Check>) -> Option<remote::HostFacts> {
    // The key found in known_hosts is pinned only for these few seconds, in a file of
    // this process's own.
    let name = format!("kubelab-doctor-{}-known_hosts", std::process::id());
    let pinned = std::env::temp_dir().join(name);
    let facts = (|| {
        let jump = Jump::for_uri(uri, pinned.clone())?.ok_or_else(|| JumpError::BadUri {
            uri: uri.to_owned(),
            why: "names no host".into(),
        })?;
        jump.pin()?;
        Ok::<_, crate::Error>((jump.destination(), remote::check_host(&jump)?))
    })();
    let _ = std::fs::remove_file(&pinned);
    match facts {
        Ok((host, facts)) => {
            let what = format!("{host}: key in known_hosts, qemu-img and dnsmasq there");
            checks.push(Check::ok(SCOPE, "libvirt host", what));
            Some(facts)
        }
        Err(e) => {
            checks.push(Check::error(SCOPE, "libvirt host", CheckState::Fail, e));
            None
        }
    }
}

/// KVM or the TCG fallback, and whether `/dev/kvm` has the group libvirt expects.
fn accel(
    report: Result<HostReport, DriverError>,
    cpu: Option<Virtualization>,
    checks: &mut Vec<Check>,
) {
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            checks.push(Check::error(SCOPE, "acceleration", CheckState::Fail, e.into()));
            return;
        }
    };
    let tcg = report.warnings.iter().find(|w| w.reason == &reason::HOST_KVM_UNAVAILABLE);
    checks.push(match (report.accel, tcg) {
        // libvirt never reports VirtualBox's own hypervisor.
        (Accel::Kvm | Accel::VirtualBox, _) => {
            let how = cpu.map(|c| format!(": {}", c.describe())).unwrap_or_default();
            Check::ok(SCOPE, "acceleration", format!("KVM{how}"))
        }
        (Accel::Tcg, Some(w)) => tcg_check(&w.message, cpu),
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

/// The TCG fallback's warning, with the CPU's explanation folded in: a CPU without
/// VT-x/AMD-V gets its own advice (firmware, or nested virtualization) rather than a
/// second line saying the same.
fn tcg_check(why: &str, cpu: Option<Virtualization>) -> Check {
    let (reason, message) = match cpu {
        Some(found) => match found.reason() {
            Some(reason) => (reason, format!("{why}; {}", found.describe())),
            None => (&reason::HOST_KVM_UNAVAILABLE, format!("{why}; {}", found.describe())),
        },
        None => (&reason::HOST_KVM_UNAVAILABLE, why.to_owned()),
    };
    Check::bad(SCOPE, "acceleration", CheckState::Warn, reason, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcg_says_why_from_the_cpu_with_its_advice() {
        let why = "using slow software emulation (TCG): libvirt does not offer KVM guests";
        let check = tcg_check(why, Some(Virtualization::NotNested));
        assert_eq!(check.state, CheckState::Warn, "TCG works, slowly");
        assert_eq!(check.reason.map(|r| r.id), Some("HOST_VTX_MISSING"));
        assert!(
            check.message.starts_with(why) && check.message.contains("nested"),
            "{}",
            check.message
        );
        let disabled = tcg_check(why, Some(Virtualization::Disabled));
        assert_eq!(disabled.reason.map(|r| r.id), Some("HOST_VTX_DISABLED"));
        let offered = Virtualization::Offered { guest: true, nested: None };
        assert_eq!(
            tcg_check(why, Some(offered)).reason.map(|r| r.id),
            Some("HOST_KVM_UNAVAILABLE")
        );
        assert_eq!(tcg_check(why, None).message, why);
    }
}
