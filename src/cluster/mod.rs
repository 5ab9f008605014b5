//! The cluster model: node naming, the sizes users type, and the saved state of a
//! profile's cluster (`ClusterState`, the profile's `profile.json`): only what the
//! driver cannot report (addresses, MACs, sizes, the image), never VM states.

mod check;
pub mod limits;

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::driver::Accel;
use crate::image::catalog::{Algorithm, Digest, Format};
use crate::image::{ImageError, ImageRequest, ImageSource};
use crate::net::{Ipv4Cidr, MacAddr};

/// Version of the state file's layout.
pub const STATE_FORMAT: u32 = 1;
/// Default vCPUs per node.
pub const DEFAULT_CPUS: u32 = 2;
/// Default memory per node (kubeadm wants at least 1700 MiB on a control plane).
pub const DEFAULT_MEMORY_MIB: u64 = 2048;
/// Default disk size per node.
pub const DEFAULT_DISK_GIB: u64 = 20;
/// The user cloud-init creates on every node and kubelab logs in as.
pub const SSH_USER: &str = "kubelab";
/// Most nodes a profile may have (`-m99` is the last name in minikube's scheme).
pub const MAX_NODES: u32 = 99;

/// Errors in what the user asked for.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A size (`--memory`, `--disk`) is not a number with an optional unit.
    #[error("invalid {what} {text:?}: {why}")]
    BadSize {
        /// Which option.
        what: &'static str,
        /// The rejected text.
        text: String,
        /// What is wrong.
        why: String,
    },
    /// A count (`--nodes`, `--cpus`) is out of range.
    #[error("invalid {what} {value}: must be between {min} and {max}")]
    OutOfRange {
        /// Which option.
        what: &'static str,
        /// The rejected value.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A size is outside what the bootstrapper needs or kubelab allows.
    #[error(
        "{what} {value} {unit} is out of range for --bootstrapper {bootstrapper}: use {min} to {max} {unit}"
    )]
    SizeOutOfRange {
        /// Which option.
        what: &'static str,
        /// The rejected value.
        value: u64,
        /// `MiB` or `GiB`.
        unit: &'static str,
        /// The bootstrapper whose floor applies.
        bootstrapper: crate::bootstrap::BootstrapperKind,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A subnet is outside the private ranges of RFC 1918.
    #[error(
        "{what} {cidr} is not a private subnet: use one inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"
    )]
    NotPrivate {
        /// Which option.
        what: &'static str,
        /// The rejected subnet.
        cidr: String,
    },
    /// A flag contradicts the saved profile.
    #[error("profile {profile:?} was created with {what} {saved}, not {asked}")]
    Contradicts {
        /// The profile.
        profile: String,
        /// Which setting.
        what: &'static str,
        /// The saved value.
        saved: String,
        /// The value asked for now.
        asked: String,
    },
    /// `--image baked:<version>` with a `--kubernetes-version` of another version.
    #[error("--image {image} holds Kubernetes {baked}, not --kubernetes-version {asked}")]
    BakedVersion {
        /// The image asked for.
        image: String,
        /// What it was baked for.
        baked: String,
        /// The version asked for.
        asked: String,
    },
    /// `--network-cidr` overlaps a route of the host or another hypervisor network.
    #[error("--network-cidr {cidr} overlaps {other}, already used on this host")]
    CidrInUse {
        /// The subnet asked for.
        cidr: String,
        /// What it overlaps.
        other: String,
    },
    /// The host-only subnet has no address left for another node.
    #[error("the subnet {cidr} has no address for node {index}; use a larger --network-cidr")]
    SubnetFull {
        /// The subnet.
        cidr: String,
        /// The node's index.
        index: u32,
    },
    /// No node of that name in the profile.
    #[error("profile {profile:?} has no node {node:?} (nodes: {known})")]
    UnknownNode {
        /// The profile.
        profile: String,
        /// The name asked for.
        node: String,
        /// The profile's nodes, comma-separated.
        known: String,
    },
    /// The control plane cannot be removed with `node delete`.
    #[error("{node:?} is the control plane; `kubelab delete` removes the whole cluster")]
    ControlPlane {
        /// The control plane's name.
        node: String,
    },
}

/// A node's job in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Runs the API server (node 0).
    ControlPlane,
    /// Runs workloads.
    Worker,
}

