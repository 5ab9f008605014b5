//! The cluster's secrets, made on the host before any node boots and kept in the profile
//! directory (mode 0600): the cluster CA (`pki/ca.crt`, `pki/ca.key`) and the CA's
//! public-key hash that lets a worker trust the control plane without asking it for a join
//! command. Bootstrap tokens are not kept: each `up` or `node add` makes a fresh one
//! ([`new_token`]), so a worker that first joins days later never meets an expired token.
//!
//! kubeadm accepts an external CA placed at `/etc/kubernetes/pki/ca.{crt,key}` before
//! `kubeadm init` ("Custom certificates",
//! <https://kubernetes.io/docs/tasks/administer-cluster/kubeadm/kubeadm-certs/>) and signs
//! every other certificate with it. The CA key is ECDSA P-256: `ring` cannot generate RSA
//! keys, and kubeadm signs with whatever key type the CA has.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PublicKeyData,
};
use sha2::{Digest, Sha256};
use ssh_key::rand_core::{OsRng, RngCore};

use super::BootstrapError;
use crate::fsutil;

/// The CA's validity, as kubeadm's (10 years).
const CA_VALIDITY_DAYS: i64 = 3650;
/// The characters of a bootstrap token.
const TOKEN_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// The cluster CA of a profile.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// The CA certificate (PEM).
    pub ca_cert_pem: String,
    /// The CA private key (PKCS#8 PEM).
    pub ca_key_pem: String,
    /// `sha256:<hex>` of the CA's DER SubjectPublicKeyInfo (`--discovery-token-ca-cert-hash`).
    pub ca_cert_hash: String,
}

/// The directory of a profile's cluster secrets.
pub fn dir(profile_dir: &Path) -> PathBuf {
    profile_dir.join("pki")
}

/// Loads the profile's secrets, generating (and saving) the ones that are missing.
pub fn ensure(profile_dir: &Path) -> Result<Secrets, BootstrapError> {
    let dir = dir(profile_dir);
    fsutil::create_private_dir(profile_dir, &dir)
        .map_err(|source| BootstrapError::WriteSecret { path: dir.clone(), source })?;
    let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
    let (ca_cert_pem, ca_key_pem) = match (read(&cert_path)?, read(&key_path)?) {
        (Some(cert), Some(key)) => (cert, key),
        _ => {
            let (cert, key) = generate_ca(SystemTime::now())?;
            // The key first: a cert without its key is regenerated, never trusted.
            write(&key_path, &key)?;
            write(&cert_path, &cert)?;
            (cert, key)
        }
    };
    let key = KeyPair::from_pem(&ca_key_pem)
        .map_err(|source| BootstrapError::BadSecret { path: key_path, source })?;
    Ok(Secrets { ca_cert_pem, ca_key_pem, ca_cert_hash: spki_hash(&key) })
}

/// A self-signed CA like kubeadm's: CN `kubernetes`, may sign certificates, valid 10 years.
pub fn generate_ca(now: SystemTime) -> Result<(String, String), BootstrapError> {
    let key = KeyPair::generate().map_err(BootstrapError::GenerateCa)?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "kubernetes");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyCertSign,
    ];
    let days = days_since_epoch(now);
    let (y, m, d) = civil_from_days(days - 1);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = civil_from_days(days + CA_VALIDITY_DAYS);
    params.not_after = rcgen::date_time_ymd(y, m, d);
    let cert = params.self_signed(&key).map_err(BootstrapError::GenerateCa)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// `sha256:` and the hex SHA-256 of the key's DER SubjectPublicKeyInfo: the form of
/// `kubeadm join --discovery-token-ca-cert-hash`
/// (<https://kubernetes.io/docs/reference/setup-tools/kubeadm/kubeadm-join/>).
pub fn spki_hash(key: &impl PublicKeyData) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.subject_public_key_info())))
}

