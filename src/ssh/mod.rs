//! SSH to nodes with the host key pinned: connect (every step bounded by a deadline),
//! check the node's host key against the one kubelab generated *before* authenticating,
//! log in with the profile's user key, and wait until a booting node gets that far.
//! Running commands lives in `exec`, copying files in `transfer`.
//!
//! libssh2 has no connect timeout and blocks without one by default, so the TCP
//! connection is made with `TcpStream::connect_timeout` and the session always has a
//! timeout; a command's output is pumped without blocking (see `exec`).

mod exec;
pub mod jump;
mod transfer;
pub mod tunnel;

use std::fmt;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::ops::ControlFlow;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ssh_key::PublicKey;
use ssh2::{MethodType, Session};

pub use exec::{ExitStatus, Output, Stream};
pub use jump::{Jump, JumpError};
pub use tunnel::Tunnel;

use crate::keys::{self, KeyPair};

/// Pause after a refused or unreachable connect while waiting: such an attempt costs
/// the booting guest nothing, and polling often keeps the lag between sshd starting and
/// kubelab noticing short (it adds to every `up`).
const PORT_POLL: Duration = Duration::from_millis(250);
/// Backoff after an attempt that reached sshd (which costs the guest a key exchange):
/// starts at `PORT_POLL`, doubles up to this.
const MAX_RETRY: Duration = Duration::from_secs(1);
/// The longest single attempt while waiting (so a stuck attempt cannot eat the
/// deadline), and the timeout of the connection it returns.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest attempt worth making: a shorter one would fail for lack of time and
/// misreport how far the node got.
const MIN_ATTEMPT: Duration = Duration::from_millis(200);

/// Errors talking SSH to a node, named after the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The TCP connection failed (refused, unreachable or timed out).
    #[error("cannot connect to {node} at {addr}")]
    Connect {
        /// The node.
        node: String,
        /// The address tried.
        addr: SocketAddr,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The SSH handshake failed (no banner yet, no common algorithm, connection closed).
    #[error("ssh handshake with {node} at {addr} failed")]
    Handshake {
        /// The node.
        node: String,
        /// The address tried.
        addr: SocketAddr,
        /// The libssh2 error.
        #[source]
        source: ssh2::Error,
    },
    /// The node presented another host key than the one kubelab generated for it.
    #[error(
        "host key of {node} at {addr} does not match: expected {expected_fingerprint}, \
         got {actual_fingerprint}"
    )]
    HostKeyMismatch {
        /// The node.
        node: String,
        /// The address tried.
        addr: SocketAddr,
        /// Fingerprint of the key kubelab generated.
        expected_fingerprint: String,
        /// Fingerprint of the key the node presented.
        actual_fingerprint: String,
    },
    /// The node refused the profile's user key.
    #[error("{node} at {addr} refused the login of {user:?} with the profile's key")]
    Auth {
        /// The node.
        node: String,
        /// The address tried.
        addr: SocketAddr,
        /// The user name.
        user: String,
        /// The libssh2 error.
        #[source]
        source: ssh2::Error,
    },
    /// Starting a command failed.
    #[error("running {command:?} on {node} failed")]
    Exec {
        /// The node.
        node: String,
        /// The command, or the script's name.
        command: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The connection broke, or the node fell silent, while a command ran.
    #[error("lost the connection to {node} while running {command:?}")]
    ConnectionLost {
        /// The node.
        node: String,
        /// The command, or the script's name.
        command: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The command ran and failed.
    #[error("{command:?} on {node} failed with {status}; last lines of stderr:\n{stderr_tail}")]
    CommandFailed {
        /// The node.
        node: String,
        /// The command, or the script's name.
        command: String,
        /// How it ended.
        status: ExitStatus,
        /// The last lines the command wrote to stderr.
        stderr_tail: String,
    },
    /// Writing a command's output to the log failed.
    #[error("cannot write the output of {command:?} on {node} to the log")]
    WriteLog {
        /// The node.
        node: String,
        /// The command, or the script's name.
        command: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Copying a file to the node failed.
    #[error("cannot upload {} to {node}:{remote}", local.display())]
    Upload {
        /// The node.
        node: String,
        /// The local file.
        local: PathBuf,
        /// The path on the node.
        remote: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Copying a file from the node failed.
    #[error("cannot download {node}:{remote} to {}", local.display())]
    Download {
        /// The node.
        node: String,
        /// The path on the node.
        remote: String,
        /// The local file.
        local: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The node did not accept a login before the deadline.
    #[error("{node} at {addr} not reachable over ssh after {waited:.0?} ({last_state})")]
    Timeout {
        /// The node.
        node: String,
        /// The address tried.
        addr: SocketAddr,
        /// How long kubelab waited.
        waited: Duration,
        /// How far the last attempt got.
        last_state: WaitState,
        /// The last attempt's error.
        #[source]
        last_error: Box<SshError>,
    },
    /// The caller stopped waiting (the VM is not running any more).
    #[error("stopped waiting for {node}'s ssh after {waited:.0?}")]
    Abandoned {
        /// The node.
        node: String,
        /// How long kubelab waited.
        waited: Duration,
    },
    /// The profile's user key cannot be encoded for libssh2.
    #[error("cannot use the profile's user key")]
    UserKey(#[source] keys::KeyError),
    /// The libvirt host the node is reached through failed as a jump.
    #[error("cannot reach {node} through its libvirt host")]
    Jump {
        /// The node.
        node: String,
        /// What went wrong with the jump.
        #[source]
        source: JumpError,
    },
}

/// How far a connection attempt to a booting node got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitState {
    /// Nothing accepted the TCP connection (refused or timed out): the VM is booting.
    PortClosed,
    /// TCP was accepted but no SSH handshake completed: sshd is not up yet (or a
    /// port forward answers for a guest that is not listening).
    BannerNotYet,
    /// The host key is right but the login was refused: cloud-init has not installed
    /// the user key yet.
    AuthNotReady,
}

impl fmt::Display for WaitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::PortClosed => "port closed",
            Self::BannerNotYet => "banner not yet",
            Self::AuthNotReady => "auth not yet ready",
        })
    }
}

