//! Hardware virtualization as Linux shows it: the CPU's `vmx`/`svm` flags, the
//! `hypervisor` flag of a host that is itself a VM, and KVM's `nested` parameter; both
//! backends need it (kvm2 for KVM, VirtualBox always). The files are read in [`read`];
//! [`judge`] is a pure function of their text.

use crate::reason::{self, Reason};

/// KVM's nested-virtualization switches (Intel, AMD): whether this host's own KVM lets
/// its guests run VMs in turn.
const NESTED_PARAMS: [&str; 2] =
    ["/sys/module/kvm_intel/parameters/nested", "/sys/module/kvm_amd/parameters/nested"];

/// What the CPU offers for virtualization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Virtualization {
    /// VT-x or AMD-V is there.
    Offered {
        /// Whether this host is itself a VM (then its hypervisor passes VT-x through).
        guest: bool,
        /// KVM's `nested` parameter, if the module is loaded.
        nested: Option<bool>,
    },
    /// No `vmx`/`svm` flag on a host that is not a VM: switched off in the firmware
    /// (Linux hides the flag then) or a CPU without it.
    Disabled,
    /// No `vmx`/`svm` flag on a host that is a VM: its hypervisor offers no nested
    /// virtualization.
    NotNested,
}

impl Virtualization {
    /// What was found, for a check's message.
    pub fn describe(&self) -> String {
        match self {
            Self::Offered { guest, nested } => {
                let mut text = String::from("the CPU offers VT-x/AMD-V");
                if *guest {
                    text.push_str(" (this host is a VM with nested virtualization)");
                }
                if let Some(nested) = nested {
                    let yn = if *nested { "Y" } else { "N" };
                    text.push_str(&format!("; KVM nested={yn}"));
                    if !nested {
                        text.push_str(" (the nodes cannot run VMs themselves)");
                    }
                }
                text
            }
            Self::Disabled => "the CPU shows no vmx/svm flag and this host is not a VM: \
                               VT-x/AMD-V is disabled in the firmware (or the CPU has none)"
                .to_owned(),
            Self::NotNested => "the CPU shows no vmx/svm flag and this host is itself a VM: \
                                its hypervisor does not offer nested virtualization"
                .to_owned(),
        }
    }

    /// The catalogue entry of a missing VT-x/AMD-V.
    pub fn reason(&self) -> Option<&'static Reason> {
        match self {
            Self::Offered { .. } => None,
            Self::Disabled => Some(&reason::HOST_VTX_DISABLED),
            Self::NotNested => Some(&reason::HOST_VTX_MISSING),
        }
    }
}

/// Whether the first CPU's `flags` line in `/proc/cpuinfo` text lists `flag`.
pub fn cpu_has_flag(cpuinfo: &str, flag: &str) -> bool {
    cpuinfo
        .lines()
        .find_map(|line| {
            line.strip_prefix("flags").and_then(|rest| rest.trim_start().strip_prefix(':'))
        })
        .is_some_and(|flags| flags.split_whitespace().any(|f| f == flag))
}

/// Judges `/proc/cpuinfo` text and the text of KVM's `nested` parameter.
pub fn judge(cpuinfo: &str, nested: Option<&str>) -> Virtualization {
    let guest = cpu_has_flag(cpuinfo, "hypervisor");
    if cpu_has_flag(cpuinfo, "vmx") || cpu_has_flag(cpuinfo, "svm") {
        let nested = nested.map(|t| matches!(t.trim(), "Y" | "y" | "1"));
        Virtualization::Offered { guest, nested }
    } else if guest {
        Virtualization::NotNested
    } else {
        Virtualization::Disabled
    }
}

/// Reads and judges this host's CPU; `None` where `/proc/cpuinfo` cannot be read (not
/// Linux).
pub fn read() -> Option<Virtualization> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let nested = NESTED_PARAMS.iter().find_map(|p| std::fs::read_to_string(p).ok());
    Some(judge(&cpuinfo, nested.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpuinfo(flags: &str) -> String {
        format!("processor\t: 0\nflags\t\t: fpu vme {flags} lahf_lm\n\nprocessor\t: 1\n")
    }

    #[test]
    fn parses_cpu_flags() {
        let cpuinfo = "processor\t: 0\nflags\t\t: fpu vme hypervisor lahf_lm\nbugs\t\t: x\n";
        assert!(cpu_has_flag(cpuinfo, "hypervisor"));
        assert!(!cpu_has_flag(cpuinfo, "vmx"));
        assert!(!cpu_has_flag("processor: 0\n", "hypervisor"));
    }

    #[test]
    fn no_vmx_on_bare_metal_is_disabled_in_firmware() {
        let found = judge(&cpuinfo("sse2"), None);
        assert_eq!(found, Virtualization::Disabled);
        assert_eq!(found.reason().map(|r| r.id), Some("HOST_VTX_DISABLED"));
        assert!(found.describe().contains("firmware"), "{}", found.describe());
    }

    #[test]
    fn no_vmx_in_a_vm_is_missing_nested_virtualization() {
        let found = judge(&cpuinfo("sse2 hypervisor"), Some("Y\n"));
        assert_eq!(found, Virtualization::NotNested);
        assert_eq!(found.reason().map(|r| r.id), Some("HOST_VTX_MISSING"));
        assert!(found.describe().contains("nested virtualization"), "{}", found.describe());
    }

    #[test]
    fn vmx_or_svm_is_offered_and_nested_is_reported() {
        let found = judge(&cpuinfo("vmx hypervisor"), Some("N\n"));
        assert_eq!(found, Virtualization::Offered { guest: true, nested: Some(false) });
        assert_eq!(found.reason(), None);
        assert!(found.describe().contains("nested=N"), "{}", found.describe());
        let amd = judge(&cpuinfo("svm"), Some("1\n"));
        assert_eq!(amd, Virtualization::Offered { guest: false, nested: Some(true) });
        assert_eq!(
            judge(&cpuinfo("vmx"), None),
            Virtualization::Offered { guest: false, nested: None }
        );
    }
}