/// One node as saved in the profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// The node (and VM, and hostname) name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its static address on the host-only network.
    pub ip: Ipv4Addr,
    /// MAC of the NAT NIC.
    pub nat_mac: MacAddr,
    /// MAC of the host-only NIC.
    pub host_only_mac: MacAddr,
    /// The cloud-init instance id of the VM's current seed (new for each created VM).
    pub instance_id: String,
    /// The libvirt URI of the host its VM lives on (none for VirtualBox: this machine).
    /// Today every node of a profile lives on the profile's `libvirt_uri`; recorded per
    /// node so nodes can spread over hosts without another state format
    /// (docs/remote-libvirt.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// The image a cluster's nodes boot, as resolved when the profile was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageState {
    /// What the user passed (`--image`).
    pub source: String,
    /// Its SHA-256 (the cached file's name).
    pub sha256: String,
    /// Its format (`iso` boots beside a blank data disk).
    pub format: Format,
    /// The Kubernetes version it was baked for, when it is a baked image (chosen for
    /// `source` or named `baked:<version>`): its nodes skip the prerequisites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baked: Option<String>,
}

impl ImageState {
    /// The request that finds this exact image again (in the cache, or where it came
    /// from), pinned to its digest.
    pub fn request(&self) -> Result<ImageRequest, ImageError> {
        let source = match &self.baked {
            Some(version) => ImageSource::Baked(version.clone()),
            None => ImageSource::parse(&self.source)?,
        };
        Ok(ImageRequest {
            source,
            format: Some(self.format),
            sha256: Some(Digest::parse(Algorithm::Sha256, &self.sha256)?),
            insecure_skip_verify: false,
            max_size_bytes: crate::image::DEFAULT_MAX_SIZE_BYTES,
        })
    }
}

/// The saved state of a profile's cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Layout version ([`STATE_FORMAT`]).
    pub format: u32,
    /// The profile's name.
    pub profile: String,
    /// The driver (`kvm2`).
    pub driver: String,
    /// The libvirt URI used, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub libvirt_uri: Option<String>,
    /// KVM or TCG, chosen by the preflight when the profile was created.
    pub accel: Accel,
    /// `none` or `kubeadm`.
    pub bootstrapper: String,
    /// The Kubernetes version the bootstrapper installs (`vMAJOR.MINOR.PATCH`); none for
    /// `--bootstrapper none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_version: Option<String>,
    /// `--kubernetes-repo`, if given (else [`crate::bootstrap::DEFAULT_KUBERNETES_REPO`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_repo: Option<String>,
    /// `--registry-mirror`, if given: the nodes pull container images through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_mirror: Option<String>,
    /// The boot image.
    pub image: ImageState,
    /// vCPUs per node.
    pub cpus: u32,
    /// Memory per node.
    pub memory_mib: u64,
    /// Disk size per node.
    pub disk_gib: u64,
    /// The host-only network's subnet.
    pub host_only_cidr: Ipv4Cidr,
    /// The NAT network's subnet.
    pub nat_cidr: Ipv4Cidr,
    /// Kubernetes' pod subnet, chosen clear of the host's routes and every network when
    /// the profile was made (kubeadm only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<Ipv4Cidr>,
    /// Kubernetes' service subnet, likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_cidr: Option<Ipv4Cidr>,
    /// The 127.0.0.1 port `kubelab tunnel` forwards to the API server of a cluster on a
    /// remote libvirt host (the kubeconfig's server); none for a local one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_port: Option<u16>,
    /// The nodes, control plane first.
    pub nodes: Vec<NodeState>,
}

impl ClusterState {
    /// The node called `name`, or the control plane when `name` is `None`.
    pub fn node(&self, name: Option<&str>) -> Result<&NodeState, ClusterError> {
        let found = match name {
            None => self.nodes.first(),
            Some(name) => self.nodes.iter().find(|n| n.name == name),
        };
        found.ok_or_else(|| ClusterError::UnknownNode {
            profile: self.profile.clone(),
            node: name.unwrap_or_default().to_owned(),
            known: self.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", "),
        })
    }

    /// The lowest node index not in use (workers only: index 0 is the control plane).
    pub fn free_index(&self) -> u32 {
        (1..)
            .find(|i| !self.nodes.iter().any(|n| n.name == node_name(&self.profile, *i)))
            .unwrap_or(1)
    }
}

