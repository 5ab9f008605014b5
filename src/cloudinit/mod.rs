//! The cloud-init NoCloud seed of a node: the three documents (`user-data`, `meta-data`,
//! `network-config`) rendered from the templates in `cloud-init/`, and the ISO 9660 image
//! (volume label `cidata`) that carries them.
//!
//! `render` validates every input before it builds anything; `write_iso` writes the
//! image atomically with mode 0600, since `user-data` holds the node's private host key.

mod iso;
mod merge;
mod render;
mod validate;

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

pub use iso::{VOLUME_LABEL, write_iso};
pub use render::render;

/// The default name of the login user created on every node.
pub const DEFAULT_USER: &str = "kubelab";

/// Everything a node's seed is made from.
#[derive(Clone, PartialEq, Eq)]
pub struct SeedSpec {
    /// The node's hostname, a DNS-1123 label.
    pub hostname: String,
    /// cloud-init's instance id; a new one per created VM (see [`instance_id`]).
    pub instance_id: String,
    /// The login user (e.g. [`DEFAULT_USER`]), with passwordless sudo.
    pub user: String,
    /// The user's authorized key, one OpenSSH public key line.
    pub user_public_key: String,
    /// The node's ed25519 SSH host key, OpenSSH private key PEM text, unencrypted.
    pub host_key_private: String,
    /// The public half of `host_key_private`, one OpenSSH public key line.
    pub host_key_public: String,
    /// MAC of the NIC on the NAT network (DHCP), `xx:xx:xx:xx:xx:xx`.
    pub nat_mac: String,
    /// MAC of the NIC on the host-only network (static address).
    pub hostonly_mac: String,
    /// The node's static address on the host-only network.
    pub hostonly_address: Ipv4Addr,
    /// The host-only network's prefix length.
    pub hostonly_prefix: u8,
    /// A user's own `#cloud-config` document, merged into kubelab's user-data.
    pub extra_user_data: Option<String>,
}

/// Leaves the private host key out of logs.
impl fmt::Debug for SeedSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeedSpec")
            .field("hostname", &self.hostname)
            .field("instance_id", &self.instance_id)
            .field("user", &self.user)
            .field("nat_mac", &self.nat_mac)
            .field("hostonly_mac", &self.hostonly_mac)
            .field("hostonly_address", &self.hostonly_address)
            .field("hostonly_prefix", &self.hostonly_prefix)
            .field("extra_user_data", &self.extra_user_data.is_some())
            .finish_non_exhaustive()
    }
}

/// The three rendered NoCloud documents, as written into the seed ISO.
#[derive(Clone, PartialEq, Eq)]
pub struct SeedFiles {
    /// `user-data`: a `#cloud-config` document (holds the private host key).
    pub user_data: String,
    /// `meta-data`: instance id and hostname.
    pub meta_data: String,
    /// `network-config`: netplan-style version 2 network configuration.
    pub network_config: String,
}

/// A fresh instance id for `node`: its name and 64 random bits, so that a re-created VM
/// with the same name still counts as a new instance for cloud-init.
pub fn instance_id(node: &str) -> String {
    use ssh_key::rand_core::{OsRng, RngCore};
    format!("{node}-{:016x}", OsRng.next_u64())
}

/// Why a seed could not be rendered or written.
#[derive(Debug, thiserror::Error)]
pub enum CloudInitError {
    /// The hostname is not a DNS-1123 label.
    #[error(
        "invalid hostname {hostname:?}: use 1-63 lowercase letters, digits and '-', not starting or ending with '-'"
    )]
    InvalidHostname {
        /// The rejected hostname.
        hostname: String,
    },
    /// The user name breaks Linux user name rules.
    #[error(
        "invalid user name {user:?}: use at most 32 lowercase letters, digits, '_' and '-', starting with a letter or '_', and not root"
    )]
    InvalidUser {
        /// The rejected user name.
        user: String,
    },
    /// The instance id is empty or holds characters cloud-init cannot use in a path.
    #[error("invalid instance id {instance_id:?}: use 1-128 letters, digits, '.', '_' and '-'")]
    InvalidInstanceId {
        /// The rejected instance id.
        instance_id: String,
    },
    /// A MAC address is malformed or unusable for a NIC.
    #[error("invalid MAC address {mac:?}: {reason}")]
    InvalidMac {
        /// The rejected MAC.
        mac: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The host-only address or prefix cannot be a node's address.
    #[error("invalid host-only address {address}/{prefix}: {reason}")]
    InvalidAddress {
        /// The rejected address.
        address: Ipv4Addr,
        /// Its prefix length.
        prefix: u8,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A key is not valid OpenSSH text.
    #[error("cannot parse the {key}")]
    ParseKey {
        /// Which key: "user public key", "host private key" or "host public key".
        key: &'static str,
        /// The parser's error.
        #[source]
        source: ssh_key::Error,
    },
    /// The host key pair parses but cannot serve as the node's host key.
    #[error("unusable host key: {reason}")]
    HostKey {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The extra user-data is not a cloud-config document.
    #[error("extra user-data must start with a `#cloud-config` line")]
    NotCloudConfig,
    /// The extra user-data is not valid YAML.
    #[error("cannot parse the extra user-data as YAML")]
    ParseExtraUserData {
        /// The YAML parser's error.
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    /// The extra user-data cannot be merged into kubelab's user-data.
    #[error("cannot merge extra user-data key `{key}`: {reason}")]
    MergeExtraUserData {
        /// The offending key path, e.g. `users` or `ssh_keys`.
        key: String,
        /// Why it cannot be merged.
        reason: &'static str,
    },
    /// A built-in template in `cloud-init/` does not have the expected shape (a bug).
    #[error("built-in cloud-init template {template} is malformed at {pointer:?}")]
    Template {
        /// The template's file name.
        template: &'static str,
        /// The JSON pointer that should exist in it.
        pointer: &'static str,
    },
    /// A built-in template in `cloud-init/` is not valid YAML (a bug).
    #[error("cannot parse built-in cloud-init template {template}")]
    ParseTemplate {
        /// The template's file name.
        template: &'static str,
        /// The YAML parser's error.
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    /// A rendered document cannot be serialized as YAML.
    #[error("cannot serialize {document}")]
    Serialize {
        /// The document's file name.
        document: &'static str,
        /// The serializer's error.
        #[source]
        source: serde_saphyr::SerializeError,
    },
    /// Building or writing the seed ISO failed.
    #[error("cannot write seed ISO {path}")]
    WriteIso {
        /// The ISO's path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_are_fresh_and_valid() {
        let a = instance_id("lab-m01");
        let b = instance_id("lab-m01");
        assert_ne!(a, b);
        assert!(a.starts_with("lab-m01-"));
        validate::instance_id(&a).unwrap();
    }

    #[test]
    fn debug_leaves_out_the_private_key() {
        let spec = render::tests::spec();
        let text = format!("{spec:?}");
        assert!(text.contains("lab-m01"));
        assert!(!text.contains("PRIVATE"), "{text}");
    }
}
