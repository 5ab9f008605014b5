//! Reaching nodes that live on a remote libvirt host: that host is an SSH jump, run by
//! the user's own OpenSSH (`ssh -W`), so their ssh_config, agent and keys work exactly as
//! for libvirt's own `qemu+ssh` transport. The host's key is pinned: [`Jump::pin`] copies
//! it from the user's known_hosts into the profile when the profile is made, and every
//! later connection trusts only that copy (`StrictHostKeyChecking=yes`), so a changed
//! key is refused even after the user accepted it elsewhere. Nothing is learnt on first
//! use: a host missing from known_hosts is refused with the command that adds it.

use std::ffi::OsString;
use std::io::Read;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use crate::keys::ssh_path_value;

/// Seconds OpenSSH may take to reach the jump host.
const CONNECT_TIMEOUT_SECS: u32 = 10;
/// How long a failed proxy may take to exit and say why.
const EXIT_WAIT: Duration = Duration::from_secs(3);
/// The most of a proxy's stderr kept for an error message.
const STDERR_MAX: u64 = 16 * 1024;

/// Why the libvirt host could not be used as a jump.
#[derive(Debug, thiserror::Error)]
pub enum JumpError {
    /// The URI's host or user could be read as an ssh option.
    #[error("libvirt URI {uri:?}: {why}")]
    BadUri {
        /// The URI.
        uri: String,
        /// What is wrong with it.
        why: String,
    },
    /// The libvirt host is not in the user's known_hosts.
    #[error(
        "the libvirt host {host} is not in your known_hosts ({searched}); kubelab trusts no \
         host key on first use"
    )]
    Unknown {
        /// `host` or `[host]:port`, as known_hosts names it.
        host: String,
        /// The files searched.
        searched: String,
    },
    /// The libvirt host presented another key than the one pinned in the profile.
    #[error(
        "the libvirt host {jump} presented another host key than the one pinned in the \
         profile ({pinned}): {stderr}"
    )]
    KeyChanged {
        /// `[user@]host[:port]`.
        jump: String,
        /// The profile's pinned known_hosts file.
        pinned: PathBuf,
        /// What ssh said.
        stderr: String,
    },
    /// ssh could not reach or log in to the libvirt host.
    #[error("cannot reach the libvirt host {jump} over ssh: {stderr}")]
    Unreachable {
        /// `[user@]host[:port]`.
        jump: String,
        /// What ssh said.
        stderr: String,
    },
    /// The libvirt host lacks programs libvirt runs for kubelab.
    #[error("the libvirt host {jump} has no {tools}")]
    MissingTools {
        /// `[user@]host[:port]`.
        jump: String,
        /// The missing programs.
        tools: String,
    },
    /// `kubelab tunnel` of a profile whose nodes live on this machine.
    #[error(
        "profile {profile} runs on this machine: its API server is reached directly at {server}"
    )]
    NotRemote {
        /// The profile.
        profile: String,
        /// Its kubeconfig's server.
        server: String,
    },
    /// A local port for a tunnel could not be opened.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Running `ssh` or `ssh-keygen` failed.
    #[error("cannot run {program}")]
    Spawn {
        /// The program.
        program: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The pinned known_hosts file could not be written or read.
    #[error("cannot write or read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// A libvirt host used as an SSH jump to its nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jump {
    /// The login name, when the URI gives one (else ssh_config's or the local user).
    pub user: Option<String>,
    /// The host name or address, as in the URI.
    pub host: String,
    /// The SSH port, when the URI gives one for an SSH transport.
    pub port: Option<u16>,
    /// The URI's `keyfile=`, which libvirt's transport logs in with too.
    pub key_file: Option<PathBuf>,
    /// The profile's file holding the pinned key.
    pub known_hosts: PathBuf,
}

/// Transports whose URI port is the SSH port (others name libvirtd's TCP/TLS port).
const SSH_TRANSPORTS: &[&str] = &["ssh", "libssh", "libssh2"];

