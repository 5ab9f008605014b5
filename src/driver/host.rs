//! Preflight of the local host for QEMU: is KVM usable or must VMs run under TCG?
//! The decision ([`decide_accel`]) is a pure function of what [`probe_local`] and the
//! backend found, so every case is unit-tested.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::cpu::cpu_has_flag;
use super::{Accel, AccelPolicy, DriverError, HostReport, HostWarning};
use crate::process::Tool;
use crate::reason;

/// The KVM device.
pub const DEV_KVM: &str = "/dev/kvm";
/// Environment variable forcing the acceleration: `kvm` (try KVM even where nested
/// virtualization is suspect) or `tcg` (never use KVM).
pub const ACCEL_ENV: &str = "KUBELAB_ACCEL";

/// What was found about KVM on the hypervisor host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmProbe {
    /// The state of `/dev/kvm`.
    pub dev_kvm: DevKvm,
    /// Whether the hypervisor offers KVM guests (libvirt capabilities list domain type
    /// `kvm`; libvirt checks `/dev/kvm` access from its own side).
    pub hypervisor_offers_kvm: bool,
    /// Whether the host is itself a VM (`hypervisor` CPU flag): nested KVM often hangs
    /// guests right after the kernel starts (measured on this project's CI machines).
    pub nested: bool,
    /// `KUBELAB_ACCEL`, if set to `kvm` or `tcg`.
    pub forced: Option<Accel>,
}

/// The state of `/dev/kvm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevKvm {
    /// Not looked at: the hypervisor is on another host.
    Remote,
    /// No such device: no KVM module or no VT-x/AMD-V.
    Missing,
    /// Present, owned by group `kvm` (or no `kvm` group exists).
    Present,
    /// Present but owned by another group: libvirt then judges KVM unusable while its
    /// QEMU probe says it works, and re-probes QEMU on every call (seconds each).
    WrongGroup,
}

/// Chooses KVM or TCG from the probe: KVM when usable; otherwise TCG with a
/// `HOST_KVM_UNAVAILABLE` warning, or that error under [`AccelPolicy::RequireKvm`].
pub fn decide_accel(probe: &KvmProbe, policy: AccelPolicy) -> Result<HostReport, DriverError> {
    let mut warnings = Vec::new();
    if probe.dev_kvm == DevKvm::WrongGroup {
        warnings.push(HostWarning {
            reason: &reason::HOST_KVM_DEVICE_GROUP,
            message: format!("{DEV_KVM} is not owned by group kvm"),
        });
    }
    let problem = if probe.forced == Some(Accel::Tcg) {
        Some(format!("{ACCEL_ENV}=tcg is set"))
    } else if probe.dev_kvm == DevKvm::Missing {
        Some(format!("{DEV_KVM} does not exist (no KVM module, or virtualization is off)"))
    } else if !probe.hypervisor_offers_kvm {
        Some("libvirt does not offer KVM guests on this host".to_owned())
    } else if probe.nested && probe.forced != Some(Accel::Kvm) {
        Some(format!(
            "this host is itself a VM and nested KVM is unreliable (guests may hang at boot); \
             set {ACCEL_ENV}=kvm to use it anyway"
        ))
    } else {
        None
    };
    match (problem, policy) {
        (None, _) => Ok(HostReport { accel: Accel::Kvm, warnings }),
        (Some(why), AccelPolicy::RequireKvm) => Err(DriverError::KvmUnavailable { why }),
        (Some(why), AccelPolicy::Auto) => {
            if probe.forced != Some(Accel::Tcg) {
                warnings.push(HostWarning {
                    reason: &reason::HOST_KVM_UNAVAILABLE,
                    message: format!("using slow software emulation (TCG): {why}"),
                });
            }
            Ok(HostReport { accel: Accel::Tcg, warnings })
        }
    }
}

