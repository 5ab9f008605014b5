//! SSH keys kubelab generates itself, and the files that let the user's own `ssh` trust
//! them. Layout under a profile directory (all files mode 0600, directories 0700):
//!
//! ```text
//! id_ed25519, id_ed25519.pub                         the profile's user key (login to every node)
//! nodes/<node>/ssh_host_ed25519_key{,.pub}           each node's host key, injected by cloud-init
//! known_hosts                                        one line per node, for `ssh -o UserKnownHostsFile`
//! ```
//!
//! Keys are generated once and reused by every later command: a node's host key must
//! not change, or its pinned fingerprint would no longer match (no trust-on-first-use
//! anywhere). A key file that exists but cannot be used is an error, never replaced.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey, rand_core::OsRng};

use crate::fsutil;

/// The profile's user key file name (its public half adds `.pub`).
pub const USER_KEY_FILE: &str = "id_ed25519";
/// The profile's known-hosts file name.
pub const KNOWN_HOSTS_FILE: &str = "known_hosts";
/// A node's host key file name, as sshd names it.
pub const HOST_KEY_FILE: &str = "ssh_host_ed25519_key";

/// Errors about key files.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The node name cannot be used as a directory name.
    #[error("invalid node name {node:?}")]
    InvalidNode {
        /// The rejected name.
        node: String,
    },
    /// Creating a key directory failed.
    #[error("cannot create key directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Reading a key file failed.
    #[error("cannot read key file {}", path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A key file is not a valid OpenSSH key.
    #[error("key file {} is corrupt", path.display())]
    Parse {
        /// The key file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: ssh_key::Error,
    },
    /// A key file parses but is not what kubelab wrote.
    #[error("key file {} is unusable: {why}", path.display())]
    Unusable {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Generating or encoding a key failed.
    #[error("cannot generate an ed25519 key")]
    Generate(#[source] ssh_key::Error),
    /// Writing a key or known-hosts file failed.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// An ed25519 key pair and the file its private half lives in.
#[derive(Debug, Clone)]
pub struct KeyPair {
    private: PrivateKey,
    path: PathBuf,
}

impl KeyPair {
    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        self.private.public_key()
    }

    /// The private key file (for `ssh -i`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The private key in OpenSSH format (what sshd's `HostKey` and cloud-init's
    /// `ssh_keys` take, and what libssh2 authenticates with).
    pub fn private_openssh(&self) -> Result<String, KeyError> {
        let text = self.private.to_openssh(LineEnding::LF).map_err(KeyError::Generate)?;
        Ok(text.as_str().to_owned())
    }

    /// The public key as one `authorized_keys` line, without a newline.
    pub fn public_openssh(&self) -> Result<String, KeyError> {
        self.public_key().to_openssh().map_err(KeyError::Generate)
    }

    /// The SHA-256 fingerprint, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.public_key())
    }
}

/// The SHA-256 fingerprint of `key` (`SHA256:` and unpadded base64, as OpenSSH prints it).
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The profile's user key, generated on first use. Call with the profile's lock held,
/// so two commands cannot generate it at once.
pub fn user_key(profile_dir: &Path) -> Result<KeyPair, KeyError> {
    load_or_generate(profile_dir, &profile_dir.join(USER_KEY_FILE), "kubelab")
}

/// The host key of `node`, generated on first use (with the profile's lock held).
pub fn host_key(profile_dir: &Path, node: &str) -> Result<KeyPair, KeyError> {
    let valid = !node.is_empty()
        && node.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        return Err(KeyError::InvalidNode { node: node.to_owned() });
    }
    let path = profile_dir.join("nodes").join(node).join(HOST_KEY_FILE);
    load_or_generate(profile_dir, &path, &format!("root@{node}"))
}

