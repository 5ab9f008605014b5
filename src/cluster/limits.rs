//! The ranges a cluster's sizes and subnets must fall in. One place, used for the flags
//! of `up` and again for the values read back from `profile.json`, so a tampered file
//! meets exactly the rules a user's flag does.

use std::net::Ipv4Addr;

use super::ClusterError;
use crate::bootstrap::BootstrapperKind;
use crate::net::Ipv4Cidr;

/// Most vCPUs per node.
pub const MAX_CPUS: u32 = 64;
/// Most memory per node (1 TiB).
pub const MAX_MEMORY_MIB: u64 = 1 << 20;
/// Largest disk per node (1 PiB, what `--disk` parses).
pub const MAX_DISK_GIB: u64 = 1 << 20;
/// Shortest and longest prefix of a cluster subnet: a /16 is plenty; a /28 still holds
/// the host's `.1` and a few nodes from `.10`.
pub const PREFIX_RANGE: (u8, u8) = (16, 28);

/// The private IPv4 ranges of RFC 1918, the only ones a cluster network may use: a
/// subnet elsewhere would shadow public addresses, loopback, link-local or multicast.
/// CGNAT (100.64.0.0/10, RFC 6598) is left out: it belongs to the carrier (and to
/// VPNs such as Tailscale), not to networks a host makes up.
pub const PRIVATE_RANGES: [(Ipv4Addr, u8); 3] = [
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
];

/// Least memory per node. kubeadm's own preflight (`Mem`) wants 1700 MiB on a control
/// plane, but kubelab skips that check knowingly so that labs fit small hosts (the e2e
/// and quickstart run kubeadm nodes with 1 GiB); below 1 GiB the kubelet and etcd are
/// killed for memory. A `none` node only boots cloud-init and sshd.
pub fn min_memory_mib(bootstrapper: BootstrapperKind) -> u64 {
    match bootstrapper {
        BootstrapperKind::Kubeadm => 1024,
        BootstrapperKind::None => 512,
    }
}

/// Least disk per node: a kubeadm node holds the control-plane and CNI images and etcd
/// (the e2e runs with 4 GiB); a `none` node only its base image.
pub fn min_disk_gib(bootstrapper: BootstrapperKind) -> u64 {
    match bootstrapper {
        BootstrapperKind::Kubeadm => 4,
        BootstrapperKind::None => 1,
    }
}

/// Checks vCPUs, memory and disk per node for `bootstrapper`.
pub fn check_sizes(
    bootstrapper: BootstrapperKind,
    cpus: u32,
    memory_mib: u64,
    disk_gib: u64,
) -> Result<(), ClusterError> {
    super::check_range("--cpus", cpus.into(), 1, MAX_CPUS.into())?;
    let in_range = |what, unit, value, min, max| {
        if (min..=max).contains(&value) {
            Ok(())
        } else {
            Err(ClusterError::SizeOutOfRange { what, value, unit, bootstrapper, min, max })
        }
    };
    in_range("--memory", "MiB", memory_mib, min_memory_mib(bootstrapper), MAX_MEMORY_MIB)?;
    in_range("--disk", "GiB", disk_gib, min_disk_gib(bootstrapper), MAX_DISK_GIB)
}

/// Checks a cluster subnet: a prefix in [`PREFIX_RANGE`], inside one of
/// [`PRIVATE_RANGES`].
pub fn check_cidr(what: &'static str, cidr: Ipv4Cidr) -> Result<(), ClusterError> {
    let (min, max) = PREFIX_RANGE;
    if !(min..=max).contains(&cidr.prefix()) {
        let (value, min, max) = (cidr.prefix().into(), min.into(), max.into());
        return Err(ClusterError::OutOfRange { what: "subnet prefix", value, min, max });
    }
    let private = PRIVATE_RANGES.iter().any(|&(network, prefix)| {
        Ipv4Cidr::new(network, prefix)
            .is_ok_and(|range| range.contains(cidr.network()) && range.prefix() <= cidr.prefix())
    });
    if private { Ok(()) } else { Err(ClusterError::NotPrivate { what, cidr: cidr.to_string() }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Ipv4Cidr {
        text.parse().unwrap()
    }

    #[test]
    fn only_private_subnets_of_a_sane_size() {
        for ok in ["10.0.0.0/16", "172.16.5.0/24", "172.31.255.240/28", "192.168.39.0/24"] {
            assert!(check_cidr("--network-cidr", cidr(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "127.0.0.0/24",
            "0.0.0.0/24",
            "169.254.0.0/24",
            "224.0.0.0/24",
            "100.64.0.0/24",
            "172.32.0.0/24",
            "8.8.8.0/24",
            "255.255.255.0/24",
        ] {
            let err = check_cidr("--network-cidr", cidr(bad)).unwrap_err();
            assert!(matches!(err, ClusterError::NotPrivate { .. }), "{bad}: {err}");
            assert!(err.to_string().contains("192.168.0.0/16"), "{err}");
        }
        for bad in ["10.0.0.0/8", "192.168.0.0/15", "192.168.39.0/29", "192.168.39.1/32"] {
            let err = check_cidr("--network-cidr", cidr(bad)).unwrap_err();
            assert!(matches!(err, ClusterError::OutOfRange { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn sizes_have_a_floor_per_bootstrapper() {
        use BootstrapperKind::{Kubeadm, None};
        assert!(check_sizes(Kubeadm, 1, 1024, 4).is_ok(), "what the e2e uses");
        assert!(check_sizes(None, 1, 512, 1).is_ok());
        let err = check_sizes(Kubeadm, 2, 1, 20).unwrap_err().to_string();
        assert_eq!(
            err,
            "--memory 1 MiB is out of range for --bootstrapper kubeadm: use 1024 to 1048576 MiB"
        );
        assert!(check_sizes(None, 2, 511, 20).is_err());
        assert!(check_sizes(Kubeadm, 2, 2048, 3).unwrap_err().to_string().contains("--disk 3"));
        assert!(check_sizes(None, 2, 2048, 0).is_err());
        assert!(check_sizes(None, 2, MAX_MEMORY_MIB + 1, 20).is_err());
        assert!(check_sizes(None, 2, 2048, MAX_DISK_GIB + 1).is_err());
        assert!(check_sizes(None, 0, 2048, 20).is_err());
        assert!(check_sizes(None, MAX_CPUS + 1, 2048, 20).is_err());
    }
}
