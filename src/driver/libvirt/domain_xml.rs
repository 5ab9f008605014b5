//! The libvirt domain XML of a node (pure; golden-tested). Syntax:
//! <https://libvirt.org/formatdomain.html>.

use std::fmt::Write as _;

use super::xml::{escape, marker};
use super::{console, storage};
use crate::driver::{Accel, DiskSpec, Nic, VmSpec};

/// The domain definition of `vm`, its disks being volumes of the storage pool `pool`.
/// Its serial console is logged to `vm.serial_log`, or, given the pool's directory
/// `console_dir` (a remote hypervisor, which cannot write this machine's files), into
/// that directory (see `console`).
pub fn domain_xml(vm: &VmSpec, pool: &str, console_dir: Option<&str>) -> String {
    let (domain_type, cpu) = match vm.accel {
        // A VirtualBox profile never reaches libvirt; were it to, KVM is its like.
        Accel::Kvm | Accel::VirtualBox => ("kvm", "host-passthrough"),
        // `maximum` gives TCG guests every CPU feature QEMU can emulate (x86-64-v2 and
        // up), which newer distributions require; `qemu64` lacks SSE4.2.
        Accel::Tcg => ("qemu", "maximum"),
    };
    let (volume, boot) = match &vm.disk {
        DiskSpec::Overlay { .. } => (None, "    <boot dev='hd'/>\n"),
        DiskSpec::IsoWithDataDisk { iso_id, .. } => {
            (Some(storage::iso_volume(iso_id)), "    <boot dev='cdrom'/>\n    <boot dev='hd'/>\n")
        }
    };
    let mut x = String::new();
    x.push_str(&format!("<domain type='{domain_type}'>\n  <name>{}</name>\n", escape(&vm.name)));
    x.push_str(&marker(&vm.owner.node(&vm.name)));
    let _ = write!(
        x,
        "  <memory unit='MiB'>{}</memory>\n  <vcpu>{}</vcpu>\n  <os>\n    \
         <type arch='x86_64' machine='q35'>hvm</type>\n{boot}  </os>\n  \
         <features>\n    <acpi/>\n    <apic/>\n  </features>\n  \
         <cpu mode='{cpu}' check='none'/>\n  <clock offset='utc'/>\n  \
         <on_poweroff>destroy</on_poweroff>\n  <on_reboot>restart</on_reboot>\n  \
         <on_crash>destroy</on_crash>\n  <devices>\n",
        vm.memory_mib, vm.cpus
    );
    let disk_volume = storage::disk_volume(&vm.owner.home, &vm.name);
    x.push_str(&disk(pool, &disk_volume, "disk", "qcow2", "vda", "virtio"));
    // SATA cdroms: q35 has no IDE, and cloud-init finds the seed by its label. A boot
    // ISO comes first: the firmware's `<boot dev='cdrom'/>` tries only the first drive.
    let mut cdroms: Vec<String> = volume.into_iter().collect();
    cdroms.push(storage::seed_volume(&vm.owner.home, &vm.name));
    for (i, cdrom) in cdroms.iter().enumerate() {
        let dev = format!("sd{}", char::from(b'a' + i as u8));
        x.push_str(&disk(pool, cdrom, "cdrom", "raw", &dev, "sata"));
    }
    for nic in [&vm.nat, &vm.host_only] {
        x.push_str(&interface(nic));
    }
    // The console log is appended to: a snapshot restore starts a new QEMU, whose log
    // would otherwise replace the boot messages. The guest agent's channel: after a
    // restore the guest's clock is set through it when the image runs qemu-guest-agent
    // (else over SSH).
    let log = match console_dir {
        Some(dir) => console::path_in(dir, &vm.name),
        None => vm.serial_log.to_string_lossy().into_owned(),
    };
    let log = escape(&log);
    let _ = write!(
        x,
        "    <serial type='pty'>\n      <log file='{log}' append='on'/>\n    </serial>\n    \
         <console type='pty'/>\n    \
         <channel type='unix'>\n      <target type='virtio' name='org.qemu.guest_agent.0'/>\n    </channel>\n    \
         <rng model='virtio'>\n      <backend model='random'>/dev/urandom</backend>\n    </rng>\n    \
         <memballoon model='virtio'/>\n  </devices>\n</domain>\n"
    );
    x
}

