//! A profile's libvirt networks: the XML (pure; golden-tested), and making a network
//! exist, run and hold exactly the wanted DHCP reservations (self-healing), or go away.
//! Only networks named `kubelab-*` whose kubelab marker names this home and profile are
//! ever changed.
//! Syntax: <https://libvirt.org/formatnetwork.html>.

use std::fmt::Write as _;

use virt::connect::Connect;
use virt::network::Network;
use virt::sys;

use super::xml::{NetworkInfo, escape, marker, network_info};
use super::{is_missing, lv};
use crate::driver::{
    Action, DhcpHost, DriverError, NAME_PREFIX, NetworkKind, NetworkSpec, Object, Owner,
};
use crate::net::Ipv4Cidr;

/// The network definition: a bridge with the host at `.1`; NAT networks forward and
/// serve DHCP on the whole subnet, host-only networks are isolated (no `<forward>`) and
/// serve DHCP only to the reserved hosts.
pub fn network_xml(net: &NetworkSpec) -> String {
    let mut x = format!("<network>\n  <name>{}</name>\n", escape(&net.name));
    x.push_str(&marker(&net.owner));
    if net.kind == NetworkKind::Nat {
        x.push_str("  <forward mode='nat'/>\n");
    }
    let host = |n| net.cidr.host(n).map(|a| a.to_string()).unwrap_or_default();
    let _ = write!(
        x,
        "  <bridge name='{}' stp='on' delay='0'/>\n  <ip address='{}' prefix='{}'>\n",
        escape(&net.bridge),
        host(1),
        net.cidr.prefix()
    );
    let last = (1u32 << (32 - u32::from(net.cidr.prefix()))).saturating_sub(2);
    if net.kind == NetworkKind::Nat || !net.hosts.is_empty() {
        x.push_str("    <dhcp>\n");
        if net.kind == NetworkKind::Nat {
            let _ = writeln!(x, "      <range start='{}' end='{}'/>", host(2), host(last));
        }
        for h in &net.hosts {
            let _ = writeln!(x, "      {}", host_xml(h));
        }
        x.push_str("    </dhcp>\n");
    }
    x.push_str("  </ip>\n</network>\n");
    x
}

/// One DHCP reservation, as in the network XML and for `virNetworkUpdate`.
fn host_xml(h: &DhcpHost) -> String {
    format!("<host mac='{}' name='{}' ip='{}'/>", h.mac, escape(&h.name), h.ip)
}

/// Defines and starts `net` if missing, starts it if inactive, and brings its DHCP
/// reservations to `net.hosts`; fails on a foreign network or other settings.
pub fn ensure(conn: &Connect, net: &NetworkSpec) -> Result<(), DriverError> {
    let Some(existing) = lookup(conn, &net.name)? else {
        check_subnet_free(conn, &net.name, net.cidr)?;
        let defined = conn
            .define_network_xml(&network_xml(net))
            .map_err(lv(Action::DefineNetwork, &net.name))?;
        defined.set_autostart(false).map_err(lv(Action::DefineNetwork, &net.name))?;
        return start(&defined, &net.name);
    };
    let info = inspect(&existing, &net.name)?;
    check_owner(&net.name, &info, &net.owner)?;
    let found = describe(&info.subnets, info.forwards);
    let expected = describe(&[net.cidr], net.kind == NetworkKind::Nat);
    if found != expected {
        return Err(DriverError::NetworkConflict { name: net.name.clone(), found, expected });
    }
    let active = existing.is_active().map_err(lv(Action::InspectNetwork, &net.name))?;
    sync_hosts(&existing, net, &info, active)?;
    if active { Ok(()) } else { start(&existing, &net.name) }
}

fn describe(subnets: &[Ipv4Cidr], forwards: bool) -> String {
    let subnets: Vec<String> = subnets.iter().map(ToString::to_string).collect();
    format!("subnet {} ({})", subnets.join(","), if forwards { "NAT" } else { "host-only" })
}

fn start(network: &Network, name: &str) -> Result<(), DriverError> {
    network
        .create()
        .map(drop)
        .map_err(|e| DriverError::StartNetwork { name: name.to_owned(), source: e.into() })
}

/// Adds missing reservations and removes stale ones (in the live network too when it
/// runs, so a node added later gets its address without a restart).
fn sync_hosts(
    network: &Network,
    net: &NetworkSpec,
    info: &NetworkInfo,
    active: bool,
) -> Result<(), DriverError> {
    let wanted: Vec<(String, String, String)> =
        net.hosts.iter().map(|h| (h.mac.to_string(), h.ip.to_string(), h.name.clone())).collect();
    let mut flags = sys::VIR_NETWORK_UPDATE_AFFECT_CONFIG;
    if active {
        flags |= sys::VIR_NETWORK_UPDATE_AFFECT_LIVE;
    }
    let update = |command, (mac, ip, name): &(String, String, String)| {
        let xml = format!("<host mac='{mac}' name='{}' ip='{ip}'/>", escape(name));
        network
            .update(command, sys::VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, &xml, flags)
            .map_err(lv(Action::UpdateNetwork, &net.name))
    };
    for stale in info.hosts.iter().filter(|h| !wanted.contains(h)) {
        update(sys::VIR_NETWORK_UPDATE_COMMAND_DELETE, stale)?;
    }
    for missing in wanted.iter().filter(|h| !info.hosts.contains(h)) {
        update(sys::VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, missing)?;
    }
    Ok(())
}

/// Fails if another network's subnet overlaps `cidr`.
fn check_subnet_free(conn: &Connect, name: &str, cidr: Ipv4Cidr) -> Result<(), DriverError> {
    for (other, subnets) in all_subnets(conn)? {
        if let Some(s) = subnets.iter().find(|s| s.overlaps(&cidr)) {
            return Err(DriverError::NetworkConflict {
                name: name.to_owned(),
                found: format!("subnet {s} used by network {other}"),
                expected: format!("subnet {cidr}"),
            });
        }
    }
    Ok(())
}

