//! The profile's host-only network on VirtualBox: the ranges `/etc/vbox/networks.conf`
//! allows (checked before anything is created), a `vboxnetN` adapter found or created
//! for the subnet (6.1, and 7.x outside macOS) or a named host-only network (7.x on
//! macOS, where adapters are gone), and the ownership records (global extra data) that
//! tell which homes' profiles use an adapter, so one home never adopts or removes
//! another's, and an adapter kubelab created goes when its last user does. The NAT side needs nothing: each VM's
//! NIC 1 has its own NAT engine.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use super::VBoxError;
use super::parse::HostOnlyIf;
use super::vboxmanage::VBoxManage;
use crate::driver::{Action, DriverError, NetworkSpec, Owner};
use crate::net::{self, Ipv4Cidr};

/// Where VirtualBox (>= 6.1.28) on Linux, macOS and Solaris reads the host-only ranges
/// it allows (manual section "Host-Only Networking").
pub const NETWORKS_CONF: &str = "/etc/vbox/networks.conf";

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

/// How often a new adapter's visibility (and its removal) is tried again.
const ADAPTER_POLL: Duration = Duration::from_millis(250);
/// How long removing an adapter that never became visible is retried: removal looks
/// the name up the same way the listing does.
const CLEANUP_WAIT: Duration = Duration::from_secs(10);

/// How VMs join a host-only network; VBoxManage is asked which it has when it is
/// opened (`VBoxManage::host_only_mode`), never assumed from the build's platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostOnlyMode {
    /// A `vboxnetN` host-only adapter (`--nic2 hostonly --hostonlyadapter2`).
    Adapter,
    /// A named host-only network (`--nic2 hostonlynet --host-only-net2`), VirtualBox
    /// 7.x on macOS, where host-only adapters are no longer supported.
    Network,
}

/// The `--nic2` arguments joining `attachment` (an adapter or network name).
pub fn nic2_args(mode: HostOnlyMode, attachment: &str) -> Vec<String> {
    let (nic, option) = match mode {
        HostOnlyMode::Adapter => ("hostonly", "--hostonlyadapter2"),
        HostOnlyMode::Network => ("hostonlynet", "--host-only-net2"),
    };
    vec!["--nic2".into(), nic.into(), option.into(), attachment.into()]
}

/// Global extra-data key prefix of a host-only adapter's record ([`AdapterRecord`]):
/// `kubelab/hostonly/<adapter>`.
const ADAPTER_KEY: &str = "kubelab/hostonly/";
/// Global extra-data key prefix of a named host-only network's owner marker
/// (`HOME/PROFILE`): `kubelab/hostonlynet/<network>`.
const HOSTONLYNET_KEY: &str = "kubelab/hostonlynet/";

/// Who uses a host-only adapter: kubelab shares an adapter between the profiles whose
/// subnet it carries (or uses one the user made for it), so it records them all and
/// removes the adapter when the last one goes, only if kubelab created it. Stored as
/// `created|found HOME/PROFILE...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterRecord {
    /// Whether kubelab created the adapter (else it only found it).
    pub created: bool,
    /// The profiles using it.
    pub users: Vec<Owner>,
}

impl AdapterRecord {
    /// Reads a record back; `None` for anything kubelab does not write (such an
    /// adapter is never used, changed nor removed).
    pub fn parse(text: &str) -> Option<Self> {
        let mut words = text.split(' ');
        let created = match words.next()? {
            "created" => true,
            "found" => false,
            _ => return None,
        };
        let users: Vec<Owner> = words
            .map(|w| Owner::parse_marker(w).ok().filter(|o| o.node.is_none()))
            .collect::<Option<_>>()?;
        (!users.is_empty()).then_some(Self { created, users })
    }

    /// The stored text.
    pub fn value(&self) -> String {
        let origin = if self.created { "created" } else { "found" };
        let users: Vec<String> = self.users.iter().map(Owner::marker).collect();
        format!("{origin} {}", users.join(" "))
    }
}

/// Every adapter record in global extra data: adapter name -> record (`None`: unreadable).
fn adapter_records(extra: &BTreeMap<String, String>) -> BTreeMap<String, Option<AdapterRecord>> {
    extra
        .iter()
        .filter_map(|(k, v)| {
            Some((k.strip_prefix(ADAPTER_KEY)?.to_owned(), AdapterRecord::parse(v)))
        })
        .collect()
}

/// The adapter whose record lists `owner` among its users.
fn adapter_of<'a>(
    records: &'a BTreeMap<String, Option<AdapterRecord>>,
    owner: &Owner,
) -> Option<(&'a String, &'a AdapterRecord)> {
    records
        .iter()
        .find_map(|(name, r)| r.as_ref().filter(|r| r.users.contains(owner)).map(|r| (name, r)))
}

fn set_record(vbox: &VBoxManage, adapter: &str, record: &AdapterRecord) -> Result<(), VBoxError> {
    vbox.set_extradata("global", &format!("{ADAPTER_KEY}{adapter}"), Some(&record.value()))
}

