//! The catalogue of user-facing failures: a stable id, an exit code and advice for each.
//! All advice lives here; `reason()` maps a typed error to its entry (minikube's
//! `pkg/minikube/reason/reason.go` is the model).
//!
//! Exit codes are grouped by layer: 1 unused (every failure has a reason), 2 usage
//! (clap), 3-9 `KUBELAB_` (bugs), 10-19 `PROFILE_`,
//! 20-39 `HOST_`, 40-49 `DRV_`, 50-59 `IMG_`, 60-69 `GUEST_`, 70-79 `K8S_`, 80-89
//! `SNAP_`, 90-99 `XFER_` (image archives moved between hosts), 100-109 `HOST_` and
//! `PROFILE_` continued (their own ranges are full; `kubelab doctor`'s checks), 110-119
//! `BAKE_` (golden images).

use crate::Error;
use crate::bootstrap::BootstrapError;
use crate::cloudinit::CloudInitError;
use crate::cluster::ClusterError;
use crate::driver::{DriverError, Object};
use crate::fsutil;
use crate::home::HomeError;
use crate::image::ImageError;
use crate::journal::JournalError;
use crate::keys::KeyError;
use crate::kubeconfig::KubeconfigError;
use crate::lock::LockError;
use crate::process::ProcessError;
use crate::profile::ProfileError;
use crate::snapshot::SnapshotError;
use crate::ssh::SshError;

/// One kind of failure a user can meet.
#[derive(Debug, PartialEq, Eq, serde::Serialize)]
pub struct Reason {
    /// Stable id, prefixed by layer; shown in the hint and safe to search for.
    pub id: &'static str,
    /// The process exit code.
    pub exit_code: u8,
    /// What the user should do.
    pub advice: &'static str,
}

/// Another kubelab process holds the profile's lock.
pub const PROFILE_BUSY: Reason = Reason {
    id: "PROFILE_BUSY",
    exit_code: 10,
    advice: "wait for the other kubelab command to finish, or pass --wait to queue behind it",
};
/// The profile name is not a DNS-1123 label.
pub const PROFILE_NAME_INVALID: Reason = Reason {
    id: "PROFILE_NAME_INVALID",
    exit_code: 11,
    advice: "use at most 40 lowercase letters, digits and '-', starting with a letter and \
             not ending in -m and digits (workers are named <profile>-m02, -m03, ...: a \
             profile named like one would share its VM's name with another profile's node)",
};
/// A path kubelab was about to write in its home is a symbolic link.
pub const PROFILE_LINK_REFUSED: Reason = Reason {
    id: "PROFILE_LINK_REFUSED",
    exit_code: 19,
    advice: "kubelab never writes through a symbolic link inside its home (it could \
             overwrite a file elsewhere): find out who made the link named above, remove \
             it, then run the command again",
};
/// The home's `home-id` file is not what kubelab writes.
pub const PROFILE_HOME_ID_CORRUPT: Reason = Reason {
    id: "PROFILE_HOME_ID_CORRUPT",
    exit_code: 18,
    advice: "the home's home-id file names this home on every VM, network and disk it made; \
             kubelab never replaces it: restore it (16 lowercase hex digits and a newline), \
             or, if this home has no clusters left, remove the file",
};
/// The named profile does not exist.
pub const PROFILE_NOT_FOUND: Reason = Reason {
    id: "PROFILE_NOT_FOUND",
    exit_code: 12,
    advice: "run `kubelab list` to see the profiles, or `kubelab up -p NAME` to create one",
};
/// The profile's state file cannot be read or parsed.
pub const PROFILE_STATE_CORRUPT: Reason = Reason {
    id: "PROFILE_STATE_CORRUPT",
    exit_code: 13,
    advice: "the profile's profile.json or journal was changed by hand or by a newer \
             kubelab; `kubelab delete --force -p NAME` removes the profile and whatever on \
             the hypervisor carries its owner marker",
};
/// A key file in the profile exists but cannot be used.
pub const PROFILE_KEY_CORRUPT: Reason = Reason {
    id: "PROFILE_KEY_CORRUPT",
    exit_code: 14,
    advice: "kubelab never replaces a key it finds; restore the file, or `kubelab delete -p \
             NAME` the profile (its nodes trust only that key)",
};

/// A flag contradicts the saved profile.
pub const PROFILE_FLAG_CONFLICT: Reason = Reason {
    id: "PROFILE_FLAG_CONFLICT",
    exit_code: 15,
    advice: "run `kubelab up` without that flag to keep the saved setting, use \
             `kubelab node add`/`node delete` to change the node count, or \
             `kubelab delete` first to recreate the cluster with new settings",
};
/// An option's value is invalid (size, count, subnet).
pub const PROFILE_BAD_OPTION: Reason = Reason {
    id: "PROFILE_BAD_OPTION",
    exit_code: 16,
    advice: "fix the option's value; `kubelab up --help` lists the formats and ranges",
};
/// The profile has no node of that name.
pub const PROFILE_UNKNOWN_NODE: Reason = Reason {
    id: "PROFILE_UNKNOWN_NODE",
    exit_code: 17,
    advice: "`kubelab status` lists the profile's nodes",
};
/// A local image path names a device, FIFO, directory or socket.
pub const IMG_NOT_REGULAR_FILE: Reason = Reason {
    id: "IMG_NOT_REGULAR_FILE",
    exit_code: 56,
    advice: "give the path of an image file (qcow2, vmdk, vdi, raw or iso); devices and pipes \
             are refused because they may never end",
};
/// An image is larger than its bound (the catalogue's size, else `--max-size`).
pub const IMG_TOO_LARGE: Reason = Reason {
    id: "IMG_TOO_LARGE",
    exit_code: 57,
    advice: "check the URL; if the image really is that large, raise the limit with \
             `kubelab image pull --max-size SIZE` (default 64G)",
};
/// A download redirected to a `file://` or other non-HTTP URL.
pub const IMG_REDIRECT_REFUSED: Reason = Reason {
    id: "IMG_REDIRECT_REFUSED",
    exit_code: 58,
    advice: "the server tried to send kubelab to a local file or another protocol: use a \
             server you trust, or download the file yourself and pass its path",
};
/// A downloaded or imported image does not match its expected digest (it was deleted).
pub const IMG_CHECKSUM_MISMATCH: Reason = Reason {
    id: "IMG_CHECKSUM_MISMATCH",
    exit_code: 50,
    advice: "check the digest you passed against the publisher's SHA256SUMS; if it is right, \
             the download was corrupted or tampered with (a proxy?): pull again; for \
             `image import`, the archive was altered after export: copy or export it again",
};
/// The image name is not in the catalogue.
pub const IMG_NOT_FOUND: Reason = Reason {
    id: "IMG_NOT_FOUND",
    exit_code: 51,
    advice: "run `kubelab image list` to see the catalogue, or give a URL with --sha256 or a \
             local file path",
};
/// A remote image URL came without a digest.
pub const IMG_DIGEST_REQUIRED: Reason = Reason {
    id: "IMG_DIGEST_REQUIRED",
    exit_code: 52,
    advice: "pass --sha256 HEX with the digest the publisher lists, or --insecure-skip-verify \
             to trust the download unverified",
};
/// The image could not be downloaded (network, proxy, HTTP status).
pub const IMG_DOWNLOAD_FAILED: Reason = Reason {
    id: "IMG_DOWNLOAD_FAILED",
    exit_code: 53,
    advice: "check the URL, the network and HTTPS_PROXY/HTTP_PROXY/NO_PROXY; run the command \
             again to resume the download; KUBELAB_READ_TIMEOUT_SECS sets the stall limit",
};
/// An `image import` archive is not one `image export` writes, or was cut short.
pub const XFER_BAD_ARCHIVE: Reason = Reason {
    id: "XFER_BAD_ARCHIVE",
    exit_code: 90,
    advice: "the file is not an archive written by `kubelab image export`, or it was cut \
             short or altered on the way: copy it again (its size should match the \
             original's), or export it again; nothing entered the cache",
};
/// The image spec is not a usable name, URL, path or digest.
pub const IMG_BAD_SOURCE: Reason = Reason {
    id: "IMG_BAD_SOURCE",
    exit_code: 54,
    advice: "give a catalogue name (`kubelab image list`), an http(s):// or file:// URL, or an \
             existing file; a SHA-256 digest is 64 hex characters",
};
/// `image rm` found nothing cached to remove.
pub const IMG_NOT_CACHED: Reason = Reason {
    id: "IMG_NOT_CACHED",
    exit_code: 55,
    advice: "`kubelab image list -o json` shows the cached images and their digests",
};
/// A cache sidecar is not what kubelab writes: unreadable, or a field is invalid.
pub const IMG_CACHE_CORRUPT: Reason = Reason {
    id: "IMG_CACHE_CORRUPT",
    exit_code: 59,
    advice: "kubelab acts on no cache entry it cannot trust: remove the .json file named \
             above and the image file beside it with the same digest (or the whole \
             cache/images directory), then pull again",
};

