//! Small XML helpers shared by the libvirt builders and readers: escaping values, the
//! kubelab ownership marker, and reading what kubelab needs from libvirt's XML
//! (subnets, DHCP reservations, markers, MAC addresses) with `roxmltree`.

use std::net::Ipv4Addr;

use crate::net::Ipv4Cidr;

/// XML namespace of kubelab's `<metadata>` marker on domains and networks.
pub const MARKER_NS: &str = "https://kubelab.dev/xmlns/1";

/// `text` with the five XML special characters escaped (for attributes and text).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// The `<metadata>` block marking an object as created by kubelab for `profile`.
pub fn marker(profile: &str) -> String {
    format!(
        "  <metadata>\n    <kubelab:profile xmlns:kubelab=\"{MARKER_NS}\">{}</kubelab:profile>\n  </metadata>\n",
        escape(profile)
    )
}

/// The profile in a domain's or network's kubelab marker, `None` if it has none.
pub fn marker_profile(xml: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let node = doc.descendants().find(|n| n.has_tag_name((MARKER_NS, "profile")))?;
    Some(node.text().unwrap_or_default().to_owned())
}

/// What kubelab reads back from a network definition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkInfo {
    /// The IPv4 subnets of its `<ip>` elements.
    pub subnets: Vec<Ipv4Cidr>,
    /// Its DHCP reservations as (mac, ip, name) strings, MACs lowercased.
    pub hosts: Vec<(String, String, String)>,
    /// Whether it has a `<forward>` element (NAT, route, bridge...).
    pub forwards: bool,
    /// The profile in its kubelab marker.
    pub profile: Option<String>,
}

/// Reads a network definition; unparseable XML or addresses yield what could be read.
pub fn network_info(xml: &str) -> NetworkInfo {
    let Ok(doc) = roxmltree::Document::parse(xml) else { return NetworkInfo::default() };
    let mut info = NetworkInfo { profile: marker_profile(xml), ..NetworkInfo::default() };
    info.forwards = doc.descendants().any(|n| n.has_tag_name("forward"));
    for ip in doc.descendants().filter(|n| n.has_tag_name("ip")) {
        if ip.attribute("family").is_some_and(|f| f != "ipv4") {
            continue;
        }
        let Some(addr) = ip.attribute("address").and_then(|a| a.parse::<Ipv4Addr>().ok()) else {
            continue;
        };
        let prefix = match (ip.attribute("prefix"), ip.attribute("netmask")) {
            (Some(p), _) => p.parse().ok(),
            (None, Some(m)) => {
                m.parse::<Ipv4Addr>().ok().map(|m| u32::from(m).leading_ones() as u8)
            }
            // libvirt derives the prefix from the address class when both are missing.
            (None, None) => Some(24),
        };
        if let Some(cidr) = prefix.and_then(|p| Ipv4Cidr::containing(addr, p).ok()) {
            info.subnets.push(cidr);
        }
        for host in ip.descendants().filter(|n| n.has_tag_name("host")) {
            let attr = |name| host.attribute(name).unwrap_or_default().to_owned();
            info.hosts.push((attr("mac").to_lowercase(), attr("ip"), attr("name")));
        }
    }
    info
}

/// The MAC addresses of a domain's interfaces, in order, lowercased.
pub fn domain_macs(xml: &str) -> Vec<String> {
    let Ok(doc) = roxmltree::Document::parse(xml) else { return Vec::new() };
    doc.descendants()
        .filter(|n| n.has_tag_name("interface"))
        .filter_map(|iface| iface.children().find(|c| c.has_tag_name("mac")))
        .filter_map(|mac| mac.attribute("address").map(str::to_lowercase))
        .collect()
}

/// Test helper: compares `actual` with the golden file `tests/fixtures/libvirt/<name>`,
/// or rewrites the file when `UPDATE_GOLDEN=1`.
#[cfg(test)]
pub fn assert_golden(name: &str, actual: &str) {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/libvirt").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("{}: {e} (run with UPDATE_GOLDEN=1 to create it)", path.display())
    });
    assert_eq!(actual, expected, "{} differs (UPDATE_GOLDEN=1 rewrites it)", path.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_special_characters() {
        assert_eq!(escape(r#"a<b>&'c'"d""#), "a&lt;b&gt;&amp;&apos;c&apos;&quot;d&quot;");
    }

    #[test]
    fn reads_marker_back() {
        let xml = format!("<domain><name>x</name>\n{}</domain>", marker("a&b"));
        assert_eq!(marker_profile(&xml).as_deref(), Some("a&b"));
        assert_eq!(marker_profile("<domain><metadata><other/></metadata></domain>"), None);
    }

    #[test]
    fn reads_network_subnets_hosts_and_forward() {
        let xml = "<network><name>n</name><forward mode='nat'/>\
            <ip address='192.168.122.1' netmask='255.255.255.0'><dhcp>\
            <host mac='52:54:00:AA:00:01' name='a' ip='192.168.122.10'/></dhcp></ip>\
            <ip family='ipv6' address='fd00::1' prefix='64'/>\
            <ip address='10.1.2.1' prefix='16'/></network>";
        let info = network_info(xml);
        let subnets: Vec<String> = info.subnets.iter().map(ToString::to_string).collect();
        assert_eq!(subnets, ["192.168.122.0/24", "10.1.0.0/16"]);
        assert_eq!(info.hosts, [("52:54:00:aa:00:01".into(), "192.168.122.10".into(), "a".into())]);
        assert!(info.forwards);
        assert_eq!(info.profile, None);
    }

    #[test]
    fn reads_domain_macs_in_order() {
        let xml = "<domain><devices><interface type='network'><mac address='52:54:00:00:00:0A'/>\
            </interface><interface type='network'><source network='x'/>\
            <mac address='52:54:00:00:00:0b'/></interface></devices></domain>";
        assert_eq!(domain_macs(xml), ["52:54:00:00:00:0a", "52:54:00:00:00:0b"]);
    }
}
