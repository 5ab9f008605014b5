//! The `kubeadm` bootstrapper: the numbered, idempotent scripts under `scripts/node/`,
//! embedded in the binary and run over SSH as root, their output in the profile's log.
//!
//! Every node runs `00-prereqs.sh` at once (not when it boots a baked image, see
//! `bake`). The control plane then gets kubelab's CA and
//! a generated config and runs `10-init.sh` (`kubeadm init`, or, on a control plane that
//! kubelab's marker says is initialized, only the creation of this run's join token) and
//! `20-cni.sh`; each worker, as soon as that init step is done and the host sees the API
//! server answer, runs `30-join.sh` (`kubeadm join` with the token and CA hash the host
//! made for this run): the joins run in parallel. Then the host waits until every node is
//! Ready and kube-system's pods run.

mod bake;
mod config;
mod session;
mod wait;

pub use self::bake::{Contents, bake_node};
pub use self::config::choose_subnets;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use self::config::{InitParams, JoinParams};
use self::session::{Script, Session};
use self::wait::InitGate;
use super::log::LogFile;
use super::pki::{self, Secrets};
use super::{BootstrapError, Bootstrapper, BootstrapperKind, Cluster, Node, Outcome};
use crate::fsutil;
use crate::ops::provision::Timing;

/// Swap off, kernel modules, sysctls, containerd, kubeadm/kubelet/kubectl.
const PREREQS: Script =
    Script::new("00-prereqs.sh", include_str!("../../../scripts/node/00-prereqs.sh"));
/// Installs the CA and runs `kubeadm init`.
const INIT: Script = Script::new("10-init.sh", include_str!("../../../scripts/node/10-init.sh"));
/// Applies the CNI manifest.
const CNI: Script = Script::new("20-cni.sh", include_str!("../../../scripts/node/20-cni.sh"));
/// Creates a bootstrap token on the control plane (`node add`).
const TOKEN: Script = Script::new("25-token.sh", include_str!("../../../scripts/node/25-token.sh"));
/// Runs `kubeadm join`.
const JOIN: Script = Script::new("30-join.sh", include_str!("../../../scripts/node/30-join.sh"));
/// Drains a node and deletes it from the cluster (`node delete`).
const LEAVE: Script = Script::new("40-leave.sh", include_str!("../../../scripts/node/40-leave.sh"));
/// The CNI: flannel (see the manifest's header for why), its pod network and interface
/// filled in by [`cni_manifest`].
const FLANNEL: &str = include_str!("../../../scripts/node/cni/flannel.yaml");
/// Where kubeadm's images come from (its default `imageRepository`).
const KUBEADM_REGISTRY: &str = "registry.k8s.io";

/// The container images the CNI's manifest runs, in its order, each once.
fn cni_images() -> Vec<&'static str> {
    let mut images: Vec<&str> = FLANNEL
        .lines()
        .filter_map(|line| line.trim().strip_prefix("image:"))
        .map(str::trim)
        .collect();
    let mut seen = std::collections::HashSet::new();
    images.retain(|image| seen.insert(*image));
    images
}

/// How long the workers wait for the API server, and `node delete` for a drain.
const API_TIMEOUT: Duration = Duration::from_secs(900);
/// `kubectl drain --timeout`: after it, `node delete` deletes the node undrained.
const DRAIN_TIMEOUT: &str = "60s";

/// `--bootstrapper kubeadm`.
pub struct Kubeadm;

impl Bootstrapper for Kubeadm {
    fn kind(&self) -> BootstrapperKind {
        BootstrapperKind::Kubeadm
    }

    fn prepare(&self, profile_dir: &Path) -> Result<(), BootstrapError> {
        pki::ensure(profile_dir).map(drop)
    }

