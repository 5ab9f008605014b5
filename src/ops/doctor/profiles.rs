//! The home's profiles: directories without a state file, state files or journals that
//! do not load (corrupt), clusters whose first `up` never created every node, and
//! saved subnets that a host route now overlaps. Files and routes are read in
//! [`checks`]; [`unfinished`] and [`clashes`] are pure.

use super::{Check, CheckState};
use crate::cluster::ClusterState;
use crate::driver::{self, DriverKind};
use crate::home::Home;
use crate::journal::{Journal, Resource};
use crate::net::{HostRoute, Ipv4Cidr};
use crate::profile::{self, Profile};
use crate::reason;

const SCOPE: &str = "host";

/// One check per problem found in the home's profiles (all warnings: `up` of another
/// profile is not hurt), or one `ok` line; `routes` are the host's, if readable.
/// Returns the subnets of the profiles that load, for the proxy check.
pub fn checks(home: &Home, routes: Option<&[HostRoute]>) -> (Vec<Check>, Vec<Ipv4Cidr>) {
    let profiles = match profile::dirs(home) {
        Ok(profiles) => profiles,
        Err(e) => {
            return (vec![Check::error(SCOPE, "profiles", CheckState::Warn, e.into())], vec![]);
        }
    };
    let (mut found, mut subnets) = (Vec::new(), Vec::new());
    for profile in &profiles {
        let name = profile.name();
        if !profile.exists() {
            found.push(warn(
                "profiles",
                &reason::PROFILE_STALE_DIR,
                format!(
                    "profile {name}: {} holds no profile.json; `kubelab delete -p {name}` removes it",
                    profile.dir().display()
                ),
            ));
            continue;
        }
        let Some(state) = load(profile, &mut found) else { continue };
        subnets.push(state.host_only_cidr);
        for (subnet, route) in routes.map(|r| clashes(&state, r)).unwrap_or_default() {
            found.push(warn(
                "subnets",
                &reason::HOST_SUBNET_CLASH,
                format!(
                    "profile {name}: its subnet {subnet} overlaps the host's route {} on {}",
                    route.cidr, route.device
                ),
            ));
        }
    }
    if found.is_empty() {
        let message =
            format!("{} profile(s), none stale or corrupt, no subnet clash", profiles.len());
        found.push(Check::ok(SCOPE, "profiles", message));
    }
    (found, subnets)
}

/// The host-only subnets of the profiles whose state loads (for `up`'s proxy check).
pub fn host_only_subnets(home: &Home) -> Vec<Ipv4Cidr> {
    let profiles = profile::dirs(home).unwrap_or_default();
    let states = profiles.iter().filter_map(|p| p.load_state::<ClusterState>().ok());
    states.map(|state| state.host_only_cidr).collect()
}

fn warn(name: &'static str, reason: &'static reason::Reason, message: String) -> Check {
    Check::bad(SCOPE, name, CheckState::Warn, reason, message)
}

/// The profile's state, checked like `up` checks it, and its journal; a warning for a
/// corrupt one or an unfinished `up`.
fn load(profile: &Profile, found: &mut Vec<Check>) -> Option<ClusterState> {
    let name = profile.name();
    let loaded = profile
        .load_state::<ClusterState>()
        .map_err(crate::Error::from)
        .and_then(|state| Ok((Journal::new(profile).entries()?, state)));
    match loaded {
        Ok((entries, state)) => {
            let missing = unfinished(&state, &entries);
            if !missing.is_empty() {
                found.push(warn(
                    "profiles",
                    &reason::PROFILE_UNFINISHED,
                    format!(
                        "profile {name}: `up` stopped (or is still running) before it \
                         created {}; `kubelab up -p {name}` resumes it",
                        missing.join(", ")
                    ),
                ));
            }
            Some(state)
        }
        Err(e) => {
            let corrupt = crate::ops::lifecycle::is_corrupt(&e);
            let mut check = Check::error(SCOPE, "profiles", CheckState::Warn, e);
            let fix = format!("; `kubelab delete --force -p {name}` removes it");
            check.message =
                format!("profile {name}: {}{}", check.message, if corrupt { &fix } else { "" });
            found.push(check);
            None
        }
    }
}

/// The nodes of `state` whose VM the journal does not list: `up` records each VM
/// before creating it, so these were never created.
pub fn unfinished<'a>(state: &'a ClusterState, entries: &[Resource]) -> Vec<&'a str> {
    let recorded = |node: &str| entries.iter().any(|e| matches!(e, Resource::Vm(vm) if vm == node));
    state.nodes.iter().map(|n| n.name.as_str()).filter(|n| !recorded(n)).collect()
}

