//! Turning reachable VMs into a Kubernetes cluster. A [`Bootstrapper`] knows Kubernetes
//! and nothing of hypervisors: it gets the nodes as name, role and host-only address,
//! and a way to open a host-key-pinned SSH connection to each, so every driver
//! (libvirt, VirtualBox) reuses it unchanged.
//!
//! - `none`: nothing (plain VM labs);
//! - `kubeadm` (the default): the numbered scripts under `scripts/node/`, run over SSH.
//!
//! `pki` makes the cluster's secrets on the host, `log` writes the profile's log file.

mod kubeadm;
pub mod log;
pub mod pki;

pub use self::kubeadm::{Contents, bake_node, choose_subnets};

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::cluster::Role;
use crate::keys::KeyPair;
use crate::net::Ipv4Cidr;
use crate::ops::provision::Timing;
use crate::progress::Progress;
use crate::ssh::{SshError, Target};

/// The Kubernetes version a new cluster gets when `--kubernetes-version` is not given.
pub const DEFAULT_KUBERNETES_VERSION: &str = "v1.34.2";
/// Where nodes get kubeadm, kubelet and kubectl when their image lacks them: a
/// pkgs.k8s.io-style flat apt repository (its signing key at `Release.key`), `{minor}`
/// standing for the cluster's `vMAJOR.MINOR`. `--kubernetes-repo` names a mirror.
pub const DEFAULT_KUBERNETES_REPO: &str = "https://pkgs.k8s.io/core:/stable:/{minor}/deb/";
/// The Kubernetes minor versions kubelab can bootstrap, oldest and newest: kubeadm reads
/// the v1beta4 configuration kubelab writes from 1.31 on; from 1.36 the kubelet needs a
/// container runtime that reports its cgroup driver (containerd 2.0 or newer), and the
/// Debian 12 nodes' containerd is 1.6.
pub const SUPPORTED_MINORS: (u32, u32) = (31, 35);