    fn bootstrap(
        &self,
        cluster: &Cluster<'_>,
        wait: Option<Duration>,
    ) -> Result<Outcome, BootstrapError> {
        let secrets = pki::ensure(cluster.dir)?;
        let log = LogFile::open(cluster.dir)?;
        let (cp, workers) = cluster
            .nodes
            .split_first()
            .ok_or_else(|| BootstrapError::NoControlPlane { profile: cluster.name.to_owned() })?;
        // This run's join token: a saved one may have expired (24 h) before a worker's
        // first join on a later `up`.
        let token = pki::new_token();
        let staged = Staged::write(cluster, &secrets, cp, &token)?;
        let timings = Mutex::new(Vec::new());
        let gate = InitGate::default();
        let (admin_conf, joined) = std::thread::scope(|scope| {
            let (log, staged, timings, gate, token) = (&log, &staged, &timings, &gate, &token);
            let control_plane = scope.spawn(move || {
                let result = init(cluster, log, staged, cp, token, timings, gate);
                if result.is_err() {
                    gate.failed();
                }
                result
            });
            let joins: Vec<_> = workers
                .iter()
                .map(|node| {
                    scope.spawn(move || join(cluster, log, staged, node, token, timings, gate))
                })
                .collect();
            let panicked = |node: &Node| BootstrapError::Panicked { node: node.name.clone() };
            let admin = control_plane.join().unwrap_or_else(|_| Err(panicked(cp)));
            let joined: Vec<_> = joins
                .into_iter()
                .zip(workers)
                .map(|(h, node)| h.join().unwrap_or_else(|_| Err(panicked(node))))
                .collect();
            (admin, joined)
        });
        let admin_conf = admin_conf?;
        joined.into_iter().collect::<Result<Vec<()>, _>>()?;
        let mut timings = timings.into_inner().unwrap_or_default();
        if let Some(timeout) = wait {
            let start = Instant::now();
            let session = Session::open(cluster, &log, cp)?;
            let names: Vec<&str> = cluster.nodes.iter().map(|n| n.name.as_str()).collect();
            wait::ready(&session, &names, timeout)?;
            timings.push(timing(cp, "ready", start));
        }
        Ok(Outcome { admin_conf: Some(admin_conf), timings })
    }

    fn wait_ready(&self, cluster: &Cluster<'_>, timeout: Duration) -> Result<(), BootstrapError> {
        let log = LogFile::open(cluster.dir)?;
        let cp = cluster
            .nodes
            .first()
            .ok_or_else(|| BootstrapError::NoControlPlane { profile: cluster.name.to_owned() })?;
        let session = Session::open(cluster, &log, cp)?;
        let names: Vec<&str> = cluster.nodes.iter().map(|n| n.name.as_str()).collect();
        wait::ready(&session, &names, timeout)
    }

    fn add_node(
        &self,
        cluster: &Cluster<'_>,
        node: &str,
        wait: Option<Duration>,
    ) -> Result<Vec<Timing>, BootstrapError> {
        let node = cluster
            .nodes
            .iter()
            .find(|n| n.name == node)
            .ok_or_else(|| BootstrapError::NoSuchNode { node: node.to_owned() })?;
        let secrets = pki::ensure(cluster.dir)?;
        let log = LogFile::open(cluster.dir)?;
        let cp = cluster
            .nodes
            .first()
            .ok_or_else(|| BootstrapError::NoControlPlane { profile: cluster.name.to_owned() })?;
        // A fresh token: the one of `kubeadm init` may have expired (24 h).
        let token = pki::new_token();
        let staged = Staged::write(cluster, &secrets, cp, &token)?;
        let timings = Mutex::new(Vec::new());
        Session::open(cluster, &log, cp)?.script("token", &TOKEN, &[&token])?;
        join(cluster, &log, &staged, node, &token, &timings, &InitGate::open())?;
        let mut timings = timings.into_inner().unwrap_or_default();
        if let Some(timeout) = wait {
            let start = Instant::now();
            wait::ready(&Session::open(cluster, &log, cp)?, &[&node.name], timeout)?;
            timings.push(timing(node, "ready", start));
        }
        Ok(timings)
    }

    fn remove_node(&self, cluster: &Cluster<'_>, node: &str) -> Result<(), BootstrapError> {
        let log = LogFile::open(cluster.dir)?;
        let cp = cluster
            .nodes
            .first()
            .ok_or_else(|| BootstrapError::NoControlPlane { profile: cluster.name.to_owned() })?;
        Session::open(cluster, &log, cp)?.script("drain", &LEAVE, &[node, DRAIN_TIMEOUT])
    }
}

/// The files the scripts need, written under `<profile dir>/bootstrap/` (mode 0600) to be
/// uploaded: the control plane's kubeadm config and the CNI manifest.
struct Staged {
    dir: PathBuf,
    init_config: PathBuf,
    cni: PathBuf,
    ca_cert: PathBuf,
    ca_key: PathBuf,
    ca_cert_hash: String,
    ca_cert_pem: String,
}