/// The node's cloud-init seed was refused: bad extra user-data or node user name.
pub const GUEST_SEED_INVALID: Reason = Reason {
    id: "GUEST_SEED_INVALID",
    exit_code: 65,
    advice: "the file given to --cloud-init must start with `#cloud-config`, hold a YAML mapping \
             and leave kubelab's own keys (ssh_keys, hostname, its user) alone; see the error \
             for the key or value at fault",
};

/// KVM is not usable (or not trusted: nested) and the user required it, or VMs fall
/// back to TCG (as a warning).
/// A node presented another SSH host key than the one kubelab generated for it.
pub const GUEST_HOSTKEY_MISMATCH: Reason = Reason {
    id: "GUEST_HOSTKEY_MISMATCH",
    exit_code: 60,
    advice: "something else answers at the node's address (another VM with the same IP or \
             port forward), or the node was rebuilt outside kubelab; kubelab refuses to log \
             in: check `kubelab status` and `kubelab delete` the profile if it is stale",
};
/// A node did not accept an SSH login before the deadline.
pub const GUEST_SSH_TIMEOUT: Reason = Reason {
    id: "GUEST_SSH_TIMEOUT",
    exit_code: 61,
    advice: "the state in the message says how far the node got: `port closed` (still \
             booting, or no network), `banner not yet` (sshd not up), `auth not yet ready` \
             (cloud-init not done); look at the VM's console, then run the command again",
};
/// A node refused the profile's user key.
pub const GUEST_SSH_AUTH: Reason = Reason {
    id: "GUEST_SSH_AUTH",
    exit_code: 62,
    advice: "the node does not have the profile's key for this user: cloud-init may not have \
             run (check that the image has cloud-init with the NoCloud datasource)",
};
/// A command or script kubelab ran on a node failed.
pub const GUEST_COMMAND_FAILED: Reason = Reason {
    id: "GUEST_COMMAND_FAILED",
    exit_code: 63,
    advice: "the lines above are the end of its stderr; the profile's log file has all of \
             its output",
};
/// The SSH connection to a node could not be made or broke.
pub const GUEST_SSH_UNREACHABLE: Reason = Reason {
    id: "GUEST_SSH_UNREACHABLE",
    exit_code: 64,
    advice: "check that the node is running (`kubelab status`); a node that stopped or \
             rebooted while a command ran needs `kubelab up` again",
};
/// KVM is not usable (or, nested, not trusted): an error under `--require-kvm`, else a
/// warning as VMs fall back to TCG.
pub const HOST_KVM_UNAVAILABLE: Reason = Reason {
    id: "HOST_KVM_UNAVAILABLE",
    exit_code: 20,
    advice: "enable VT-x/AMD-V (or nested virtualization) and load the kvm module; without \
             --require-kvm kubelab falls back to slow software emulation (TCG), and \
             KUBELAB_ACCEL=kvm forces KVM on a nested host",
};
/// `/dev/kvm` is not owned by group `kvm`, which makes libvirt re-probe QEMU on every call.
pub const HOST_KVM_DEVICE_GROUP: Reason = Reason {
    id: "HOST_KVM_DEVICE_GROUP",
    exit_code: 21,
    advice: "run `sudo chgrp kvm /dev/kvm` (and check the udev rules that set its group); \
             otherwise libvirt re-probes QEMU on every call and each command takes minutes",
};
/// The libvirt daemon's socket is missing or refuses connections: libvirt is not
/// installed, or its daemon is not running.
pub const HOST_LIBVIRT_UNREACHABLE: Reason = Reason {
    id: "HOST_LIBVIRT_UNREACHABLE",
    exit_code: 22,
    advice: "install libvirt and QEMU (Debian/Ubuntu: `sudo apt-get install \
             libvirt-daemon-system qemu-system-x86`; Fedora: `sudo dnf install libvirt \
             qemu-kvm`), then start the daemon: `sudo systemctl enable --now libvirtd` \
             (`sudo libvirtd -d` without systemd); or pass --libvirt-uri / set \
             LIBVIRT_DEFAULT_URI to the daemon you use; `kubelab doctor` checks the host",
};
/// The libvirt daemon runs but refused the connection for lack of permission.
pub const HOST_LIBVIRT_PERMISSION: Reason = Reason {
    id: "HOST_LIBVIRT_PERMISSION",
    exit_code: 23,
    advice: "libvirtd runs but lets only root and group libvirt in: add yourself to the \
             group with `sudo usermod -aG libvirt $USER`, then log out and in again (or run \
             `newgrp libvirt` in this shell)",
};
/// `qemu-img` is not installed.
pub const HOST_QEMU_IMG_MISSING: Reason = Reason {
    id: "HOST_QEMU_IMG_MISSING",
    exit_code: 24,
    advice: "install qemu-img: `sudo apt-get install qemu-utils` (Debian, Ubuntu) or \
             `sudo dnf install qemu-img` (Fedora)",
};
/// VT-x/AMD-V is present but disabled in the firmware.
pub const HOST_VTX_DISABLED: Reason = Reason {
    id: "HOST_VTX_DISABLED",
    exit_code: 25,
    advice: "enable Intel VT-x or AMD-V (also called SVM or \"Virtualization Technology\") in \
             the BIOS/UEFI setup, then power the machine off and on",
};
/// The CPU, or the VM kubelab runs in, offers no VT-x/AMD-V.
pub const HOST_VTX_MISSING: Reason = Reason {
    id: "HOST_VTX_MISSING",
    exit_code: 26,
    advice: "this CPU shows no VT-x/AMD-V: enable it in the BIOS, or, inside a VM, enable \
             nested virtualization in the outer hypervisor; on Windows, Hyper-V can also hide \
             it (see HOST_HYPERV_ENABLED)",
};
/// KVM holds VT-x/AMD-V, so VirtualBox cannot use it.
pub const HOST_KVM_HOLDS_VTX: Reason = Reason {
    id: "HOST_KVM_HOLDS_VTX",
    exit_code: 27,
    advice: "stop the KVM VMs (libvirt, kvm2 profiles: `kubelab down`), then unload KVM: \
             `sudo modprobe -r kvm_intel kvm_amd`; or use --driver kvm2",
};
/// Hyper-V, VBS or WSL2 owns virtualization on Windows.
pub const HOST_HYPERV_ENABLED: Reason = Reason {
    id: "HOST_HYPERV_ENABLED",
    exit_code: 28,
    advice: "VirtualBox under Hyper-V runs in its very slow NEM (\"turtle\") mode or fails: \
             in an administrator prompt run `dism.exe /Online /Disable-Feature:Microsoft-Hyper-V` \
             or `bcdedit /set hypervisorlaunchtype off` (turn off Memory integrity and WSL2 \
             too), then reboot; or use another driver",
};
/// `VBoxManage` was not found.
pub const HOST_VBOX_NOT_FOUND: Reason = Reason {
    id: "HOST_VBOX_NOT_FOUND",
    exit_code: 29,
    advice: "install VirtualBox 7 (https://www.virtualbox.org/wiki/Downloads), or put \
             VBoxManage on PATH or its folder in VBOX_MSI_INSTALL_PATH",
};
/// The installed VirtualBox is too old or too new.
pub const HOST_VBOX_VERSION: Reason = Reason {
    id: "HOST_VBOX_VERSION",
    exit_code: 30,
    advice: "kubelab drives VirtualBox 6.1 and 7.x: upgrade VirtualBox (or use a kubelab \
             release that knows the newer one)",
};
/// The host-only subnet is outside what `/etc/vbox/networks.conf` allows.
pub const HOST_VBOX_HOSTONLY_RANGE: Reason = Reason {
    id: "HOST_VBOX_HOSTONLY_RANGE",
    exit_code: 31,
    advice: "VirtualBox 6.1.28+ only gives host-only networks the ranges in \
             /etc/vbox/networks.conf (default 192.168.56.0/21): add the line shown to that \
             file (as root), or pick --network-cidr inside an allowed range",
};
/// Creating a host-only adapter hung: a Windows permission prompt is waiting.
pub const HOST_VBOX_HOSTONLY_PROMPT: Reason = Reason {
    id: "HOST_VBOX_HOSTONLY_PROMPT",
    exit_code: 32,
    advice: "Windows asks for permission to install VirtualBox's network adapter in a prompt \
             that may be hidden behind other windows: accept it (or create the adapter once in \
             VirtualBox Manager > Tools > Network), then run the command again",
};
/// A VirtualBox kernel driver (vboxdrv, vboxnetadp) is not loaded.
pub const HOST_VBOX_KERNEL_DRIVER: Reason = Reason {
    id: "HOST_VBOX_KERNEL_DRIVER",
    exit_code: 38,
    advice: "Linux: build and load VirtualBox's kernel modules with `sudo /sbin/vboxconfig` \
             (needs the headers of the running kernel; with Secure Boot, sign the modules or \
             enroll the key it asks for), check with `lsmod | grep -E 'vboxdrv|vboxnetadp'`; \
             macOS: allow the software of \"Oracle America, Inc.\" in System Settings > \
             Privacy & Security, then restart (or reinstall VirtualBox)",
};
/// VirtualBox could not create or show a host-only adapter.
pub const HOST_VBOX_HOSTONLY_ADAPTER: Reason = Reason {
    id: "HOST_VBOX_HOSTONLY_ADAPTER",
    exit_code: 39,
    advice: "VirtualBox could not set up a host-only adapter: on Windows, remove stale \
             \"VirtualBox Host-Only Ethernet Adapter\" devices in Device Manager, repair \
             VirtualBox with its networking drivers selected and reboot; or create the \
             adapter once in VirtualBox Manager > Tools > Network, then run the command again",
};
/// dnsmasq, which libvirt runs for every network's DHCP and DNS, is not installed.
pub const HOST_DNSMASQ_MISSING: Reason = Reason {
    id: "HOST_DNSMASQ_MISSING",
    exit_code: 100,
    advice: "libvirt starts dnsmasq for each network it manages: install it (Debian, \
             Ubuntu: `sudo apt-get install dnsmasq-base`; Fedora: `sudo dnf install \
             dnsmasq`); the dnsmasq service itself need not run",
};
/// The file system of kubelab's home (image cache, node disks) is (nearly) full.
pub const HOST_DISK_SPACE: Reason = Reason {
    id: "HOST_DISK_SPACE",
    exit_code: 101,
    advice: "free space on the file system of kubelab's home (`kubelab image list` shows \
             cached images, `kubelab image rm` removes them; `kubelab delete -p NAME` \
             removes a profile's disks), or move the home to a larger one with --home / \
             KUBELAB_HOME",
};
/// A proxy is set for HTTP(S) but NO_PROXY does not cover the clusters' subnets.
pub const HOST_PROXY_NO_PROXY: Reason = Reason {
    id: "HOST_PROXY_NO_PROXY",
    exit_code: 102,
    advice: "kubectl and kubelab's own API checks would send the cluster's traffic to the \
             proxy, which cannot reach the host-only network: add the subnets shown to \
             NO_PROXY (and no_proxy) in your shell profile",
};
/// A host route overlaps the subnet a saved profile uses.
pub const HOST_SUBNET_CLASH: Reason = Reason {
    id: "HOST_SUBNET_CLASH",
    exit_code: 103,
    advice: "another network of this host (a VPN, Docker, another hypervisor) now routes \
             part of the profile's subnet, so its nodes may be unreachable: remove or move \
             that network, or `kubelab delete -p NAME` and `kubelab up -p NAME` again (a new \
             profile's subnets avoid every route)",
};
/// A profile's first `up` stopped before it created every node.
pub const PROFILE_UNFINISHED: Reason = Reason {
    id: "PROFILE_UNFINISHED",
    exit_code: 104,
    advice: "an earlier `kubelab up` was interrupted or failed: `kubelab up -p NAME` resumes \
             it, `kubelab delete -p NAME` removes what it made",
};
/// A profile directory has no profile.json (an interrupted `delete`, or files put there
/// by hand).
pub const PROFILE_STALE_DIR: Reason = Reason {
    id: "PROFILE_STALE_DIR",
    exit_code: 105,
    advice: "the directory holds no cluster state: `kubelab delete -p NAME` removes it \
             (and anything its journal still lists)",
};
/// A 127.0.0.1 port kubelab listens on (`kubelab tunnel`) is taken.
pub const HOST_PORT_BUSY: Reason = Reason {
    id: "HOST_PORT_BUSY",
    exit_code: 106,
    advice: "another program listens on that port, perhaps a `kubelab tunnel` of this \
             profile already running (one is enough: every kubectl of the profile uses it); \
             stop the other program, then run the command again",
};
/// The host's IPv4 routes could not be listed: an error for kvm2; for VirtualBox a
/// warning, as it chooses a subnet from its own networks alone.
pub const DRV_ROUTES_UNREADABLE: Reason = Reason {
    id: "DRV_ROUTES_UNREADABLE",
    exit_code: 49,
    advice: "kubelab reads the host's routes (/proc/net/route on Linux, `route print -4` on \
             Windows, `netstat -rn -f inet` on macOS) to pick a subnet no host network uses: \
             check that the command named above runs, or pass --network-cidr with a /24 you \
             know is free",
};
/// A profile network cannot be started.
pub const DRV_NET_INACTIVE: Reason = Reason {
    id: "DRV_NET_INACTIVE",
    exit_code: 40,
    advice: "see why with `virsh net-start NAME`; a bridge or dnsmasq left over from another \
             network, or a missing dnsmasq (package dnsmasq-base), are the usual causes",
};
/// A profile network clashes with an existing network or subnet.
pub const DRV_NET_CONFLICT: Reason = Reason {
    id: "DRV_NET_CONFLICT",
    exit_code: 41,
    advice: "pick a free subnet with --network-cidr, or remove the conflicting network if \
             you created it (kubelab never changes networks it did not create)",
};
/// Another VM uses the MAC address kubelab derived for a node.
pub const DRV_MAC_CONFLICT: Reason = Reason {
    id: "DRV_MAC_CONFLICT",
    exit_code: 42,
    advice: "another VM uses this MAC address; use another profile name, or change that \
             VM's MAC",
};
/// A VM of the node's name exists but kubelab did not create it for this profile.
pub const DRV_VM_NOT_KUBELAB: Reason = Reason {
    id: "DRV_VM_NOT_KUBELAB",
    exit_code: 43,
    advice: "a VM of this name exists that kubelab did not create for this home, profile and \
             node (the error names its owner, if it is another kubelab home or profile) and \
             will not touch; use another profile name, or rename or remove that VM yourself. \
             One an older kubelab made for this profile (the error says so) is left to you \
             too: if it is yours, remove it with `virsh destroy NAME; virsh undefine NAME; \
             virsh vol-delete --pool kubelab node-NAME.qcow2; virsh vol-delete --pool \
             kubelab node-NAME-seed.iso` (add `-c URI` for the profile's libvirt URI; \
             VirtualBox: `VBoxManage controlvm NAME poweroff; VBoxManage unregistervm NAME \
             --delete`), then run the command again",
};
/// A network of the profile's network name exists that kubelab did not create for this
/// home and profile.
pub const DRV_NET_NOT_KUBELAB: Reason = Reason {
    id: "DRV_NET_NOT_KUBELAB",
    exit_code: 47,
    advice: "a network of this name exists that kubelab did not create for this home and \
             profile (the error names its owner, if it is another kubelab home or profile) \
             and will not touch; use another profile name, or remove that network yourself. \
             One an older kubelab made for this profile (the error says so) is left to you \
             too: if it is yours, remove it with `virsh net-destroy NAME; virsh net-undefine \
             NAME`, then run the command again",
};
/// The libvirt URI has a driver, transport or parameter kubelab does not connect with.
pub const DRV_URI_REFUSED: Reason = Reason {
    id: "DRV_URI_REFUSED",
    exit_code: 44,
    advice: "kubelab connects only with qemu:// or test:// URIs, over the unix, ssh, libssh, \
             libssh2, tcp or tls transports, without parameters that run programs (command, \
             netcat) or turn off checks (no_verify); fix --libvirt-uri or LIBVIRT_DEFAULT_URI, \
             or, if it came from profile.json, that file was tampered with",
};
/// A kubeadm step failed on a node.
pub const K8S_BOOTSTRAP_FAILED: Reason = Reason {
    id: "K8S_BOOTSTRAP_FAILED",
    exit_code: 70,
    advice: "the error names the node and step, and ends with its stderr; the profile's \
             kubelab.log has every line of every step; `kubelab up` again resumes (each step \
             skips what is done)",
};
/// Nodes or kube-system pods were not ready before the deadline.
pub const K8S_NOT_READY: Reason = Reason {
    id: "K8S_NOT_READY",
    exit_code: 71,
    advice: "the error lists what is late; look closer with `kubelab ssh -- sudo kubectl \
             --kubeconfig /etc/kubernetes/admin.conf describe node NODE` (or `get pods -A`), \
             then `kubelab up` again, with a longer --wait-timeout on slow hosts",
};
/// The API server never answered.
pub const K8S_API_UNREACHABLE: Reason = Reason {
    id: "K8S_API_UNREACHABLE",
    exit_code: 72,
    advice: "kubeadm init ran but the API server does not answer on the control plane's \
             host-only address: see the control plane's journal (`kubelab ssh -- sudo \
             journalctl -u kubelet`) and the profile's kubelab.log",
};
/// The cluster CA or token kept in the profile is unusable.
pub const K8S_SECRETS_CORRUPT: Reason = Reason {
    id: "K8S_SECRETS_CORRUPT",
    exit_code: 73,
    advice: "the file named above under the profile's pki/ directory was changed or damaged; \
             the cluster trusts only that CA: restore it, or `kubelab delete` the profile",
};
/// The profile runs no Kubernetes.
pub const K8S_NOT_KUBERNETES: Reason = Reason {
    id: "K8S_NOT_KUBERNETES",
    exit_code: 74,
    advice: "this profile was made with --bootstrapper none; make a Kubernetes cluster with \
             `kubelab up -p NAME` (kubeadm is the default)",
};
/// `--kubernetes-version` names a release kubelab cannot bootstrap.
pub const K8S_VERSION_UNSUPPORTED: Reason = Reason {
    id: "K8S_VERSION_UNSUPPORTED",
    exit_code: 75,
    advice: "pick a version in the range named above (the default, v1.34.2, always works); \
             older releases cannot read kubeadm's v1beta4 configuration and newer ones need \
             containerd 2.0, which Debian 12 nodes do not have",
};
/// The user's kubeconfig stayed locked (`<file>.lock`) for the whole wait.
pub const K8S_KUBECONFIG_LOCKED: Reason = Reason {
    id: "K8S_KUBECONFIG_LOCKED",
    exit_code: 76,
    advice: "another kubectl or kubelab is changing the kubeconfig: run the command again when \
             it is done; if none is running, a crashed one left the lock file named above: \
             remove it",
};
/// The user's kubeconfig cannot be parsed, so kubelab will not rewrite it.
pub const K8S_KUBECONFIG_INVALID: Reason = Reason {
    id: "K8S_KUBECONFIG_INVALID",
    exit_code: 77,
    advice: "kubelab never overwrites a kubeconfig it cannot read: fix the file (`kubectl \
             config view` shows whether kubectl can read it), or point KUBECONFIG at another \
             file",
};
/// The kubeconfig already has a cluster, user or context with the profile's name that
/// this kubelab home's profile did not write.
pub const K8S_KUBECONFIG_NAME_TAKEN: Reason = Reason {
    id: "K8S_KUBECONFIG_NAME_TAKEN",
    exit_code: 78,
    advice: "kubelab never changes kubeconfig entries it did not write: use another profile \
             name (`-p NAME`), or rename or remove that entry (`kubectl config \
             delete-context|delete-cluster|delete-user NAME`) if you no longer need it",
};