/// A fresh bootstrap token, `[a-z0-9]{6}.[a-z0-9]{16}`
/// (<https://kubernetes.io/docs/reference/access-authn-authz/bootstrap-tokens/>).
pub fn new_token() -> String {
    let mut token = String::with_capacity(23);
    let mut byte = [0u8; 1];
    while token.len() < 23 {
        if token.len() == 6 {
            token.push('.');
            continue;
        }
        OsRng.fill_bytes(&mut byte);
        // 252 is the largest multiple of 36 that fits a byte: above it, draw again.
        if byte[0] < 252 {
            token.push(char::from(TOKEN_ALPHABET[usize::from(byte[0] % 36)]));
        }
    }
    token
}

fn read(path: &Path) -> Result<Option<String>, BootstrapError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(BootstrapError::ReadSecret { path: path.to_owned(), source }),
    }
}

fn write(path: &Path, text: &str) -> Result<(), BootstrapError> {
    fsutil::write_atomic(path, text.as_bytes())
        .map_err(|source| BootstrapError::WriteSecret { path: path.to_owned(), source })
}

/// Whole days from the Unix epoch to `time` (0 for times before it).
pub fn days_since_epoch(time: SystemTime) -> i64 {
    let secs = time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
    i64::try_from(secs / 86_400).unwrap_or(0)
}

/// The proleptic Gregorian date of day `days` since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, <https://howardhinnant.github.io/date_algorithms.html>).
pub fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        i32::try_from(year).unwrap_or(i32::MAX),
        u8::try_from(month).unwrap_or(1),
        u8::try_from(day).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::*;

    /// Whether `token` has the bootstrap token form `[a-z0-9]{6}.[a-z0-9]{16}`.
    fn is_token(token: &str) -> bool {
        let ok = |part: &str, len| {
            part.len() == len && part.bytes().all(|b| TOKEN_ALPHABET.contains(&b))
        };
        matches!(token.split_once('.'), Some((id, secret)) if ok(id, 6) && ok(secret, 16))
    }

    #[test]
    fn tokens_have_kubeadm_form() {
        for _ in 0..200 {
            let token = new_token();
            assert!(is_token(&token), "{token}");
        }
        assert_ne!(new_token(), new_token());
        for bad in
            ["abcdef.0123456789abcdef0", "ABCDEF.0123456789abcdef", "abcdef0123456789abcdef", ""]
        {
            assert!(!is_token(bad), "{bad}");
        }
        assert!(is_token("abcdef.0123456789abcdef"));
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_517), (2026, 3, 5));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn secrets_are_made_once_and_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = ensure(dir.path()).unwrap();
        let again = ensure(dir.path()).unwrap();
        assert_eq!(first.ca_cert_pem, again.ca_cert_pem);
        assert_eq!(first.ca_cert_hash, again.ca_cert_hash);
        assert!(first.ca_cert_hash.starts_with("sha256:") && first.ca_cert_hash.len() == 71);
        for file in ["ca.crt", "ca.key"] {
            let mode =
                fs::metadata(super::dir(dir.path()).join(file)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }

    /// The hash must be what kubeadm's docs compute with openssl:
    /// `openssl x509 -pubkey | openssl pkey -pubin -outform der | sha256sum`.
    #[test]
    fn ca_hash_matches_openssl() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = ensure(dir.path()).unwrap();
        let openssl = |args: &[&str], input: &[u8]| {
            let mut child = Command::new("openssl")
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("openssl must be installed for this test");
            std::io::Write::write_all(child.stdin.as_mut().unwrap(), input).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "openssl {args:?}");
            out.stdout
        };
        let text = openssl(
            &["x509", "-noout", "-subject", "-ext", "basicConstraints"],
            secrets.ca_cert_pem.as_bytes(),
        );
        let text = String::from_utf8_lossy(&text);
        assert!(text.contains("CN = kubernetes") || text.contains("CN=kubernetes"), "{text}");
        assert!(text.contains("CA:TRUE"), "{text}");
        let pubkey = openssl(&["x509", "-pubkey", "-noout"], secrets.ca_cert_pem.as_bytes());
        let der = openssl(&["pkey", "-pubin", "-outform", "der"], &pubkey);
        let expected = format!("sha256:{}", hex::encode(Sha256::digest(&der)));
        assert_eq!(secrets.ca_cert_hash, expected);
    }
}
