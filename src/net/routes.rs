//! The host's IPv4 routes, so a new profile's subnets clash with no network the host
//! already reaches (issue 12). Each OS shows them its own way: Linux in
//! `/proc/net/route`, Windows through `route print -4`, macOS through
//! `netstat -rn -f inet`. The parsers are pure and compiled everywhere, so each is
//! tested on captured output on any host; only [`read_host_routes`] is per OS.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::{Ipv4Cidr, NetError};
use crate::process::Tool;

/// Where Linux shows the IPv4 routing table.
pub const PROC_NET_ROUTE: &str = "/proc/net/route";

/// How long `route`/`netstat` may take: they only read the kernel's table.
pub const ROUTES_TIMEOUT: Duration = Duration::from_secs(10);

/// One IPv4 route of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoute {
    /// Its destination.
    pub cidr: Ipv4Cidr,
    /// The interface it goes out of: a name on Linux and macOS (`virbr0`, `vboxnet0`),
    /// the interface's address on Windows.
    pub device: String,
}

/// The host's IPv4 route destinations, without default routes (which overlap
/// everything and say nothing about local subnets).
pub fn read_host_routes() -> Result<Vec<Ipv4Cidr>, NetError> {
    Ok(read_route_table()?.into_iter().map(|r| r.cidr).collect())
}

/// The host's IPv4 routes with their interfaces, without default routes. Chosen at run
/// time rather than compiled per OS, so every branch builds (and is linted) on every
/// host.
pub fn read_route_table() -> Result<Vec<HostRoute>, NetError> {
    match std::env::consts::OS {
        "linux" | "android" => {
            let text = std::fs::read_to_string(PROC_NET_ROUTE).map_err(|source| {
                NetError::ReadRoutes { path: PROC_NET_ROUTE.to_owned(), source }
            })?;
            parse_proc_net_route(&text)
        }
        "windows" => Ok(parse_route_print(&run("route", &["print", "-4"])?)),
        "macos" => Ok(parse_netstat(&run("netstat", &["-rn", "-f", "inet"])?)),
        os => Err(NetError::RoutesUnsupported { os }),
    }
}

/// Runs a route-listing command; its stdout.
fn run(program: &'static str, args: &[&str]) -> Result<String, NetError> {
    Tool::new(program)
        .run_within(args.iter().copied(), Some(ROUTES_TIMEOUT))
        .map(|out| out.stdout)
        .map_err(|source| NetError::RunRoutes { program, source })
}

/// Routes from `/proc/net/route` text (a header line, then one route a line: the
/// interface, then the destination and mask in host-byte-order hex).
pub fn parse_proc_net_route(text: &str) -> Result<Vec<HostRoute>, NetError> {
    let mut routes = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || NetError::ParseRoute { line: i + 1, text: line.to_owned() };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let hex = |col: usize| -> Result<Ipv4Addr, NetError> {
            let raw = fields.get(col).ok_or_else(bad)?;
            // The kernel prints the address in host byte order (little-endian here).
            let value = u32::from_str_radix(raw, 16).map_err(|_| bad())?;
            Ok(Ipv4Addr::from(value.to_le_bytes()))
        };
        let (dest, netmask) = (hex(1)?, hex(7)?);
        routes.extend(route(dest, netmask, fields[0]));
    }
    Ok(routes)
}

/// Routes from Windows' `route print -4`: every line whose first two columns are an
/// address and a netmask (`Network Destination  Netmask  Gateway  Interface  Metric`,
/// and the `Persistent Routes` that follow). Matching rows rather than headings keeps
/// it working in every display language; interface-list and IPv6 rows never match.
/// The device is the fourth column (the interface's address; a persistent route shows
/// its metric there instead).
pub fn parse_route_print(text: &str) -> Vec<HostRoute> {
    let mut routes = Vec::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let addr = |i: usize| cols.get(i).and_then(|c| c.parse::<Ipv4Addr>().ok());
        if let (Some(dest), Some(netmask)) = (addr(0), addr(1)) {
            routes.extend(route(dest, netmask, cols.get(3).copied().unwrap_or_default()));
        }
    }
    routes.sort_unstable_by(|a, b| {
        let key = |r: &HostRoute| (r.cidr.network(), r.cidr.prefix());
        key(a).cmp(&key(b)).then_with(|| a.device.cmp(&b.device))
    });
    routes.dedup();
    routes
}

/// Routes from macOS' (BSD) `netstat -rn -f inet`. A destination drops trailing zero
/// octets, its prefix being 8 bits per octet shown unless `/N` follows (`127` is
/// 127.0.0.0/8, `10.10.10/24`, `224.0.0/4`); four octets without `/N` are a host.
/// `default` rows and anything after the `Internet6:` section are skipped. The device
/// is the `Netif` column, the fourth.
pub fn parse_netstat(text: &str) -> Vec<HostRoute> {
    text.lines()
        .take_while(|line| !line.starts_with("Internet6"))
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let cidr = bsd_destination(cols.first()?)?;
            let device = cols.get(3).copied().unwrap_or_default().to_owned();
            Some(HostRoute { cidr, device })
        })
        .filter(|r| r.cidr.prefix() > 0)
        .collect()
}