impl Jump {
    /// The jump for libvirt `uri`, pinning into `known_hosts`; `None` when the daemon
    /// runs on this machine.
    pub fn for_uri(uri: &str, known_hosts: PathBuf) -> Result<Option<Self>, JumpError> {
        let bad = |why: &str| JumpError::BadUri { uri: uri.to_owned(), why: why.to_owned() };
        let url = url::Url::parse(uri).map_err(|_| bad("not a URI"))?;
        let host = match url.host_str() {
            None | Some("" | "localhost") => return Ok(None),
            Some(host) => host.trim_start_matches('[').trim_end_matches(']').to_owned(),
        };
        // ssh would read a leading '-' as an option, and the rest has no place in a name.
        let host_ok = |s: &str| {
            !s.starts_with('-')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'))
        };
        if !host_ok(&host) {
            return Err(bad("the host name has characters ssh would misread"));
        }
        let user = match url.username() {
            "" => None,
            user if host_ok(user) && !user.contains(':') => Some(user.to_owned()),
            _ => return Err(bad("the user name has characters ssh would misread")),
        };
        let transport = url.scheme().split_once('+').map_or("", |(_, t)| t);
        let port = url.port().filter(|_| SSH_TRANSPORTS.contains(&transport));
        let key_file = url.query_pairs().find(|(k, _)| k.eq_ignore_ascii_case("keyfile"));
        Ok(Some(Self {
            user,
            host,
            port,
            key_file: key_file.map(|(_, v)| PathBuf::from(v.into_owned())),
            known_hosts,
        }))
    }

    /// `[user@]host[:port]`, as `ssh -J` takes it.
    pub fn destination(&self) -> String {
        let host =
            if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let user = self.user.as_ref().map(|u| format!("{u}@")).unwrap_or_default();
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        format!("{user}{host}{port}")
    }

    /// The options that pin the host's key and never prompt.
    fn pin_options(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut opt = |value: OsString| {
            args.push("-o".into());
            args.push(value);
        };
        let mut file = OsString::from("UserKnownHostsFile=");
        file.push(ssh_path_value(&self.known_hosts));
        opt(file);
        for value in [
            "GlobalKnownHostsFile=/dev/null",
            "StrictHostKeyChecking=yes",
            "CheckHostIP=no",
            "BatchMode=yes",
        ] {
            opt(value.into());
        }
        opt(format!("ConnectTimeout={CONNECT_TIMEOUT_SECS}").into());
        args
    }

    /// An ssh_config for the user's own `ssh -F FILE -J DESTINATION`: the jump host is
    /// trusted only with the pinned key; the rest of the user's configuration applies.
    pub fn ssh_config(&self) -> String {
        let q = |p: &Path| ssh_path_value(p).to_string_lossy().into_owned();
        let mut text = format!(
            "# Written by kubelab: `kubelab ssh` reaches nodes through the libvirt host, \
             trusted only with the key pinned in this profile.\nHost {}\n  \
             UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  \
             StrictHostKeyChecking yes\n  CheckHostIP no\n",
            self.host,
            q(&self.known_hosts)
        );
        if let Some(key) = &self.key_file {
            text.push_str(&format!("  IdentityFile {}\n", q(key)));
        }
        text.push_str("Match all\nInclude ~/.ssh/config\nInclude /etc/ssh/ssh_config\n");
        text
    }

    /// `ssh` with the URI's key file, user and port, and `extra` before the host; with
    /// the pinned key only when `pinned` (else as the user's own configuration and
    /// known_hosts have it).
    fn ssh(&self, pinned: bool, extra: &[OsString]) -> Command {
        let mut cmd = Command::new("ssh");
        if pinned {
            cmd.args(self.pin_options());
        }
        if let Some(key) = &self.key_file {
            cmd.arg("-i").arg(key);
        }
        if let Some(user) = &self.user {
            cmd.arg("-l").arg(user);
        }
        if let Some(port) = self.port {
            cmd.arg("-p").arg(port.to_string());
        }
        cmd.args(extra).arg("--").arg(&self.host);
        cmd
    }

    /// Opens a byte stream to `to` as seen from the libvirt host: one end of a socket
    /// pair whose other end is the stdin and stdout of `ssh -W`.
    pub fn proxy(&self, to: SocketAddr) -> Result<(UnixStream, Proxy), JumpError> {
        let (ours, theirs) =
            UnixStream::pair().map_err(|source| JumpError::Spawn { program: "ssh", source })?;
        Ok((ours, self.proxy_stream(theirs.into(), to)?))
    }

    /// Runs `ssh -W to` with `stream` as its stdin and stdout; this process keeps no
    /// copy of it, so either side closing ends the other.
    pub fn proxy_stream(&self, stream: OwnedFd, to: SocketAddr) -> Result<Proxy, JumpError> {
        let spawn = |source| JumpError::Spawn { program: "ssh", source };
        let input = stream.try_clone().map_err(spawn)?;
        let mut cmd = self.ssh(true, &["-W".into(), to.to_string().into()]);
        cmd.stdin(Stdio::from(input)).stdout(Stdio::from(stream)).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(spawn)?;
        drop(cmd);
        let stderr = child.stderr.take();
        Ok(Proxy { child, stderr, jump: self.destination(), pinned: self.known_hosts.clone() })
    }

