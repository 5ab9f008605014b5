//! Pure parsers of what `VBoxManage` prints: `--machinereadable` key/value lines
//! (`showvminfo`), the `Key: value` records of `list hostonlyifs|hostonlynets|hdds` and
//! `showmediuminfo`, `list vms`, `--version`, and the extra-data listings. Each is
//! tested on output captured from VirtualBox (tests/fixtures/vboxmanage/).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// A `VBoxManage` version (`7.0.14r161095`, `6.1.50_Ubuntur161033`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Major release (6, 7).
    pub major: u32,
    /// Minor release.
    pub minor: u32,
    /// Maintenance release.
    pub patch: u32,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Parses `VBoxManage --version` output: `MAJOR.MINOR.PATCH` followed by a build
/// suffix (`r161095`, `_Ubuntur161033`, `_BETA1`), on the first line that has one (the
/// Linux launcher may print a multi-line warning first).
pub fn parse_version(text: &str) -> Option<Version> {
    text.lines().find_map(|l| parse_version_line(l.trim()))
}

fn parse_version_line(line: &str) -> Option<Version> {
    let mut parts = line.splitn(3, '.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let rest = parts.next()?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some(Version { major, minor, patch: digits.parse().ok()? })
}

/// The `key=value` lines of `--machinereadable` output (VirtualBox manual, "VBoxManage
/// showvminfo"): keys and values may be quoted; inside quotes `\"` and `\\` are escaped.
/// Lines that are not `key=value` (e.g. warnings) are skipped.
pub fn parse_machine_readable(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim_end_matches('\r');
            let (key, rest) = if let Some(quoted) = line.strip_prefix('"') {
                let (key, after) = unquote(quoted)?;
                (key, after.strip_prefix('=')?)
            } else {
                let (key, rest) = line.split_once('=')?;
                (key.to_owned(), rest)
            };
            let value = match rest.strip_prefix('"') {
                Some(quoted) => unquote(quoted)?.0,
                None => rest.to_owned(),
            };
            Some((key, value))
        })
        .collect()
}