/// `10.10.10/24`, `169.254`, `192.168.1.1` as a subnet; `None` for anything else.
fn bsd_destination(text: &str) -> Option<Ipv4Cidr> {
    let (addr, bits) = match text.split_once('/') {
        Some((addr, bits)) => (addr, Some(bits.parse::<u8>().ok()?)),
        None => (text, None),
    };
    let mut octets = [0u8; 4];
    let mut shown = 0u8;
    for part in addr.split('.') {
        *octets.get_mut(usize::from(shown))? = part.parse().ok()?;
        shown += 1;
    }
    Ipv4Cidr::containing(Ipv4Addr::from(octets), bits.unwrap_or(8 * shown)).ok()
}

/// The route to `dest` through `netmask` out of `device`; `None` for a default route
/// or a mask that is not a prefix.
fn route(dest: Ipv4Addr, netmask: Ipv4Addr, device: &str) -> Option<HostRoute> {
    let bits = u32::from(netmask);
    let prefix = bits.leading_ones() as u8;
    (prefix > 0 && bits.count_ones() == u32::from(prefix))
        .then(|| Ipv4Cidr::containing(dest, prefix).ok())
        .flatten()
        .map(|cidr| HostRoute { cidr, device: device.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/net/route` in the kernel's format: a default route, Docker, two libvirt bridges.
    const PROC: &str = include_str!("../../tests/fixtures/net/proc-net-route.txt");
    /// `route print -4` on Windows (CRLF): interface list, a default route, on-link host
    /// and broadcast routes, VirtualBox's host-only adapter, a route through a gateway,
    /// multicast, persistent routes and an IPv6 table.
    const WINDOWS: &str = include_str!("../../tests/fixtures/net/windows-route-print.txt");
    /// `netstat -rn -f inet` on macOS: default routes (one of a VPN, with no gateway
    /// address), shortened destinations, host routes, ARP entries, vmnet and vboxnet
    /// interfaces and an `Internet6:` section.
    const MACOS: &str = include_str!("../../tests/fixtures/net/macos-netstat-rn.txt");

    fn shown(routes: &[HostRoute]) -> Vec<String> {
        routes.iter().map(|r| r.cidr.to_string()).collect()
    }

    #[test]
    fn parses_proc_net_route_without_default_route() {
        let routes = parse_proc_net_route(PROC).unwrap();
        assert_eq!(
            shown(&routes),
            ["172.17.0.0/16", "192.168.39.0/24", "192.168.122.0/24", "10.0.2.0/24"]
        );
        let devices: Vec<&str> = routes.iter().map(|r| r.device.as_str()).collect();
        assert_eq!(devices, ["docker0", "virbr1", "virbr0", "eth0"]);
        let err = parse_proc_net_route("h\neth0 zz").unwrap_err();
        assert!(matches!(err, NetError::ParseRoute { line: 2, .. }));
    }

    #[test]
    fn parses_windows_route_print() {
        assert_eq!(
            shown(&parse_route_print(WINDOWS)),
            [
                "10.1.1.0/24",
                "10.1.1.36/32",
                "10.1.1.255/32",
                "127.0.0.0/8",
                "127.0.0.1/32",
                "127.255.255.255/32",
                // Once active, once persistent (its metric in the device column).
                "172.16.0.0/12",
                "172.16.0.0/12",
                "192.168.56.0/24",
                "192.168.56.1/32",
                "192.168.56.255/32",
                // Multicast out of each interface.
                "224.0.0.0/4",
                "224.0.0.0/4",
                "255.255.255.255/32",
            ]
        );
        let host_only =
            HostRoute { cidr: "192.168.56.0/24".parse().unwrap(), device: "192.168.56.1".into() };
        assert!(parse_route_print(WINDOWS).contains(&host_only));
        assert!(parse_route_print("").is_empty());
        // A non-contiguous mask is no subnet: skipped rather than misread.
        assert!(parse_route_print("10.0.0.0 255.0.255.0 On-link 10.0.0.1 1").is_empty());
    }

    #[test]
    fn parses_macos_netstat() {
        assert_eq!(
            shown(&parse_netstat(MACOS)),
            [
                "10.10.10.0/24",
                "10.10.10.1/32",
                "10.10.10.1/32",
                "10.10.10.104/32",
                "100.64.0.0/10",
                "127.0.0.0/8",
                "127.0.0.1/32",
                "169.254.0.0/16",
                "172.16.111.0/24",
                "192.168.56.0/24",
                "192.168.220.0/24",
                "224.0.0.0/4",
                "224.0.0.251/32",
                "255.255.255.255/32",
            ]
        );
        let host_only =
            HostRoute { cidr: "192.168.56.0/24".parse().unwrap(), device: "vboxnet0".into() };
        assert!(parse_netstat(MACOS).contains(&host_only));
        assert_eq!(bsd_destination("10/24"), "10.0.0.0/24".parse().ok());
        for bad in ["default", "fe80::%lo0/64", "1.2.3.4.5", "10/x", "Destination"] {
            assert_eq!(bsd_destination(bad), None, "{bad}");
        }
    }
}
