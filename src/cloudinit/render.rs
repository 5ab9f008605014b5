//! Rendering the three seed documents from the templates in `cloud-init/`.
//!
//! Each template is parsed into a value tree, the node's values are set at fixed paths
//! (which must already exist in the template, so template and code cannot drift apart
//! silently), and the tree is serialized again. The serializer quotes every string a
//! YAML 1.1 reader (cloud-init's PyYAML) would take for something else, such as a
//! hostname `yes` or a MAC `52:54:00:12:34:56` (a base-60 integer in YAML 1.1), and no
//! input is ever pasted into YAML text.

use serde_json::{Value, json};

use super::merge::{self, CLOUD_CONFIG_HEADER};
use super::{CloudInitError, SeedFiles, SeedSpec, validate};

const USER_DATA: &str = include_str!("../../cloud-init/user-data");
const META_DATA: &str = include_str!("../../cloud-init/meta-data");
const NETWORK_CONFIG: &str = include_str!("../../cloud-init/network-config");

/// Validates `spec` and renders its seed documents.
pub fn render(spec: &SeedSpec) -> Result<SeedFiles, CloudInitError> {
    let hostname = validate::hostname(&spec.hostname)?;
    let user = validate::user(&spec.user)?;
    let instance_id = validate::instance_id(&spec.instance_id)?;
    let nat_mac = validate::mac(&spec.nat_mac)?;
    let hostonly_mac = validate::mac(&spec.hostonly_mac)?;
    if nat_mac == hostonly_mac {
        return Err(CloudInitError::InvalidMac {
            mac: spec.hostonly_mac.clone(),
            reason: "the NAT and host-only NICs need different MACs",
        });
    }
    let address = validate::address(spec.hostonly_address, spec.hostonly_prefix)?;
    let user_key = validate::user_public_key(&spec.user_public_key)?;
    let (host_private, host_public) =
        validate::host_key(&spec.host_key_private, &spec.host_key_public)?;
    let extra = spec.extra_user_data.as_deref().map(merge::parse).transpose()?;

    let mut user_data = Template::parse("user-data", USER_DATA)?;
    user_data.set("/hostname", json!(hostname))?;
    user_data.set("/users/0/name", json!(user))?;
    user_data.set("/users/0/ssh_authorized_keys", json!([user_key]))?;
    user_data.set("/ssh_keys/ed25519_private", json!(host_private))?;
    user_data.set("/ssh_keys/ed25519_public", json!(host_public))?;
    if let Some(extra) = extra {
        let Value::Object(ours) = &mut user_data.doc else {
            return Err(CloudInitError::Template { template: "user-data", pointer: "" });
        };
        merge::merge(ours, extra, user)?;
    }

    let mut meta_data = Template::parse("meta-data", META_DATA)?;
    meta_data.set("/instance-id", json!(instance_id))?;
    meta_data.set("/local-hostname", json!(hostname))?;

    let mut network = Template::parse("network-config", NETWORK_CONFIG)?;
    network.set("/ethernets/nat/match/macaddress", json!(nat_mac))?;
    network.set("/ethernets/hostonly/match/macaddress", json!(hostonly_mac))?;
    network.set("/ethernets/hostonly/addresses", json!([address]))?;

    Ok(SeedFiles {
        user_data: format!("{CLOUD_CONFIG_HEADER}\n{}", user_data.to_yaml()?),
        meta_data: meta_data.to_yaml()?,
        network_config: network.to_yaml()?,
    })
}

/// One parsed template and the file it came from.
struct Template {
    name: &'static str,
    doc: Value,
}

impl Template {
    fn parse(name: &'static str, text: &str) -> Result<Self, CloudInitError> {
        let doc = serde_saphyr::from_str(text).map_err(|source| CloudInitError::ParseTemplate {
            template: name,
            source: Box::new(source),
        })?;
        Ok(Self { name, doc })
    }

    /// Replaces the placeholder at `pointer` (RFC 6901) with `value`.
    fn set(&mut self, pointer: &'static str, value: Value) -> Result<(), CloudInitError> {
        let slot = self
            .doc
            .pointer_mut(pointer)
            .ok_or(CloudInitError::Template { template: self.name, pointer })?;
        *slot = value;
        Ok(())
    }

