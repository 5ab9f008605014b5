//! The profile's host-only network on VirtualBox: the ranges `/etc/vbox/networks.conf`
//! allows (checked before anything is created), a `vboxnetN` adapter found or created
//! for the subnet (6.1, and 7.x outside macOS) or a named host-only network (7.x on
//! macOS, where adapters are gone), and the bookkeeping that removes an adapter kubelab
//! created when the last profile using it goes. The NAT side needs nothing: each VM's
//! NIC 1 has its own NAT engine.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use super::VBoxError;
use super::parse::{HostOnlyIf, Version};
use super::vboxmanage::VBoxManage;
use crate::driver::{Action, DriverError, NetworkSpec};
use crate::net::{self, Ipv4Cidr};

/// Where VirtualBox (>= 6.1.28) on Linux, macOS and Solaris reads the host-only ranges
/// it allows (manual section "Host-Only Networking").
pub const NETWORKS_CONF: &str = "/etc/vbox/networks.conf";
/// Extra-data key (global) naming the adapter a kubelab network uses.
const NETWORK_KEY: &str = "kubelab/hostonly/";
/// Extra-data key (global) marking an adapter kubelab created.
const CREATED_KEY: &str = "kubelab/created/";

/// The range VirtualBox allows when `networks.conf` does not exist.
pub fn default_ranges() -> Vec<Ipv4Cidr> {
    Ipv4Cidr::new(Ipv4Addr::new(192, 168, 56, 0), 21).into_iter().collect()
}

/// The IPv4 ranges of `networks.conf` text: lines `* 10.0.0.0/8 192.168.0.0/16`
/// (IPv6 ranges and other lines are ignored); `None` text means the file is missing.
pub fn allowed_ranges(conf: Option<&str>) -> Vec<Ipv4Cidr> {
    let Some(text) = conf else { return default_ranges() };
    text.lines()
        .filter_map(|l| l.trim().strip_prefix('*'))
        .flat_map(str::split_whitespace)
        .filter_map(|r| r.parse().ok())
        .collect()
}

/// Whether `cidr` lies inside one of `ranges`.
pub fn is_allowed(cidr: &Ipv4Cidr, ranges: &[Ipv4Cidr]) -> bool {
    ranges.iter().any(|r| r.prefix() <= cidr.prefix() && r.contains(cidr.network()))
}

/// Refuses `cidr` when `ranges` do not allow it, naming the line to add.
pub fn check_allowed(cidr: &Ipv4Cidr, ranges: &[Ipv4Cidr]) -> Result<(), VBoxError> {
    if is_allowed(cidr, ranges) {
        return Ok(());
    }
    Err(VBoxError::HostOnlyRange {
        cidr: cidr.to_string(),
        allowed: ranges.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "),
        line: format!("* {cidr}"),
        path: Path::new(NETWORKS_CONF).to_owned(),
    })
}

/// The ranges this host allows: `None` on Windows, which has no such restriction.
pub fn host_ranges() -> Result<Option<Vec<Ipv4Cidr>>, DriverError> {
    if cfg!(windows) {
        return Ok(None);
    }
    match std::fs::read_to_string(NETWORKS_CONF) {
        Ok(text) => Ok(Some(allowed_ranges(Some(&text)))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Some(allowed_ranges(None))),
        Err(source) => Err(DriverError::ReadHost { path: NETWORKS_CONF.into(), source }),
    }
}

/// The candidate subnets VirtualBox would refuse: `pick_subnets` treats them as taken,
/// so a new profile's default lands inside 192.168.56.0/21.
pub fn refused_candidates(ranges: &[Ipv4Cidr]) -> Vec<Ipv4Cidr> {
    net::candidate_subnets().filter(|c| !is_allowed(c, ranges)).collect()
}

/// How VMs join a host-only network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostOnlyMode {
    /// A `vboxnetN` host-only adapter (`--nic2 hostonly --hostonlyadapter2`).
    Adapter,
    /// A named host-only network (`--nic2 hostonlynet --host-only-net2`), VirtualBox
    /// 7.x on macOS, where host-only adapters are no longer supported.
    Network,
}