/// Errors bootstrapping Kubernetes, named after the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// `--bootstrapper` names none kubelab has.
    #[error("unknown bootstrapper {name:?} (known: none, kubeadm)")]
    Unknown {
        /// The name given.
        name: String,
    },
    /// `--kubernetes-version` is not `vMAJOR.MINOR.PATCH`.
    #[error("invalid --kubernetes-version {text:?}: expected e.g. v1.34.2")]
    BadVersion {
        /// The text given.
        text: String,
    },
    /// `--kubernetes-repo` is not a plain http(s) URL.
    #[error("invalid --kubernetes-repo {text:?}: {why}")]
    BadRepo {
        /// The text given.
        text: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// `--registry-mirror` is not a plain http(s) URL.
    #[error("invalid --registry-mirror {text:?}: {why}")]
    BadMirror {
        /// The text given.
        text: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// `--kubernetes-version` is outside [`SUPPORTED_MINORS`].
    #[error(
        "Kubernetes {text} is not supported: kubelab bootstraps v1.{}.x to v1.{}.x",
        SUPPORTED_MINORS.0,
        SUPPORTED_MINORS.1
    )]
    UnsupportedVersion {
        /// The version given.
        text: String,
    },
    /// A secret file of the profile (CA, token) could not be read.
    #[error("cannot read {}", path.display())]
    ReadSecret {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A secret file of the profile could not be written.
    #[error("cannot write {}", path.display())]
    WriteSecret {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The profile's CA key is not a usable PEM key.
    #[error("unusable cluster CA key {}", path.display())]
    BadSecret {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: rcgen::Error,
    },
    /// The cluster CA could not be generated.
    #[error("cannot generate the cluster CA")]
    GenerateCa(#[source] rcgen::Error),
    /// The profile's log file could not be opened.
    #[error("cannot open the log {}", path.display())]
    OpenLog {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The profile's log file could not be written.
    #[error("cannot write the log {}", path.display())]
    WriteLog {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Every candidate pod or service subnet overlaps the cluster's networks.
    #[error("no pod and service subnets are free of the cluster's networks ({taken})")]
    NoSubnet {
        /// The cluster's networks.
        taken: String,
    },
    /// The cluster has no control plane node.
    #[error("profile {profile:?} has no control plane node")]
    NoControlPlane {
        /// The profile.
        profile: String,
    },
    /// A step on a node failed (its script's output is in the profile's log).
    #[error("{step} on {node} failed (log: {})", log.display())]
    Step {
        /// The node.
        node: String,
        /// The step: `prereqs`, `init`, `cni`, `join`, ...
        step: &'static str,
        /// The profile's log file.
        log: PathBuf,
        /// What failed.
        #[source]
        source: Box<SshError>,
    },
    /// A worker gave up because the control plane failed.
    #[error("{node} did not join: the control plane failed")]
    ControlPlaneFailed {
        /// The worker.
        node: String,
    },
    /// The HTTPS client for the API server could not be made (the CA is unusable).
    #[error("cannot make an HTTPS client trusting the cluster CA")]
    ApiClient(#[source] reqwest::Error),
    /// The local end of the tunnel to a remote control plane could not be opened.
    #[error("cannot open the tunnel to the API server")]
    ApiTunnel(#[source] crate::ssh::JumpError),
    /// A node's thread panicked (a bug in kubelab).
    #[error("the kubelab thread bootstrapping {node} panicked; please report this bug")]
    Panicked {
        /// The node.
        node: String,
    },
    /// The API server never answered before the deadline.
    #[error("the API server at {url} did not answer within {waited_secs} s: {last_error}")]
    ApiTimeout {
        /// The URL polled.
        url: String,
        /// How long kubelab waited.
        waited_secs: u64,
        /// The last attempt's error.
        last_error: String,
    },
    /// kubectl's output on the control plane could not be parsed.
    #[error("cannot parse the output of `kubectl {what}` on {node}")]
    ParseKubectl {
        /// The control plane.
        node: String,
        /// What was asked.
        what: &'static str,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The container runtime reports no digest for an image `image bake` pulled.
    #[error("the container runtime on {node} reports no digest for {image}")]
    NoDigest {
        /// The node.
        node: String,
        /// The image reference.
        image: String,
    },
    /// Nodes or kube-system pods were not ready before the deadline.
    #[error("not ready after {waited_secs} s: {late}")]
    NotReady {
        /// How long kubelab waited.
        waited_secs: u64,
        /// The late nodes and pods, with their state.
        late: String,
    },
    /// The node is not one of the cluster's running nodes.
    #[error("{node} is not a running node of the cluster")]
    NoSuchNode {
        /// The node.
        node: String,
    },
    /// The profile runs no Kubernetes, so it has no kubeconfig.
    #[error("profile {profile:?} runs no Kubernetes (bootstrapper {bootstrapper})")]
    NotKubernetes {
        /// The profile.
        profile: String,
        /// Its bootstrapper.
        bootstrapper: String,
    },
}

/// The bootstrappers kubelab has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootstrapperKind {
    /// Stop once the VMs answer SSH.
    None,
    /// `kubeadm init` and `kubeadm join`.
    Kubeadm,
}

impl BootstrapperKind {
    /// The name `--bootstrapper` takes and `profile.json` stores.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Kubeadm => "kubeadm",
        }
    }
}

impl fmt::Display for BootstrapperKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BootstrapperKind {
    type Err = BootstrapError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "none" => Ok(Self::None),
            "kubeadm" => Ok(Self::Kubeadm),
            _ => Err(BootstrapError::Unknown { name: name.to_owned() }),
        }
    }
}

/// Checks `--kubernetes-version`: `vMAJOR.MINOR.PATCH`, as kubeadm's
/// `kubernetesVersion` and the package repository's paths want it, within
/// [`SUPPORTED_MINORS`].
pub fn check_version(text: &str) -> Result<(), BootstrapError> {
    let parts: Vec<&str> = text.strip_prefix('v').unwrap_or_default().split('.').collect();
    let numeric = |p: &&str| !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit());
    if parts.len() != 3 || !parts.iter().all(numeric) {
        return Err(BootstrapError::BadVersion { text: text.to_owned() });
    }
    let minor: u32 = parts[1].parse().unwrap_or(u32::MAX);
    if parts[0] != "1" || minor < SUPPORTED_MINORS.0 || minor > SUPPORTED_MINORS.1 {
        return Err(BootstrapError::UnsupportedVersion { text: text.to_owned() });
    }
    Ok(())
}

/// Checks `--kubernetes-repo`: an http(s) URL without credentials, ending in `/`, of
/// characters that need no quoting in an apt source line.
pub fn check_repo(text: &str) -> Result<(), BootstrapError> {
    let bad = |why| Err(BootstrapError::BadRepo { text: text.to_owned(), why });
    let Ok(url) = url::Url::parse(&text.replace("{minor}", "v1.0")) else {
        return bad("not a URL");
    };
    if !matches!(url.scheme(), "http" | "https") {
        return bad("only http and https repositories");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return bad("credentials do not belong in the URL (it is stored in the profile)");
    }
    if !text.ends_with('/') || url.query().is_some() || url.fragment().is_some() {
        return bad("expected a directory URL ending in / without ?query or #fragment");
    }
    let plain = |c: char| c.is_ascii_alphanumeric() || "/:.-_~%{}+@".contains(c);
    if !text.chars().all(plain) {
        return bad("characters other than letters, digits and /:.-_~%{}+@");
    }
    Ok(())
}

/// Checks `--registry-mirror`: an http(s) URL without credentials, query or fragment, of
/// characters that need no quoting in containerd's hosts.toml or a shell word.
pub fn check_mirror(text: &str) -> Result<(), BootstrapError> {
    let bad = |why| Err(BootstrapError::BadMirror { text: text.to_owned(), why });
    let Ok(url) = url::Url::parse(text) else { return bad("not a URL") };
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return bad("expected an http:// or https:// URL with a host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return bad("credentials do not belong in the URL (it is written into the image)");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return bad("expected a URL without ?query or #fragment");
    }
    if !text.chars().all(|c| c.is_ascii_alphanumeric() || "/:.-_~%".contains(c)) {
        return bad("characters other than letters, digits and /:.-_~%");
    }
    Ok(())
}

/// The repository URL for `version` (`vMAJOR.MINOR.PATCH`): `{minor}` filled in.
pub fn repo_url(template: &str, version: &str) -> String {
    let minor = version.rsplit_once('.').map_or(version, |(minor, _)| minor);
    template.replace("{minor}", minor)
}

/// One node as a bootstrapper sees it.
#[derive(Debug, Clone)]
pub struct Node {
    /// The node's (and Kubernetes node's) name.
    pub name: String,
    /// Control plane or worker.
    pub role: Role,
    /// Its host-only address: what the cluster's components talk over.
    pub ip: Ipv4Addr,
    /// How to reach its sshd (the driver's address for it) and its pinned host key.
    pub ssh: Target,
}

/// The cluster a bootstrapper works on.
pub struct Cluster<'a> {
    /// The cluster's (and profile's) name.
    pub name: &'a str,
    /// The profile directory: secrets, generated files and the log live here.
    pub dir: &'a Path,
    /// Every node, control plane first.
    pub nodes: &'a [Node],
    /// The cluster's host-only and NAT subnets, which pods and services must avoid.
    pub networks: &'a [Ipv4Cidr],
    /// The pod and service subnets chosen when the profile was made (none in profiles
    /// from before kubelab saved them: then they are chosen clear of `networks`).
    pub subnets: Option<(Ipv4Cidr, Ipv4Cidr)>,
    /// `vMAJOR.MINOR.PATCH`.
    pub kubernetes_version: &'a str,
    /// The Kubernetes package repository (`{minor}` filled in).
    pub kubernetes_repo: &'a str,
    /// The nodes boot an image baked for `kubernetes_version`: the prerequisites are in
    /// it, so they are not run (nothing is installed or pulled).
    pub prepared: bool,
    /// A registry mirror the nodes pull container images through (`--registry-mirror`).
    pub registry_mirror: Option<&'a str>,
    /// vCPUs per node.
    pub cpus: u32,
    /// Memory per node.
    pub memory_mib: u64,
    /// The profile's key, which every node's SSH user accepts.
    pub user_key: &'a KeyPair,
    /// Where to report.
    pub progress: &'a dyn Progress,
}