/// Decides again for a remote libvirt host, knowing (from `ops::remote`, over SSH)
/// whether it is itself a VM: `first` is [`decide_accel`]'s answer without that, KVM
/// exactly when the daemon offers it and `KUBELAB_ACCEL` is not `tcg`.
pub fn remote_accel(
    first: &HostReport,
    nested: bool,
    policy: AccelPolicy,
) -> Result<HostReport, DriverError> {
    let probe = KvmProbe {
        dev_kvm: DevKvm::Remote,
        hypervisor_offers_kvm: first.accel == Accel::Kvm,
        nested,
        forced: forced_accel(),
    };
    decide_accel(&probe, policy)
}

/// `KUBELAB_ACCEL`, when it is `kvm` or `tcg`.
fn forced_accel() -> Option<Accel> {
    match std::env::var(ACCEL_ENV).as_deref() {
        Ok("kvm") => Some(Accel::Kvm),
        Ok("tcg") => Some(Accel::Tcg),
        _ => None,
    }
}

/// Probes the local host (when the hypervisor is local) and combines it with what the
/// backend reported (`hypervisor_offers_kvm`).
pub fn probe_local(local: bool, hypervisor_offers_kvm: bool) -> Result<KvmProbe, DriverError> {
    let forced = forced_accel();
    if !local {
        return Ok(KvmProbe {
            dev_kvm: DevKvm::Remote,
            hypervisor_offers_kvm,
            nested: false,
            forced,
        });
    }
    let cpuinfo = read("/proc/cpuinfo")?;
    let dev_kvm = match std::fs::metadata(DEV_KVM) {
        Err(_) => DevKvm::Missing,
        Ok(meta) => match group_id(&read("/etc/group")?, "kvm") {
            Some(gid) if gid != meta.gid() => DevKvm::WrongGroup,
            _ => DevKvm::Present,
        },
    };
    Ok(KvmProbe {
        dev_kvm,
        hypervisor_offers_kvm,
        nested: cpu_has_flag(&cpuinfo, "hypervisor"),
        forced,
    })
}

/// Fails with the `qemu-img` hint when it is not installed (`image/` needs it).
pub fn check_qemu_img() -> Result<(), DriverError> {
    Tool::new("qemu-img")
        .run(["--version"])
        .map(drop)
        .map_err(|source| DriverError::QemuImg { source })
}

/// Where libvirt looks for dnsmasq besides `PATH` (Debian, Fedora and Arch install it
/// there, outside a user's `PATH`).
pub const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// The dnsmasq binary libvirt starts for each network it manages (DHCP and DNS); without
/// it, the profile's networks cannot start. Only meaningful where the libvirt daemon
/// runs on this host.
pub fn check_dnsmasq() -> Result<PathBuf, DriverError> {
    let candidates = dnsmasq_candidates(std::env::var_os("PATH").as_deref());
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| DriverError::Dnsmasq {
        searched: candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
    })
}

/// [`DNSMASQ`], then `dnsmasq` in each directory of `path` (the `PATH` variable).
fn dnsmasq_candidates(path: Option<&std::ffi::OsStr>) -> Vec<PathBuf> {
    let on_path = path.into_iter().flat_map(std::env::split_paths).map(|d| d.join("dnsmasq"));
    let mut candidates = vec![PathBuf::from(DNSMASQ)];
    candidates.extend(on_path.filter(|p| p.as_path() != Path::new(DNSMASQ)));
    candidates
}

fn read(path: &str) -> Result<String, DriverError> {
    std::fs::read_to_string(path)
        .map_err(|source| DriverError::ReadHost { path: Path::new(path).to_owned(), source })
}

