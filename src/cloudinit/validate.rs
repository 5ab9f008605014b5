//! Checks on every `SeedSpec` field, run before anything is rendered: a bad value fails
//! here with the value in the error instead of surfacing as a node that never boots.
//! The checks return the canonical form that goes into the seed.

use std::net::Ipv4Addr;

use ssh_key::{Algorithm, LineEnding, PrivateKey, PublicKey};

use super::CloudInitError;

/// The hostname if it is a DNS-1123 label (RFC 1123 section 2.1, lowercase only).
pub(super) fn hostname(name: &str) -> Result<&str, CloudInitError> {
    let bytes = name.as_bytes();
    let valid = (1..=63).contains(&bytes.len())
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-');
    if valid { Ok(name) } else { Err(CloudInitError::InvalidHostname { hostname: name.into() }) }
}

/// The user name if useradd and Debian's adduser both accept it (`[a-z_][a-z0-9_-]*`,
/// at most 32 bytes); `root` is refused since cloud-init would reconfigure it.
pub(super) fn user(name: &str) -> Result<&str, CloudInitError> {
    let bytes = name.as_bytes();
    let valid = (1..=32).contains(&bytes.len())
        && (bytes[0].is_ascii_lowercase() || bytes[0] == b'_')
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(b))
        && name != "root";
    if valid { Ok(name) } else { Err(CloudInitError::InvalidUser { user: name.into() }) }
}

/// The instance id if it is safe as a directory name under `/var/lib/cloud/instances`.
pub(super) fn instance_id(id: &str) -> Result<&str, CloudInitError> {
    let valid = (1..=128).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && id != "."
        && id != "..";
    if valid { Ok(id) } else { Err(CloudInitError::InvalidInstanceId { instance_id: id.into() }) }
}

/// The MAC in lowercase `xx:xx:xx:xx:xx:xx` form, if it can belong to a NIC.
pub(super) fn mac(mac: &str) -> Result<String, CloudInitError> {
    let invalid = |reason| CloudInitError::InvalidMac { mac: mac.into(), reason };
    let octets: Vec<&str> = mac.split(':').collect();
    let well_formed = octets.len() == 6
        && octets.iter().all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()));
    if !well_formed {
        return Err(invalid("expected six two-digit hex octets separated by ':'"));
    }
    let first = u8::from_str_radix(octets[0], 16).map_err(|_| invalid("bad first octet"))?;
    if first & 1 == 1 {
        return Err(invalid("a multicast address cannot belong to a NIC"));
    }
    if octets.iter().all(|o| *o == "00") {
        return Err(invalid("the all-zero address cannot belong to a NIC"));
    }
    Ok(mac.to_ascii_lowercase())
}

/// `address/prefix` in CIDR form, if the address can be a host on that network.
pub(super) fn address(address: Ipv4Addr, prefix: u8) -> Result<String, CloudInitError> {
    let invalid = |reason| CloudInitError::InvalidAddress { address, prefix, reason };
    if !(8..=32).contains(&prefix) {
        return Err(invalid("the prefix length must be between 8 and 32"));
    }
    if address.is_unspecified()
        || address.is_loopback()
        || address.is_multicast()
        || address.is_broadcast()
        || address.octets()[0] >= 240
    {
        return Err(invalid("not a unicast host address"));
    }
    if prefix <= 30 {
        let host_mask = u32::MAX >> prefix;
        let host = u32::from(address) & host_mask;
        if host == 0 || host == host_mask {
            return Err(invalid("the network and broadcast addresses cannot be a host's"));
        }
    }
    Ok(format!("{address}/{prefix}"))
}

/// The user's public key, re-encoded as one canonical OpenSSH line.
pub(super) fn user_public_key(line: &str) -> Result<String, CloudInitError> {
    let parse = |source| CloudInitError::ParseKey { key: "user public key", source };
    PublicKey::from_openssh(line.trim()).and_then(|key| key.to_openssh()).map_err(parse)
}