/// kubelab itself failed (a bug): a worker thread panicked, or something built into
/// the binary (catalogue, templates) does not parse.
pub const KUBELAB_BUG: Reason = Reason {
    id: "KUBELAB_BUG",
    exit_code: 3,
    advice: "this is a bug in kubelab: please report it with the whole message and the \
             output of `kubelab version`",
};
/// A file in kubelab's home (profiles, locks, image cache) could not be read or written.
pub const HOST_HOME_IO: Reason = Reason {
    id: "HOST_HOME_IO",
    exit_code: 37,
    advice: "check the permissions of kubelab's home (--home, KUBELAB_HOME, else ~/.kubelab) \
             and the free space on its file system, then run the command again (downloads \
             resume)",
};
/// The host could not be read, or output could not be written.
pub const HOST_IO_FAILED: Reason = Reason {
    id: "HOST_IO_FAILED",
    exit_code: 33,
    advice: "the message names the file or stream: check that it is readable (and that the \
             pipe kubelab writes to is still open)",
};
/// No home directory for kubelab.
pub const HOST_NO_HOME: Reason = Reason {
    id: "HOST_NO_HOME",
    exit_code: 34,
    advice: "set HOME (USERPROFILE on Windows), or pass --home DIR / set KUBELAB_HOME",
};
/// An external program kubelab needs is not installed.
pub const HOST_TOOL_MISSING: Reason = Reason {
    id: "HOST_TOOL_MISSING",
    exit_code: 35,
    advice: "install the program named above (e.g. `sudo apt-get install openssh-client` for \
             ssh) or put it on PATH",
};
/// An external program failed or did not finish in time.
pub const HOST_COMMAND_FAILED: Reason = Reason {
    id: "HOST_COMMAND_FAILED",
    exit_code: 36,
    advice: "the message ends with the program's stderr; run the command again with -vv to \
             see the full command line",
};
/// A hypervisor call did not finish within its deadline.
pub const DRV_CALL_TIMEOUT: Reason = Reason {
    id: "DRV_CALL_TIMEOUT",
    exit_code: 48,
    advice: "the hypervisor did not answer in time (the message names the call and its \
             limit): a VM or the hypervisor's service may be hung; check `VBoxManage list \
             runningvms` or `virsh list`, power off the stuck VM or restart the service \
             (VBoxSVC, libvirtd), then run the command again",
};
/// A hypervisor call failed for a reason kubelab has no advice for.
pub const DRV_BACKEND_FAILED: Reason = Reason {
    id: "DRV_BACKEND_FAILED",
    exit_code: 45,
    advice: "the message ends with the hypervisor's own error; check its log (libvirtd's \
             journal, VBoxSVC.log) and `kubelab status`, then run the command again",
};
/// A node's VM does not exist.
pub const DRV_VM_MISSING: Reason = Reason {
    id: "DRV_VM_MISSING",
    exit_code: 46,
    advice: "the VM was removed outside kubelab: `kubelab up` creates it again",
};
/// A command needs a running node.
pub const GUEST_NOT_RUNNING: Reason = Reason {
    id: "GUEST_NOT_RUNNING",
    exit_code: 66,
    advice: "start the cluster with `kubelab up` (`kubelab status` shows each node's state)",
};
/// A node's VM stopped while kubelab waited for it.
pub const GUEST_VM_DOWN: Reason = Reason {
    id: "GUEST_VM_DOWN",
    exit_code: 67,
    advice: "the end of the node's console log above (all of it: `kubelab logs NODE`) says \
             why it stopped (kernel panic, out of memory, a guru meditation in VBox.log); \
             fix that (more --memory, another image), then `kubelab up` starts it again",
};
/// The remote libvirt host's SSH key is not in the user's known_hosts, or is not the
/// one pinned in the profile.
pub const GUEST_JUMP_HOSTKEY: Reason = Reason {
    id: "GUEST_JUMP_HOSTKEY",
    exit_code: 68,
    advice: "kubelab reaches a remote libvirt host's nodes through that host over ssh and \
             trusts only the key it found in your known_hosts when the profile was made: \
             for a new host, check its fingerprint and add it (`ssh-keyscan HOST >> \
             ~/.ssh/known_hosts`, or log in once with `ssh HOST`); if the host really was \
             reinstalled, `kubelab delete` the profile and make it again",
};
/// The remote libvirt host could not be reached or logged in to over ssh.
pub const GUEST_JUMP_FAILED: Reason = Reason {
    id: "GUEST_JUMP_FAILED",
    exit_code: 69,
    advice: "kubelab runs your own `ssh` to the libvirt host (its ssh_config, agent and the \
             URI's keyfile= apply): check that `ssh -o BatchMode=yes USER@HOST true` works \
             without a prompt, and that the host allows TCP forwarding (AllowTcpForwarding)",
};
/// The user's kubeconfig could not be read or written.
pub const K8S_KUBECONFIG_IO: Reason = Reason {
    id: "K8S_KUBECONFIG_IO",
    exit_code: 79,
    advice: "check the permissions of the kubeconfig named above (the first file of \
             $KUBECONFIG, else ~/.kube/config) and of its directory",
};

