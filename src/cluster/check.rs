//! `profile.json` is input: every field read back is checked as its flag would be (and
//! node names against the profile), so a tampered file cannot steer a path, a URI or a
//! size past the rules (issue "Never touch what is not yours", class 2).

use std::collections::HashSet;

use super::{ClusterState, MAX_NODES, Role, STATE_FORMAT, limits, node_name};
use crate::bootstrap::{self, BootstrapperKind};
use crate::driver;
use crate::image::ImageSource;
use crate::image::catalog::is_lower_hex;
use crate::profile::{InvalidField, ProfileName, State};

impl State for ClusterState {
    fn check(&self, name: &ProfileName) -> Result<(), InvalidField> {
        if self.format != STATE_FORMAT {
            return Err(InvalidField::new(
                "format",
                format!("{} is not {STATE_FORMAT}", self.format),
            ));
        }
        if self.profile != name.as_str() {
            let why = format!("{:?} is not the profile's name {:?}", self.profile, name.as_str());
            return Err(InvalidField::new("profile", why));
        }
        if !driver::DRIVER_NAMES.contains(&self.driver.as_str()) {
            let why =
                format!("{:?} is not one of {}", self.driver, driver::DRIVER_NAMES.join(", "));
            return Err(InvalidField::new("driver", why));
        }
        if let Some(uri) = &self.libvirt_uri {
            driver::uri::check(uri)
                .map_err(|why| InvalidField::new("libvirt_uri", format!("{uri:?}: {why}")))?;
        }
        if self.tunnel_port == Some(0) {
            return Err(InvalidField::new("tunnel_port", "0 is not a port"));
        }
        let bootstrapper: BootstrapperKind =
            self.bootstrapper.parse().map_err(|e| InvalidField::new("bootstrapper", e))?;
        if let Some(version) = &self.kubernetes_version {
            bootstrap::check_version(version)
                .map_err(|e| InvalidField::new("kubernetes_version", e))?;
        }
        if let Some(repo) = &self.kubernetes_repo {
            bootstrap::check_repo(repo).map_err(|e| InvalidField::new("kubernetes_repo", e))?;
        }
        if let Some(mirror) = &self.registry_mirror {
            bootstrap::check_mirror(mirror).map_err(|e| InvalidField::new("registry_mirror", e))?;
        }
        ImageSource::parse(&self.image.source).map_err(|e| InvalidField::new("image.source", e))?;
        if !is_lower_hex(&self.image.sha256, 64) {
            return Err(InvalidField::new("image.sha256", "not 64 lowercase hex digits"));
        }
        if let Some(version) = &self.image.baked {
            bootstrap::check_version(version).map_err(|e| InvalidField::new("image.baked", e))?;
        }
        limits::check_sizes(bootstrapper, self.cpus, self.memory_mib, self.disk_gib).map_err(
            |e| {
                let field = match e {
                    super::ClusterError::OutOfRange { .. } => "cpus",
                    super::ClusterError::SizeOutOfRange { what: "--memory", .. } => "memory_mib",
                    _ => "disk_gib",
                };
                InvalidField::new(field, e)
            },
        )?;
        limits::check_cidr("host_only_cidr", self.host_only_cidr)
            .map_err(|e| InvalidField::new("host_only_cidr", e))?;
        limits::check_cidr("nat_cidr", self.nat_cidr)
            .map_err(|e| InvalidField::new("nat_cidr", e))?;
        if self.host_only_cidr.overlaps(&self.nat_cidr) {
            return Err(InvalidField::new("nat_cidr", "overlaps host_only_cidr"));
        }
        let mut seen = vec![("host_only_cidr", self.host_only_cidr), ("nat_cidr", self.nat_cidr)];
        for (field, cidr) in [("pod_cidr", self.pod_cidr), ("service_cidr", self.service_cidr)] {
            let Some(cidr) = cidr else { continue };
            if let Some((other, _)) = seen.iter().find(|(_, s)| s.overlaps(&cidr)) {
                return Err(InvalidField::new(field, format!("overlaps {other}")));
            }
            seen.push((field, cidr));
        }
        self.check_nodes()
    }
}