/// The host routes that overlap a subnet of `state` and are not the profile's own
/// network. Its own: a route inside the subnet out of the profile's device. For kvm2
/// that is the libvirt network's bridge, named from the profile ([`driver::bridge_name`]);
/// VirtualBox names its host-only adapters itself and kubelab finds its adapter by the
/// subnet, so the state has no device to compare: the device that routes exactly the
/// subnet is taken as the adapter. A VirtualBox profile's NAT subnet lives inside each
/// VM and is not checked.
pub fn clashes<'a>(
    state: &ClusterState,
    routes: &'a [HostRoute],
) -> Vec<(Ipv4Cidr, &'a HostRoute)> {
    let (host_only, nat) = driver::network_names(&state.profile);
    let virtualbox = state.driver == DriverKind::VirtualBox.as_str();
    let subnets: Vec<(Ipv4Cidr, Vec<String>)> = if virtualbox {
        let exact = routes.iter().filter(|r| r.cidr == state.host_only_cidr);
        vec![(state.host_only_cidr, exact.map(|r| r.device.clone()).collect())]
    } else {
        vec![
            (state.host_only_cidr, vec![driver::bridge_name(&host_only)]),
            (state.nat_cidr, vec![driver::bridge_name(&nat)]),
        ]
    };
    let mut found = Vec::new();
    for (subnet, own_devices) in &subnets {
        for route in routes.iter().filter(|r| r.cidr.overlaps(subnet)) {
            let inside = route.cidr.prefix() >= subnet.prefix();
            if !(inside && own_devices.contains(&route.device)) {
                found.push((*subnet, route));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::mem::MemDriver;
    use crate::ops::fixture::Lab;

    fn route(cidr: &str, device: &str) -> HostRoute {
        HostRoute { cidr: cidr.parse().unwrap(), device: device.into() }
    }

    /// A two-node profile `lab` as `up` saved it, recorded as made by `driver`, with
    /// subnets fixed whatever the host's routes were.
    fn state(driver: &str) -> ClusterState {
        let mut state = Lab::new().created(&MemDriver::new(), "lab", 2);
        state.driver = driver.into();
        state.host_only_cidr = "192.168.39.0/24".parse().unwrap();
        state.nat_cidr = "192.168.50.0/24".parse().unwrap();
        state
    }

    #[test]
    fn kvm2_own_bridges_are_no_clash_but_a_vpn_route_is() {
        let state = state("kvm2");
        let (host_only, nat) = driver::network_names(&state.profile);
        let own = [
            route(&state.host_only_cidr.to_string(), &driver::bridge_name(&host_only)),
            route(&state.nat_cidr.to_string(), &driver::bridge_name(&nat)),
        ];
        assert!(clashes(&state, &own).is_empty());
        // The same subnet on another device (a VPN, or another home's network) clashes.
        let vpn = route("192.168.0.0/16", "tun0");
        let other = route(&state.host_only_cidr.to_string(), "virbr3");
        let routes = [own[0].clone(), vpn.clone(), other.clone(), route("10.8.0.0/24", "tun0")];
        let found = clashes(&state, &routes);
        let expected = vec![
            (state.host_only_cidr, &vpn),
            (state.host_only_cidr, &other),
            (state.nat_cidr, &vpn),
        ];
        assert_eq!(found, expected);
    }

    #[test]
    fn virtualbox_adapter_routes_are_its_own() {
        let state = state("virtualbox");
        let subnet = state.host_only_cidr;
        let gateway = subnet.gateway().unwrap().to_string();
        // Windows: the subnet and its host routes out of the adapter's address.
        let own = [route(&subnet.to_string(), &gateway), route(&format!("{gateway}/32"), &gateway)];
        assert!(clashes(&state, &own).is_empty());
        let nat_route = route(&state.nat_cidr.to_string(), "eth1");
        assert!(clashes(&state, &[nat_route]).is_empty(), "a VirtualBox NAT subnet is per VM");
        let vpn = route("192.168.0.0/16", "utun3");
        assert_eq!(clashes(&state, &[own[0].clone(), vpn.clone()]), vec![(subnet, &vpn)]);
    }

    #[test]
    fn nodes_the_journal_never_listed_are_unfinished() {
        let state = state("kvm2");
        let names: Vec<String> = state.nodes.iter().map(|n| n.name.clone()).collect();
        let first = [Resource::Vm(names[0].clone())];
        assert_eq!(unfinished(&state, &first), [names[1].as_str()]);
        let all: Vec<Resource> = names.iter().cloned().map(Resource::Vm).collect();
        assert!(unfinished(&state, &all).is_empty());
    }

    #[test]
    fn stale_corrupt_and_unfinished_profiles_warn() {
        let lab = Lab::new();
        let dir = |name: &str| lab.home.profiles_dir().join(name);
        std::fs::create_dir_all(dir("stale").join("nodes")).unwrap();
        std::fs::create_dir_all(dir("broken")).unwrap();
        std::fs::write(dir("broken").join("profile.json"), "{not json").unwrap();
        // A cluster whose second VM the journal never listed.
        let state = lab.created(&MemDriver::new(), "lab", 2);
        Journal::new(&lab.profile("lab")).forget(&Resource::Vm("lab-m02".into())).unwrap();
        let (checks, subnets) = checks(&lab.home, Some(&[]));
        let found: Vec<(&str, CheckState)> =
            checks.iter().map(|c| (c.reason.map_or("", |r| r.id), c.state)).collect();
        assert_eq!(
            found,
            [
                ("PROFILE_STATE_CORRUPT", CheckState::Warn),
                ("PROFILE_UNFINISHED", CheckState::Warn),
                ("PROFILE_STALE_DIR", CheckState::Warn),
            ]
        );
        let messages: Vec<&str> = checks.iter().map(|c| c.message.as_str()).collect();
        assert!(messages[0].contains("kubelab delete --force -p broken"), "{messages:?}");
        assert!(messages[1].contains("created lab-m02; `kubelab up -p lab`"), "{messages:?}");
        assert!(messages[2].contains("kubelab delete -p stale"), "{messages:?}");
        assert_eq!(subnets, [state.host_only_cidr], "only the profile that loads");
    }
}