/// No snapshot of that name.
pub const SNAP_NOT_FOUND: Reason = Reason {
    id: "SNAP_NOT_FOUND",
    exit_code: 80,
    advice: "`kubelab snapshot list` shows this profile's snapshots; `reset` needs the \
             `clean` snapshot that `up` takes (unless --no-snapshot): take one with \
             `kubelab snapshot save clean`",
};
/// A snapshot of that name exists.
pub const SNAP_EXISTS: Reason = Reason {
    id: "SNAP_EXISTS",
    exit_code: 81,
    advice: "choose another name, or remove the old one first with `kubelab snapshot \
             delete NAME`",
};
/// The snapshot name breaks the rules.
pub const SNAP_NAME_INVALID: Reason = Reason {
    id: "SNAP_NAME_INVALID",
    exit_code: 82,
    advice: "use 1 to 40 lowercase letters, digits, '-', '_' and '.', starting with a \
             letter or digit",
};
/// `image bake`'s VM was not powered off when its disk was to be copied.
pub const BAKE_VM_NOT_STOPPED: Reason = Reason {
    id: "BAKE_VM_NOT_STOPPED",
    exit_code: 110,
    advice: "something started the bake's VM again after kubelab powered it off: run \
             `kubelab image bake` again (the interrupted bake's profile is removed by \
             `kubelab delete -p` with the profile name shown above)",
};
/// `--image baked:<version>` names no baked image in the cache.
pub const BAKE_NOT_FOUND: Reason = Reason {
    id: "BAKE_NOT_FOUND",
    exit_code: 111,
    advice: "bake one first (`kubelab image bake --kubernetes-version VERSION`), or import \
             one (`kubelab image import FILE`); `kubelab image list` shows the baked images",
};
/// `--image baked:<version>` and `--kubernetes-version` disagree.
pub const BAKE_VERSION_MISMATCH: Reason = Reason {
    id: "BAKE_VERSION_MISMATCH",
    exit_code: 112,
    advice: "a baked image runs the Kubernetes version it was baked for: drop \
             --kubernetes-version, or bake that version (`kubelab image bake \
             --kubernetes-version VERSION`) and use `--image baked:VERSION`",
};
/// `qemu-img` refused to convert a cached image into the format the driver boots.
pub const BAKE_CONVERT_FAILED: Reason = Reason {
    id: "BAKE_CONVERT_FAILED",
    exit_code: 116,
    advice: "qemu-img could not read the image in the format its file name says (its \
             message is above): check the file (`qemu-img info FILE`), or give an image \
             already in the driver's format (qcow2 for kvm2, VMDK or VDI for VirtualBox); \
             nothing was cached",
};
/// The snapshot holds other nodes than the cluster has now.
pub const SNAP_NODES_CHANGED: Reason = Reason {
    id: "SNAP_NODES_CHANGED",
    exit_code: 83,
    advice: "nodes were added or deleted since the snapshot was taken, so it cannot bring \
             the whole cluster back: delete it (`kubelab snapshot delete NAME`) and take a \
             new one of the cluster as it is",
};
/// Some nodes run and some do not.
pub const SNAP_MIXED_STATES: Reason = Reason {
    id: "SNAP_MIXED_STATES",
    exit_code: 84,
    advice: "a snapshot is taken of a running cluster (memory included) or of a stopped one \
             (disks only): run `kubelab up` or `kubelab down` first",
};
/// A node's part of the snapshot is gone.
pub const SNAP_INCOMPLETE: Reason = Reason {
    id: "SNAP_INCOMPLETE",
    exit_code: 85,
    advice: "a node's part of the snapshot was removed outside kubelab (or the node was \
             recreated): the snapshot cannot be restored; delete it with `kubelab snapshot \
             delete NAME`",
};
/// The profile keeps the most snapshots it may.
pub const SNAP_TOO_MANY: Reason = Reason {
    id: "SNAP_TOO_MANY",
    exit_code: 86,
    advice: "delete snapshots you no longer need (`kubelab snapshot list`, `kubelab \
             snapshot delete NAME`)",
};

