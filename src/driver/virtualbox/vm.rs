//! A kubelab VM on VirtualBox as `VBoxManage` arguments: pure builders for
//! `modifyvm`, `storagectl`, `storageattach` and `createmedium`, kubelab's owner marker
//! (extra data [`OWNER_KEY`]; the VM group `/kubelab-<profile>` only sorts VirtualBox
//! Manager's list), and the one mapping of VirtualBox machine states to
//! [`VmState`]. Option names follow the manual's "VBoxManage modifyvm",
//! "VBoxManage storagectl", "VBoxManage storageattach" and "VBoxManage createmedium"
//! sections, in spellings both 6.1 and 7.x accept.

use std::path::Path;

use crate::driver::{DriverError, NAME_PREFIX, VmSpec, VmState};
use crate::net::MacAddr;

/// The one storage controller of a kubelab VM.
pub const CONTROLLER: &str = "SATA";
/// SATA port of the boot disk (overlay or blank data disk).
pub const DISK_PORT: u32 = 0;
/// SATA port of the boot ISO of `iso` images.
pub const ISO_PORT: u32 = 1;
/// SATA port of the cloud-init seed ISO.
pub const SEED_PORT: u32 = 2;
/// The file name of a node's own disk, beside its seed in the node directory.
pub const DISK_FILE: &str = "disk.vdi";

/// The VM's extra-data key holding its owner marker (`HOME/PROFILE/NODE`, see
/// `driver::Owner`). Groups cannot be the marker: users regroup VMs in the GUI.
pub const OWNER_KEY: &str = "kubelab/owner";

/// The VM group kubelab files a profile's VMs under, for the GUI's list.
pub fn group(profile: &str) -> String {
    format!("/{NAME_PREFIX}{profile}")
}

/// A MAC as `--macaddressN` takes it: 12 hex digits, no separators.
pub fn mac_hex(mac: &MacAddr) -> String {
    mac.octets().iter().map(|b| format!("{b:02X}")).collect()
}

