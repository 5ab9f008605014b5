//! Small XML helpers shared by the libvirt builders and readers: escaping values, the
//! kubelab ownership marker, and reading what kubelab needs from libvirt's XML
//! (subnets, DHCP reservations, markers, MAC addresses) with `roxmltree`.

use std::net::Ipv4Addr;

use crate::driver::Owner;
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

/// The `<metadata>` block marking an object as created by kubelab for `owner`.
pub fn marker(owner: &Owner) -> String {
    let node = owner.node.as_ref().map_or(String::new(), |n| format!(" node=\"{}\"", escape(n)));
    format!(
        "  <metadata>\n    <kubelab:owner xmlns:kubelab=\"{MARKER_NS}\" home=\"{}\" profile=\"{}\"{node}/>\n  </metadata>\n",
        escape(owner.home.as_str()),
        escape(&owner.profile)
    )
}

/// The owner in a domain's or network's kubelab marker; `None` if it has none, or one
/// that is not valid (an older kubelab's `<kubelab:profile>` without a home, or one
/// edited by hand): such an object is not this home's.
pub fn marker_owner(xml: &str) -> Option<Owner> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let node = doc.descendants().find(|n| n.has_tag_name((MARKER_NS, "owner")))?;
    Owner::from_parts(node.attribute("home")?, node.attribute("profile")?, node.attribute("node"))
        .ok()
}

/// The profile in an older kubelab's marker (`<kubelab:profile>`, without a home), which
/// only [`crate::driver::DriverError::Legacy`] uses: it proves nothing about the owner.
pub fn legacy_marker_profile(xml: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let node = doc.descendants().find(|n| n.has_tag_name((MARKER_NS, "profile")))?;
    node.text().map(str::to_owned)
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
    /// The owner in its kubelab marker.
    pub owner: Option<Owner>,
    /// The profile in an older kubelab's marker ([`legacy_marker_profile`]).
    pub legacy_profile: Option<String>,
}