impl ClusterState {
    /// Node 0 is the control plane named after the profile; the others are workers
    /// named `<profile>-mNN`, each once, at an address of the host-only subnet.
    fn check_nodes(&self) -> Result<(), InvalidField> {
        if self.nodes.is_empty() || self.nodes.len() > MAX_NODES as usize {
            let why = format!("{} nodes, not between 1 and {MAX_NODES}", self.nodes.len());
            return Err(InvalidField::new("nodes", why));
        }
        let workers: Vec<String> = (1..MAX_NODES).map(|i| node_name(&self.profile, i)).collect();
        let mut names = HashSet::new();
        let mut ips = HashSet::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let bad =
                |field: &str, why: String| InvalidField::new(format!("nodes[{i}].{field}"), why);
            let (role, named) = if i == 0 {
                (Role::ControlPlane, node.name == self.profile)
            } else {
                (Role::Worker, workers.contains(&node.name))
            };
            if !named {
                let want = if i == 0 { "the profile's name" } else { "<profile>-mNN, NN 02 to 99" };
                return Err(bad("name", format!("{:?} is not {want}", node.name)));
            }
            if !names.insert(node.name.as_str()) {
                return Err(bad("name", format!("{:?} is listed twice", node.name)));
            }
            if node.role != role {
                return Err(bad("role", format!("{:?} for node {i}", node.role)));
            }
            // A host address of the subnet other than the host's own `.1`.
            let offset = u32::from(node.ip).wrapping_sub(u32::from(self.host_only_cidr.network()));
            let in_subnet = offset != 1 && self.host_only_cidr.host(offset) == Some(node.ip);
            if !in_subnet || !ips.insert(node.ip) {
                let why =
                    format!("{} is not a free node address of {}", node.ip, self.host_only_cidr);
                return Err(bad("ip", why));
            }
            // One host a profile, today: a node elsewhere would be reached, and deleted,
            // through a connection the profile never made.
            if node.host != self.libvirt_uri && node.host.is_some() {
                return Err(bad(
                    "host",
                    format!("{:?} is not the profile's libvirt_uri", node.host),
                ));
            }
            if !is_instance_id(&node.instance_id, &node.name) {
                return Err(bad(
                    "instance_id",
                    format!("{:?} is not <node>-<16 hex>", node.instance_id),
                ));
            }
        }
        Ok(())
    }
}