    fn to_yaml(&self) -> Result<String, CloudInitError> {
        // Keep one-line strings (key lines, commands) on one line instead of folding
        // them at 80 columns; multi-line strings still become `|` blocks.
        let mut options = serde_saphyr::SerializerOptions::default();
        options.folded_wrap_chars = usize::MAX;
        serde_saphyr::to_string_with_options(&self.doc, options)
            .map_err(|source| CloudInitError::Serialize { document: self.name, source })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use ssh_key::rand_core::OsRng;
    use ssh_key::{Algorithm, LineEnding, PrivateKey};

    /// A fresh ed25519 pair as (private PEM, public line).
    pub(in crate::cloudinit) fn host_key() -> (String, String) {
        let key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let pem = key.to_openssh(LineEnding::LF).unwrap().to_string();
        (pem, key.public_key().to_openssh().unwrap())
    }

    /// A valid spec with fresh keys.
    pub(in crate::cloudinit) fn spec() -> SeedSpec {
        let (host_key_private, host_key_public) = host_key();
        SeedSpec {
            hostname: "lab-m01".into(),
            instance_id: "lab-m01-0123456789abcdef".into(),
            user: "kubelab".into(),
            user_public_key: host_key().1,
            host_key_private,
            host_key_public,
            nat_mac: "52:54:00:12:34:56".into(),
            hostonly_mac: "52:54:00:AB:CD:EF".into(),
            hostonly_address: [192, 168, 59, 11].into(),
            hostonly_prefix: 24,
            extra_user_data: None,
        }
    }

    fn yaml(text: &str) -> Value {
        serde_saphyr::from_str(text).unwrap()
    }

    #[test]
    fn renders_the_node_values_into_the_templates() {
        let spec = spec();
        let files = render(&spec).unwrap();
        assert!(files.user_data.starts_with("#cloud-config\n"), "{}", files.user_data);
        let user_data = yaml(&files.user_data);
        assert_eq!(user_data["hostname"], json!("lab-m01"));
        assert_eq!(user_data["manage_etc_hosts"], json!(true));
        assert_eq!(user_data["users"][0]["name"], json!("kubelab"));
        assert_eq!(user_data["users"][0]["sudo"], json!("ALL=(ALL) NOPASSWD:ALL"));
        assert_eq!(user_data["users"][0]["ssh_authorized_keys"], json!([spec.user_public_key]));
        assert_eq!(user_data["ssh_keys"]["ed25519_private"], json!(spec.host_key_private));
        assert_eq!(user_data["ssh_keys"]["ed25519_public"], json!(spec.host_key_public));
        assert_eq!(user_data["ssh_pwauth"], json!(false));
        assert!(user_data.get("ssh_genkeytypes").is_none());
        let modules = user_data["cloud_init_modules"].as_array().unwrap();
        assert!(modules.contains(&json!("ssh")) && !modules.contains(&json!("growpart")));

        let meta = yaml(&files.meta_data);
        assert_eq!(meta, json!({"instance-id": spec.instance_id, "local-hostname": "lab-m01"}));

        let network = yaml(&files.network_config);
        assert_eq!(network["version"], json!(2));
        assert_eq!(network["ethernets"]["nat"]["match"]["macaddress"], json!("52:54:00:12:34:56"));
        assert_eq!(network["ethernets"]["nat"]["dhcp4"], json!(true));
        let hostonly = &network["ethernets"]["hostonly"];
        assert_eq!(hostonly["match"]["macaddress"], json!("52:54:00:ab:cd:ef"));
        assert_eq!(hostonly["addresses"], json!(["192.168.59.11/24"]));
        assert!(hostonly.get("gateway4").is_none() && hostonly.get("nameservers").is_none());
    }

    #[test]
    fn yaml_1_1_lookalikes_stay_strings() {
        // Each of these is a bool, number or null to a YAML 1.1 or 1.2 reader.
        for hostname in ["yes", "no", "on", "y", "1", "0644", "null", "1e3"] {
            let files = render(&SeedSpec { hostname: hostname.into(), ..spec() }).unwrap();
            let quoted =
                [format!("hostname: \"{hostname}\"\n"), format!("hostname: '{hostname}'\n")];
            assert!(quoted.iter().any(|q| files.user_data.contains(q)), "{}", files.user_data);
        }
        let files = render(&spec()).unwrap();
        assert!(files.network_config.contains("macaddress: \"52:54:00:12:34:56\""));
    }

    #[test]
    fn the_private_key_keeps_its_exact_text() {
        let spec = spec();
        let files = render(&spec).unwrap();
        let user_data = yaml(&files.user_data);
        let pem = user_data["ssh_keys"]["ed25519_private"].as_str().unwrap();
        assert_eq!(pem, spec.host_key_private);
        assert!(pem.ends_with("-----END OPENSSH PRIVATE KEY-----\n"));
    }

    #[test]
    fn extra_user_data_is_merged() {
        let extra = "#cloud-config\nruncmd: [[echo, hi]]\npackages: [jq]\n".to_string();
        let files = render(&SeedSpec { extra_user_data: Some(extra), ..spec() }).unwrap();
        let user_data = yaml(&files.user_data);
        assert_eq!(user_data["runcmd"], json!([["echo", "hi"]]));
        assert_eq!(user_data["packages"], json!(["jq"]));
        assert_eq!(user_data["users"].as_array().unwrap().len(), 1);
        let err = render(&SeedSpec { extra_user_data: Some("#!/bin/sh\n".into()), ..spec() });
        assert!(matches!(err, Err(CloudInitError::NotCloudConfig)));
    }

    #[test]
    fn invalid_inputs_are_refused_before_rendering() {
        let base = spec();
        let cases = [
            SeedSpec { hostname: "Lab_1".into(), ..base.clone() },
            SeedSpec { user: "root".into(), ..base.clone() },
            SeedSpec { instance_id: "a/b".into(), ..base.clone() },
            SeedSpec { nat_mac: "52:54:00:12:34".into(), ..base.clone() },
            SeedSpec { hostonly_mac: base.nat_mac.to_uppercase(), ..base.clone() },
            SeedSpec { hostonly_prefix: 33, ..base.clone() },
            SeedSpec { user_public_key: "ssh-ed25519".into(), ..base.clone() },
            SeedSpec { host_key_public: host_key().1, ..base.clone() },
        ];
        for case in cases {
            assert!(render(&case).is_err(), "{case:?}");
        }
    }
}