/// The catalogue entry for `err`. Every variant of every module's error is matched by
/// name, without a catch-all, so a new variant does not compile until it has a reason
/// (and an exit code from the catalogue).
pub fn reason(err: &Error) -> &'static Reason {
    if refuses_a_link(err) {
        return &PROFILE_LINK_REFUSED;
    }
    match err {
        Error::Profile(e) => profile_reason(e),
        Error::Home(HomeError::Corrupt { .. }) => &PROFILE_HOME_ID_CORRUPT,
        Error::Home(HomeError::Io { .. } | HomeError::FreeSpace { .. }) => &HOST_HOME_IO,
        Error::Home(HomeError::LowSpace { .. }) => &HOST_DISK_SPACE,
        Error::Lock(LockError::Busy { .. }) => &PROFILE_BUSY,
        Error::Lock(LockError::Io { .. }) => &HOST_HOME_IO,
        Error::Cluster(e) => cluster_reason(e),
        Error::Image(e) => image_reason(e),
        Error::Driver(e) => driver_reason(e),
        Error::CloudInit(e) => cloudinit_reason(e),
        Error::Ssh(e) => ssh_reason(e),
        Error::Jump(e) => jump_reason(e),
        Error::Key(e) => key_reason(e),
        Error::Bootstrap(e) => bootstrap_reason(e),
        Error::Kubeconfig(e) => kubeconfig_reason(e),
        Error::Snapshot(e) => snapshot_reason(e),
        Error::Journal(JournalError::Corrupt { .. }) => &PROFILE_STATE_CORRUPT,
        Error::Journal(JournalError::Append { .. } | JournalError::Read { .. })
        | Error::NodeDir { .. }
        | Error::RemoveProfile { .. } => &HOST_HOME_IO,
        Error::Process(e) => process_reason(e),
        Error::NotRunning { .. } => &GUEST_NOT_RUNNING,
        Error::VmDown { .. } => &GUEST_VM_DOWN,
        Error::Panicked => &KUBELAB_BUG,
        Error::NoHome => &HOST_NO_HOME,
        Error::Output(_) => &HOST_IO_FAILED,
    }
}