/// Reads a network definition; unparseable XML or addresses yield what could be read.
pub fn network_info(xml: &str) -> NetworkInfo {
    let Ok(doc) = roxmltree::Document::parse(xml) else { return NetworkInfo::default() };
    let mut info = NetworkInfo {
        owner: marker_owner(xml),
        legacy_profile: legacy_marker_profile(xml),
        ..NetworkInfo::default()
    };
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

/// Whether a domain's or volume's XML uses the volume `volume` of pool `pool`, whose
/// path is `path`: as a disk (`<source pool= volume=>`, `<source file=>` or `dev=`) or as
/// a backing store (`<backingStore><path>`). Unparseable XML counts as a user, so an
/// image is never removed on a guess.
pub fn uses_volume(xml: &str, pool: &str, volume: &str, path: &str) -> bool {
    let Ok(doc) = roxmltree::Document::parse(xml) else { return true };
    doc.descendants().any(|n| {
        let attr = |name| n.attribute(name);
        (n.has_tag_name("source")
            && ((attr("pool") == Some(pool) && attr("volume") == Some(volume))
                || attr("file") == Some(path)
                || attr("dev") == Some(path)))
            || (n.has_tag_name("path")
                && n.parent().is_some_and(|p| p.has_tag_name("backingStore"))
                && n.text().map(str::trim) == Some(path))
    })
}

/// The directory in a pool definition (`<target><path>`).
pub fn pool_target_path(xml: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let target = doc.root_element().children().find(|n| n.has_tag_name("target"))?;
    let path = target.children().find(|n| n.has_tag_name("path"))?;
    path.text().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
}

/// The file a domain logs its serial console to (`<serial><log file=>`).
pub fn serial_log_file(xml: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    doc.descendants()
        .filter(|n| n.has_tag_name("log"))
        .find(|n| n.parent().is_some_and(|p| p.has_tag_name("serial")))?
        .attribute("file")
        .map(str::to_owned)
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
        let owner = Owner::new("0123456789abcdef".parse().unwrap(), &"lab".parse().unwrap());
        for owner in [owner.clone(), owner.node("lab-m02")] {
            let xml = format!("<domain><name>x</name>\n{}</domain>", marker(&owner));
            assert_eq!(marker_owner(&xml), Some(owner));
        }
        assert_eq!(marker_owner("<domain><metadata><other/></metadata></domain>"), None);
        let ns = format!("xmlns:k='{MARKER_NS}'");
        for bad in [
            // An older kubelab's marker: a profile, no home.
            format!("<domain><metadata><k:profile {ns}>lab</k:profile></metadata></domain>"),
            format!("<domain><metadata><k:owner {ns} profile='lab'/></metadata></domain>"),
            format!(
                "<domain><metadata><k:owner {ns} home='0123' profile='lab'/></metadata></domain>"
            ),
            format!(
                "<domain><metadata><k:owner {ns} home='0123456789abcdef' profile='lab' \
                 node='other'/></metadata></domain>"
            ),
            // The right element in another namespace is not kubelab's.
            "<domain><metadata><k:owner xmlns:k='urn:x' home='0123456789abcdef' \
             profile='lab'/></metadata></domain>"
                .to_owned(),
        ] {
            assert_eq!(marker_owner(&bad), None, "{bad}");
        }
        let old = format!("<domain><metadata><k:profile {ns}>lab</k:profile></metadata></domain>");
        assert_eq!(legacy_marker_profile(&old).as_deref(), Some("lab"));
        assert_eq!(legacy_marker_profile(&format!("<domain>\n{}</domain>", marker(&owner))), None);
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
        assert_eq!(info.owner, None);
    }

    #[test]
    fn finds_users_of_a_volume() {
        let (pool, vol, path) = ("kubelab", "base-ab.qcow2", "/pool/base-ab.qcow2");
        let overlay = "<volume><name>node-x.qcow2</name><backingStore>\
            <path>/pool/base-ab.qcow2</path><format type='qcow2'/></backingStore></volume>";
        assert!(uses_volume(overlay, pool, vol, path));
        let other = overlay.replace("base-ab", "base-cd");
        assert!(!uses_volume(&other, pool, vol, path));
        let by_volume = "<domain><devices><disk type='volume'>\
            <source pool='kubelab' volume='base-ab.qcow2'/></disk></devices></domain>";
        assert!(uses_volume(by_volume, pool, vol, path));
        assert!(!uses_volume(&by_volume.replace("'kubelab'", "'other'"), pool, vol, path));
        let by_file = "<domain><devices><disk type='file'>\
            <source file='/pool/base-ab.qcow2'/></disk></devices></domain>";
        assert!(uses_volume(by_file, pool, vol, path));
        assert!(!uses_volume("<volume><path>/pool/base-ab.qcow2</path></volume>", pool, vol, path));
        assert!(uses_volume("<domain", pool, vol, path), "unreadable: assume used");
    }

    #[test]
    fn reads_pool_directory_and_serial_log_file() {
        let pool = "<pool type='dir'><name>kubelab</name><source><dir path='/no'/></source>\
            <target><path>\n /srv/a&amp;b \n</path></target></pool>";
        assert_eq!(pool_target_path(pool).as_deref(), Some("/srv/a&b"));
        assert_eq!(pool_target_path("<pool type='rbd'><name>x</name></pool>"), None);
        let domain = "<domain><devices><console type='pty'><log file='/other.log'/></console>\
            <serial type='pty'><log file='/p/a&apos;b.console.log' append='on'/></serial>\
            </devices></domain>";
        assert_eq!(serial_log_file(domain).as_deref(), Some("/p/a'b.console.log"));
        assert_eq!(
            serial_log_file("<domain><devices><serial type='pty'/></devices></domain>"),
            None
        );
    }

    #[test]
    fn reads_domain_macs_in_order() {
        let xml = "<domain><devices><interface type='network'><mac address='52:54:00:00:00:0A'/>\
            </interface><interface type='network'><source network='x'/>\
            <mac address='52:54:00:00:00:0b'/></interface></devices></domain>";
        assert_eq!(domain_macs(xml), ["52:54:00:00:00:0a", "52:54:00:00:00:0b"]);
    }
}