/// The id of group `name` in `/etc/group` text.
pub fn group_id(etc_group: &str, name: &str) -> Option<u32> {
    etc_group.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next() == Some(name)).then(|| fields.nth(1)?.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe() -> KvmProbe {
        KvmProbe {
            dev_kvm: DevKvm::Present,
            hypervisor_offers_kvm: true,
            nested: false,
            forced: None,
        }
    }

    #[test]
    fn a_remote_host_that_is_a_vm_gets_tcg_like_a_local_one() {
        // KUBELAB_ACCEL is only read: other tests run in parallel.
        if forced_accel().is_some() {
            return;
        }
        let kvm = HostReport { accel: Accel::Kvm, warnings: Vec::new() };
        assert_eq!(remote_accel(&kvm, false, AccelPolicy::Auto).unwrap().accel, Accel::Kvm);
        let nested = remote_accel(&kvm, true, AccelPolicy::Auto).unwrap();
        assert_eq!(nested.accel, Accel::Tcg);
        assert!(nested.warnings[0].message.contains("itself a VM"), "{:?}", nested.warnings);
        assert!(remote_accel(&kvm, true, AccelPolicy::RequireKvm).is_err());
        let tcg = HostReport { accel: Accel::Tcg, warnings: Vec::new() };
        assert_eq!(remote_accel(&tcg, false, AccelPolicy::Auto).unwrap().accel, Accel::Tcg);
    }

    fn ids(report: &HostReport) -> Vec<&str> {
        report.warnings.iter().map(|w| w.reason.id).collect()
    }

    #[test]
    fn bare_metal_with_kvm_uses_kvm_silently() {
        let report = decide_accel(&probe(), AccelPolicy::RequireKvm).unwrap();
        assert_eq!(report, HostReport { accel: Accel::Kvm, warnings: vec![] });
    }

    #[test]
    fn nested_guest_falls_back_to_tcg_unless_forced() {
        let nested = KvmProbe { nested: true, ..probe() };
        let report = decide_accel(&nested, AccelPolicy::Auto).unwrap();
        assert_eq!((report.accel, ids(&report)), (Accel::Tcg, vec!["HOST_KVM_UNAVAILABLE"]));
        assert!(report.warnings[0].message.contains("KUBELAB_ACCEL=kvm"));
        let err = decide_accel(&nested, AccelPolicy::RequireKvm).unwrap_err();
        assert!(matches!(err, DriverError::KvmUnavailable { ref why } if why.contains("nested")));
        let forced = KvmProbe { forced: Some(Accel::Kvm), ..nested };
        assert_eq!(decide_accel(&forced, AccelPolicy::RequireKvm).unwrap().accel, Accel::Kvm);
    }

    #[test]
    fn missing_device_or_capability_means_tcg() {
        for p in [
            KvmProbe { dev_kvm: DevKvm::Missing, ..probe() },
            KvmProbe { hypervisor_offers_kvm: false, ..probe() },
        ] {
            let report = decide_accel(&p, AccelPolicy::Auto).unwrap();
            assert_eq!(report.accel, Accel::Tcg, "{p:?}");
            assert!(decide_accel(&p, AccelPolicy::RequireKvm).is_err());
        }
        let remote = KvmProbe { dev_kvm: DevKvm::Remote, ..probe() };
        assert_eq!(decide_accel(&remote, AccelPolicy::Auto).unwrap().accel, Accel::Kvm);
    }

    #[test]
    fn forced_tcg_has_no_warning_and_wrong_group_warns() {
        let p = KvmProbe { forced: Some(Accel::Tcg), dev_kvm: DevKvm::WrongGroup, ..probe() };
        let report = decide_accel(&p, AccelPolicy::Auto).unwrap();
        assert_eq!((report.accel, ids(&report)), (Accel::Tcg, vec!["HOST_KVM_DEVICE_GROUP"]));
    }

    #[test]
    fn dnsmasq_is_looked_for_in_sbin_then_on_path() {
        let path = std::ffi::OsString::from("/opt/bin:/usr/sbin");
        let candidates = dnsmasq_candidates(Some(&path));
        assert_eq!(candidates, [PathBuf::from(DNSMASQ), PathBuf::from("/opt/bin/dnsmasq")]);
        assert_eq!(dnsmasq_candidates(None), [PathBuf::from(DNSMASQ)]);
    }

    #[test]
    fn parses_groups() {
        let group = "root:x:0:\nkvm:x:993:alice\nlibvirt:x:994:\n";
        assert_eq!(group_id(group, "kvm"), Some(993));
        assert_eq!(group_id(group, "docker"), None);
    }
}