/// Whether a write was refused for a link ([`fsutil::LinkRefused`]), in whatever step's
/// error it travels.
fn refuses_a_link(err: &Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        if e.downcast_ref::<std::io::Error>().and_then(fsutil::link_refused).is_some() {
            return true;
        }
        cause = e.source();
    }
    false
}

fn snapshot_reason(err: &SnapshotError) -> &'static Reason {
    use SnapshotError as E;
    match err {
        E::InvalidName { .. } => &SNAP_NAME_INVALID,
        E::NotFound { .. } => &SNAP_NOT_FOUND,
        E::Exists { .. } => &SNAP_EXISTS,
        E::TooMany { .. } => &SNAP_TOO_MANY,
        E::NodesChanged { .. } => &SNAP_NODES_CHANGED,
        E::MixedStates { .. } | E::Unsettled { .. } => &SNAP_MIXED_STATES,
        E::Incomplete { .. } => &SNAP_INCOMPLETE,
        E::Clock { .. } => &GUEST_COMMAND_FAILED,
        E::Io { .. } => &HOST_HOME_IO,
        E::Corrupt { .. } => &PROFILE_STATE_CORRUPT,
    }
}

fn profile_reason(err: &ProfileError) -> &'static Reason {
    use ProfileError as E;
    match err {
        E::InvalidName { .. } => &PROFILE_NAME_INVALID,
        E::NotFound { .. } => &PROFILE_NOT_FOUND,
        E::ParseState { .. } | E::InvalidState { .. } => &PROFILE_STATE_CORRUPT,
        E::CreateDir { .. } | E::ReadState { .. } | E::WriteState { .. } | E::List { .. } => {
            &HOST_HOME_IO
        }
    }
}

fn cluster_reason(err: &ClusterError) -> &'static Reason {
    use ClusterError as E;
    match err {
        E::Contradicts { .. } => &PROFILE_FLAG_CONFLICT,
        E::BakedVersion { .. } => &BAKE_VERSION_MISMATCH,
        E::UnknownNode { .. } | E::ControlPlane { .. } => &PROFILE_UNKNOWN_NODE,
        E::BadSize { .. }
        | E::OutOfRange { .. }
        | E::SizeOutOfRange { .. }
        | E::NotPrivate { .. }
        | E::CidrInUse { .. }
        | E::SubnetFull { .. } => &PROFILE_BAD_OPTION,
    }
}

fn cloudinit_reason(err: &CloudInitError) -> &'static Reason {
    use CloudInitError as E;
    match err {
        E::NotCloudConfig
        | E::ParseExtraUserData { .. }
        | E::MergeExtraUserData { .. }
        | E::InvalidUser { .. }
        | E::InvalidHostname { .. }
        | E::InvalidInstanceId { .. }
        | E::InvalidMac { .. }
        | E::InvalidAddress { .. } => &GUEST_SEED_INVALID,
        E::ParseKey { .. } | E::HostKey { .. } => &PROFILE_KEY_CORRUPT,
        E::Template { .. } | E::ParseTemplate { .. } | E::Serialize { .. } => &KUBELAB_BUG,
        E::WriteIso { .. } => &HOST_HOME_IO,
    }
}

fn key_reason(err: &KeyError) -> &'static Reason {
    use KeyError as E;
    match err {
        E::Parse { .. } | E::Unusable { .. } => &PROFILE_KEY_CORRUPT,
        E::InvalidNode { .. } => &PROFILE_STATE_CORRUPT,
        E::CreateDir { .. } | E::Read { .. } | E::Write { .. } | E::Generate(_) => &HOST_HOME_IO,
    }
}

fn bootstrap_reason(err: &BootstrapError) -> &'static Reason {
    use BootstrapError as E;
    match err {
        E::Step { source, .. } => match **source {
            SshError::CommandFailed { .. } => &K8S_BOOTSTRAP_FAILED,
            ref other => ssh_reason(other),
        },
        E::ControlPlaneFailed { .. } | E::NoDigest { .. } => &K8S_BOOTSTRAP_FAILED,
        E::NotReady { .. } => &K8S_NOT_READY,
        E::ApiTimeout { .. } => &K8S_API_UNREACHABLE,
        E::ApiTunnel(e) => jump_reason(e),
        E::BadSecret { .. } | E::ReadSecret { .. } => &K8S_SECRETS_CORRUPT,
        E::NotKubernetes { .. } => &K8S_NOT_KUBERNETES,
        E::UnsupportedVersion { .. } => &K8S_VERSION_UNSUPPORTED,
        E::Unknown { .. }
        | E::BadVersion { .. }
        | E::BadRepo { .. }
        | E::BadMirror { .. }
        | E::NoSubnet { .. } => &PROFILE_BAD_OPTION,
        E::NoControlPlane { .. } | E::NoSuchNode { .. } => &DRV_VM_MISSING,
        E::WriteSecret { .. } | E::OpenLog { .. } | E::WriteLog { .. } => &HOST_HOME_IO,
        E::GenerateCa(_) | E::ApiClient(_) | E::Panicked { .. } | E::ParseKubectl { .. } => {
            &KUBELAB_BUG
        }
    }
}

fn kubeconfig_reason(err: &KubeconfigError) -> &'static Reason {
    use KubeconfigError as E;
    match err {
        E::Locked { .. } => &K8S_KUBECONFIG_LOCKED,
        E::Parse { .. } => &K8S_KUBECONFIG_INVALID,
        E::NameTaken { .. } => &K8S_KUBECONFIG_NAME_TAKEN,
        E::ParseAdminConf { .. } | E::AdminConf { .. } => &K8S_BOOTSTRAP_FAILED,
        E::Read { .. } | E::CreateDir { .. } | E::Lock { .. } | E::Write { .. } => {
            &K8S_KUBECONFIG_IO
        }
        E::Serialize { .. } => &KUBELAB_BUG,
    }
}

fn process_reason(err: &ProcessError) -> &'static Reason {
    match err {
        ProcessError::NotFound { .. } => &HOST_TOOL_MISSING,
        ProcessError::Spawn { .. }
        | ProcessError::Failed { .. }
        | ProcessError::TimedOut { .. } => &HOST_COMMAND_FAILED,
    }
}

fn ssh_reason(err: &SshError) -> &'static Reason {
    use SshError as E;
    match err {
        E::HostKeyMismatch { .. } => &GUEST_HOSTKEY_MISMATCH,
        E::Timeout { .. } => &GUEST_SSH_TIMEOUT,
        E::Auth { .. } => &GUEST_SSH_AUTH,
        E::CommandFailed { .. } => &GUEST_COMMAND_FAILED,
        E::Connect { .. }
        | E::Handshake { .. }
        | E::Exec { .. }
        | E::ConnectionLost { .. }
        | E::Upload { .. }
        | E::Download { .. } => &GUEST_SSH_UNREACHABLE,
        E::WriteLog { .. } => &HOST_HOME_IO,
        E::UserKey(_) => &PROFILE_KEY_CORRUPT,
        E::Abandoned { .. } => &GUEST_VM_DOWN,
        E::Jump { source, .. } => jump_reason(source),
    }
}