/// A node to log in to: where, as whom, and the only host key to accept.
#[derive(Debug, Clone)]
pub struct Target {
    /// The node's name, for messages.
    pub node: String,
    /// Where its sshd listens (a host-only IP, or a 127.0.0.1 port forward).
    pub addr: SocketAddr,
    /// The user to log in as.
    pub user: String,
    /// The host key kubelab generated for the node.
    pub host_key: PublicKey,
    /// The libvirt host to reach `addr` through, when it is remote.
    pub jump: Option<Jump>,
}

/// An authenticated SSH session to one node.
pub struct Connection {
    session: Session,
    /// A second handle on the session's socket, to wait for it to become ready.
    socket: Socket,
    /// The `ssh -W` carrying the session through a jump host; stopped when dropped
    /// (after the session, declared above it).
    _proxy: Option<jump::Proxy>,
    node: String,
    /// Bound on every blocking step, and on silence from the node while a command runs.
    timeout: Duration,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection").field("node", &self.node).finish_non_exhaustive()
    }
}

/// Connects to `target`, verifies its host key and logs in with `user_key`. No step
/// (TCP connect, handshake, login, and later every blocking call on the connection)
/// waits longer than `timeout`.
pub fn connect(
    target: &Target,
    user_key: &KeyPair,
    timeout: Duration,
) -> Result<Connection, SshError> {
    let node = || target.node.clone();
    let addr = target.addr;
    let connect_err = |source| SshError::Connect { node: node(), addr, source };
    let (socket, proxy) = match &target.jump {
        None => {
            let tcp = TcpStream::connect_timeout(&addr, timeout).map_err(connect_err)?;
            tcp.set_nodelay(true).map_err(connect_err)?;
            (Socket::Tcp(tcp), None)
        }
        Some(jump) => {
            let (stream, proxy) =
                jump.proxy(addr).map_err(|source| SshError::Jump { node: node(), source })?;
            (Socket::Unix(stream), Some(proxy))
        }
    };
    let mut session =
        Session::new().map_err(|source| SshError::Handshake { node: node(), addr, source })?;
    session.set_timeout(millis(timeout));
    match &socket {
        Socket::Tcp(s) => session.set_tcp_stream(s.try_clone().map_err(connect_err)?),
        Socket::Unix(s) => session.set_tcp_stream(s.try_clone().map_err(connect_err)?),
    }
    // Ask only for the kind of key kubelab generated, or sshd may present another one
    // it also has (cloud images ship ECDSA keys) and look like an impostor.
    let handshake =
        session.method_pref(MethodType::HostKey, "ssh-ed25519").and_then(|()| session.handshake());
    if let Err(source) = handshake {
        // Through a jump, ssh says whether the node's port or the jump host failed.
        return Err(match proxy.map(jump::Proxy::failure) {
            Some(jump::ProxyFailure::Jump(source)) => SshError::Jump { node: node(), source },
            Some(jump::ProxyFailure::Target(why)) => connect_err(io::Error::other(why)),
            None => SshError::Handshake { node: node(), addr, source },
        });
    }
    check_host_key(&session, target)?;

    let private = user_key.private_openssh().map_err(SshError::UserKey)?;
    let public = user_key.public_openssh().map_err(SshError::UserKey)?;
    session.userauth_pubkey_memory(&target.user, Some(&public), &private, None).map_err(
        |source| SshError::Auth { node: node(), addr, user: target.user.clone(), source },
    )?;
    let mut connection = Connection { session, socket, _proxy: proxy, node: node(), timeout };
    connection.set_timeout(timeout);
    Ok(connection)
}