/// The `modifyvm` arguments of a new VM: size, firmware, paravirtualization, NIC 1 NAT
/// with the SSH forward on 127.0.0.1:`ssh_port`, NIC 2 host-only (`nic2`, from
/// `network::nic2_args`), and the serial console logged to `spec.serial_log`.
pub fn modify_vm_args(
    spec: &VmSpec,
    ssh_port: u16,
    nic2: Vec<String>,
    boot_iso: bool,
) -> Vec<String> {
    let (boot1, boot2) = if boot_iso { ("dvd", "disk") } else { ("disk", "dvd") };
    let mut args: Vec<String> = [
        "--cpus",
        &spec.cpus.to_string(),
        "--memory",
        &spec.memory_mib.to_string(),
        // BIOS: cloud images and the test image boot from an MBR.
        "--firmware",
        "bios",
        // The guest kernel's KVM clock and paravirtual spinlocks.
        "--paravirtprovider",
        "kvm",
        // Needed for more than one vCPU.
        "--ioapic",
        "on",
        "--rtcuseutc",
        "on",
        "--boot1",
        boot1,
        "--boot2",
        boot2,
        "--boot3",
        "none",
        "--boot4",
        "none",
        "--nic1",
        "nat",
        "--macaddress1",
        &mac_hex(&spec.nat.mac),
        "--natpf1",
        &format!("ssh,tcp,127.0.0.1,{ssh_port},,22"),
        "--cableconnected1",
        "on",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(nic2);
    args.extend(
        ["--macaddress2", &mac_hex(&spec.host_only.mac), "--cableconnected2", "on"]
            .map(String::from),
    );
    // COM1 at its standard I/O port and IRQ, written to a file on the host.
    args.extend(["--uart1", "0x3F8", "4", "--uartmode1", "file"].map(String::from));
    args.push(spec.serial_log.to_string_lossy().into_owned());
    args
}

/// `storagectl` arguments adding the SATA controller.
pub fn add_controller_args() -> Vec<String> {
    [
        "--name",
        CONTROLLER,
        "--add",
        "sata",
        "--controller",
        "IntelAhci",
        "--portcount",
        "3",
        "--bootable",
        "on",
    ]
    .map(String::from)
    .to_vec()
}

/// `storageattach` arguments putting `medium` (`hdd` or `dvddrive`) on SATA `port`.
pub fn attach_args(port: u32, kind: &str, medium: &Path) -> Vec<String> {
    let mut args: Vec<String> =
        ["--storagectl", CONTROLLER, "--port", &port.to_string(), "--device", "0"]
            .map(String::from)
            .to_vec();
    args.extend([
        "--type".into(),
        kind.into(),
        "--medium".into(),
        medium.to_string_lossy().into_owned(),
    ]);
    args
}

/// `createmedium disk` arguments: a differencing VDI over `parent`, or a blank
/// dynamically allocated VDI of `size_mib` when there is no parent.
pub fn create_medium_args(file: &Path, parent: Option<&Path>, size_mib: u64) -> Vec<String> {
    let mut args = vec!["--filename".to_owned(), file.to_string_lossy().into_owned()];
    match parent {
        Some(parent) => args.extend(["--diffparent".into(), parent.to_string_lossy().into_owned()]),
        None => args.extend(["--size".into(), size_mib.to_string()]),
    }
    args.extend(["--format".into(), "VDI".into()]);
    args
}

/// Maps `showvminfo`'s `VMState` (VirtualBox's `MachineState` as VBoxManage's
/// `machineStateToName` spells it for `--machinereadable`) to kubelab's states, many to
/// one, so a VM that died while booting (`aborted`, `gurumeditation`) reads as Crashed;
/// an unknown state is an error carrying the raw text.
pub fn map_state(vm: &str, raw: &str) -> Result<VmState, DriverError> {
    Ok(match raw {
        "running" => VmState::Running,
        "poweroff" => VmState::Stopped,
        // The VM process ended without a shutdown (killed, host crash, guest triple fault).
        "aborted" | "aborted-saved" | "gurumeditation" | "stuck" => VmState::Crashed,
        // Suspended to disk or paused in memory: `start` resumes both.
        "saved"
        | "paused"
        | "teleported"
        | "teleportingpausedvm"
        | "deletingsnapshotlivepaused" => VmState::Paused,
        "starting" | "restoring" | "settingup" | "teleportingin" => VmState::Starting,
        "stopping" | "saving" | "teleporting" => VmState::Stopping,
        // Snapshot operations keep the VM's run state; they are short.
        "livesnapshotting" | "onlinesnapshotting" => VmState::Running,
        "snapshotting" | "deletingsnapshot" | "deletingsnapshotlive" | "restoringsnapshot" => {
            VmState::Stopped
        }
        _ => return Err(DriverError::UnknownState { name: vm.to_owned(), raw: raw.to_owned() }),
    })
}

/// Whether VirtualBox can attach the image (by extension): VMDK, VDI or VHD.
pub fn attachable(image: &Path) -> bool {
    image
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["vmdk", "vdi", "vhd"].contains(&e.to_ascii_lowercase().as_str()))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::driver::{Accel, DiskSpec, Nic};

    fn spec() -> VmSpec {
        VmSpec {
            name: "lab-m02".into(),
            owner: crate::driver::Owner::new(
                "0123456789abcdef".parse().unwrap(),
                &"lab".parse().unwrap(),
            ),
            accel: Accel::Kvm,
            cpus: 2,
            memory_mib: 2048,
            disk: DiskSpec::Overlay {
                base_image: "/c/b.vmdk".into(),
                base_id: "b".into(),
                size_gib: 20,
            },
            seed_iso: "/p/nodes/lab-m02/seed.iso".into(),
            serial_log: "/p/nodes/lab-m02/console.log".into(),
            nat: Nic {
                network: "kubelab-lab.nat".into(),
                mac: MacAddr::derive("lab", "lab-m02", 0),
            },
            host_only: Nic {
                network: "kubelab-lab".into(),
                mac: MacAddr::derive("lab", "lab-m02", 1),
            },
        }
    }

    #[test]
    fn modifyvm_arguments() {
        let s = spec();
        let nic2 = vec![
            "--nic2".into(),
            "hostonly".into(),
            "--hostonlyadapter2".into(),
            "vboxnet0".into(),
        ];
        let args = modify_vm_args(&s, 40022, nic2, false).join(" ");
        assert!(args.starts_with("--cpus 2 --memory 2048 --firmware bios --paravirtprovider kvm"));
        assert!(args.contains("--boot1 disk --boot2 dvd"));
        assert!(args.contains(&format!("--nic1 nat --macaddress1 {}", mac_hex(&s.nat.mac))));
        assert!(args.contains("--natpf1 ssh,tcp,127.0.0.1,40022,,22"));
        assert!(args.contains("--nic2 hostonly --hostonlyadapter2 vboxnet0 --macaddress2"));
        assert!(args.ends_with("--uart1 0x3F8 4 --uartmode1 file /p/nodes/lab-m02/console.log"));
        assert_eq!(mac_hex(&s.nat.mac).len(), 12);
        assert!(modify_vm_args(&s, 1, vec![], true).join(" ").contains("--boot1 dvd --boot2 disk"));
    }

    #[test]
    fn storage_arguments() {
        assert_eq!(
            attach_args(SEED_PORT, "dvddrive", Path::new("/s.iso")).join(" "),
            "--storagectl SATA --port 2 --device 0 --type dvddrive --medium /s.iso"
        );
        let diff = create_medium_args(Path::new("/n/disk.vdi"), Some(Path::new("/c/b.vmdk")), 0);
        assert_eq!(diff.join(" "), "--filename /n/disk.vdi --diffparent /c/b.vmdk --format VDI");
        let blank = create_medium_args(Path::new("/n/disk.vdi"), None, 20480);
        assert_eq!(blank.join(" "), "--filename /n/disk.vdi --size 20480 --format VDI");
        assert!(add_controller_args().join(" ").contains("--add sata --controller IntelAhci"));
    }

    #[test]
    fn states_map_many_to_one_and_unknown_is_an_error() {
        let cases = [
            ("running", VmState::Running),
            ("poweroff", VmState::Stopped),
            ("aborted", VmState::Crashed),
            ("aborted-saved", VmState::Crashed),
            ("gurumeditation", VmState::Crashed),
            ("teleportingpausedvm", VmState::Paused),
            ("teleportingin", VmState::Starting),
            ("livesnapshotting", VmState::Running),
            ("saved", VmState::Paused),
            ("paused", VmState::Paused),
            ("starting", VmState::Starting),
            ("restoring", VmState::Starting),
            ("stopping", VmState::Stopping),
            ("saving", VmState::Stopping),
        ];
        for (raw, state) in cases {
            assert_eq!(map_state("vm", raw).unwrap(), state, "{raw}");
        }
        let err = map_state("vm", "levitating").unwrap_err();
        assert!(matches!(err, DriverError::UnknownState { ref raw, .. } if raw == "levitating"));
    }

    #[test]
    fn group_and_formats() {
        assert_eq!(group("lab"), "/kubelab-lab");
        assert!(attachable(&PathBuf::from("/c/x.VMDK")));
        assert!(!attachable(&PathBuf::from("/c/x.qcow2")));
    }
}