impl Staged {
    fn write(
        cluster: &Cluster<'_>,
        secrets: &Secrets,
        cp: &Node,
        token: &str,
    ) -> Result<Self, BootstrapError> {
        let (pods, services) = match cluster.subnets {
            Some(chosen) => chosen,
            // A profile from before kubelab saved them.
            None => config::choose_subnets(cluster.networks).ok_or_else(|| {
                let taken = cluster.networks.iter().map(ToString::to_string).collect::<Vec<_>>();
                BootstrapError::NoSubnet { taken: taken.join(", ") }
            })?,
        };
        let dir = cluster.dir.join("bootstrap");
        fsutil::create_private_dir(cluster.dir, &dir)
            .map_err(|source| BootstrapError::WriteSecret { path: dir.clone(), source })?;
        let ignored = config::ignored_preflight(cluster.cpus, cluster.memory_mib);
        let init = config::init_config(&InitParams {
            cluster_name: cluster.name,
            node_name: &cp.name,
            ip: cp.ip,
            kubernetes_version: cluster.kubernetes_version,
            token,
            pod_subnet: pods,
            service_subnet: services,
            ignore_preflight: &ignored,
            // With no worker, the control plane must take the user's pods.
            schedulable: cluster.nodes.len() == 1,
        });
        let pki = pki::dir(cluster.dir);
        let staged = Self {
            init_config: write(&dir, "kubeadm-init.yaml", &init)?,
            cni: write(&dir, "cni.yaml", &cni_manifest(&pods.to_string(), cp.ip))?,
            ca_cert: pki.join("ca.crt"),
            ca_key: pki.join("ca.key"),
            ca_cert_hash: secrets.ca_cert_hash.clone(),
            ca_cert_pem: secrets.ca_cert_pem.clone(),
            dir,
        };
        Ok(staged)
    }

    /// Writes the join config of `node` with `token`.
    fn join_config(
        &self,
        cluster: &Cluster<'_>,
        node: &Node,
        token: &str,
    ) -> Result<PathBuf, BootstrapError> {
        let cp = cluster.nodes.first().map_or(node.ip, |cp| cp.ip);
        let text = config::join_config(&JoinParams {
            node_name: &node.name,
            ip: node.ip,
            control_plane_ip: cp,
            token,
            ca_cert_hash: &self.ca_cert_hash,
        });
        write(&self.dir, &format!("kubeadm-join-{}.yaml", node.name), &text)
    }
}

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf, BootstrapError> {
    let path = dir.join(name);
    fsutil::write_atomic(&path, text.as_bytes())
        .map_err(|source| BootstrapError::WriteSecret { path: path.clone(), source })?;
    Ok(path)
}

/// The flannel manifest with the cluster's pod network; flannel carries pod traffic on
/// the NIC that reaches the control plane's host-only address (whatever the guest named
/// it).
fn cni_manifest(pod_subnet: &str, control_plane_ip: std::net::Ipv4Addr) -> String {
    FLANNEL
        .replace("@POD_SUBNET@", pod_subnet)
        .replace("@CONTROL_PLANE_IP@", &control_plane_ip.to_string())
}

/// The control plane: prereqs, CA and config, `kubeadm init` (or this run's token on an
/// initialized one), then opens `gate` for the workers, CNI; returns admin.conf.
fn init(
    cluster: &Cluster<'_>,
    log: &LogFile,
    staged: &Staged,
    cp: &Node,
    token: &str,
    timings: &Mutex<Vec<Timing>>,
    gate: &InitGate,
) -> Result<String, BootstrapError> {
    let session = Session::open(cluster, log, cp)?;
    prereqs(cluster, &session, timings)?;
    let start = Instant::now();
    session.stage(&[
        (&staged.ca_cert, "ca.crt"),
        (&staged.ca_key, "ca.key"),
        (&staged.init_config, "kubeadm-init.yaml"),
        (&staged.cni, "cni.yaml"),
    ])?;
    session.script("init", &INIT, &[session::STAGE, token])?;
    gate.done();
    session.script("cni", &CNI, &[session::STAGE])?;
    let admin_conf = session.capture("admin.conf", "sudo cat /etc/kubernetes/admin.conf")?;
    record(timings, timing(cp, "init", start));
    Ok(admin_conf)
}