/// Reads a quoted string (after its opening quote): the unescaped text and what follows
/// the closing quote.
fn unquote(text: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            '"' => return Some((out, &text[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

/// A NAT port-forwarding rule, as `--natpf1` takes it and `showvminfo` shows it
/// (`Forwarding(0)="ssh,tcp,127.0.0.1,40022,,22"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForward {
    /// The rule's name.
    pub name: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The host address it listens on (empty: all).
    pub host_ip: String,
    /// The host port.
    pub host_port: u16,
    /// The guest port.
    pub guest_port: u16,
}

impl PortForward {
    /// Parses `name,proto,hostip,hostport,guestip,guestport`.
    pub fn parse(text: &str) -> Option<Self> {
        let f: Vec<&str> = text.split(',').collect();
        let [name, protocol, host_ip, host_port, _guest_ip, guest_port] = f[..] else {
            return None;
        };
        Some(Self {
            name: name.to_owned(),
            protocol: protocol.to_owned(),
            host_ip: host_ip.to_owned(),
            host_port: host_port.parse().ok()?,
            guest_port: guest_port.parse().ok()?,
        })
    }
}

/// What kubelab reads of `showvminfo --machinereadable`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmInfo {
    /// The raw `VMState` (`running`, `poweroff`, `saved`...).
    pub state: String,
    /// The `groups` (`/kubelab-<profile>` for kubelab's VMs; not the owner marker).
    pub groups: Vec<String>,
    /// The VM's log folder (`LogFldr`), where `VBox.log` is.
    pub log_folder: Option<String>,
    /// Where its snapshots' differencing images and saved states go (`SnapFldr`).
    pub snapshot_folder: Option<String>,
    /// NIC 1's NAT port forwards.
    pub forwards: Vec<PortForward>,
    /// The medium attached at each storage slot (`SATA-0-0` -> path), `none` left out.
    pub media: BTreeMap<String, String>,
}

impl VmInfo {
    /// Picks kubelab's fields out of `showvminfo --machinereadable` text; `None` without
    /// a `VMState`.
    pub fn parse(text: &str) -> Option<Self> {
        let map = parse_machine_readable(text);
        let forwards = map
            .iter()
            .filter(|(k, _)| k.starts_with("Forwarding("))
            .filter_map(|(_, v)| PortForward::parse(v))
            .collect();
        let media = map
            .iter()
            .filter(|(k, v)| is_slot(k) && v.as_str() != "none" && !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Some(Self {
            state: map.get("VMState")?.clone(),
            groups: map
                .get("groups")
                .map(|g| g.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
            log_folder: map.get("LogFldr").cloned(),
            snapshot_folder: map.get("SnapFldr").cloned(),
            forwards,
            media,
        })
    }

    /// The 127.0.0.1 host port forwarded to the guest's port 22, if any.
    pub fn ssh_port(&self) -> Option<u16> {
        self.forwards
            .iter()
            .find(|f| f.protocol == "tcp" && f.guest_port == 22)
            .map(|f| f.host_port)
    }
}

/// Whether a machine-readable key names a storage slot: `<controller>-<port>-<device>`.
fn is_slot(key: &str) -> bool {
    let mut parts = key.rsplitn(3, '-');
    let device = parts.next().is_some_and(|p| p.parse::<u32>().is_ok());
    let port = parts.next().is_some_and(|p| p.parse::<u32>().is_ok());
    device
        && port
        && parts.next().is_some_and(|c| !c.contains("ImageUUID") && !c.contains("IsEjected"))
}

/// The names in `snapshot VM list --machinereadable` (manual: "VBoxManage snapshot"),
/// in tree order: the root is `SnapshotName`, a snapshot's children add `-1`, `-2`...
/// to its key (`SnapshotName-1-2`); `CurrentSnapshotName` repeats one and is skipped.
pub fn parse_snapshot_names(text: &str) -> Vec<String> {
    let is_node = |key: &str| {
        key.strip_prefix("SnapshotName").is_some_and(|path| {
            path.split('-').skip(1).all(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
                && (path.is_empty() || path.starts_with('-'))
        })
    };
    // In output order, which parse_machine_readable's map does not keep.
    text.lines()
        .filter_map(|line| {
            let one = parse_machine_readable(line);
            one.into_iter().next().filter(|(key, _)| is_node(key)).map(|(_, name)| name)
        })
        .collect()
}

/// `list vms` / `list runningvms`: `"name" {uuid}` per line -> the names.
pub fn parse_vm_list(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            l.strip_prefix('"').and_then(|r| r.rsplit_once("\" {")).map(|(n, _)| n.to_owned())
        })
        .collect()
}

/// The `Key:   value` records of `list hostonlyifs|hostonlynets|hdds` and
/// `showmediuminfo`, separated by blank lines.
pub fn parse_records(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut records = Vec::new();
    let mut current = BTreeMap::new();
    for line in text.lines() {
        match line.split_once(':') {
            Some((key, value)) if !key.is_empty() && !key.starts_with(' ') => {
                current.insert(key.trim().to_owned(), value.trim().to_owned());
            }
            _ if line.trim().is_empty() && !current.is_empty() => {
                records.push(std::mem::take(&mut current));
            }
            _ => {}
        }
    }
    if !current.is_empty() {
        records.push(current);
    }
    records
}

/// A host-only adapter (`list hostonlyifs`, VirtualBox 6.1 and 7.x outside macOS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostOnlyIf {
    /// Its name (`vboxnet0`; on Windows `VirtualBox Host-Only Ethernet Adapter #2`).
    pub name: String,
    /// The host's address on it.
    pub ip: Ipv4Addr,
    /// Its netmask.
    pub netmask: Ipv4Addr,
}

/// Parses `list hostonlyifs`.
pub fn parse_hostonlyifs(text: &str) -> Vec<HostOnlyIf> {
    parse_records(text)
        .into_iter()
        .filter_map(|r| {
            Some(HostOnlyIf {
                name: r.get("Name")?.clone(),
                ip: r.get("IPAddress")?.parse().ok()?,
                netmask: r.get("NetworkMask")?.parse().ok()?,
            })
        })
        .collect()
}

/// A host-only network (`list hostonlynets`, VirtualBox 7.x on macOS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostOnlyNet {
    /// Its name.
    pub name: String,
    /// Its netmask.
    pub netmask: Ipv4Addr,
    /// The lowest address of its range (the host takes it).
    pub lower_ip: Ipv4Addr,
}

/// Parses `list hostonlynets`.
pub fn parse_hostonlynets(text: &str) -> Vec<HostOnlyNet> {
    parse_records(text)
        .into_iter()
        .filter_map(|r| {
            Some(HostOnlyNet {
                name: r.get("Name")?.clone(),
                netmask: r.get("NetworkMask")?.parse().ok()?,
                lower_ip: r.get("LowerIP")?.parse().ok()?,
            })
        })
        .collect()
}

/// A disk medium (`list hdds`, `showmediuminfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Medium {
    /// Its UUID.
    pub uuid: String,
    /// Its file.
    pub location: String,
    /// `normal (base)`, `normal (differencing)`, `multiattach`...
    pub kind: String,
    /// Its parent's UUID, `base` for a base medium.
    pub parent: String,
    /// Its virtual size (`Capacity: 3584 MBytes`).
    pub capacity_mib: Option<u64>,
    /// Whether it has differencing children (`Child UUIDs:`, shown by `showmediuminfo`
    /// only: `list hdds` never says).
    pub has_children: bool,
}