/// Empty (no VM yet) or what `cloudinit::instance_id` makes: `<node>-` and 16 hex digits.
fn is_instance_id(id: &str, node: &str) -> bool {
    id.is_empty()
        || id
            .strip_prefix(node)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|hex| is_lower_hex(hex, 16))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::profile::{ProfileError, parse_state};

    /// A two-node state as `up` writes it.
    fn valid() -> Value {
        json!({
            "format": 1, "profile": "lab", "driver": "kvm2", "accel": "tcg",
            "libvirt_uri": "qemu:///system", "bootstrapper": "kubeadm",
            "kubernetes_version": "v1.34.2", "registry_mirror": "http://10.0.0.1:5000",
            "image": {"source": "ubuntu-24.04", "sha256": "ab".repeat(32), "format": "qcow2",
                      "baked": "v1.34.2"},
            "cpus": 2, "memory_mib": 2048, "disk_gib": 20,
            "host_only_cidr": "192.168.39.0/24", "nat_cidr": "192.168.50.0/24",
            "pod_cidr": "10.244.0.0/16", "service_cidr": "10.96.0.0/12", "tunnel_port": 40123,
            "nodes": [
                {"name": "lab", "role": "control-plane", "ip": "192.168.39.10",
                 "nat_mac": "52:54:00:00:00:01", "host_only_mac": "52:54:00:00:00:02",
                 "instance_id": "lab-0123456789abcdef"},
                {"name": "lab-m02", "role": "worker", "ip": "192.168.39.11",
                 "nat_mac": "52:54:00:00:00:03", "host_only_mac": "52:54:00:00:00:04",
                 "instance_id": "", "host": "qemu:///system"}
            ]
        })
    }

    fn load(doc: &[u8]) -> Result<ClusterState, ProfileError> {
        parse_state(Path::new("profile.json"), doc, &"lab".parse().unwrap())
    }

    #[test]
    fn a_state_up_writes_is_valid() {
        load(valid().to_string().as_bytes()).unwrap();
    }

    #[test]
    fn each_tampered_field_is_named() {
        for (pointer, value, field) in [
            ("/format", json!(2), "format"),
            ("/profile", json!("other"), "profile"),
            ("/driver", json!("../x"), "driver"),
            (
                "/libvirt_uri",
                json!("qemu+ext:///system?command=/bin/touch%20/tmp/pwned"),
                "libvirt_uri",
            ),
            ("/libvirt_uri", json!("qemu:///system?netcat=/x"), "libvirt_uri"),
            ("/bootstrapper", json!("sh"), "bootstrapper"),
            ("/kubernetes_version", json!("v1.34; rm -rf /"), "kubernetes_version"),
            ("/image/source", json!("ftp://x/y"), "image.source"),
            ("/image/sha256", json!("../../x"), "image.sha256"),
            ("/image/sha256", json!("AB".repeat(32)), "image.sha256"),
            ("/image/baked", json!("v1.34.2 && reboot"), "image.baked"),
            ("/registry_mirror", json!("http://m/\"]\n[host.\"x"), "registry_mirror"),
            ("/cpus", json!(0), "cpus"),
            ("/memory_mib", json!(1), "memory_mib"),
            ("/disk_gib", json!(1), "disk_gib"),
            ("/host_only_cidr", json!("127.0.0.0/24"), "host_only_cidr"),
            ("/nat_cidr", json!("224.0.0.0/24"), "nat_cidr"),
            ("/nat_cidr", json!("192.168.39.0/24"), "nat_cidr"),
            ("/pod_cidr", json!("192.168.39.0/24"), "pod_cidr"),
            ("/service_cidr", json!("10.244.0.0/16"), "service_cidr"),
            ("/nodes", json!([]), "nodes"),
            ("/nodes/0/name", json!("other"), "nodes[0].name"),
            ("/nodes/1/name", json!("../../victim"), "nodes[1].name"),
            ("/nodes/1/name", json!("lab-m01"), "nodes[1].name"),
            ("/nodes/1/name", json!("lab"), "nodes[1].name"),
            ("/nodes/1/role", json!("control-plane"), "nodes[1].role"),
            ("/nodes/1/ip", json!("192.168.39.1"), "nodes[1].ip"),
            ("/nodes/1/ip", json!("192.168.39.10"), "nodes[1].ip"),
            ("/nodes/1/ip", json!("10.0.0.5"), "nodes[1].ip"),
            ("/nodes/1/ip", json!("192.168.39.255"), "nodes[1].ip"),
            ("/nodes/1/instance_id", json!("lab-m02-x\nruncmd: [x]"), "nodes[1].instance_id"),
            ("/nodes/1/host", json!("qemu+ssh://elsewhere/system"), "nodes[1].host"),
            ("/tunnel_port", json!(0), "tunnel_port"),
        ] {
            let mut doc = valid();
            *doc.pointer_mut(pointer).unwrap() = value.clone();
            let err = load(doc.to_string().as_bytes()).unwrap_err();
            let ProfileError::InvalidState { field: found, .. } = &err else {
                panic!("{pointer} = {value}: {err:?}")
            };
            assert_eq!(found.field, field, "{pointer} = {value}: {err}");
            assert!(err.to_string().contains("profile.json"), "{err}");
        }
    }

    #[test]
    fn none_bootstrapper_allows_smaller_nodes() {
        let mut doc = valid();
        doc["bootstrapper"] = json!("none");
        doc["memory_mib"] = json!(512);
        doc["disk_gib"] = json!(1);
        load(doc.to_string().as_bytes()).unwrap();
    }

    /// Any JSON value, nested a little.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            "\\PC{0,24}".prop_map(Value::from),
            "[a-z0-9./:+?=%-]{0,40}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Every pointer to a value inside `doc`.
    fn pointers(doc: &Value, at: String, out: &mut Vec<String>) {
        match doc {
            Value::Object(map) => {
                map.iter().for_each(|(k, v)| pointers(v, format!("{at}/{k}"), out))
            }
            Value::Array(items) => {
                items.iter().enumerate().for_each(|(i, v)| pointers(v, format!("{at}/{i}"), out));
            }
            _ => {}
        }
        out.push(at);
    }

    /// The loader's contract: a valid state or a typed error, never a panic.
    fn loads_or_refuses(bytes: &[u8]) {
        match load(bytes) {
            Ok(state) => state.check(&"lab".parse().unwrap()).unwrap(),
            Err(ProfileError::ParseState { .. } | ProfileError::InvalidState { .. }) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            loads_or_refuses(&bytes);
        }

        #[test]
        fn mutated_states_load_valid_or_refused(choice in any::<prop::sample::Index>(), value in any_json()) {
            let mut doc = valid();
            let mut all = Vec::new();
            pointers(&doc, String::new(), &mut all);
            let pointer = choice.get(&all).clone();
            match doc.pointer_mut(&pointer) {
                Some(slot) => *slot = value,
                None => unreachable!("pointers lists only existing values"),
            }
            loads_or_refuses(doc.to_string().as_bytes());
        }
    }
}
