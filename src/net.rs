//! Host-side network arithmetic: IPv4 subnets (`Ipv4Cidr`), the choice of a free subnet
//! for a profile's networks, node addresses inside it, and deterministic MAC addresses.
//! Pure functions; the host's routes are read by [`routes`].

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::process::ProcessError;

pub mod routes;

pub use routes::{HostRoute, read_host_routes, read_route_table};

/// Host part of the first node's address (`.10`); `.1` is the host's bridge, and node
/// `i` (0 = control plane) gets `.10 + i`, as minikube leaves low addresses free.
const FIRST_NODE_HOST: u32 = 10;

/// Errors parsing addresses or reading the routing table.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A subnet is not `A.B.C.D/N` with the host bits zero.
    #[error("invalid IPv4 subnet {text:?}: {why}")]
    ParseCidr {
        /// The rejected text.
        text: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A line of the routing table could not be parsed.
    #[error("cannot parse routing table line {line}: {text:?}")]
    ParseRoute {
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// The routing table could not be read.
    #[error("cannot read the routing table {path}")]
    ReadRoutes {
        /// The file read.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The command listing the routes (`route`, `netstat`) failed.
    #[error("cannot list the routes with {program}")]
    RunRoutes {
        /// The command.
        program: &'static str,
        /// How it failed.
        #[source]
        source: ProcessError,
    },
    /// kubelab does not know how this OS shows its routes.
    #[error("cannot list the routes on {os}")]
    RoutesUnsupported {
        /// `std::env::consts::OS`.
        os: &'static str,
    },
}

/// An IPv4 subnet: a network address and a prefix length (host bits are zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// The subnet `network/prefix`; fails if `prefix > 32` or host bits are set.
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Self, NetError> {
        let text = || format!("{network}/{prefix}");
        if prefix > 32 {
            return Err(NetError::ParseCidr { text: text(), why: "prefix longer than 32" });
        }
        if u32::from(network) & !mask(prefix) != 0 {
            return Err(NetError::ParseCidr { text: text(), why: "host bits are set" });
        }
        Ok(Self { network, prefix })
    }

    /// The subnet containing `addr` with this prefix (host bits cleared).
    pub fn containing(addr: Ipv4Addr, prefix: u8) -> Result<Self, NetError> {
        let bits = if prefix > 32 { 0 } else { u32::from(addr) & mask(prefix) };
        Self::new(Ipv4Addr::from(bits), prefix)
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The netmask, e.g. `255.255.255.0` for a /24.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask(self.prefix))
    }

    /// Whether `addr` is inside the subnet.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix) == u32::from(self.network)
    }

    /// Whether the two subnets share any address.
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        let shorter = self.prefix.min(other.prefix);
        u32::from(self.network) & mask(shorter) == u32::from(other.network) & mask(shorter)
    }

    /// The `n`-th host address (`.1` is `host(1)`); `None` for the network address, the
    /// broadcast address or beyond.
    pub fn host(&self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.prefix));
        (n >= 1 && u64::from(n) + 1 < size).then(|| Ipv4Addr::from(u32::from(self.network) + n))
    }

    /// The host's own address on a kubelab network (its bridge): `.1`.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.host(1)
    }

    /// The static address of node `index` (0 = control plane): `.10 + index`.
    pub fn node_ip(&self, index: u32) -> Option<Ipv4Addr> {
        self.host(FIRST_NODE_HOST.checked_add(index)?)
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = NetError;

    fn from_str(text: &str) -> Result<Self, NetError> {
        let bad = |why| NetError::ParseCidr { text: text.to_owned(), why };
        let (addr, prefix) = text.split_once('/').ok_or_else(|| bad("missing /PREFIX"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("prefix is not a number"))?;
        Self::new(addr, prefix).map_err(|err| match err {
            NetError::ParseCidr { why, .. } => bad(why),
            other => other,
        })
    }
}

impl TryFrom<String> for Ipv4Cidr {
    type Error = NetError;

    fn try_from(text: String) -> Result<Self, NetError> {
        text.parse()
    }
}

impl From<Ipv4Cidr> for String {
    fn from(cidr: Ipv4Cidr) -> String {
        cidr.to_string()
    }
}

/// The /24 subnets kubelab tries, in order: minikube's `192.168.39.0/24`, then
/// `192.168.50.0/24` to `192.168.254.0/24` except libvirt's default `192.168.122.0/24`.
pub fn candidate_subnets() -> impl Iterator<Item = Ipv4Cidr> {
    std::iter::once(39u8)
        .chain((50u8..=254).filter(|&c| c != 122))
        .map(|c| Ipv4Cidr { network: Ipv4Addr::new(192, 168, c, 0), prefix: 24 })
}

/// The first `count` candidate subnets that overlap nothing in `taken` nor each other;
/// `None` if there are not enough.
pub fn choose_subnets(taken: &[Ipv4Cidr], count: usize) -> Option<Vec<Ipv4Cidr>> {
    let chosen: Vec<Ipv4Cidr> =
        candidate_subnets().filter(|c| !taken.iter().any(|t| t.overlaps(c))).take(count).collect();
    (chosen.len() == count).then_some(chosen)
}

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct MacAddr([u8; 6]);

impl MacAddr {
    /// QEMU's OUI `52:54:00` (what libvirt itself assigns) plus three bytes of
    /// SHA-256(profile, node, nic): stable across `delete`/`up`, so the DHCP reservation
    /// and the guest's network-config keep matching. A collision with another VM is
    /// possible (2^24 values); the driver refuses to create a VM whose MAC another VM
    /// uses (`DRV_MAC_CONFLICT`).
    pub fn derive(profile: &str, node: &str, nic: u8) -> Self {
        let digest = Sha256::new()
            .chain_update(profile)
            .chain_update([0])
            .chain_update(node)
            .chain_update([0, nic])
            .finalize();
        Self([0x52, 0x54, 0x00, digest[0], digest[1], digest[2]])
    }

    /// The six bytes.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let mut bytes = [0u8; 6];
        if parts.len() != 6 {
            return Err(format!("invalid MAC address {text:?}"));
        }
        for (byte, part) in bytes.iter_mut().zip(parts) {
            *byte = u8::from_str_radix(part, 16)
                .map_err(|_| format!("invalid MAC address {text:?}"))?;
        }
        Ok(Self(bytes))
    }
}

