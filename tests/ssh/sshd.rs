//! The test harness: a private `sshd` on a free 127.0.0.1 port, its keys made by
//! `kubelab::keys`, stopped with everything it started when dropped.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kubelab::keys::{self, KeyPair};
use kubelab::ssh::{self, Connection, Target};

/// Bound on each step of the harness and of the connections it makes.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A private sshd; dropping it kills it and every process it started.
pub struct Sshd {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its config, keys and log, and the tests' files.
    pub dir: tempfile::TempDir,
    /// Its host key.
    pub host_key: KeyPair,
    /// The key it accepts for root.
    pub user_key: KeyPair,
}

impl Sshd {
    /// An sshd that accepts the user key.
    pub fn start() -> Self {
        let sshd = Self::start_unauthorized();
        sshd.authorize_user_key();
        sshd
    }

    /// An sshd whose authorized_keys file is empty, like a node before cloud-init ran.
    pub fn start_unauthorized() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let host_key = keys::host_key(dir.path(), "node").unwrap();
        let user_key = keys::user_key(dir.path()).unwrap();
        fs::write(dir.path().join("authorized_keys"), "").unwrap();
        let addr = free_addr();
        let config = format!(
            "ListenAddress {addr}\nHostKey {host}\nAuthorizedKeysFile {dir}/authorized_keys\n\
             PidFile {dir}/sshd.pid\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             Subsystem sftp internal-sftp\n",
            host = host_key.path().display(),
            dir = dir.path().display(),
        );
        let config_path = dir.path().join("sshd_config");
        fs::write(&config_path, config).unwrap();
        let log = fs::File::create(dir.path().join("sshd.log")).unwrap();
        // In its own mount namespace, with the /run/sshd that privilege separation needs.
        let child =
            Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/util/private-mounts.sh"))
                .arg(dir.path())
                .arg("/usr/sbin/sshd")
                .arg("-f")
                .arg(&config_path)
                .args(["-D", "-e"])
                .stdin(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start /usr/sbin/sshd (package openssh-server)");
        let sshd = Self { child, addr, dir, host_key, user_key };
        sshd.wait_listening();
        sshd
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + TIMEOUT;
        while TcpStream::connect(self.addr).is_err() {
            assert!(Instant::now() < deadline, "sshd did not listen: {}", self.log());
            std::thread::yield_now();
        }
    }

    pub fn authorize_user_key(&self) {
        let line = self.user_key.public_openssh().unwrap() + "\n";
        fs::write(self.dir.path().join("authorized_keys"), line).unwrap();
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    pub fn target(&self) -> Target {
        target(self.addr, &self.host_key)
    }

    pub fn connect(&self) -> Connection {
        ssh::connect(&self.target(), &self.user_key, TIMEOUT)
            .unwrap_or_else(|e| panic!("{}\nsshd log:\n{}", chain(&e), self.log()))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Every process below the listening sshd (per-connection sshds, shells, commands).
    pub fn descendants(&self) -> Vec<(u32, String)> {
        let mut procs = Vec::new();
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else { continue };
            // "pid (comm) state ppid ...": comm may hold spaces, so split after its ')'.
            let Some((head, rest)) = stat.rsplit_once(')') else { continue };
            let comm = head.split_once('(').map_or("", |(_, c)| c).to_owned();
            let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
            procs.push((pid, ppid.unwrap_or(0), comm));
        }
        let mut found = vec![];
        let mut parents = vec![self.child.id()];
        while let Some(parent) = parents.pop() {
            for (pid, ppid, comm) in &procs {
                if *ppid == parent {
                    found.push((*pid, comm.clone()));
                    parents.push(*pid);
                }
            }
        }
        found
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        for (pid, _) in self.descendants() {
            kill(pid);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn kill(pid: u32) {
    signal(pid, "-KILL");
}

pub fn signal(pid: u32, signal: &str) {
    // A process may already be gone (killed with its parent): that is fine.
    let _ = Command::new("kill").args([signal, &pid.to_string()]).stderr(Stdio::null()).status();
}

/// A 127.0.0.1 address nothing listens on (the kernel picked the port just now).
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

pub fn target(addr: SocketAddr, host_key: &KeyPair) -> Target {
    Target {
        node: "node".into(),
        addr,
        user: "root".into(),
        host_key: host_key.public_key().clone(),
        jump: None,
    }
}

pub fn chain(err: &dyn std::error::Error) -> String {
    kubelab::error::chain(err)
}