/// The host key pair, re-encoded as (private PEM, public line), if it is an unencrypted
/// ed25519 pair whose halves match.
pub(super) fn host_key(private: &str, public: &str) -> Result<(String, String), CloudInitError> {
    let private = PrivateKey::from_openssh(private.trim())
        .map_err(|source| CloudInitError::ParseKey { key: "host private key", source })?;
    let public = PublicKey::from_openssh(public.trim())
        .map_err(|source| CloudInitError::ParseKey { key: "host public key", source })?;
    if private.is_encrypted() {
        return Err(CloudInitError::HostKey { reason: "the private key is encrypted" });
    }
    if private.algorithm() != Algorithm::Ed25519 {
        return Err(CloudInitError::HostKey { reason: "the key is not ed25519" });
    }
    if private.public_key().key_data() != public.key_data() {
        return Err(CloudInitError::HostKey { reason: "the public key does not match" });
    }
    let encode = |source| CloudInitError::ParseKey { key: "host private key", source };
    let pem = private.to_openssh(LineEnding::LF).map_err(encode)?;
    let line = public
        .to_openssh()
        .map_err(|source| CloudInitError::ParseKey { key: "host public key", source })?;
    Ok((pem.to_string(), line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        for ok in ["a", "lab-m01", "1", "yes", "a".repeat(63).as_str()] {
            assert_eq!(hostname(ok).unwrap(), ok);
        }
        for bad in ["", "-a", "a-", "Lab", "a.b", "a_b", "a b", "a".repeat(64).as_str()] {
            assert!(matches!(hostname(bad), Err(CloudInitError::InvalidHostname { .. })), "{bad}");
        }
    }

    #[test]
    fn users() {
        for ok in ["kubelab", "_svc", "a-b_1", "a".repeat(32).as_str()] {
            assert_eq!(user(ok).unwrap(), ok);
        }
        for bad in ["", "root", "1abc", "-a", "Kube", "a$", "a.b", "a".repeat(33).as_str()] {
            assert!(matches!(user(bad), Err(CloudInitError::InvalidUser { .. })), "{bad}");
        }
    }

    #[test]
    fn instance_ids() {
        assert!(instance_id("lab-m01-00ff.x_y").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "é"] {
            assert!(instance_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn macs() {
        assert_eq!(mac("52:54:00:AB:cd:0F").unwrap(), "52:54:00:ab:cd:0f");
        for bad in
            ["", "52:54:00:ab:cd", "52-54-00-ab-cd-ef", "52:54:00:ab:cd:ef:00", "5:54:00:ab:cd:ef0"]
        {
            assert!(matches!(mac(bad), Err(CloudInitError::InvalidMac { .. })), "{bad}");
        }
        let multicast = mac("01:00:5e:00:00:01").unwrap_err().to_string();
        assert!(multicast.contains("multicast"), "{multicast}");
        assert!(mac("00:00:00:00:00:00").is_err());
    }

    #[test]
    fn addresses() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(address(ip("192.168.59.10"), 24).unwrap(), "192.168.59.10/24");
        assert_eq!(address(ip("10.0.0.0"), 32).unwrap(), "10.0.0.0/32");
        for (bad, prefix) in [
            ("192.168.59.0", 24),
            ("192.168.59.255", 24),
            ("192.168.59.10", 33),
            ("192.168.59.10", 0),
            ("0.0.0.0", 24),
            ("127.0.0.1", 8),
            ("224.0.0.1", 24),
            ("255.255.255.255", 32),
        ] {
            assert!(address(ip(bad), prefix).is_err(), "{bad}/{prefix}");
        }
    }

    #[test]
    fn host_key_pairs_must_match_and_be_ed25519() {
        let (private, public) = super::super::render::tests::host_key();
        let (pem, line) = host_key(&private, &public).unwrap();
        assert!(pem.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
        assert!(line.starts_with("ssh-ed25519 "));
        let (_, other) = super::super::render::tests::host_key();
        let err = host_key(&private, &other).unwrap_err();
        assert!(matches!(err, CloudInitError::HostKey { .. }), "{err}");
        let err = host_key("not a key", &public).unwrap_err();
        assert!(matches!(err, CloudInitError::ParseKey { key: "host private key", .. }));
        assert!(user_public_key("ssh-ed25519 AAAA garbage").is_err());
        assert_eq!(user_public_key(&format!("  {public}\n")).unwrap(), public);
    }
}
