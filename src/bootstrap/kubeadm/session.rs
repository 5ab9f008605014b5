//! One node's SSH session as the kubeadm steps use it: run an embedded script as root
//! (every line to the profile's log, the last one to the node's progress line), stage
//! files for the scripts, and read a command's output without logging it (admin.conf
//! holds the cluster's admin key).

use std::path::Path;

use crate::bootstrap::log::LogFile;
use crate::bootstrap::{BootstrapError, Cluster, Node};
use std::time::Duration;

use crate::ssh::{self, Connection, Output, SshError, Stream};

/// Where files for the scripts are staged on a node: made by the SSH user, mode 0700.
pub const STAGE: &str = "/tmp/kubelab";
/// Bound on connecting to a node that answered SSH already.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may send nothing, keepalive replies included, before it counts as lost.
const SILENCE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest progress line taken from a script's output.
const PROGRESS_CHARS: usize = 60;

/// A script embedded in the binary.
pub struct Script {
    /// Its file name under `scripts/node/`, which labels it in the log.
    pub name: &'static str,
    /// Its text.
    pub body: &'static str,
}

impl Script {
    /// The script `name` with text `body`.
    pub const fn new(name: &'static str, body: &'static str) -> Self {
        Self { name, body }
    }
}

/// An open session to one node.
pub struct Session<'a> {
    node: &'a Node,
    connection: Connection,
    log: &'a LogFile,
    cluster: &'a Cluster<'a>,
}

impl<'a> Session<'a> {
    /// Connects to `node`.
    pub fn open(
        cluster: &'a Cluster<'a>,
        log: &'a LogFile,
        node: &'a Node,
    ) -> Result<Self, BootstrapError> {
        let mut connection = ssh::connect(&node.ssh, cluster.user_key, CONNECT_TIMEOUT)
            .map_err(|e| step_error(log, node, "connect", e))?;
        // Keepalives tell a silent script (kubeadm waiting for the kubelet) from a dead node.
        connection.set_timeout(SILENCE_TIMEOUT);
        Ok(Self { node, connection, log, cluster })
    }

    /// Runs `script` as root with `args`; `step` names it in progress and errors.
    pub fn script(
        &self,
        step: &'static str,
        script: &Script,
        args: &[&str],
    ) -> Result<(), BootstrapError> {
        let (progress, name) = (self.cluster.progress, &self.node.name);
        progress.node_phase(name, &format!("kubeadm: {step}"));
        let mut log = self.log.writer();
        let mut on_line = |_: Stream, line: &str| {
            let short: String = line.chars().take(PROGRESS_CHARS).collect();
            progress.node_phase(name, &format!("{step}: {short}"));
        };
        let mut output = Output { log: &mut log, on_line: &mut on_line };
        self.connection
            .run_script(script.name, script.body, args, true, &mut output)
            .map_err(|e| step_error(self.log, self.node, step, e))
    }

    /// Copies each `(local file, name)` to `STAGE/name` (mode 0600).
    pub fn stage(&self, files: &[(&Path, &str)]) -> Result<(), BootstrapError> {
        let mut log = self.log.writer();
        let mut output = Output { log: &mut log, on_line: &mut |_, _| {} };
        let fail = |e| step_error(self.log, self.node, "stage", e);
        self.connection.run(&format!("install -d -m 0700 {STAGE}"), &mut output).map_err(fail)?;
        for (local, name) in files {
            self.connection.upload(local, &format!("{STAGE}/{name}"), 0o600).map_err(fail)?;
        }
        Ok(())
    }

    /// The stdout of `command`, which is not logged (it may print secrets).
    pub fn capture(&self, step: &'static str, command: &str) -> Result<String, BootstrapError> {
        let mut text = String::new();
        let mut sink = std::io::sink();
        let mut on_line = |stream: Stream, line: &str| {
            if stream == Stream::Stdout {
                text.push_str(line);
                text.push('\n');
            }
        };
        let mut output = Output { log: &mut sink, on_line: &mut on_line };
        self.connection
            .run(command, &mut output)
            .map_err(|e| step_error(self.log, self.node, step, e))?;
        Ok(text)
    }

    /// The node.
    pub fn node(&self) -> &Node {
        self.node
    }

    /// The profile's log.
    pub fn log(&self) -> &LogFile {
        self.log
    }
}

fn step_error(log: &LogFile, node: &Node, step: &'static str, source: SshError) -> BootstrapError {
    BootstrapError::Step {
        node: node.name.clone(),
        step,
        log: log.path().to_owned(),
        source: Box::new(source),
    }
}
