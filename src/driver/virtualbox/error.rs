//! `VBoxError`: how the VirtualBox backend fails, typed where the user can act
//! (`reason.rs` maps each host problem to its advice).

use std::path::PathBuf;

use crate::process::ProcessError;

/// Errors of the VirtualBox backend.
#[derive(Debug, thiserror::Error)]
pub enum VBoxError {
    /// No `VBoxManage` on `PATH`, in `VBOX_MSI_INSTALL_PATH`/`VBOX_INSTALL_PATH` nor in
    /// the default install folder.
    #[error("VBoxManage not found (looked in: {searched})")]
    NotFound {
        /// Where kubelab looked.
        searched: String,
    },
    /// `VBoxManage --version` printed a version kubelab does not support.
    #[error("VirtualBox {found} is not supported (need 6.1 or 7.x)")]
    UnsupportedVersion {
        /// What `--version` printed.
        found: String,
    },
    /// VT-x/AMD-V exists but is disabled in the firmware.
    #[error("hardware virtualization is disabled ({code})")]
    VtxDisabled {
        /// VirtualBox's status code.
        code: &'static str,
        /// The failed command.
        #[source]
        source: ProcessError,
    },
    /// The CPU (or the VM kubelab runs in) offers no VT-x/AMD-V.
    #[error("hardware virtualization is not available ({code})")]
    VtxMissing {
        /// VirtualBox's status code.
        code: &'static str,
        /// The failed command.
        #[source]
        source: ProcessError,
    },
    /// Another hypervisor (KVM) holds VT-x/AMD-V on this Linux host.
    #[error("VT-x/AMD-V is used by another hypervisor ({code})")]
    KvmHoldsVtx {
        /// VirtualBox's status code.
        code: &'static str,
        /// The failed command.
        #[source]
        source: ProcessError,
    },
    /// Hyper-V (or VBS, WSL2) owns virtualization on Windows: VirtualBox fails or falls
    /// back to its very slow NEM ("turtle") mode.
    #[error("Hyper-V is active on this host: {evidence}")]
    HyperV {
        /// What showed it (a status code, a `VBox.log` line, a Windows setting).
        evidence: String,
    },
    /// A VirtualBox kernel driver is not loaded (Linux: vboxdrv or vboxnetadp not built,
    /// loaded or signed; macOS: the kernel extension not allowed).
    #[error("the VirtualBox kernel driver {module} is not loaded: {evidence}")]
    KernelDriver {
        /// `vboxdrv` (running VMs) or `vboxnetadp` (host-only adapters).
        module: &'static str,
        /// What showed it (VirtualBox's line).
        evidence: String,
    },
    /// Windows could not install a host-only adapter (NetCfg).
    #[error("Windows could not set up VirtualBox's host-only adapter")]
    HostOnlyAdapter {
        /// The failed command.
        #[source]
        source: ProcessError,
    },
    /// `hostonlyif create` made an adapter that VirtualBox did not list before the
    /// deadline; kubelab removed it, or recorded it for `delete` when it could not.
    #[error(
        "host-only adapter {adapter} was created but not listed within {secs} s ({})",
        if *removed { "removed again" } else { "not removable yet: `kubelab delete` removes it" }
    )]
    HostOnlyNotVisible {
        /// The adapter.
        adapter: String,
        /// How long kubelab waited.
        secs: u64,
        /// Whether kubelab removed it.
        removed: bool,
    },
    /// A `VBoxManage` call did not finish within its deadline and was killed.
    #[error("VirtualBox did not answer in time")]
    Timeout {
        /// The call, with its limit.
        #[source]
        source: ProcessError,
    },
    /// The host-only subnet is outside the ranges `/etc/vbox/networks.conf` allows.
    #[error("VirtualBox does not allow host-only network {cidr} (allowed: {allowed}); add the line `{line}` to {}", path.display())]
    HostOnlyRange {
        /// The subnet asked for.
        cidr: String,
        /// The ranges allowed now.
        allowed: String,
        /// The line that would allow it.
        line: String,
        /// The configuration file.
        path: PathBuf,
    },
    /// Creating a host-only adapter did not finish: on Windows it waits on a permission
    /// prompt that may be hidden behind other windows.
    #[error("creating a host-only adapter did not finish within {secs} s")]
    HostOnlyPrompt {
        /// How long kubelab waited.
        secs: u64,
    },
    /// The VM does not exist.
    #[error("VM {vm} does not exist")]
    NoSuchVm {
        /// The VM.
        vm: String,
    },
    /// Another `VBoxManage` failure.
    #[error("VBoxManage failed")]
    Command {
        /// The process error (command line, status, stderr).
        #[source]
        source: ProcessError,
    },
    /// `VBoxManage` printed something kubelab cannot read.
    #[error("cannot parse the output of `VBoxManage {command}`: {output:?}")]
    Parse {
        /// The subcommand.
        command: String,
        /// What it printed.
        output: String,
    },
    /// No free 127.0.0.1 port for the SSH forward.
    #[error("cannot find a free port on 127.0.0.1")]
    FreePort {
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
    /// The base image is not in a format VirtualBox attaches (VMDK, VDI, VHD).
    #[error("VirtualBox cannot boot {} (needs a VMDK, VDI or VHD image)", path.display())]
    DiskFormat {
        /// The image.
        path: PathBuf,
    },
    /// A host-only adapter with the subnet's address carries an extra-data record
    /// kubelab cannot read: it is neither used nor changed.
    #[error(
        "host-only adapter {adapter} has an unreadable kubelab record (kubelab/hostonly/{adapter})"
    )]
    ForeignAdapter {
        /// The adapter.
        adapter: String,
    },
    /// The VM already has a snapshot of that name (VirtualBox allows duplicates, which
    /// would make `restore` and `delete` ambiguous).
    #[error("the VM already has a snapshot {snapshot}")]
    SnapshotExists {
        /// The snapshot's VirtualBox name.
        snapshot: String,
    },
    /// A graceful stop did not end before the deadline and power-off failed too.
    #[error("VM {vm} did not stop")]
    Stop {
        /// The VM.
        vm: String,
    },
}
