//! What VBoxManage's output means for the user: VirtualBox status codes and messages in
//! stderr sorted into [`Known`] failures, the Linux launcher's warning about vboxdrv on
//! stdout, and the mapping of a failed run to its typed [`VBoxError`]. Pure functions,
//! tested on captured output (tests/fixtures/vboxmanage/SOURCES.md); `vboxmanage.rs`
//! applies them where the text is captured.

use super::VBoxError;
use crate::process::ProcessError;

/// What a VirtualBox status code in stderr means for the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// VT-x/AMD-V off in the firmware.
    VtxDisabled(&'static str),
    /// No VT-x/AMD-V at all.
    VtxMissing(&'static str),
    /// KVM holds VT-x/AMD-V.
    KvmHoldsVtx(&'static str),
    /// Hyper-V owns virtualization (NEM could not start, or no raw mode under it).
    HyperV(&'static str),
    /// A VirtualBox kernel driver is not loaded or not accessible (Linux modules not
    /// built or loaded, a macOS kernel extension not allowed); see [`kernel_module`].
    KernelDriver(&'static str),
    /// Windows could not install a host-only adapter (its NetCfg network setup API).
    NetCfg,
    /// This VirtualBox has no host-only adapters (7.x on macOS: host-only networks).
    NoHostOnlyIfs,
    /// The VM is not registered.
    NoSuchVm,
    /// `hostonlyif ipconfig` refused an address (networks.conf, VirtualBox >= 6.1.28).
    AccessDenied,
    /// The VM's session is still being unlocked (right after a power-off): retry.
    SessionLocked,
}

/// The control device of the host-only adapter driver (vboxnetadp).
const VBOXNETCTL: &str = "/dev/vboxnetctl";

/// The kernel module a [`Known::KernelDriver`] code points at.
pub fn kernel_module(code: &str) -> &'static str {
    if code == VBOXNETCTL { "vboxnetadp" } else { "vboxdrv" }
}

/// The first line of `text` that contains `code`, trimmed (the evidence to show).
fn line_with(text: &str, code: &str) -> String {
    text.lines().find(|l| l.contains(code)).unwrap_or(code).trim().to_owned()
}

/// Sorts VBoxManage stderr by the status codes users meet most (minikube's VirtualBox
/// issues; samples in tests/fixtures/vboxmanage/).
pub fn classify(stderr: &str) -> Option<Known> {
    type Make = fn(&'static str) -> Known;
    const TABLE: &[(&str, Make)] = &[
        ("VERR_VMX_MSR_ALL_VMX_DISABLED", Known::VtxDisabled),
        ("VERR_VMX_MSR_VMX_DISABLED", Known::VtxDisabled),
        ("VERR_SVM_DISABLED", Known::VtxDisabled),
        ("VERR_VMX_NO_VMX", Known::VtxMissing),
        ("VERR_SVM_NO_SVM", Known::VtxMissing),
        ("VERR_VMX_IN_VMX_ROOT_MODE", Known::KvmHoldsVtx),
        ("VERR_SVM_IN_USE", Known::KvmHoldsVtx),
        ("VERR_NEM_VM_CREATE_FAILED", Known::HyperV),
        ("VERR_NEM_MISSING_KERNEL_API", Known::HyperV),
        ("VERR_NEM_INIT_FAILED", Known::HyperV),
        ("VERR_SUPDRV_NO_RAW_MODE_HYPER_V_ROOT", Known::HyperV),
        ("VERR_VM_DRIVER_NOT_INSTALLED", Known::KernelDriver),
        ("VERR_VM_DRIVER_NOT_ACCESSIBLE", Known::KernelDriver),
        ("VERR_VM_DRIVER_OPEN_ACCESS_DENIED", Known::KernelDriver),
        // `hostonlyif create` without vboxnetadp (Linux) or its kext (macOS < 7).
        (VBOXNETCTL, Known::KernelDriver),
        ("NetCfg", |_| Known::NetCfg),
        ("Unknown subcommand \"hostonlyifs\"", |_| Known::NoHostOnlyIfs),
    ];
    if let Some((code, make)) = TABLE.iter().find(|(code, _)| stderr.contains(code)) {
        return Some(make(code));
    }
    if stderr.contains("Could not find a registered machine") {
        Some(Known::NoSuchVm)
    } else if stderr.contains("E_ACCESSDENIED") {
        Some(Known::AccessDenied)
    } else if stderr.contains("already locked") {
        Some(Known::SessionLocked)
    } else {
        None
    }
}

/// The first line of the warning VirtualBox's Linux launcher script prints on stdout
/// before every command when the vboxdrv module is missing or not loaded (VBox.sh).
pub fn driver_warning(stdout: &str) -> Option<String> {
    stdout
        .lines()
        .find(|l| {
            l.starts_with("WARNING:")
                && (l.contains("vboxdrv kernel module is not loaded")
                    || l.contains("/dev/vboxdrv does not exist"))
        })
        .map(str::to_owned)
}

/// Maps a failed run to its typed error.
pub fn typed(source: ProcessError, subcommand: Option<std::borrow::Cow<'_, str>>) -> VBoxError {
    let known = match &source {
        ProcessError::Failed { stderr, .. } => classify(stderr),
        ProcessError::NotFound { program } => {
            return VBoxError::NotFound { searched: program.clone() };
        }
        ProcessError::TimedOut { .. } => return VBoxError::Timeout { source },
        ProcessError::Spawn { .. } => None,
    };
    match known {
        Some(Known::VtxDisabled(code)) => VBoxError::VtxDisabled { code, source },
        Some(Known::VtxMissing(code)) => VBoxError::VtxMissing { code, source },
        Some(Known::KvmHoldsVtx(code)) => VBoxError::KvmHoldsVtx { code, source },
        Some(Known::HyperV(code)) => VBoxError::HyperV { evidence: code.to_owned() },
        Some(Known::KernelDriver(code)) => {
            let stderr = match &source {
                ProcessError::Failed { stderr, .. } => stderr.as_str(),
                _ => "",
            };
            VBoxError::KernelDriver {
                module: kernel_module(code),
                evidence: line_with(stderr, code),
            }
        }
        Some(Known::NetCfg) => VBoxError::HostOnlyAdapter { source },
        Some(Known::NoSuchVm) if subcommand.as_deref() == Some("showvminfo") => {
            let vm = match &source {
                ProcessError::Failed { args, .. } => args.get(1).cloned().unwrap_or_default(),
                _ => String::new(),
            };
            VBoxError::NoSuchVm { vm }
        }
        _ => VBoxError::Command { source },
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::{self, tests::fixture};
    use super::*;

    /// Captured stderr of real failures (sources in tests/fixtures/vboxmanage/SOURCES.md).
    #[test]
    fn stderr_status_codes_are_classified() {
        let cases = [
            ("startvm-vmx-disabled.stderr", Known::VtxDisabled("VERR_VMX_MSR_ALL_VMX_DISABLED")),
            ("startvm-svm-disabled.stderr", Known::VtxDisabled("VERR_SVM_DISABLED")),
            ("startvm-no-vmx.stderr", Known::VtxMissing("VERR_VMX_NO_VMX")),
            ("startvm-vmx-root-mode.stderr", Known::KvmHoldsVtx("VERR_VMX_IN_VMX_ROOT_MODE")),
            ("startvm-nem-create-failed.stderr", Known::HyperV("VERR_NEM_VM_CREATE_FAILED")),
            ("showvminfo-missing.stderr", Known::NoSuchVm),
            ("hostonlyif-ipconfig-access-denied.stderr", Known::AccessDenied),
            ("startvm-hyperv-root.stderr", Known::HyperV("VERR_SUPDRV_NO_RAW_MODE_HYPER_V_ROOT")),
            (
                "kernel-driver-not-installed.txt",
                Known::KernelDriver("VERR_VM_DRIVER_NOT_INSTALLED"),
            ),
            ("hostonlyif-create-no-vboxnetctl.stderr", Known::KernelDriver("/dev/vboxnetctl")),
            ("hostonlyif-create-netcfg.stderr", Known::NetCfg),
            ("list-hostonlyifs-macos-7.1.stderr", Known::NoHostOnlyIfs),
        ];
        for (file, expected) in cases {
            assert_eq!(classify(&fixture(file)), Some(expected), "{file}");
        }
        let locked = "VBoxManage: error: The machine 'lab' is already locked for a session (or being unlocked)";
        assert_eq!(classify(locked), Some(Known::SessionLocked));
        assert_eq!(classify("VBoxManage: error: something else"), None);
        assert_eq!(kernel_module("/dev/vboxnetctl"), "vboxnetadp");
        assert_eq!(kernel_module("VERR_VM_DRIVER_NOT_INSTALLED"), "vboxdrv");
    }

    #[cfg(unix)]
    #[test]
    fn kernel_driver_errors_name_the_module_and_virtualbox_line() {
        let source = ProcessError::Failed {
            program: "VBoxManage".into(),
            args: vec!["hostonlyif".into(), "create".into()],
            status: std::os::unix::process::ExitStatusExt::from_raw(256),
            stderr: fixture("hostonlyif-create-no-vboxnetctl.stderr"),
            stdout: String::new(),
        };
        let err = typed(source, Some("hostonlyif".into()));
        let VBoxError::KernelDriver { module, evidence } = &err else { panic!("{err:?}") };
        assert_eq!(*module, "vboxnetadp");
        assert!(evidence.starts_with("VBoxManage: error: VBoxNetAdpCtl:"), "{evidence}");
    }

    /// The launcher script's warning is on stdout, before `--version`'s own line.
    #[test]
    fn launcher_warning_about_vboxdrv_is_found() {
        let out = format!("{}\n7.0.14r161095\n", fixture("launcher-vboxdrv-not-loaded.stdout"));
        assert!(driver_warning(&out).unwrap().contains("vboxdrv kernel module is not loaded"));
        assert_eq!(parse::parse_version(&out).map(|v| v.major), Some(7), "{out}");
        assert_eq!(driver_warning("7.0.14r161095\n"), None);
    }
}