/// The reason of a failed jump through a remote libvirt host.
fn jump_reason(err: &crate::ssh::JumpError) -> &'static Reason {
    use crate::ssh::JumpError as E;
    match err {
        E::Unknown { .. } | E::KeyChanged { .. } => &GUEST_JUMP_HOSTKEY,
        E::BadUri { .. } => &DRV_URI_REFUSED,
        E::NotRemote { .. } => &PROFILE_BAD_OPTION,
        E::Unreachable { .. } | E::Spawn { .. } => &GUEST_JUMP_FAILED,
        E::Io { .. } => &HOST_HOME_IO,
        E::MissingTools { .. } => &HOST_TOOL_MISSING,
        E::Listen { .. } => &HOST_PORT_BUSY,
    }
}

fn image_reason(err: &ImageError) -> &'static Reason {
    use ImageError as E;
    match err {
        E::ChecksumMismatch { .. } => &IMG_CHECKSUM_MISMATCH,
        E::UnknownName { .. } => &IMG_NOT_FOUND,
        E::DigestRequired { .. } => &IMG_DIGEST_REQUIRED,
        E::Request { .. }
        | E::HttpStatus { .. }
        | E::ReadBody { .. }
        | E::Truncated { .. }
        | E::NotListed { .. } => &IMG_DOWNLOAD_FAILED,
        E::BadSource { .. }
        | E::BadUrl { .. }
        | E::BadDigest { .. }
        | E::FormatUnavailable { .. }
        | E::ReadLocal { .. } => &IMG_BAD_SOURCE,
        E::NotCached { .. } | E::Ambiguous { .. } => &IMG_NOT_CACHED,
        E::ArchiveMismatch { .. } => &IMG_CHECKSUM_MISMATCH,
        E::BadArchive { .. } => &XFER_BAD_ARCHIVE,
        E::WriteArchive { .. } => &HOST_IO_FAILED,
        E::BadSidecar { .. } => &IMG_CACHE_CORRUPT,
        E::NoBaked { .. } => &BAKE_NOT_FOUND,
        E::NotRegularFile { .. } => &IMG_NOT_REGULAR_FILE,
        E::TooLarge { .. } => &IMG_TOO_LARGE,
        E::RedirectRefused { .. } => &IMG_REDIRECT_REFUSED,
        E::CreateCache { .. }
        | E::ReadCache { .. }
        | E::WritePart { .. }
        | E::Commit { .. }
        | E::WriteSidecar { .. }
        | E::Remove { .. }
        | E::Lock { .. } => &HOST_HOME_IO,
        E::Catalog { .. } | E::CatalogEntry { .. } | E::HttpClient { .. } => &KUBELAB_BUG,
        E::Convert { source, .. } => match **source {
            ProcessError::NotFound { .. } => &HOST_QEMU_IMG_MISSING,
            ProcessError::Failed { .. } => &BAKE_CONVERT_FAILED,
            _ => process_reason(source),
        },
    }
}

fn driver_reason(err: &DriverError) -> &'static Reason {
    use DriverError as E;
    match err {
        E::KvmUnavailable { .. } => &HOST_KVM_UNAVAILABLE,
        E::Unreachable { .. } | E::Connect { .. } => &HOST_LIBVIRT_UNREACHABLE,
        E::NoAnswer { .. } => &DRV_CALL_TIMEOUT,
        E::PermissionDenied { .. } => &HOST_LIBVIRT_PERMISSION,
        E::QemuImg { source: ProcessError::NotFound { .. } } => &HOST_QEMU_IMG_MISSING,
        E::QemuImg { source } => process_reason(source),
        E::Dnsmasq { .. } => &HOST_DNSMASQ_MISSING,
        E::StartNetwork { .. } => &DRV_NET_INACTIVE,
        E::NetworkConflict { .. } | E::NoFreeSubnet { .. } => &DRV_NET_CONFLICT,
        E::ForeignNetwork { .. } | E::Legacy { what: Object::Network, .. } => &DRV_NET_NOT_KUBELAB,
        E::MacConflict { .. } => &DRV_MAC_CONFLICT,
        E::RefusedUri { .. } => &DRV_URI_REFUSED,
        E::ForeignVm { .. } | E::Legacy { what: Object::Vm, .. } => &DRV_VM_NOT_KUBELAB,
        E::UnknownDriver { .. } => &PROFILE_BAD_OPTION,
        E::NoSuchVm { .. } => &DRV_VM_MISSING,
        E::NotStopped { .. } => &BAKE_VM_NOT_STOPPED,
        E::NoSuchSnapshot { .. } => &SNAP_INCOMPLETE,
        E::Routes { .. } => &DRV_ROUTES_UNREADABLE,
        E::ReadHost { .. } | E::ReadFile { .. } | E::WriteFile { .. } => &HOST_IO_FAILED,
        E::UnknownState { .. } | E::Backend { .. } => &DRV_BACKEND_FAILED,
        #[cfg(feature = "virtualbox")]
        E::VirtualBox { source, .. } => vbox_reason(source),
    }
}

#[cfg(feature = "virtualbox")]
fn vbox_reason(err: &crate::driver::virtualbox::VBoxError) -> &'static Reason {
    use crate::driver::virtualbox::VBoxError as E;
    match err {
        E::VtxDisabled { .. } => &HOST_VTX_DISABLED,
        E::VtxMissing { .. } => &HOST_VTX_MISSING,
        E::KvmHoldsVtx { .. } => &HOST_KVM_HOLDS_VTX,
        E::HyperV { .. } => &HOST_HYPERV_ENABLED,
        E::NotFound { .. } => &HOST_VBOX_NOT_FOUND,
        E::UnsupportedVersion { .. } => &HOST_VBOX_VERSION,
        E::HostOnlyRange { .. } => &HOST_VBOX_HOSTONLY_RANGE,
        E::HostOnlyPrompt { .. } => &HOST_VBOX_HOSTONLY_PROMPT,
        E::KernelDriver { .. } => &HOST_VBOX_KERNEL_DRIVER,
        E::HostOnlyAdapter { .. } | E::HostOnlyNotVisible { .. } => &HOST_VBOX_HOSTONLY_ADAPTER,
        E::Timeout { .. } => &DRV_CALL_TIMEOUT,
        E::NoSuchVm { .. } => &DRV_VM_MISSING,
        E::ForeignAdapter { .. } => &DRV_NET_NOT_KUBELAB,
        E::DiskFormat { .. } => &IMG_BAD_SOURCE,
        E::Command { .. }
        | E::Parse { .. }
        | E::FreePort { .. }
        | E::Stop { .. }
        | E::SnapshotExists { .. } => &DRV_BACKEND_FAILED,
    }
}