/// Ok unless `owner`'s network `name` would be another's: a named host-only network
/// (7.x on macOS) of that name that another home or profile, or the user, made.
/// Adapters are never taken by name: each profile's record names its own.
pub fn check(
    vbox: &VBoxManage,
    mode: HostOnlyMode,
    name: &str,
    owner: &Owner,
) -> Result<(), DriverError> {
    if mode == HostOnlyMode::Adapter {
        return Ok(());
    }
    let inspect = super::drv(Action::InspectNetwork, name);
    if !vbox.list_hostonlynets().map_err(&inspect)?.iter().any(|n| n.name == name) {
        return Ok(());
    }
    let marker =
        vbox.get_extradata("global", &format!("{HOSTONLYNET_KEY}{name}")).map_err(&inspect)?;
    let found = marker.and_then(|m| Owner::parse_marker(&m).ok());
    if found.as_ref() == Some(owner) {
        Ok(())
    } else {
        Err(DriverError::ForeignNetwork { name: name.to_owned(), owner: found })
    }
}

/// Makes the host-only network of `net` exist for `net.owner` (checked with [`check`]
/// first): its recorded adapter, else an adapter with the subnet's gateway (joining its
/// record), else a new one; on 7.x macOS a named network, marked before it is made.
pub fn ensure(
    vbox: &VBoxManage,
    mode: HostOnlyMode,
    net: &NetworkSpec,
    ranges: Option<&[Ipv4Cidr]>,
    create_timeout: Duration,
    visible_timeout: Duration,
) -> Result<(), VBoxError> {
    if let Some(ranges) = ranges {
        check_allowed(&net.cidr, ranges)?;
    }
    let gateway = net.cidr.gateway().unwrap_or(net.cidr.network());
    let mask = net.cidr.netmask().to_string();
    if mode == HostOnlyMode::Network {
        let key = format!("{HOSTONLYNET_KEY}{}", net.name);
        vbox.set_extradata("global", &key, Some(&net.owner.marker()))?;
        if !vbox.list_hostonlynets()?.iter().any(|n| n.name == net.name) {
            // The host takes the lowest address; the range ends below the nodes' `.10`.
            let upper = net.cidr.host(9).unwrap_or(gateway).to_string();
            vbox.hostonlynet_add(&net.name, &mask, &gateway.to_string(), &upper)?;
        }
        return Ok(());
    }
    let records = adapter_records(&vbox.extradata()?);
    let adapters = vbox.list_hostonlyifs()?;
    let configured = |i: &&HostOnlyIf| i.ip == gateway && i.netmask == net.cidr.netmask();
    let exists = |name: &str| adapters.iter().any(|i| i.name == name);
    let (adapter, created) = match adapter_of(&records, &net.owner) {
        Some((name, record)) if exists(name) => (name.clone(), record.created),
        stale => {
            if let Some((name, _)) = stale {
                vbox.set_extradata("global", &format!("{ADAPTER_KEY}{name}"), None)?;
            }
            match adapters.iter().find(configured) {
                // Another profile's, or the user's: joined, never reconfigured.
                Some(found) => {
                    let mut record = match records.get(&found.name) {
                        Some(Some(record)) => record.clone(),
                        Some(None) => {
                            return Err(VBoxError::ForeignAdapter { adapter: found.name.clone() });
                        }
                        None => AdapterRecord { created: false, users: Vec::new() },
                    };
                    record.users.push(net.owner.clone());
                    set_record(vbox, &found.name, &record)?;
                    (found.name.clone(), record.created)
                }
                None => {
                    let name = vbox.hostonlyif_create(create_timeout)?;
                    let record = AdapterRecord { created: true, users: vec![net.owner.clone()] };
                    if let Err(err) = wait_visible(vbox, &name, visible_timeout) {
                        // One that could not be removed is recorded, so `delete` does.
                        if matches!(&err, VBoxError::HostOnlyNotVisible { removed: false, .. }) {
                            set_record(vbox, &name, &record)?;
                        }
                        return Err(err);
                    }
                    // Recorded before configuring, so `delete` finds an adapter whose
                    // set-up failed.
                    set_record(vbox, &name, &record)?;
                    (name, true)
                }
            }
        }
    };
    if created && !adapters.iter().filter(configured).any(|i| i.name == adapter) {
        vbox.hostonlyif_ipconfig(&adapter, &net.cidr)?;
    }
    Ok(())
}

/// Waits until `list hostonlyifs` shows `adapter`: `hostonlyif create` can return
/// before VirtualBox lists the new adapter (a long-standing race; docker-machine's
/// "host-only adapter we just created is not visible"), and `ipconfig` would not find
/// it. Past `timeout` the adapter is removed (retried for [`CLEANUP_WAIT`]).
fn wait_visible(vbox: &VBoxManage, adapter: &str, timeout: Duration) -> Result<(), VBoxError> {
    let deadline = Instant::now() + timeout;
    loop {
        if vbox.list_hostonlyifs()?.iter().any(|i| i.name == adapter) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(ADAPTER_POLL);
    }
    let cleanup = Instant::now() + CLEANUP_WAIT;
    let removed = loop {
        match vbox.hostonlyif_remove(adapter) {
            Ok(()) => break true,
            Err(_) if Instant::now() < cleanup => std::thread::sleep(ADAPTER_POLL),
            Err(e) => {
                tracing::warn!(adapter, error = %e, "cannot remove the invisible adapter");
                break false;
            }
        }
    };
    Err(VBoxError::HostOnlyNotVisible {
        adapter: adapter.to_owned(),
        secs: timeout.as_secs(),
        removed,
    })
}