/// Parses `list hdds`/`list dvds` (several records) or `showmediuminfo` (one).
pub fn parse_media(text: &str) -> Vec<Medium> {
    parse_records(text)
        .into_iter()
        .filter_map(|r| {
            Some(Medium {
                uuid: r.get("UUID")?.clone(),
                location: r.get("Location")?.clone(),
                kind: r.get("Type").cloned().unwrap_or_default(),
                parent: r.get("Parent UUID").cloned().unwrap_or_else(|| "base".into()),
                capacity_mib: r
                    .get("Capacity")
                    .and_then(|c| c.strip_suffix(" MBytes"))
                    .and_then(|c| c.parse().ok()),
                has_children: r.get("Child UUIDs").is_some_and(|c| !c.is_empty()),
            })
        })
        .collect()
}

/// The adapter `hostonlyif create` made: `Interface 'vboxnet1' was successfully created`.
pub fn parse_created_hostonlyif(text: &str) -> Option<String> {
    let start = text.find("Interface '")? + "Interface '".len();
    let end = text[start..].find("' was successfully created")?;
    Some(text[start..start + end].to_owned())
}

/// `getextradata TARGET KEY`: `Value: V`, or `No value set!` (`None`).
pub fn parse_extradata_value(text: &str) -> Option<String> {
    text.lines().find_map(|l| l.strip_prefix("Value: ")).map(str::to_owned)
}