/// The mode for this VirtualBox on this host.
pub fn mode(version: Version, macos: bool) -> HostOnlyMode {
    if version.major >= 7 && macos { HostOnlyMode::Network } else { HostOnlyMode::Adapter }
}

/// The `--nic2` arguments joining `attachment` (an adapter or network name).
pub fn nic2_args(mode: HostOnlyMode, attachment: &str) -> Vec<String> {
    let (nic, option) = match mode {
        HostOnlyMode::Adapter => ("hostonly", "--hostonlyadapter2"),
        HostOnlyMode::Network => ("hostonlynet", "--host-only-net2"),
    };
    vec!["--nic2".into(), nic.into(), option.into(), attachment.into()]
}

/// Makes the host-only network of `net` exist; returns nothing for NAT networks.
pub fn ensure(
    vbox: &VBoxManage,
    mode: HostOnlyMode,
    net: &NetworkSpec,
    ranges: Option<&[Ipv4Cidr]>,
    create_timeout: Duration,
) -> Result<(), VBoxError> {
    if let Some(ranges) = ranges {
        check_allowed(&net.cidr, ranges)?;
    }
    let gateway = net.cidr.gateway().unwrap_or(net.cidr.network());
    let mask = net.cidr.netmask().to_string();
    if mode == HostOnlyMode::Network {
        if !vbox.list_hostonlynets()?.iter().any(|n| n.name == net.name) {
            // The host takes the lowest address; the range ends below the nodes' `.10`.
            let upper = net.cidr.host(9).unwrap_or(gateway).to_string();
            vbox.hostonlynet_add(&net.name, &mask, &gateway.to_string(), &upper)?;
        }
        return Ok(());
    }
    let key = format!("{NETWORK_KEY}{}", net.name);
    let recorded = vbox.extradata()?.remove(&key);
    let adapters = vbox.list_hostonlyifs()?;
    let configured = |i: &&HostOnlyIf| i.ip == gateway && i.netmask == net.cidr.netmask();
    // An adapter with the subnet's gateway, else the one an interrupted run recorded.
    let reusable = adapters
        .iter()
        .find(configured)
        .map(|i| i.name.clone())
        .or_else(|| recorded.clone().filter(|name| adapters.iter().any(|i| &i.name == name)));
    let adapter = match reusable {
        Some(name) => name,
        None => {
            let name = vbox.hostonlyif_create(create_timeout)?;
            vbox.set_extradata(&format!("{CREATED_KEY}{name}"), Some("1"))?;
            name
        }
    };
    // Recorded before configuring, so `delete` finds an adapter whose set-up failed.
    if recorded.as_ref() != Some(&adapter) {
        vbox.set_extradata(&key, Some(&adapter))?;
    }
    if !adapters.iter().filter(configured).any(|i| i.name == adapter) {
        vbox.hostonlyif_ipconfig(&adapter, &net.cidr)?;
    }
    Ok(())
}

/// The adapter or network name a VM's NIC 2 joins for kubelab network `network`.
pub fn attachment(
    vbox: &VBoxManage,
    mode: HostOnlyMode,
    network: &str,
) -> Result<String, DriverError> {
    if mode == HostOnlyMode::Network {
        return Ok(network.to_owned());
    }
    let extra = vbox.extradata().map_err(super::drv(Action::InspectNetwork, network))?;
    extra.get(&format!("{NETWORK_KEY}{network}")).cloned().ok_or_else(|| {
        DriverError::NetworkConflict {
            name: network.to_owned(),
            found: "no host-only adapter".into(),
            expected: "one made by `kubelab up`".into(),
        }
    })
}

/// What deleting kubelab network `network` removes: its bookkeeping key, and the
/// adapter when kubelab created it and no other kubelab network uses it.
pub fn removal(
    extra: &BTreeMap<String, String>,
    network: &str,
) -> (Option<String>, Option<String>) {
    let key = format!("{NETWORK_KEY}{network}");
    let Some(adapter) = extra.get(&key) else { return (None, None) };
    let shared = extra.iter().any(|(k, v)| k != &key && k.starts_with(NETWORK_KEY) && v == adapter);
    let created = extra.contains_key(&format!("{CREATED_KEY}{adapter}"));
    (Some(key), (created && !shared).then(|| adapter.clone()))
}

