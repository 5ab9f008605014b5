//! `kubelab ssh` and `kubelab logs`: reach a node with the user's own `ssh`, trusting
//! only the host key kubelab generated, and collect a node's boot logs.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::Error;
use crate::cluster::{ClusterState, SSH_USER};
use crate::driver::{Driver, VmState};
use crate::ops::lifecycle::{open_driver, state_name};
use crate::ops::provision;
use crate::profile::Profile;
use crate::ssh::{self, Output};
use crate::{fsutil, keys};

/// The `ssh` argv that logs in to `node` (the control plane by default) and runs
/// `command` there, if any. It may create the profile's keys and rewrites its
/// known_hosts, so it holds the profile's lock while it does (a key pair generated
/// next to `up` generating it too would be broken for good); the lock is released
/// before `ssh` runs. A node whose VM is not running fails at once instead of leaving
/// `ssh` to hang on a dead address.
pub fn ssh_target(
    profile: &Profile,
    node: Option<&str>,
    command: &[String],
    wait_lock: bool,
) -> Result<Vec<OsString>, Error> {
    let _lock = profile.lock_existing(wait_lock)?;
    let state: ClusterState = profile.load_state()?;
    let node = state.node(node)?;
    let driver = open_driver(&state)?;
    check_running(&*driver, &node.name)?;
    let known_hosts = provision::write_known_hosts(&*driver, profile, &state)?;
    let user_key = keys::user_key(profile.dir())?;
    let addr = driver.ssh_address(&node.name, node.ip)?;
    let mut argv = keys::ssh_command_line(
        user_key.path(),
        &known_hosts,
        SSH_USER,
        &addr.ip().to_string(),
        addr.port(),
    );
    if let Some(jump) = super::remote::node_jump(profile, node)? {
        // The user's own ssh hops through the libvirt host like kubelab does.
        let config = profile.dir().join(SSH_CONFIG);
        fsutil::write_atomic(&config, jump.ssh_config().as_bytes())
            .map_err(|source| crate::ssh::JumpError::Io { path: config.clone(), source })?;
        let hop: [OsString; 4] =
            ["-F".into(), config.into(), "-J".into(), jump.destination().into()];
        argv.splice(1..1, hop);
    }
    if !command.is_empty() {
        argv.push("--".into());
        argv.extend(command.iter().map(OsString::from));
    }
    Ok(argv)
}

/// The profile's ssh_config for `kubelab ssh` through a remote libvirt host.
const SSH_CONFIG: &str = "ssh_config";

/// A node's logs: the serial console (always available, also when SSH is not) and,
/// when the node answers SSH, cloud-init's output.
#[derive(Debug)]
pub struct Logs {
    /// The console log's path: the profile's file, or on a remote hypervisor's host.
    pub console_path: PathBuf,
    /// Its text (lossily decoded).
    pub console: String,
    /// `/var/log/cloud-init-output.log`, or why it could not be read.
    pub cloud_init: Result<String, String>,
}

/// How much of a node's console log `logs` prints.
const CONSOLE_MAX_BYTES: u64 = 1 << 20;

/// Fails at once, naming the state, unless `node`'s VM is running.
fn check_running(driver: &dyn Driver, node: &str) -> Result<(), Error> {
    match driver.state(node)? {
        VmState::Running => Ok(()),
        other => Err(Error::NotRunning { node: node.to_owned(), state: state_name(other) }),
    }
}

/// `kubelab logs [NODE]`. The keys it may create are made under the profile's lock
/// (see [`ssh_target`]), released before it connects.
pub fn logs(profile: &Profile, node: Option<&str>, wait_lock: bool) -> Result<Logs, Error> {
    let lock = profile.lock_existing(wait_lock)?;
    let state: ClusterState = profile.load_state()?;
    let node = state.node(node)?;
    let driver = open_driver(&state);
    // The log grows with every boot (libvirt appends): its last MiB is plenty.
    let (console_path, console) =
        provision::console_tail(driver.as_deref().ok(), profile, node, CONSOLE_MAX_BYTES)?;
    let console = console.unwrap_or_else(|| "(no console log)".to_owned());
    let reach = (|| -> Result<_, Error> {
        let driver = driver?;
        check_running(&*driver, &node.name)?;
        Ok((provision::ssh_target(&*driver, profile, node)?, keys::user_key(profile.dir())?))
    })();
    drop(lock);
    let cloud_init = (|| -> Result<String, Error> {
        let (target, user_key) = reach?;
        let conn = ssh::connect(&target, &user_key, Duration::from_secs(10))?;
        let mut text = Vec::new();
        let mut sink = std::io::sink();
        let mut on_line = |_, line: &str| {
            text.extend_from_slice(line.as_bytes());
            text.push(b'\n');
        };
        conn.run(
            "sudo cat /var/log/cloud-init-output.log",
            &mut Output { log: &mut sink, on_line: &mut on_line },
        )?;
        Ok(String::from_utf8_lossy(&text).into_owned())
    })()
    .map_err(|e| crate::error::chain(&e));
    Ok(Logs { console_path, console, cloud_init })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::mem::MemDriver;
    use crate::ops::fixture::Lab;

    /// The console log is the profile's file, unless the hypervisor keeps it (a remote
    /// libvirt): then its copy, and its path there.
    #[test]
    fn logs_read_the_hypervisors_console_log_when_it_keeps_one() {
        let (lab, hv) = (Lab::new(), MemDriver::new());
        lab.created(&hv, "lab", 1);
        let profile = lab.profile("lab");
        let _installed = hv.install();
        let file = provision::node_dir(&profile, "lab").join("console.log");
        std::fs::write(&file, "local boot\n").unwrap();
        let local = logs(&profile, None, false).unwrap();
        assert_eq!((local.console_path, local.console.as_str()), (file, "local boot\n"));
        assert!(local.cloud_init.is_err(), "its VM is stopped");

        hv.keep_console("lab", "first boot\nremote boot\n");
        let remote = logs(&profile, None, false).unwrap();
        assert_eq!(remote.console_path, PathBuf::from("/pool/lab.console.log"));
        assert_eq!(remote.console, "first boot\nremote boot\n");
        let node = &profile.load_state::<ClusterState>().unwrap().nodes[0];
        let (_, tail) = provision::console_tail(Some(&hv), &profile, node, 14).unwrap();
        assert_eq!(tail.as_deref(), Some("remote boot\n"), "the cut line is dropped");
    }
}
