//! Host checks for VirtualBox that stderr alone does not reveal: Hyper-V, VBS or WSL2
//! owning virtualization on Windows (read from PowerShell and `bcdedit` output, never
//! `wmic`, which new Windows 11 builds lack), and VirtualBox's NEM fallback (the
//! "turtle" mode, very slow) seen in a VM's `VBox.log`. The decisions are pure functions
//! over captured text, so they are tested on Linux; only [`probe_windows`] runs commands.

/// `HypervisorPresent` of `Win32_ComputerSystem`: `True` when any hypervisor (Hyper-V,
/// VBS, WSL2's virtual machine platform) runs below Windows.
pub const HYPERVISOR_PRESENT_COMMAND: &str =
    "(Get-CimInstance -ClassName Win32_ComputerSystem).HypervisorPresent";
/// `VirtualizationBasedSecurityStatus` of `Win32_DeviceGuard`: 2 when VBS is running.
pub const VBS_STATUS_COMMAND: &str = "(Get-CimInstance -Namespace root\\Microsoft\\Windows\\DeviceGuard -ClassName Win32_DeviceGuard).VirtualizationBasedSecurityStatus";

/// What the Windows commands printed (`None`: the command could not run).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowsProbe {
    /// Output of [`HYPERVISOR_PRESENT_COMMAND`].
    pub hypervisor_present: Option<String>,
    /// Output of `bcdedit /enum {current}`.
    pub bcdedit: Option<String>,
    /// Output of [`VBS_STATUS_COMMAND`].
    pub vbs_status: Option<String>,
}

/// Why VirtualBox will not get VT-x/AMD-V to itself, if the probe shows a reason.
pub fn hyperv_evidence(probe: &WindowsProbe) -> Option<String> {
    let mut found = Vec::new();
    if probe.hypervisor_present.as_deref().is_some_and(|t| t.trim().eq_ignore_ascii_case("true")) {
        found.push("a hypervisor is running below Windows (Hyper-V, VBS or WSL2)");
    }
    if probe.bcdedit.as_deref().is_some_and(hypervisor_launch_auto) {
        found.push("bcdedit hypervisorlaunchtype is Auto");
    }
    if probe.vbs_status.as_deref().is_some_and(|t| t.trim() == "2") {
        found.push("virtualization-based security is running");
    }
    (!found.is_empty()).then(|| found.join("; "))
}

/// Whether `bcdedit /enum {current}` output has `hypervisorlaunchtype Auto`.
pub fn hypervisor_launch_auto(bcdedit: &str) -> bool {
    bcdedit.lines().any(|l| {
        let mut words = l.split_whitespace();
        words.next().is_some_and(|k| k.eq_ignore_ascii_case("hypervisorlaunchtype"))
            && words.next().is_some_and(|v| v.eq_ignore_ascii_case("auto"))
    })
}

/// The `VBox.log` line showing VirtualBox fell back to the native execution manager
/// (NEM: Hyper-V's API, the "turtle" icon): VMs then run many times slower.
pub fn nem_fallback(vbox_log: &str) -> Option<String> {
    vbox_log
        .lines()
        .find(|l| l.contains("Attempting fall back to NEM") || l.contains("Snail execution mode"))
        .map(|l| l.trim().to_owned())
}

/// Runs the Windows probes (PowerShell and `bcdedit`); a command that fails leaves its
/// field `None`.
#[cfg(windows)]
pub fn probe_windows() -> WindowsProbe {
    use crate::process::Tool;
    let powershell = |command: &str| {
        Tool::new("powershell")
            .run(["-NoProfile", "-NonInteractive", "-Command", command])
            .ok()
            .map(|o| o.stdout)
    };
    WindowsProbe {
        hypervisor_present: powershell(HYPERVISOR_PRESENT_COMMAND),
        bcdedit: Tool::new("bcdedit").run(["/enum", "{current}"]).ok().map(|o| o.stdout),
        vbs_status: powershell(VBS_STATUS_COMMAND),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BCDEDIT: &str = "Windows Boot Loader\n-------------------\nidentifier              {current}\n\
        device                  partition=C:\nnx                      OptIn\n\
        hypervisorlaunchtype    Auto\n";

    #[test]
    fn hyperv_is_seen_from_any_probe() {
        assert_eq!(hyperv_evidence(&WindowsProbe::default()), None);
        let off = WindowsProbe {
            hypervisor_present: Some("False\r\n".into()),
            bcdedit: Some(BCDEDIT.replace("Auto", "Off")),
            vbs_status: Some("0\r\n".into()),
        };
        assert_eq!(hyperv_evidence(&off), None);
        let present = WindowsProbe { hypervisor_present: Some("True\r\n".into()), ..off.clone() };
        assert!(hyperv_evidence(&present).unwrap().contains("WSL2"));
        let bcd = WindowsProbe { bcdedit: Some(BCDEDIT.into()), ..off.clone() };
        assert!(hyperv_evidence(&bcd).unwrap().contains("hypervisorlaunchtype"));
        let vbs = WindowsProbe { vbs_status: Some("2".into()), ..off };
        assert!(hyperv_evidence(&vbs).unwrap().contains("virtualization-based security"));
    }

    #[test]
    fn nem_fallback_is_found_in_vbox_log() {
        let path = format!(
            "{}/tests/fixtures/vboxmanage/VBox-nem-fallback.log",
            env!("CARGO_MANIFEST_DIR")
        );
        let log = std::fs::read_to_string(path).unwrap();
        assert!(nem_fallback(&log).unwrap().contains("Attempting fall back to NEM"));
        assert_eq!(nem_fallback("00:00:01.0 HM: HMR3Init: VT-x w/ nested paging\n"), None);
    }
}