/// The exit code for `err`: its reason's.
pub fn exit_code(err: &Error) -> u8 {
    reason(err).exit_code
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reason in the catalogue, for the uniqueness checks.
    const ALL: &[&Reason] = &[
        &PROFILE_BUSY,
        &PROFILE_NAME_INVALID,
        &PROFILE_NOT_FOUND,
        &PROFILE_STATE_CORRUPT,
        &PROFILE_FLAG_CONFLICT,
        &PROFILE_BAD_OPTION,
        &PROFILE_UNKNOWN_NODE,
        &PROFILE_LINK_REFUSED,
        &PROFILE_HOME_ID_CORRUPT,
        &IMG_CHECKSUM_MISMATCH,
        &IMG_NOT_FOUND,
        &IMG_DIGEST_REQUIRED,
        &IMG_DOWNLOAD_FAILED,
        &IMG_BAD_SOURCE,
        &IMG_NOT_CACHED,
        &IMG_CACHE_CORRUPT,
        &GUEST_SEED_INVALID,
        &GUEST_HOSTKEY_MISMATCH,
        &GUEST_SSH_TIMEOUT,
        &GUEST_SSH_AUTH,
        &GUEST_COMMAND_FAILED,
        &GUEST_SSH_UNREACHABLE,
        &PROFILE_KEY_CORRUPT,
        &HOST_KVM_UNAVAILABLE,
        &HOST_KVM_DEVICE_GROUP,
        &HOST_LIBVIRT_UNREACHABLE,
        &HOST_LIBVIRT_PERMISSION,
        &HOST_QEMU_IMG_MISSING,
        &HOST_VTX_DISABLED,
        &HOST_VTX_MISSING,
        &HOST_KVM_HOLDS_VTX,
        &HOST_HYPERV_ENABLED,
        &HOST_VBOX_NOT_FOUND,
        &HOST_VBOX_VERSION,
        &HOST_VBOX_HOSTONLY_RANGE,
        &HOST_VBOX_HOSTONLY_PROMPT,
        &HOST_VBOX_KERNEL_DRIVER,
        &HOST_VBOX_HOSTONLY_ADAPTER,
        &DRV_CALL_TIMEOUT,
        &DRV_ROUTES_UNREADABLE,
        &DRV_NET_INACTIVE,
        &DRV_NET_CONFLICT,
        &DRV_MAC_CONFLICT,
        &DRV_VM_NOT_KUBELAB,
        &DRV_NET_NOT_KUBELAB,
        &DRV_URI_REFUSED,
        &K8S_KUBECONFIG_LOCKED,
        &K8S_KUBECONFIG_INVALID,
        &K8S_KUBECONFIG_NAME_TAKEN,
        &IMG_NOT_REGULAR_FILE,
        &IMG_TOO_LARGE,
        &IMG_REDIRECT_REFUSED,
        &K8S_BOOTSTRAP_FAILED,
        &K8S_NOT_READY,
        &K8S_API_UNREACHABLE,
        &K8S_SECRETS_CORRUPT,
        &K8S_NOT_KUBERNETES,
        &K8S_VERSION_UNSUPPORTED,
        &KUBELAB_BUG,
        &HOST_HOME_IO,
        &HOST_IO_FAILED,
        &HOST_NO_HOME,
        &HOST_TOOL_MISSING,
        &HOST_COMMAND_FAILED,
        &DRV_BACKEND_FAILED,
        &DRV_VM_MISSING,
        &GUEST_NOT_RUNNING,
        &GUEST_VM_DOWN,
        &GUEST_JUMP_HOSTKEY,
        &GUEST_JUMP_FAILED,
        &HOST_PORT_BUSY,
        &K8S_KUBECONFIG_IO,
        &SNAP_NOT_FOUND,
        &SNAP_EXISTS,
        &SNAP_NAME_INVALID,
        &SNAP_NODES_CHANGED,
        &SNAP_MIXED_STATES,
        &SNAP_INCOMPLETE,
        &SNAP_TOO_MANY,
        &XFER_BAD_ARCHIVE,
        &BAKE_VM_NOT_STOPPED,
        &BAKE_NOT_FOUND,
        &BAKE_VERSION_MISMATCH,
        &HOST_DNSMASQ_MISSING,
        &HOST_DISK_SPACE,
        &HOST_PROXY_NO_PROXY,
        &HOST_SUBNET_CLASH,
        &PROFILE_UNFINISHED,
        &PROFILE_STALE_DIR,
        &BAKE_CONVERT_FAILED,
    ];

    #[test]
    fn ids_and_codes_are_unique_and_in_their_layer_range() {
        let mut ids = std::collections::HashSet::new();
        let mut codes = std::collections::HashSet::new();
        for r in ALL {
            assert!(ids.insert(r.id), "duplicate id {}", r.id);
            assert!(codes.insert(r.exit_code), "duplicate exit code {}", r.exit_code);
            let layer = r.id.split('_').next().unwrap();
            let range = match layer {
                "PROFILE" => 10..=19,
                "HOST" => 20..=39,
                "DRV" => 40..=49,
                "IMG" => 50..=59,
                "GUEST" => 60..=69,
                "K8S" => 70..=79,
                "SNAP" => 80..=89,
                "XFER" => 90..=99,
                "BAKE" => 110..=119,
                "KUBELAB" => 3..=9,
                other => panic!("unknown layer {other}"),
            };
            // 100-109: HOST_ and PROFILE_ continued.
            let continued =
                ["HOST", "PROFILE"].contains(&layer) && (100..=109).contains(&r.exit_code);
            assert!(range.contains(&r.exit_code) || continued, "{} has code {}", r.id, r.exit_code);
            assert!(!r.advice.ends_with('.'), "{}", r.id);
        }
    }

    /// One error of each kind that used to have no reason (and exit 1), plus the
    /// common ones: each has its catalogue entry, a code other than 1, and is in ALL.
    #[test]
    fn representative_errors_have_their_reason() {
        use std::path::PathBuf;
        let io = || std::io::Error::other("boom");
        let path = || PathBuf::from("/x");
        let cases: Vec<(Error, &Reason)> = vec![
            (Error::Panicked, &KUBELAB_BUG),
            (Error::NoHome, &HOST_NO_HOME),
            (Error::Output(io()), &HOST_IO_FAILED),
            (Error::NotRunning { node: "lab".into(), state: "stopped" }, &GUEST_NOT_RUNNING),
            (Error::NodeDir { path: path(), source: io() }, &HOST_HOME_IO),
            (Error::RemoveProfile { path: path(), source: io() }, &HOST_HOME_IO),
            (LockError::Io { path: path(), source: io() }.into(), &HOST_HOME_IO),
            (ProfileError::WriteState { path: path(), source: io() }.into(), &HOST_HOME_IO),
            (ProfileError::NotFound { name: "lab".into() }.into(), &PROFILE_NOT_FOUND),
            (JournalError::Read { path: path(), source: io() }.into(), &HOST_HOME_IO),
            (
                JournalError::Corrupt { path: path(), line: 1, why: "x".into() }.into(),
                &PROFILE_STATE_CORRUPT,
            ),
            (KeyError::Write { path: path(), source: io() }.into(), &HOST_HOME_IO),
            (ProcessError::NotFound { program: "ssh".into() }.into(), &HOST_TOOL_MISSING),
            (
                ProcessError::TimedOut { program: "x".into(), args: vec![], secs: 1 }.into(),
                &HOST_COMMAND_FAILED,
            ),
            (DriverError::NoSuchVm { name: "lab".into() }.into(), &DRV_VM_MISSING),
            (
                DriverError::UnknownDriver { name: "xen".into(), known: "kvm2".into() }.into(),
                &PROFILE_BAD_OPTION,
            ),
            (
                DriverError::QemuImg { source: ProcessError::NotFound { program: "q".into() } }
                    .into(),
                &HOST_QEMU_IMG_MISSING,
            ),
            (
                ImageError::Convert {
                    path: path(),
                    format: crate::image::catalog::Format::Vmdk,
                    source: Box::new(ProcessError::NotFound { program: "qemu-img".into() }),
                }
                .into(),
                &HOST_QEMU_IMG_MISSING,
            ),
            (
                ImageError::Lock { source: LockError::Busy { what: "x".into(), pid: None } }.into(),
                &HOST_HOME_IO,
            ),
            (KubeconfigError::Write { path: path(), source: io() }.into(), &K8S_KUBECONFIG_IO),
            (BootstrapError::NoControlPlane { profile: "lab".into() }.into(), &DRV_VM_MISSING),
            (ClusterError::ControlPlane { node: "lab".into() }.into(), &PROFILE_UNKNOWN_NODE),
        ];
        for (err, expected) in &cases {
            let got = reason(err);
            assert_eq!(got, *expected, "{err:?}");
            assert_ne!(exit_code(err), 1, "{err:?}");
            assert!(ALL.contains(&got), "{} is not in ALL", got.id);
        }
    }

    #[test]
    fn busy_lock_maps_to_profile_busy() {
        let err = Error::Lock(LockError::Busy { what: "x".into(), pid: Some(1) });
        assert_eq!(reason(&err), &PROFILE_BUSY);
        assert_eq!(exit_code(&err), 10);
    }
}