/// The adapter or network name a VM's NIC 2 joins for `owner`'s network `network`.
pub fn attachment(
    vbox: &VBoxManage,
    mode: HostOnlyMode,
    network: &str,
    owner: &Owner,
) -> Result<String, DriverError> {
    if mode == HostOnlyMode::Network {
        return Ok(network.to_owned());
    }
    let extra = vbox.extradata().map_err(super::drv(Action::InspectNetwork, network))?;
    let records = adapter_records(&extra);
    adapter_of(&records, owner).map(|(name, _)| name.clone()).ok_or_else(|| {
        DriverError::NetworkConflict {
            name: network.to_owned(),
            found: "no host-only adapter".into(),
            expected: "one made by `kubelab up`".into(),
        }
    })
}

/// `owner`'s host-only network if its marker is there: an adapter record listing
/// `owner`, or (7.x on macOS) a named network marked for `owner`. Named after the
/// profile as [`delete`] expects, whatever the adapter is called.
pub fn owned(
    vbox: &VBoxManage,
    mode: HostOnlyMode,
    owner: &Owner,
) -> Result<Vec<String>, VBoxError> {
    let extra = vbox.extradata()?;
    let name = crate::driver::network_names(&owner.profile).0;
    let marked = match mode {
        HostOnlyMode::Adapter => adapter_of(&adapter_records(&extra), owner).is_some(),
        HostOnlyMode::Network => {
            extra.get(&format!("{HOSTONLYNET_KEY}{name}")) == Some(&owner.marker())
        }
    };
    Ok(if marked { vec![name] } else { Vec::new() })
}

/// Removes `owner` from its adapter's users; the adapter goes when kubelab created it
/// and nobody is left. On 7.x macOS, removes `owner`'s named network (checked with
/// [`check`] first). Ok if nothing of `owner`'s is there.
pub fn delete(
    vbox: &VBoxManage,
    mode: HostOnlyMode,
    network: &str,
    owner: &Owner,
) -> Result<(), VBoxError> {
    if mode == HostOnlyMode::Network {
        let key = format!("{HOSTONLYNET_KEY}{network}");
        if vbox.list_hostonlynets()?.iter().any(|n| n.name == network) {
            vbox.hostonlynet_remove(network)?;
        }
        if vbox.get_extradata("global", &key)?.is_some_and(|m| m == owner.marker()) {
            vbox.set_extradata("global", &key, None)?;
        }
        return Ok(());
    }
    let records = adapter_records(&vbox.extradata()?);
    let Some((adapter, record)) = adapter_of(&records, owner) else { return Ok(()) };
    let mut record = record.clone();
    record.users.retain(|u| u != owner);
    if !record.users.is_empty() {
        return set_record(vbox, adapter, &record);
    }
    if record.created && vbox.list_hostonlyifs()?.iter().any(|i| &i.name == adapter) {
        vbox.hostonlyif_remove(adapter)?;
    }
    vbox.set_extradata("global", &format!("{ADAPTER_KEY}{adapter}"), None)
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
    fn nic_arguments() {
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
    fn adapter_records_round_trip_and_refuse_what_kubelab_does_not_write() {
        let a = Owner::new("0123456789abcdef".parse().unwrap(), &"lab".parse().unwrap());
        let b = Owner::new("fedcba9876543210".parse().unwrap(), &"lab".parse().unwrap());
        let record = AdapterRecord { created: true, users: vec![a.clone(), b.clone()] };
        assert_eq!(record.value(), "created 0123456789abcdef/lab fedcba9876543210/lab");
        assert_eq!(AdapterRecord::parse(&record.value()), Some(record));
        let found = AdapterRecord::parse("found 0123456789abcdef/lab").unwrap();
        assert!(!found.created);
        for bad in [
            "",
            "1",
            "created",
            "made 0123456789abcdef/lab",
            "created lab",
            "created 0123456789abcdef/lab/lab",
            "created 0123456789abcdef/lab  fedcba9876543210/lab",
        ] {
            assert_eq!(AdapterRecord::parse(bad), None, "{bad:?}");
        }
        let extra: BTreeMap<String, String> = [
            ("kubelab/hostonly/vboxnet0", "found 0123456789abcdef/lab"),
            ("kubelab/hostonly/vboxnet1", "garbage"),
            ("other/key", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let records = adapter_records(&extra);
        assert_eq!(records.len(), 2);
        assert_eq!(adapter_of(&records, &a).map(|(n, _)| n.as_str()), Some("vboxnet0"));
        assert_eq!(adapter_of(&records, &b), None, "another home's profile of the same name");
    }
}