/// Removes kubelab network `network`; Ok if it is gone.
pub fn delete(vbox: &VBoxManage, mode: HostOnlyMode, network: &str) -> Result<(), VBoxError> {
    if mode == HostOnlyMode::Network {
        if vbox.list_hostonlynets()?.iter().any(|n| n.name == network) {
            vbox.hostonlynet_remove(network)?;
        }
        return Ok(());
    }
    let (key, adapter) = removal(&vbox.extradata()?, network);
    if let Some(adapter) = adapter {
        if vbox.list_hostonlyifs()?.iter().any(|i| i.name == adapter) {
            vbox.hostonlyif_remove(&adapter)?;
        }
        vbox.set_extradata(&format!("{CREATED_KEY}{adapter}"), None)?;
    }
    if let Some(key) = key {
        vbox.set_extradata(&key, None)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Ipv4Cidr {
        text.parse().unwrap()
    }

    /// Manual section "Host-Only Networking": without networks.conf only
    /// 192.168.56.0/21 is allowed; `* A B` lines list the allowed ranges.
    #[test]
    fn networks_conf_ranges() {
        assert_eq!(allowed_ranges(None), vec![cidr("192.168.56.0/21")]);
        let conf = "# comment\n* 10.0.0.0/8 192.168.0.0/16\n* 2001::/64\n";
        assert_eq!(allowed_ranges(Some(conf)), vec![cidr("10.0.0.0/8"), cidr("192.168.0.0/16")]);
        let default = allowed_ranges(None);
        assert!(check_allowed(&cidr("192.168.59.0/24"), &default).is_ok());
        let err = check_allowed(&cidr("192.168.39.0/24"), &default).unwrap_err();
        let VBoxError::HostOnlyRange { line, .. } = &err else { panic!("{err:?}") };
        assert_eq!(line, "* 192.168.39.0/24");
        assert!(!is_allowed(&cidr("192.168.48.0/20"), &default), "wider than the range");
    }

    #[test]
    fn refused_candidates_leave_only_the_allowed_range() {
        let refused = refused_candidates(&allowed_ranges(None));
        let free: Vec<_> = net::candidate_subnets().filter(|c| !refused.contains(c)).collect();
        assert!(!free.is_empty());
        assert!(free.iter().all(|c| cidr("192.168.56.0/21").contains(c.network())));
    }

    #[test]
    fn mode_and_nic_arguments() {
        let v = |major| Version { major, minor: 0, patch: 0 };
        assert_eq!(mode(v(7), true), HostOnlyMode::Network);
        assert_eq!(mode(v(7), false), HostOnlyMode::Adapter);
        assert_eq!(mode(v(6), true), HostOnlyMode::Adapter);
        assert_eq!(
            nic2_args(HostOnlyMode::Network, "kubelab-lab"),
            ["--nic2", "hostonlynet", "--host-only-net2", "kubelab-lab"]
        );
        assert_eq!(
            nic2_args(HostOnlyMode::Adapter, "vboxnet1"),
            ["--nic2", "hostonly", "--hostonlyadapter2", "vboxnet1"]
        );
    }

    #[test]
    fn only_created_unshared_adapters_are_removed() {
        let extra: BTreeMap<String, String> = [
            ("kubelab/hostonly/kubelab-a", "vboxnet1"),
            ("kubelab/hostonly/kubelab-b", "vboxnet1"),
            ("kubelab/hostonly/kubelab-c", "vboxnet0"),
            ("kubelab/created/vboxnet1", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(removal(&extra, "kubelab-a"), (Some("kubelab/hostonly/kubelab-a".into()), None));
        assert_eq!(removal(&extra, "kubelab-c").1, None, "found, not created");
        let mut last = extra.clone();
        last.remove("kubelab/hostonly/kubelab-b");
        assert_eq!(removal(&last, "kubelab-a").1, Some("vboxnet1".into()));
        assert_eq!(removal(&extra, "kubelab-x"), (None, None));
    }
}
