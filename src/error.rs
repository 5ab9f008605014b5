//! One error type for every command; each variant wraps one module's error, so
//! `reason::reason` can match the step that failed.

use crate::{image::ImageError, lock::LockError, profile::ProfileError};

/// Any failure a kubelab command can end with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubelab home's id.
    #[error(transparent)]
    Home(#[from] crate::home::HomeError),
    /// Profile names, directories and state files.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// Exclusive locks on profiles and cache entries.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// Image catalogue, downloads and cache.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The profile's user key and the nodes' host keys.
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    /// SSH to a node.
    #[error(transparent)]
    Ssh(#[from] crate::ssh::SshError),
    /// A remote libvirt host as the SSH jump to its nodes (pinning its key, tunnels).
    #[error(transparent)]
    Jump(#[from] crate::ssh::JumpError),
    /// A node's cloud-init seed (documents and ISO).
    #[error(transparent)]
    CloudInit(#[from] crate::cloudinit::CloudInitError),
    /// Hypervisor backends: preflight, networks, disks, VMs.
    #[error(transparent)]
    Driver(#[from] crate::driver::DriverError),
    /// What the user asked of a cluster (sizes, node names, contradictions).
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The profile's resource journal.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// The profile's entries in the user's kubeconfig.
    #[error(transparent)]
    Kubeconfig(#[from] crate::kubeconfig::KubeconfigError),
    /// Kubernetes on the nodes (kubeadm scripts, cluster secrets, readiness).
    #[error(transparent)]
    Bootstrap(#[from] crate::bootstrap::BootstrapError),
    /// Whole-cluster snapshots and their records.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    /// A node's directory under the profile could not be created or removed.
    #[error("cannot create or remove the node directory {}", path.display())]
    NodeDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The profile's directory could not be removed after its resources were deleted.
    #[error("cannot remove the profile directory {}", path.display())]
    RemoveProfile {
        /// The directory.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A command needs a running node and its VM is not running.
    #[error("node {node} is {state}, not running")]
    NotRunning {
        /// The node.
        node: String,
        /// What the hypervisor reports.
        state: &'static str,
    },
    /// A node's VM stopped running (crashed, paused, shut off) while kubelab waited for it.
    #[error(
        "node {node}'s VM is {state}: it stopped while kubelab waited for its ssh; the end of its console log:\n{console_tail}"
    )]
    VmDown {
        /// The node.
        node: String,
        /// What the hypervisor reports.
        state: &'static str,
        /// The last lines of its serial console log.
        console_tail: String,
    },
    /// An external program (`ssh`, `qemu-img`, ...).
    #[error(transparent)]
    Process(#[from] crate::process::ProcessError),
    /// A worker thread panicked (a bug in kubelab).
    #[error("a kubelab worker thread panicked; please report this bug")]
    Panicked,
    /// Neither `--home`, `KUBELAB_HOME` nor the user's home directory is set.
    #[error("cannot find a home directory for kubelab: set KUBELAB_HOME or pass --home")]
    NoHome,
    /// Writing output to the terminal or a pipe.
    #[error("cannot write output")]
    Output(#[source] std::io::Error),
}

/// `err` and its causes on one line, joined by `: ` (for lists and JSON output).
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