/// What [`Bootstrapper::bootstrap`] did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The control plane's admin kubeconfig, if the cluster runs Kubernetes.
    pub admin_conf: Option<String>,
    /// Per node and phase (`prereqs`, `init`, `join`, `ready`), how long it took.
    pub timings: Vec<Timing>,
}

/// Brings Kubernetes to nodes that answer SSH.
pub trait Bootstrapper {
    /// Which one this is.
    fn kind(&self) -> BootstrapperKind;

    /// Makes what must exist on the host before any node boots (the cluster's secrets).
    fn prepare(&self, profile_dir: &Path) -> Result<(), BootstrapError>;

    /// Makes the nodes a cluster; a node that is part of it already is left as it is.
    /// With `wait`, returns only once every node is Ready and kube-system's pods run.
    fn bootstrap(
        &self,
        cluster: &Cluster<'_>,
        wait: Option<Duration>,
    ) -> Result<Outcome, BootstrapError>;

    /// Joins `node`, a new worker listed in `cluster.nodes`, with a fresh token.
    fn add_node(
        &self,
        cluster: &Cluster<'_>,
        node: &str,
        wait: Option<Duration>,
    ) -> Result<Vec<Timing>, BootstrapError>;

    /// Removes the worker `node` from the cluster (drained first) before its VM goes.
    fn remove_node(&self, cluster: &Cluster<'_>, node: &str) -> Result<(), BootstrapError>;

    /// Waits until the API server answers and every node is Ready (after a snapshot
    /// restore: the cluster exists, nothing is run on it).
    fn wait_ready(&self, cluster: &Cluster<'_>, timeout: Duration) -> Result<(), BootstrapError>;
}

/// The bootstrapper of `kind`.
pub fn open(kind: BootstrapperKind) -> Box<dyn Bootstrapper> {
    match kind {
        BootstrapperKind::None => Box::new(NoBootstrap),
        BootstrapperKind::Kubeadm => Box::new(kubeadm::Kubeadm),
    }
}

/// `--bootstrapper none`: the VMs are the lab.
struct NoBootstrap;

impl Bootstrapper for NoBootstrap {
    fn kind(&self) -> BootstrapperKind {
        BootstrapperKind::None
    }

    fn prepare(&self, _profile_dir: &Path) -> Result<(), BootstrapError> {
        Ok(())
    }

    fn bootstrap(&self, _: &Cluster<'_>, _: Option<Duration>) -> Result<Outcome, BootstrapError> {
        Ok(Outcome::default())
    }

    fn add_node(
        &self,
        _: &Cluster<'_>,
        _: &str,
        _: Option<Duration>,
    ) -> Result<Vec<Timing>, BootstrapError> {
        Ok(Vec::new())
    }

    fn remove_node(&self, _: &Cluster<'_>, _: &str) -> Result<(), BootstrapError> {
        Ok(())
    }

    fn wait_ready(&self, _: &Cluster<'_>, _: Duration) -> Result<(), BootstrapError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for kind in [BootstrapperKind::None, BootstrapperKind::Kubeadm] {
            assert_eq!(kind.as_str().parse::<BootstrapperKind>().unwrap(), kind);
            assert_eq!(open(kind).kind(), kind);
        }
        assert!("kubespray".parse::<BootstrapperKind>().is_err());
    }

    #[test]
    fn versions() {
        assert!(check_version("v1.34.2").is_ok());
        assert!(check_version(DEFAULT_KUBERNETES_VERSION).is_ok());
        assert!(check_version("v1.31.0").is_ok() && check_version("v1.35.9").is_ok());
        for bad in ["1.34.2", "v1.34", "v1.34.x", "latest", "v1..2", "", "v1.99999.0"] {
            assert!(matches!(check_version(bad), Err(BootstrapError::BadVersion { .. })), "{bad}");
        }
        assert_eq!(
            repo_url(DEFAULT_KUBERNETES_REPO, "v1.34.2"),
            "https://pkgs.k8s.io/core:/stable:/v1.34/deb/"
        );
        for good in
            [DEFAULT_KUBERNETES_REPO, "http://172.31.255.1:8098/k8s/", "https://m.example/{minor}/"]
        {
            assert!(check_repo(good).is_ok(), "{good}");
        }
        for bad in [
            "ftp://m/",
            "https://u:p@m/",
            "https://m/x",
            "https://m/?a=1/",
            "https://m/ x/",
            "https://m/$(id)/",
            "file:///srv/",
        ] {
            assert!(check_repo(bad).is_err(), "{bad}");
        }
        assert!(check_mirror("http://10.0.0.1:5000").is_ok());
        assert!(check_mirror("https://mirror.example/registry").is_ok());
        for bad in
            ["ftp://m", "http://u:p@m", "http://m/?x=1", "http://m/\"x", "m:5000", "http://m/$(id)"]
        {
            assert!(matches!(check_mirror(bad), Err(BootstrapError::BadMirror { .. })), "{bad}");
        }
        for old_or_new in ["v1.30.9", "v1.36.0", "v2.34.0", "v0.34.0"] {
            assert!(
                matches!(check_version(old_or_new), Err(BootstrapError::UnsupportedVersion { .. })),
                "{old_or_new}"
            );
        }
    }
}