/// A worker: prereqs, then `kubeadm join` once the control plane's init step is done and
/// the API server answers.
fn join(
    cluster: &Cluster<'_>,
    log: &LogFile,
    staged: &Staged,
    node: &Node,
    token: &str,
    timings: &Mutex<Vec<Timing>>,
    gate: &InitGate,
) -> Result<(), BootstrapError> {
    let session = Session::open(cluster, log, node)?;
    prereqs(cluster, &session, timings)?;
    let join_config = staged.join_config(cluster, node, token)?;
    session.stage(&[(&join_config, "kubeadm-join.yaml")])?;
    let cp = cluster.nodes.first().unwrap_or(node);
    cluster.progress.node_phase(&node.name, "waiting for the API server");
    let jump = cp.ssh.jump.as_ref();
    wait::api(&staged.ca_cert_pem, cp.ip, jump, API_TIMEOUT, gate).map_err(|e| match e {
        BootstrapError::ControlPlaneFailed { .. } => {
            BootstrapError::ControlPlaneFailed { node: node.name.clone() }
        }
        other => other,
    })?;
    let start = Instant::now();
    session.script("join", &JOIN, &[session::STAGE])?;
    record(timings, timing(node, "join", start));
    Ok(())
}

/// Runs `00-prereqs.sh` on the session's node, unless its image was baked with them.
fn prereqs(
    cluster: &Cluster<'_>,
    session: &Session<'_>,
    timings: &Mutex<Vec<Timing>>,
) -> Result<(), BootstrapError> {
    if cluster.prepared {
        session.log().line(&session.node().name, "prereqs: in the baked image, not run")?;
        return Ok(());
    }
    let start = Instant::now();
    run_prereqs(cluster, session)?;
    record(timings, timing(session.node(), "prereqs", start));
    Ok(())
}

/// `00-prereqs.sh VERSION REPO [MIRROR REGISTRY...]`, the mirror for every registry the
/// cluster's images come from.
fn run_prereqs(cluster: &Cluster<'_>, session: &Session<'_>) -> Result<(), BootstrapError> {
    let mut args = vec![cluster.kubernetes_version, cluster.kubernetes_repo];
    if let Some(mirror) = cluster.registry_mirror {
        args.push(mirror);
        args.extend(registries());
    }
    session.script("prereqs", &PREREQS, &args)
}

/// The registries of kubeadm's images and the CNI's.
fn registries() -> Vec<&'static str> {
    let mut found = vec![KUBEADM_REGISTRY];
    for image in cni_images() {
        let registry = image.split_once('/').map_or(image, |(registry, _)| registry);
        if !found.contains(&registry) {
            found.push(registry);
        }
    }
    found
}

fn timing(node: &Node, phase: &'static str, start: Instant) -> Timing {
    Timing { node: node.name.clone(), phase, secs: start.elapsed().as_secs_f64() }
}

fn record(timings: &Mutex<Vec<Timing>>, timing: Timing) {
    if let Ok(mut t) = timings.lock() {
        t.push(timing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_manifest_uses_the_pod_subnet_and_host_only_nic() {
        let manifest = cni_manifest("10.245.0.0/16", std::net::Ipv4Addr::new(192, 168, 39, 10));
        assert!(!manifest.contains('@'), "a placeholder is left");
        assert!(manifest.contains("\"Network\": \"10.245.0.0/16\""));
        assert!(manifest.contains("--iface-can-reach=192.168.39.10"));
        assert!(!manifest.contains("--iface="));
        for doc in manifest.split("\n---\n") {
            let value: serde_json::Value = serde_saphyr::from_str(doc).unwrap();
            assert!(value["kind"].is_string(), "{doc}");
        }
    }

    #[test]
    fn cni_images_come_from_the_manifest_once_each() {
        assert_eq!(registries(), ["registry.k8s.io", "ghcr.io"]);
        assert_eq!(
            cni_images(),
            [
                "ghcr.io/flannel-io/flannel-cni-plugin:v1.6.2-flannel1",
                "ghcr.io/flannel-io/flannel:v0.26.7"
            ]
        );
    }

    #[test]
    fn scripts_are_strict_and_numbered() {
        for script in [&PREREQS, &INIT, &CNI, &TOKEN, &JOIN, &LEAVE] {
            assert!(script.body.starts_with("#!/usr/bin/env bash\n"), "{}", script.name);
            assert!(script.body.contains("set -euo pipefail"), "{}", script.name);
            assert!(script.name.as_bytes()[..2].iter().all(u8::is_ascii_digit));
        }
    }
}