impl TryFrom<String> for MacAddr {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<MacAddr> for String {
    fn from(mac: MacAddr) -> String {
        mac.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/net/route` in the kernel's format: a default route, Docker, two libvirt bridges.
    const ROUTES: &str = include_str!("../tests/fixtures/net/proc-net-route.txt");

    fn routes() -> Vec<Ipv4Cidr> {
        routes::parse_proc_net_route(ROUTES).unwrap().into_iter().map(|r| r.cidr).collect()
    }

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_prints_cidrs() {
        assert_eq!(cidr("192.168.39.0/24").to_string(), "192.168.39.0/24");
        assert_eq!(cidr("10.0.0.0/8").netmask(), Ipv4Addr::new(255, 0, 0, 0));
        assert_eq!(cidr("0.0.0.0/0").netmask(), Ipv4Addr::new(0, 0, 0, 0));
        for bad in ["192.168.39.1/24", "192.168.39.0", "192.168.39.0/33", "x/24", "1.2.3.0/a"] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn overlap_and_containment() {
        assert!(cidr("192.168.0.0/16").overlaps(&cidr("192.168.39.0/24")));
        assert!(cidr("192.168.39.0/24").overlaps(&cidr("192.168.0.0/16")));
        assert!(!cidr("192.168.39.0/24").overlaps(&cidr("192.168.40.0/24")));
        assert!(cidr("192.168.39.0/24").contains(Ipv4Addr::new(192, 168, 39, 255)));
        assert!(!cidr("192.168.39.0/24").contains(Ipv4Addr::new(192, 168, 40, 0)));
    }

    #[test]
    fn host_addresses_skip_network_and_broadcast() {
        let net = cidr("192.168.39.0/24");
        assert_eq!(net.host(0), None);
        assert_eq!(net.gateway(), Some(Ipv4Addr::new(192, 168, 39, 1)));
        assert_eq!(net.host(254), Some(Ipv4Addr::new(192, 168, 39, 254)));
        assert_eq!(net.host(255), None);
        assert_eq!(net.node_ip(0), Some(Ipv4Addr::new(192, 168, 39, 10)));
        assert_eq!(net.node_ip(2), Some(Ipv4Addr::new(192, 168, 39, 12)));
        assert_eq!(cidr("10.0.0.0/30").node_ip(0), None);
    }

    #[test]
    fn chooses_first_free_subnets() {
        let taken = routes();
        let chosen = choose_subnets(&taken, 2).unwrap();
        assert_eq!(chosen, [cidr("192.168.50.0/24"), cidr("192.168.51.0/24")]);
        assert_eq!(choose_subnets(&[], 1).unwrap(), [cidr("192.168.39.0/24")]);
        assert_eq!(choose_subnets(&[cidr("192.168.0.0/16")], 1), None);
    }

    #[test]
    fn macs_are_deterministic_local_and_distinct() {
        let mac = MacAddr::derive("kubelab", "kubelab-m02", 1);
        assert_eq!(mac, MacAddr::derive("kubelab", "kubelab-m02", 1));
        assert_ne!(mac, MacAddr::derive("kubelab", "kubelab-m02", 0));
        assert_ne!(mac, MacAddr::derive("kubelab", "kubelab-m03", 1));
        assert!(mac.to_string().starts_with("52:54:00:"));
        assert_eq!(mac.to_string().parse::<MacAddr>().unwrap(), mac);
        assert!("52:54:00:zz:00:00".parse::<MacAddr>().is_err());
    }

    #[test]
    fn cidr_serializes_as_a_string() {
        let json = serde_json::to_string(&cidr("192.168.39.0/24")).unwrap();
        assert_eq!(json, "\"192.168.39.0/24\"");
        assert!(serde_json::from_str::<Ipv4Cidr>("\"192.168.39.1/24\"").is_err());
    }
}