/// The session's socket: TCP to the node, or a socket pair to the jump's `ssh -W`.
#[derive(Debug)]
enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Socket {
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.shutdown(how),
            Self::Unix(s) => s.shutdown(how),
        }
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Tcp(s) => s.as_fd(),
            Self::Unix(s) => s.as_fd(),
        }
    }
}

impl Connection {
    /// Bounds every later blocking step, and the silence tolerated from the node while
    /// a command runs, by `timeout`. Keepalives go out every `timeout / 4` (in whole
    /// seconds, at least 1), so limits under about 3 s can cut off a healthy node.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
        self.session.set_timeout(millis(timeout));
        // Keepalives make a silent but healthy node send something; see `exec`.
        self.session.set_keepalive(true, keepalive_secs(timeout));
    }
}

/// Refuses the session unless the node's host key is exactly `target.host_key`.
fn check_host_key(session: &Session, target: &Target) -> Result<(), SshError> {
    let actual = session.host_key().map(|(blob, _)| PublicKey::from_bytes(blob));
    let actual_fingerprint = match actual {
        Some(Ok(key)) if key.key_data() == target.host_key.key_data() => return Ok(()),
        Some(Ok(key)) => keys::fingerprint(&key),
        Some(Err(_)) => "an unreadable key".to_owned(),
        None => "no key".to_owned(),
    };
    Err(SshError::HostKeyMismatch {
        node: target.node.clone(),
        addr: target.addr,
        expected_fingerprint: keys::fingerprint(&target.host_key),
        actual_fingerprint,
    })
}

/// Tries to [`connect`] until it succeeds or `timeout` has passed, every 0.25 s while the
/// port is closed, backing off to 1 s once sshd answers, and telling `progress` how far
/// each failed attempt got; `progress` stops the wait by returning `Break` (the caller
/// found the VM dead: [`SshError::Abandoned`]).
/// A wrong host key is returned at once, never retried.
pub fn wait_until_reachable(
    target: &Target,
    user_key: &KeyPair,
    timeout: Duration,
    progress: &mut dyn FnMut(WaitState, &SshError) -> ControlFlow<()>,
) -> Result<Connection, SshError> {
    let start = Instant::now();
    let mut backoff = PORT_POLL;
    loop {
        let attempt = timeout.saturating_sub(start.elapsed()).clamp(MIN_ATTEMPT, ATTEMPT_TIMEOUT);
        let error = match connect(target, user_key, attempt) {
            Ok(mut connection) => {
                connection.set_timeout(ATTEMPT_TIMEOUT);
                return Ok(connection);
            }
            Err(error) => error,
        };
        let state = match &error {
            SshError::Connect { .. } => WaitState::PortClosed,
            SshError::Handshake { .. } => WaitState::BannerNotYet,
            SshError::Auth { .. } => WaitState::AuthNotReady,
            _ => return Err(error),
        };
        if progress(state, &error).is_break() {
            return Err(SshError::Abandoned { node: target.node.clone(), waited: start.elapsed() });
        }
        let remaining = timeout.saturating_sub(start.elapsed());
        if remaining < MIN_ATTEMPT {
            return Err(SshError::Timeout {
                node: target.node.clone(),
                addr: target.addr,
                waited: start.elapsed(),
                last_state: state,
                last_error: Box::new(error),
            });
        }
        // A closed port costs nothing to retry, except through a jump host (an ssh login
        // there each time): then it backs off too.
        let cheap = state == WaitState::PortClosed && target.jump.is_none();
        let pause = if cheap { PORT_POLL } else { backoff };
        std::thread::sleep(pause.min(remaining - MIN_ATTEMPT));
        if !cheap {
            backoff = (backoff * 2).min(MAX_RETRY);
        }
    }
}

/// `timeout` in libssh2's unit, at least 1 ms (0 would mean "wait forever").
fn millis(timeout: Duration) -> u32 {
    u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX).max(1)
}

/// A keepalive every quarter of the silence limit, so a live node answers in time.
fn keepalive_secs(timeout: Duration) -> u32 {
    u32::try_from(timeout.as_secs() / 4).unwrap_or(u32::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_never_become_infinite() {
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_secs(u64::MAX)), u32::MAX);
        assert_eq!(keepalive_secs(Duration::from_millis(500)), 1);
        assert_eq!(keepalive_secs(Duration::from_secs(60)), 15);
    }

    #[test]
    fn wait_states_read_as_progress() {
        let text: Vec<_> =
            [WaitState::PortClosed, WaitState::BannerNotYet, WaitState::AuthNotReady]
                .iter()
                .map(ToString::to_string)
                .collect();
        assert_eq!(text, ["port closed", "banner not yet", "auth not yet ready"]);
    }
}