/// `getextradata global enumerate`: `Key: K, Value: V` per line.
pub fn parse_extradata(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let (key, value) = l.strip_prefix("Key: ")?.split_once(", Value: ")?;
            Some((key.to_owned(), value.to_owned()))
        })
        .collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A captured VBoxManage output from `tests/fixtures/vboxmanage/`.
    pub(in crate::driver::virtualbox) fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/vboxmanage/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn versions_with_build_suffixes() {
        let v = |major, minor, patch| Some(Version { major, minor, patch });
        assert_eq!(parse_version("7.0.14r161095\n"), v(7, 0, 14));
        assert_eq!(parse_version("6.1.50_Ubuntur161033\n"), v(6, 1, 50));
        assert_eq!(parse_version(&fixture("version-7.1.txt")), v(7, 1, 4));
        assert_eq!(parse_version("garbage"), None);
    }

    /// Manual section "VBoxManage showvminfo": `--machinereadable` output; the fixture is
    /// minikube's captured output (kubernetes/minikube#11345) plus a port forward.
    #[test]
    fn showvminfo_running_with_forward_and_media() {
        let info = VmInfo::parse(&fixture("showvminfo-running.txt")).unwrap();
        assert_eq!(info.state, "running");
        assert_eq!(info.groups, vec!["/kubelab-lab".to_owned()]);
        assert_eq!(info.ssh_port(), Some(40022));
        assert_eq!(info.log_folder.as_deref(), Some("C:\\Users\\hp\\lab\\Logs"));
        assert_eq!(info.snapshot_folder.as_deref(), Some("C:\\Users\\hp\\lab\\Snapshots"));
        assert_eq!(
            info.media.get("SATA-0-0").map(String::as_str),
            Some("/home/u/.kubelab/profiles/lab/nodes/lab/disk.vdi")
        );
        assert!(!info.media.contains_key("SATA-1-0"), "none is not a medium");
        assert!(!info.media.keys().any(|k| k.contains("ImageUUID")));
    }

    /// Manual section "VBoxManage snapshot": `list --machinereadable` of a tree (a
    /// root with two children, the first with a child of its own); the fixture follows
    /// `showSnapshots` in VBoxManageInfo.cpp.
    #[test]
    fn snapshot_list_walks_the_tree() {
        let names = parse_snapshot_names(&fixture("snapshot-list.txt"));
        assert_eq!(names, ["kubelab-clean", "kubelab-s1", "by-hand", "kubelab-s2"]);
        assert!(parse_snapshot_names("").is_empty());
        let odd = "SnapshotNameX=\"a\"\nSnapshotName-=\"b\"\nSnapshotName-1a=\"c\"\n";
        assert!(parse_snapshot_names(odd).is_empty(), "not snapshot keys");
    }

    #[test]
    fn machine_readable_unescapes_quotes_and_backslashes() {
        let map = parse_machine_readable("\"a b\"=\"x\\\"y\\\\z\"\nmemory=2048\nnot a pair\n");
        assert_eq!(map.get("a b").map(String::as_str), Some("x\"y\\z"));
        assert_eq!(map.get("memory").map(String::as_str), Some("2048"));
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn vm_list_and_forward_rules() {
        let names = parse_vm_list("\"lab\" {d7ef-1}\n\"my \\\"vm\" {aa}\n");
        assert_eq!(names, vec!["lab".to_owned(), "my \\\"vm".to_owned()]);
        let f = PortForward::parse("ssh,tcp,127.0.0.1,40022,,22").unwrap();
        assert_eq!((f.host_ip.as_str(), f.host_port, f.guest_port), ("127.0.0.1", 40022, 22));
        assert_eq!(PortForward::parse("ssh,tcp,,x,,22"), None);
    }

    /// Manual section "VBoxManage list": `hostonlyifs`, as minikube logged it
    /// (kubernetes/minikube#9595).
    #[test]
    fn hostonlyifs_records() {
        let ifs = parse_hostonlyifs(&fixture("list-hostonlyifs.txt"));
        assert_eq!(ifs.len(), 2);
        assert_eq!(ifs[0].name, "vboxnet0");
        assert_eq!(ifs[1].ip, Ipv4Addr::new(192, 168, 56, 1));
        assert_eq!(ifs[1].netmask, Ipv4Addr::new(255, 255, 255, 0));
    }

    #[test]
    fn hostonlynets_media_and_extradata() {
        let nets = parse_hostonlynets(&fixture("list-hostonlynets.txt"));
        assert_eq!(nets[0].name, "kubelab-lab");
        assert_eq!(nets[0].lower_ip, Ipv4Addr::new(192, 168, 56, 1));
        let media = parse_media(&fixture("list-hdds.txt"));
        assert_eq!(media.len(), 2);
        assert_eq!(media[0].kind, "multiattach");
        assert_eq!(media[0].parent, "base");
        assert_eq!(media[1].parent, media[0].uuid);
        assert_eq!(media[0].capacity_mib, Some(3584));
        assert_eq!(
            parse_created_hostonlyif("0%...100%\nInterface 'vboxnet1' was successfully created\n"),
            Some("vboxnet1".to_owned())
        );
        let extra = parse_extradata("Key: kubelab/hostonly/kubelab-a, Value: vboxnet1\n");
        assert_eq!(extra.get("kubelab/hostonly/kubelab-a").map(String::as_str), Some("vboxnet1"));
    }
}