/// Every network's name and IPv4 subnets.
pub fn all_subnets(conn: &Connect) -> Result<Vec<(String, Vec<Ipv4Cidr>)>, DriverError> {
    let uri = conn.uri().unwrap_or_default();
    let networks = conn.list_all_networks(0).map_err(lv(Action::ListNetworks, &uri))?;
    let mut all = Vec::new();
    for network in networks {
        let name = network.name().map_err(lv(Action::ListNetworks, &uri))?;
        if let Some(info) = inspect_listed(&network, &name)? {
            all.push((name, info.subnets));
        }
    }
    Ok(all)
}

/// The networks whose marker names exactly `owner` (a profile's, without node).
pub fn owned(conn: &Connect, owner: &Owner) -> Result<Vec<String>, DriverError> {
    let uri = conn.uri().unwrap_or_default();
    let mut ours = Vec::new();
    for network in conn.list_all_networks(0).map_err(lv(Action::ListNetworks, &uri))? {
        let name = network.name().map_err(lv(Action::ListNetworks, &uri))?;
        if inspect_listed(&network, &name)?.is_some_and(|info| info.owner.as_ref() == Some(owner)) {
            ours.push(name);
        }
    }
    Ok(ours)
}

/// Fails unless the network's marker names exactly `owner`.
fn check_owner(name: &str, info: &NetworkInfo, owner: &Owner) -> Result<(), DriverError> {
    if info.owner.as_ref() == Some(owner) {
        return Ok(());
    }
    let legacy = info.legacy_profile.as_deref();
    Err(DriverError::not_ours(Object::Network, name, info.owner.clone(), legacy, owner))
}

/// Ok if no network `name` exists or it is `owner`'s.
pub fn check(conn: &Connect, name: &str, owner: &Owner) -> Result<(), DriverError> {
    match lookup(conn, name)? {
        Some(network) => check_owner(name, &inspect(&network, name)?, owner),
        None => Ok(()),
    }
}

/// Stops and undefines `owner`'s network; Ok if it does not exist.
pub fn delete(conn: &Connect, name: &str, owner: &Owner) -> Result<(), DriverError> {
    if !name.starts_with(NAME_PREFIX) {
        return Err(DriverError::ForeignNetwork { name: name.to_owned(), owner: None });
    }
    let Some(network) = lookup(conn, name)? else { return Ok(()) };
    check_owner(name, &inspect(&network, name)?, owner)?;
    let fail = lv(Action::DeleteNetwork, name);
    if network.is_active().map_err(&fail)? {
        network.destroy().map_err(&fail)?;
    }
    if network.is_persistent().map_err(&fail)? {
        network.undefine().map_err(&fail)?;
    }
    Ok(())
}

fn lookup(conn: &Connect, name: &str) -> Result<Option<Network>, DriverError> {
    match conn.lookup_network_by_name(name) {
        Ok(network) => Ok(Some(network)),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(lv(Action::InspectNetwork, name)(e)),
    }
}

/// The current definition, read back (live and persistent agree: kubelab updates both).
/// A listed network's definition; `None` if it was removed since it was listed (by
/// another kubelab, or the user): listing must not fail on that.
fn inspect_listed(network: &Network, name: &str) -> Result<Option<NetworkInfo>, DriverError> {
    match network.xml_desc(0) {
        Ok(xml) => Ok(Some(network_info(&xml))),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(lv(Action::InspectNetwork, name)(e)),
    }
}

fn inspect(network: &Network, name: &str) -> Result<NetworkInfo, DriverError> {
    let xml = network.xml_desc(0).map_err(lv(Action::InspectNetwork, name))?;
    Ok(network_info(&xml))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::libvirt::xml::assert_golden;
    use crate::driver::{bridge_name, network_names};
    use crate::net::MacAddr;

    fn spec(kind: NetworkKind) -> NetworkSpec {
        let (host_only, nat) = network_names("lab");
        let (name, cidr) = match kind {
            NetworkKind::Nat => (nat, "192.168.50.0/24"),
            NetworkKind::HostOnly => (host_only, "192.168.39.0/24"),
        };
        let cidr: Ipv4Cidr = cidr.parse().unwrap();
        let hosts = ["lab", "lab-m02"]
            .iter()
            .enumerate()
            .map(|(i, n)| DhcpHost {
                mac: MacAddr::derive("lab", n, 1),
                ip: cidr.node_ip(i as u32).unwrap(),
                name: (*n).into(),
            })
            .collect();
        let owner = Owner::new("0123456789abcdef".parse().unwrap(), &"lab".parse().unwrap());
        NetworkSpec { bridge: bridge_name(&name), name, owner, kind, cidr, hosts }
    }

    #[test]
    fn host_only_network_matches_golden() {
        assert_golden("network-host-only.xml", &network_xml(&spec(NetworkKind::HostOnly)));
    }

    #[test]
    fn nat_network_matches_golden() {
        let nat = NetworkSpec { hosts: vec![], ..spec(NetworkKind::Nat) };
        assert_golden("network-nat.xml", &network_xml(&nat));
    }

    #[test]
    fn generated_xml_reads_back() {
        let net = spec(NetworkKind::HostOnly);
        let info = network_info(&network_xml(&net));
        assert_eq!(info.subnets, [net.cidr]);
        assert_eq!(info.owner, Some(net.owner.clone()));
        assert!(!info.forwards);
        assert_eq!(
            info.hosts[1],
            (net.hosts[1].mac.to_string(), "192.168.39.11".into(), "lab-m02".into())
        );
    }
}