    /// Runs `command` (one shell line) on the libvirt host and returns its stdout.
    pub fn run(&self, command: &str) -> Result<String, JumpError> {
        let out = self
            .ssh(true, &[])
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| JumpError::Spawn { program: "ssh", source })?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        Err(self.failure(String::from_utf8_lossy(&out.stderr).trim().to_owned()))
    }

    /// Sorts what ssh said when it failed to reach the host.
    fn failure(&self, stderr: String) -> JumpError {
        classify(&self.destination(), &self.known_hosts, stderr)
    }

    /// Copies the host's keys from the user's known_hosts (the files ssh_config names,
    /// under the name it looks them up by) into [`Jump::known_hosts`]. Learns nothing
    /// from the network.
    pub fn pin(&self) -> Result<(), JumpError> {
        let pinned = self.known_keys()?;
        crate::fsutil::write_atomic(&self.known_hosts, pinned.as_bytes())
            .map_err(|source| JumpError::Io { path: self.known_hosts.clone(), source })
    }

    /// The host's keys in the user's known_hosts, as known_hosts lines; an error when
    /// there are none.
    fn known_keys(&self) -> Result<String, JumpError> {
        let config = self.resolved_config()?;
        let get = |key: &str| {
            config.lines().find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(' ')))
        };
        let name = get("hostkeyalias").or(get("hostname")).unwrap_or(&self.host).to_owned();
        let port = get("port").and_then(|p| p.parse::<u16>().ok()).unwrap_or(22);
        let lookup = if port == 22 { name } else { format!("[{name}]:{port}") };
        let files: Vec<PathBuf> = ["userknownhostsfile", "globalknownhostsfile"]
            .iter()
            .filter_map(|k| get(k))
            .flat_map(|v| v.split_whitespace().map(expand_home).collect::<Vec<_>>())
            .collect();
        let mut pinned = String::new();
        for file in files.iter().filter(|f| f.is_file()) {
            let out = Command::new("ssh-keygen")
                .arg("-F")
                .arg(&lookup)
                .arg("-f")
                .arg(file)
                .output()
                .map_err(|source| JumpError::Spawn { program: "ssh-keygen", source })?;
            for key in host_keys(&String::from_utf8_lossy(&out.stdout)) {
                pinned.push_str(&format!("{lookup} {key}\n"));
            }
        }
        if pinned.is_empty() {
            let searched = files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>();
            return Err(JumpError::Unknown { host: lookup, searched: searched.join(", ") });
        }
        Ok(pinned)
    }

    /// `ssh -G`: the options ssh would use for this host, without connecting.
    fn resolved_config(&self) -> Result<String, JumpError> {
        let out = self
            .ssh(false, &["-G".into()])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| JumpError::Spawn { program: "ssh", source })?;
        if !out.status.success() {
            return Err(self.failure(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The `type base64` keys in `ssh-keygen -F` output (markers such as
/// `@cert-authority` and `@revoked` are not host keys and are skipped).
fn host_keys(output: &str) -> Vec<String> {
    output
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('@'))
        .filter_map(|l| {
            let mut fields = l.split_whitespace().skip(1);
            let (kind, key) = (fields.next()?, fields.next()?);
            let kind_ok = kind.chars().all(|c| c.is_ascii_alphanumeric() || "-@.".contains(c));
            let key_ok = key.chars().all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c));
            (kind_ok && key_ok).then(|| format!("{kind} {key}"))
        })
        .collect()
}

/// Sorts ssh's complaint about the jump host.
fn classify(jump: &str, pinned: &Path, stderr: String) -> JumpError {
    if stderr.contains("Host key verification failed")
        || stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        // "No ED25519 host key is known for ...": the pinned file lacks that kind.
        || stderr.contains("host key is known")
    {
        JumpError::KeyChanged { jump: jump.to_owned(), pinned: pinned.to_owned(), stderr }
    } else {
        JumpError::Unreachable { jump: jump.to_owned(), stderr }
    }
}

/// `~/x` under the home directory ssh itself uses.
fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// A running `ssh -W`; dropping it stops and reaps it.
#[derive(Debug)]
pub struct Proxy {
    child: Child,
    stderr: Option<ChildStderr>,
    jump: String,
    pinned: PathBuf,
}

/// How a proxied connection to a node failed, as ssh told it.
#[derive(Debug)]
pub enum ProxyFailure {
    /// The libvirt host could not be reached, logged in to, or trusted.
    Jump(JumpError),
    /// The libvirt host is fine; the node's port did not accept the connection.
    Target(String),
}

impl Proxy {
    /// Whether its `ssh` still runs (reaping it once it ended).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// After the connection through it failed: waits briefly for ssh to exit and sorts
    /// what it said.
    pub fn failure(mut self) -> ProxyFailure {
        let deadline = Instant::now() + EXIT_WAIT;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut text = String::new();
        if let Some(stderr) = self.stderr.take() {
            let _ = stderr.take(STDERR_MAX).read_to_string(&mut text);
        }
        let text = text.trim().to_owned();
        // "channel 0: open failed: connect failed: Connection refused": the host answered.
        if text.contains("open failed") || text.contains("stdio forwarding failed") {
            return ProxyFailure::Target(text);
        }
        ProxyFailure::Jump(classify(&self.jump, &self.pinned, text))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jump(uri: &str) -> Option<Jump> {
        Jump::for_uri(uri, "/p/libvirt_known_hosts".into()).unwrap()
    }

    #[test]
    fn a_local_uri_needs_no_jump() {
        for uri in ["qemu:///system", "qemu://localhost/system", "test:///default"] {
            assert_eq!(jump(uri), None, "{uri}");
        }
    }

    #[test]
    fn the_jump_comes_from_the_uri() {
        let j = jump("qemu+ssh://root@lab.example:2222/system?keyfile=/k/id").unwrap();
        assert_eq!(j.destination(), "root@lab.example:2222");
        assert_eq!(j.key_file, Some(PathBuf::from("/k/id")));
        // libvirtd's TLS port is not sshd's.
        let j = jump("qemu+tls://lab:16514/system").unwrap();
        assert_eq!((j.destination(), j.port), ("lab".to_owned(), None));
        assert_eq!(jump("qemu+ssh://[fd00::1]/system").unwrap().destination(), "[fd00::1]");
    }

    #[test]
    fn names_ssh_would_read_as_options_are_refused() {
        for uri in ["qemu+ssh://-oProxyCommand=x/system", "qemu+ssh://-x@lab/system"] {
            let err = Jump::for_uri(uri, "/p".into()).unwrap_err();
            assert!(matches!(err, JumpError::BadUri { .. }), "{uri}: {err:?}");
        }
    }

    #[test]
    fn the_pin_options_trust_only_the_profiles_file() {
        let j = Jump::for_uri("qemu+ssh://lab/system", "/my dir/kh".into()).unwrap().unwrap();
        let args: Vec<String> =
            j.pin_options().iter().map(|a| a.to_string_lossy().into_owned()).collect();
        for want in [
            "UserKnownHostsFile=\"/my dir/kh\"",
            "GlobalKnownHostsFile=/dev/null",
            "StrictHostKeyChecking=yes",
            "BatchMode=yes",
        ] {
            assert!(args.iter().any(|a| a == want), "{want} missing from {args:?}");
        }
    }

    #[test]
    fn a_host_missing_from_known_hosts_is_refused_not_learnt() {
        // Real ssh -G and ssh-keygen -F on the user's files, read only; no connection.
        let dir = tempfile::tempdir().unwrap();
        let pinned = dir.path().join("libvirt_known_hosts");
        let uri = "qemu+ssh://root@kubelab-unknown-host.invalid:2222/system";
        let err = Jump::for_uri(uri, pinned.clone()).unwrap().unwrap().pin().unwrap_err();
        let JumpError::Unknown { host, .. } = &err else { panic!("{err:?}") };
        assert_eq!(host, "[kubelab-unknown-host.invalid]:2222");
        assert!(!pinned.exists());
    }

    #[test]
    fn keys_are_read_from_ssh_keygen_output() {
        let out = "# Host lab found: line 3\n|1|c2FsdA==|aGFzaA== ssh-ed25519 AAAAC3Nz\n\
                   @cert-authority lab ssh-ed25519 AAAAca\nlab ssh-rsa AAAA$(x)\n";
        assert_eq!(host_keys(out), ["ssh-ed25519 AAAAC3Nz"]);
    }

    #[test]
    fn sshs_complaints_are_sorted() {
        let p = Path::new("/p");
        let changed = "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\n\
                       Host key verification failed.";
        assert!(matches!(classify("lab", p, changed.into()), JumpError::KeyChanged { .. }));
        let refused = "ssh: connect to host lab port 22: Connection refused";
        assert!(matches!(classify("lab", p, refused.into()), JumpError::Unreachable { .. }));
    }
}