fn disk(pool: &str, volume: &str, device: &str, format: &str, dev: &str, bus: &str) -> String {
    let (discard, readonly) =
        if device == "disk" { (" discard='unmap'", "") } else { ("", "      <readonly/>\n") };
    format!(
        "    <disk type='volume' device='{device}'>\n      \
         <driver name='qemu' type='{format}'{discard}/>\n      \
         <source pool='{}' volume='{}'/>\n      <target dev='{dev}' bus='{bus}'/>\n{readonly}    </disk>\n",
        escape(pool),
        escape(volume)
    )
}

fn interface(nic: &Nic) -> String {
    format!(
        "    <interface type='network'>\n      <source network='{}'/>\n      \
         <mac address='{}'/>\n      <model type='virtio'/>\n    </interface>\n",
        escape(&nic.network),
        nic.mac
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::driver::Owner;
    use crate::driver::libvirt::xml::assert_golden;
    use crate::net::MacAddr;

    /// A node spec for tests: overlay disk, TCG, derived MACs.
    pub(crate) fn spec(profile: &str, name: &str) -> VmSpec {
        let (host_only, nat) = crate::driver::network_names(profile);
        VmSpec {
            name: name.to_owned(),
            owner: Owner::new("0123456789abcdef".parse().unwrap(), &profile.parse().unwrap()),
            accel: Accel::Tcg,
            cpus: 2,
            memory_mib: 2048,
            disk: DiskSpec::Overlay {
                base_image: "/cache/base.qcow2".into(),
                base_id: "ab12".into(),
                size_gib: 20,
            },
            seed_iso: format!("/home/u/.kubelab/profiles/{profile}/{name}/seed.iso").into(),
            serial_log: format!("/home/u/.kubelab/profiles/{profile}/{name}/console.log").into(),
            nat: Nic { network: nat, mac: MacAddr::derive(profile, name, 0) },
            host_only: Nic { network: host_only, mac: MacAddr::derive(profile, name, 1) },
        }
    }

    #[test]
    fn overlay_tcg_domain_matches_golden() {
        assert_golden(
            "domain-overlay-tcg.xml",
            &domain_xml(&spec("lab", "lab-m02"), "kubelab", None),
        );
    }

    #[test]
    fn iso_kvm_domain_matches_golden() {
        let vm = VmSpec {
            accel: Accel::Kvm,
            disk: DiskSpec::IsoWithDataDisk {
                iso: "/cache/x.iso".into(),
                iso_id: "cd34".into(),
                size_gib: 10,
            },
            ..spec("lab", "lab")
        };
        assert_golden("domain-iso-kvm.xml", &domain_xml(&vm, "kubelab", None));
    }

    #[test]
    fn values_are_escaped() {
        let vm = VmSpec { serial_log: "/tmp/a'b&c.log".into(), ..spec("lab", "lab") };
        assert!(domain_xml(&vm, "kubelab", None).contains("<log file='/tmp/a&apos;b&amp;c.log'"));
        let remote = domain_xml(&vm, "kubelab", Some("/srv/p'o&l"));
        assert!(remote.contains("<log file='/srv/p&apos;o&amp;l/lab.console.log'"), "{remote}");
    }

    /// A remote hypervisor logs into its pool directory, never to this machine's path;
    /// everything else is the local definition.
    #[test]
    fn a_remote_console_logs_into_the_pool_directory() {
        let vm = spec("lab", "lab-m02");
        let local = domain_xml(&vm, "kubelab", None);
        let remote = domain_xml(&vm, "kubelab", Some("/var/lib/libvirt/images/kubelab"));
        let log = "/var/lib/libvirt/images/kubelab/lab-m02.console.log";
        assert!(remote.contains(&format!("<log file='{log}' append='on'/>")), "{remote}");
        assert!(!remote.contains(&*vm.serial_log.to_string_lossy()), "{remote}");
        let client = vm.serial_log.to_string_lossy();
        assert_eq!(remote.replace(log, &client), local);
    }
}