/// Loads the key at `path`, or generates one (with `comment`) if there is no file; its
/// directory is created below `profile_dir` without following links.
/// Rewrites a missing `.pub`; a `.pub` for another key is an error.
fn load_or_generate(profile_dir: &Path, path: &Path, comment: &str) -> Result<KeyPair, KeyError> {
    let private = match fs::read_to_string(path) {
        Ok(text) => parse_private(path, &text)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return generate(profile_dir, path, comment);
        }
        Err(source) => return Err(KeyError::Read { path: path.to_owned(), source }),
    };
    let pair = KeyPair { private, path: path.to_owned() };
    let pub_path = public_path(path);
    match fs::read_to_string(&pub_path) {
        Ok(text) => {
            let public = PublicKey::from_openssh(text.trim())
                .map_err(|source| KeyError::Parse { path: pub_path.clone(), source })?;
            if public.key_data() != pair.public_key().key_data() {
                let why = "it does not match its private key";
                return Err(KeyError::Unusable { path: pub_path, why });
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => write_public(&pair)?,
        Err(source) => return Err(KeyError::Read { path: pub_path, source }),
    }
    Ok(pair)
}

fn parse_private(path: &Path, text: &str) -> Result<PrivateKey, KeyError> {
    let key = PrivateKey::from_openssh(text)
        .map_err(|source| KeyError::Parse { path: path.to_owned(), source })?;
    let unusable = |why| Err(KeyError::Unusable { path: path.to_owned(), why });
    if key.is_encrypted() {
        return unusable("it is encrypted");
    }
    if key.algorithm() != Algorithm::Ed25519 {
        return unusable("it is not an ed25519 key");
    }
    Ok(key)
}

fn generate(profile_dir: &Path, path: &Path, comment: &str) -> Result<KeyPair, KeyError> {
    let mut private =
        PrivateKey::random(&mut OsRng, Algorithm::Ed25519).map_err(KeyError::Generate)?;
    private.set_comment(comment);
    if let Some(dir) = path.parent() {
        fsutil::create_private_dir(profile_dir, dir)
            .map_err(|source| KeyError::CreateDir { path: dir.to_owned(), source })?;
    }
    let pair = KeyPair { private, path: path.to_owned() };
    // The public half first: a crash in between leaves no private key, so the next run
    // generates a fresh pair instead of finding a mismatched `.pub`.
    write_public(&pair)?;
    let text = pair.private_openssh()?;
    fsutil::write_atomic(path, text.as_bytes())
        .map_err(|source| KeyError::Write { path: path.to_owned(), source })?;
    Ok(pair)
}

fn write_public(pair: &KeyPair) -> Result<(), KeyError> {
    let path = public_path(&pair.path);
    let line = pair.public_openssh()? + "\n";
    fsutil::write_atomic(&path, line.as_bytes()).map_err(|source| KeyError::Write { path, source })
}

fn public_path(private: &Path) -> PathBuf {
    let mut name = private.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// How OpenSSH names a host in `known_hosts`: the bare host for port 22, else
/// `[host]:port` (which `ssh -p PORT host` looks up).
pub fn known_hosts_host(host: &str, port: u16) -> String {
    if port == 22 { host.to_owned() } else { format!("[{host}]:{port}") }
}

/// One `known_hosts` line (without a newline) accepting exactly `key` for `host:port`.
pub fn known_hosts_line(host: &str, port: u16, key: &PublicKey) -> Result<String, KeyError> {
    // Without the comment: known_hosts has no comment field.
    let bare = PublicKey::from(key.key_data().clone()).to_openssh().map_err(KeyError::Generate)?;
    Ok(format!("{} {bare}", known_hosts_host(host, port)))
}

/// Where and how a node is reached, for the known-hosts file.
#[derive(Debug, Clone)]
pub struct KnownHost<'a> {
    /// The address `ssh` connects to (an IP or a host name).
    pub host: &'a str,
    /// The SSH port.
    pub port: u16,
    /// The node's host key.
    pub key: &'a PublicKey,
}

/// Replaces `<profile dir>/known_hosts` with one line per entry and returns its path.
pub fn write_known_hosts(profile_dir: &Path, hosts: &[KnownHost<'_>]) -> Result<PathBuf, KeyError> {
    let mut text = String::new();
    for host in hosts {
        text.push_str(&known_hosts_line(host.host, host.port, host.key)?);
        text.push('\n');
    }
    let path = profile_dir.join(KNOWN_HOSTS_FILE);
    fsutil::write_atomic(&path, text.as_bytes())
        .map_err(|source| KeyError::Write { path: path.clone(), source })?;
    Ok(path)
}

/// How long the user's `ssh` tries to connect before it gives up: without it, a node
/// that stops after kubelab checked it leaves `ssh` hanging for the system's TCP
/// timeout (minutes).
pub const SSH_CONNECT_TIMEOUT_SECS: u32 = 10;

/// `path` as the value of an ssh option or ssh_config keyword: ssh splits values at
/// whitespace (UserKnownHostsFile takes a list), so a path with spaces is quoted.
pub fn ssh_path_value(path: &Path) -> OsString {
    let mut value = OsString::new();
    if path.to_string_lossy().contains(char::is_whitespace) {
        value.push("\"");
        value.push(path);
        value.push("\"");
    } else {
        value.push(path);
    }
    value
}

/// The `ssh` argv (program first) that logs in as `user@host:port` with `key_file`,
/// trusting only the host keys in `known_hosts` (no prompt, no other identities), and
/// giving up on a connection after [`SSH_CONNECT_TIMEOUT_SECS`].
pub fn ssh_command_line(
    key_file: &Path,
    known_hosts: &Path,
    user: &str,
    host: &str,
    port: u16,
) -> Vec<OsString> {
    let mut hosts_file = OsString::from("UserKnownHostsFile=");
    hosts_file.push(ssh_path_value(known_hosts));
    let mut argv: Vec<OsString> = vec!["ssh".into(), "-i".into(), key_file.into(), "-o".into()];
    argv.push(hosts_file);
    for arg in ["-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-o"] {
        argv.push(arg.into());
    }
    argv.push(format!("ConnectTimeout={SSH_CONNECT_TIMEOUT_SECS}").into());
    argv.push("-p".into());
    argv.push(port.to_string().into());
    argv.push(format!("{user}@{host}").into());
    argv
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn keys_are_generated_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let user = user_key(dir.path()).unwrap();
        let host = host_key(dir.path(), "lab-m02").unwrap();
        assert_eq!(user.path(), dir.path().join("id_ed25519"));
        assert_eq!(host.path(), dir.path().join("nodes/lab-m02/ssh_host_ed25519_key"));
        for path in [user.path(), host.path()] {
            assert_eq!(mode(path), 0o600, "{}", path.display());
            assert_eq!(mode(&public_path(path)), 0o600, "{}", path.display());
        }
        assert_eq!(mode(&dir.path().join("nodes/lab-m02")), 0o700);
        assert_ne!(user.fingerprint(), host.fingerprint());
        let again = user_key(dir.path()).unwrap();
        assert_eq!(again.private_openssh().unwrap(), user.private_openssh().unwrap());
        assert_eq!(host_key(dir.path(), "lab-m02").unwrap().fingerprint(), host.fingerprint());
        let pub_text = fs::read_to_string(public_path(user.path())).unwrap();
        assert!(pub_text.starts_with("ssh-ed25519 AAAA") && pub_text.ends_with(" kubelab\n"));
        assert!(user.fingerprint().starts_with("SHA256:") && !user.fingerprint().ends_with('='));
    }

    #[test]
    fn missing_public_half_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let user = user_key(dir.path()).unwrap();
        fs::remove_file(public_path(user.path())).unwrap();
        assert_eq!(user_key(dir.path()).unwrap().fingerprint(), user.fingerprint());
        assert!(public_path(user.path()).is_file());
    }

    #[test]
    fn corrupt_or_foreign_keys_are_errors_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(USER_KEY_FILE);
        fs::write(&path, "not a key").unwrap();
        let err = user_key(dir.path()).unwrap_err();
        assert!(matches!(err, KeyError::Parse { .. }), "{err:?}");
        assert!(err.to_string().contains("is corrupt"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "not a key");

        let other = tempfile::tempdir().unwrap();
        let first = user_key(dir.path().join("a").as_path()).unwrap();
        let second = user_key(other.path()).unwrap();
        fs::copy(public_path(second.path()), public_path(first.path())).unwrap();
        let err = user_key(dir.path().join("a").as_path()).unwrap_err();
        assert!(err.to_string().contains("does not match its private key"), "{err}");
    }

    #[test]
    fn node_names_cannot_escape_the_profile() {
        let dir = tempfile::tempdir().unwrap();
        for node in ["", "../x", "a/b", "A"] {
            assert!(matches!(host_key(dir.path(), node), Err(KeyError::InvalidNode { .. })));
        }
    }

    #[test]
    fn known_hosts_lines_match_openssh_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let key = host_key(dir.path(), "lab").unwrap();
        let blob = key.public_openssh().unwrap();
        let blob = blob.strip_suffix(" root@lab").unwrap();
        let line = known_hosts_line("127.0.0.1", 2222, key.public_key()).unwrap();
        assert_eq!(line, format!("[127.0.0.1]:2222 {blob}"));
        let line = known_hosts_line("192.168.39.10", 22, key.public_key()).unwrap();
        assert_eq!(line, format!("192.168.39.10 {blob}"));

        let other = host_key(dir.path(), "lab-m02").unwrap();
        let hosts = [
            KnownHost { host: "192.168.39.10", port: 22, key: key.public_key() },
            KnownHost { host: "127.0.0.1", port: 40022, key: other.public_key() },
        ];
        let path = write_known_hosts(dir.path(), &hosts).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.lines().nth(1).unwrap().starts_with("[127.0.0.1]:40022 ssh-ed25519 "));
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn ssh_command_line_pins_the_known_hosts_file() {
        let argv = ssh_command_line(
            Path::new("/p/id_ed25519"),
            Path::new("/p/known_hosts"),
            "kubelab",
            "127.0.0.1",
            40022,
        );
        let expected = "ssh -i /p/id_ed25519 -o UserKnownHostsFile=/p/known_hosts \
                        -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes \
                        -o ConnectTimeout=10 -p 40022 kubelab@127.0.0.1";
        let argv: Vec<_> = argv.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(argv.join(" "), expected);

        let spaced = ssh_command_line(Path::new("/k"), Path::new("/my home/kh"), "u", "h", 22);
        assert_eq!(spaced[4], "UserKnownHostsFile=\"/my home/kh\"");
    }
}
