//! VBoxManage found and its version, VT-x/AMD-V (VirtualBox has no software fallback),
//! its Linux kernel modules, Hyper-V on Windows, host-only networking, networks.conf.

use super::{Check, CheckState};
use crate::driver::cpu::{self, Virtualization};
use crate::driver::virtualbox::network::{self, NETWORKS_CONF};
use crate::driver::virtualbox::vboxmanage::VBoxManage;
use crate::driver::virtualbox::{VBoxError, VirtualBoxDriver};
use crate::driver::{Action, Driver, DriverError};
use crate::reason;

const SCOPE: &str = "virtualbox";
/// Where Linux lists its loaded modules.
const PROC_MODULES: &str = "/proc/modules";
/// The modules VirtualBox needs on Linux: VMs (vboxdrv), host-only adapters
/// (vboxnetadp) and the network filter that host-only and bridged NICs go through
/// (vboxnetflt).
const MODULES: [&str; 3] = ["vboxdrv", "vboxnetflt", "vboxnetadp"];

/// Appends the VirtualBox checks; the rest need `VBoxManage`, so its absence ends them.
pub(super) fn checks(checks: &mut Vec<Check>) {
    let vbox = match VBoxManage::open() {
        Ok(vbox) => vbox,
        Err(source) => {
            checks.push(Check::error(SCOPE, "VBoxManage", CheckState::Fail, vbox_error(source)));
            return;
        }
    };
    checks.push(Check::ok(SCOPE, "VBoxManage", format!("VirtualBox {}", vbox.version())));
    if let Some(cpu) = cpu::read() {
        checks.push(hardware(cpu));
    }
    checks.push(modules(&vbox));
    checks.push(hyperv());
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

/// `source` as the driver's preflight reports it, so it maps to the same reason.
fn vbox_error(source: VBoxError) -> crate::Error {
    let object = "VirtualBox".into();
    DriverError::VirtualBox { action: Action::ReadCapabilities, object, source: Box::new(source) }
        .into()
}

/// VirtualBox (6.1 and later) runs guests only with VT-x/AMD-V: without it every VM
/// fails to start.
fn hardware(cpu: Virtualization) -> Check {
    match cpu.reason() {
        None => Check::ok(SCOPE, "VT-x/AMD-V", cpu.describe()),
        Some(reason) => Check::bad(SCOPE, "VT-x/AMD-V", CheckState::Fail, reason, cpu.describe()),
    }
}

/// The Linux kernel modules: the launcher's own warning about vboxdrv when it printed
/// one (what `up`'s preflight fails on), else [`PROC_MODULES`].
fn modules(vbox: &VBoxManage) -> Check {
    if let Some(evidence) = vbox.kernel_driver_warning() {
        let err = VBoxError::KernelDriver { module: "vboxdrv", evidence: evidence.to_owned() };
        return Check::error(SCOPE, "kernel modules", CheckState::Fail, vbox_error(err));
    }
    if std::env::consts::OS != "linux" {
        let message = "not checked off Linux (VirtualBox names a missing driver when a VM starts)";
        return Check::ok(SCOPE, "kernel modules", message);
    }
    match std::fs::read_to_string(PROC_MODULES) {
        Ok(text) => modules_check(&text),
        Err(e) => Check::bad(
            SCOPE,
            "kernel modules",
            CheckState::Warn,
            &reason::HOST_VBOX_KERNEL_DRIVER,
            format!("cannot read {PROC_MODULES} ({e}): not checked"),
        ),
    }
}

/// Judges `/proc/modules` text: every one of [`MODULES`] must be loaded.
fn modules_check(proc_modules: &str) -> Check {
    let loaded: Vec<&str> =
        proc_modules.lines().filter_map(|l| l.split_whitespace().next()).collect();
    let missing: Vec<&str> = MODULES.into_iter().filter(|m| !loaded.contains(m)).collect();
    if missing.is_empty() {
        return Check::ok(SCOPE, "kernel modules", MODULES.join(", ") + " loaded");
    }
    Check::bad(
        SCOPE,
        "kernel modules",
        CheckState::Fail,
        &reason::HOST_VBOX_KERNEL_DRIVER,
        format!("not loaded (not in {PROC_MODULES}): {}", missing.join(", ")),
    )
}

/// Hyper-V, VBS or WSL2 owning VT-x on Windows, as the driver's preflight sees it.
fn hyperv() -> Check {
    #[cfg(windows)]
    {
        use crate::driver::virtualbox::host;
        if let Some(evidence) = host::hyperv_evidence(&host::probe_windows()) {
            let reason = &reason::HOST_HYPERV_ENABLED;
            return Check::bad(SCOPE, "Hyper-V", CheckState::Warn, reason, evidence);
        }
    }
    let message = if cfg!(windows) { "not running" } else { "does not apply (not Windows)" };
    Check::ok(SCOPE, "Hyper-V", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOADED: &str = "vboxnetadp 28672 0 - Live 0x0000000000000000 (OE)\n\
        vboxnetflt 32768 0 - Live 0x0000000000000000 (OE)\n\
        vboxdrv 696320 2 vboxnetadp,vboxnetflt, Live 0x0000000000000000 (OE)\n\
        kvm 1396736 0 - Live 0x0000000000000000\n";

    #[test]
    fn every_module_must_be_loaded() {
        assert_eq!(modules_check(LOADED).state, CheckState::Ok);
        let without: String = LOADED
            .lines()
            .filter(|l| !l.starts_with("vboxdrv "))
            .map(|l| format!("{l}\n"))
            .collect();
        let check = modules_check(&without);
        assert_eq!(check.state, CheckState::Fail);
        assert_eq!(check.reason.map(|r| r.id), Some("HOST_VBOX_KERNEL_DRIVER"));
        assert!(check.message.ends_with(": vboxdrv"), "{}", check.message);
        // A module whose name only starts like one does not count.
        let check = modules_check("vboxdrvx 1 0 - Live 0x0\n");
        assert!(check.message.ends_with("vboxdrv, vboxnetflt, vboxnetadp"), "{}", check.message);
    }

    #[test]
    fn no_vtx_fails_virtualbox() {
        let check = hardware(Virtualization::NotNested);
        assert_eq!(
            (check.state, check.reason.map(|r| r.id)),
            (CheckState::Fail, Some("HOST_VTX_MISSING"))
        );
        let ok = hardware(Virtualization::Offered { guest: false, nested: None });
        assert_eq!(ok.state, CheckState::Ok);
    }

    #[cfg(not(windows))]
    #[test]
    fn hyperv_does_not_apply_off_windows() {
        let check = hyperv();
        assert_eq!(
            (check.state, check.message.as_str()),
            (CheckState::Ok, "does not apply (not Windows)")
        );
    }
}