/// Node `index`'s name: the profile's name for the control plane (index 0), then
/// `<profile>-m02`, `<profile>-m03`, ... (minikube's convention).
pub fn node_name(profile: &str, index: u32) -> String {
    if index == 0 { profile.to_owned() } else { format!("{profile}-m{:02}", index + 1) }
}

/// Parses a memory size: plain MiB (`2048`) or with a unit (`512m`, `2g`, `2GiB`, `4GB`).
pub fn parse_memory_mib(text: &str) -> Result<u64, ClusterError> {
    parse_size(text, "--memory", 1, 1 << 20)
}

/// Parses a disk size: plain GiB (`20`) or with a unit (`20g`, `20GiB`, `1t`).
pub fn parse_disk_gib(text: &str) -> Result<u64, ClusterError> {
    let mib = parse_size(&with_default_unit(text, "g"), "--disk", 1, 1 << 30)?;
    if mib % 1024 != 0 {
        return Err(ClusterError::BadSize {
            what: "--disk",
            text: text.to_owned(),
            why: "must be a whole number of GiB".into(),
        });
    }
    Ok(mib / 1024)
}

/// Parses `--max-size`: plain GiB (`64`) or with a unit (`512m`, `100g`, `1t`), in bytes.
pub fn parse_max_size_bytes(text: &str) -> Result<u64, ClusterError> {
    Ok(parse_size(&with_default_unit(text, "g"), "--max-size", 1, 1 << 30)? << 20)
}

/// Checks a count against its range.
pub fn check_range(what: &'static str, value: u64, min: u64, max: u64) -> Result<(), ClusterError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ClusterError::OutOfRange { what, value, min, max })
    }
}

fn with_default_unit(text: &str, unit: &str) -> String {
    let text = text.trim();
    if text.bytes().all(|b| b.is_ascii_digit()) { format!("{text}{unit}") } else { text.to_owned() }
}

/// `text` in MiB, within `min..=max` MiB; units are binary (`g` = GiB), as users of
/// minikube and multipass type them.
fn parse_size(text: &str, what: &'static str, min: u64, max: u64) -> Result<u64, ClusterError> {
    let bad =
        |why: &str| ClusterError::BadSize { what, text: text.to_owned(), why: why.to_owned() };
    let trimmed = text.trim();
    let digits = trimmed.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = trimmed.split_at(digits);
    let number: u64 =
        number.parse().map_err(|_| bad("expected a number, e.g. 2048, 2g or 2GiB"))?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "m" | "mb" | "mib" => 1,
        "g" | "gb" | "gib" => 1024,
        "t" | "tb" | "tib" => 1024 * 1024,
        _ => return Err(bad("unknown unit; use m, g or t (MiB, GiB, TiB)")),
    };
    let mib = number.checked_mul(factor).ok_or_else(|| bad("too large"))?;
    if mib < min || mib > max {
        return Err(bad(&format!("must be between {min} MiB and {max} MiB")));
    }
    Ok(mib)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_follow_minikube() {
        assert_eq!(node_name("lab", 0), "lab");
        assert_eq!(node_name("lab", 1), "lab-m02");
        assert_eq!(node_name("lab", 9), "lab-m10");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_memory_mib("2048").unwrap(), 2048);
        assert_eq!(parse_memory_mib("2g").unwrap(), 2048);
        assert_eq!(parse_memory_mib("1536MiB").unwrap(), 1536);
        assert_eq!(parse_memory_mib(" 4GB ").unwrap(), 4096);
        assert_eq!(parse_disk_gib("20").unwrap(), 20);
        assert_eq!(parse_disk_gib("20g").unwrap(), 20);
        assert_eq!(parse_disk_gib("1t").unwrap(), 1024);
        for bad in ["", "g", "-1", "2x", "0", "99999999999999999999"] {
            assert!(parse_memory_mib(bad).is_err(), "{bad}");
        }
        assert!(parse_disk_gib("1500m").unwrap_err().to_string().contains("whole number"));
    }

    #[test]
    fn ranges() {
        assert!(check_range("--nodes", 3, 1, 99).is_ok());
        let err = check_range("--nodes", 0, 1, 99).unwrap_err().to_string();
        assert_eq!(err, "invalid --nodes 0: must be between 1 and 99");
    }
}
