//! Waiting for the cluster: the API server's `/readyz`, polled from the host over TLS
//! trusting only the cluster CA (the workers join once it answers and the control plane's
//! init step is done), and every node Ready with kube-system's pods running, asked of
//! `kubectl` on the control plane.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::config::API_PORT;
use super::session::Session;
use crate::bootstrap::BootstrapError;
use crate::ssh::{Jump, SshError, Tunnel};

/// Pause between two polls of the API server.
const API_POLL: Duration = Duration::from_millis(500);
/// Pause between two looks at the nodes and pods.
const READY_POLL: Duration = Duration::from_secs(2);
/// kubectl as root with kubeadm's admin kubeconfig, on the control plane.
const KUBECTL: &str = "sudo kubectl --kubeconfig /etc/kubernetes/admin.conf";

/// Where the control plane's init step is, shared with the workers' threads: a worker
/// joins only once it is done (this `up`'s join token exists from then on, also when
/// init itself was done by an earlier `up`), and gives up as soon as it failed.
#[derive(Debug)]
pub struct InitGate(AtomicU8);

impl Default for InitGate {
    fn default() -> Self {
        Self(AtomicU8::new(Self::PENDING))
    }
}

impl InitGate {
    const PENDING: u8 = 0;
    const DONE: u8 = 1;
    const FAILED: u8 = 2;

    /// A gate already open: the control plane was initialized before (`node add`).
    pub fn open() -> Self {
        Self(AtomicU8::new(Self::DONE))
    }

    /// Init is done: workers may join.
    pub fn done(&self) {
        self.0.store(Self::DONE, Ordering::SeqCst);
    }

    /// Init failed: waiting workers stop.
    pub fn failed(&self) {
        self.0.store(Self::FAILED, Ordering::SeqCst);
    }

    fn state(&self) -> u8 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Polls `https://<ip>:6443/readyz` until it answers 200, trusting only `ca_pem`, and
/// `gate` is open. Gives up early, with `ControlPlaneFailed`, once the gate failed. A
/// control plane on a remote libvirt host is polled through a tunnel over `jump`, at
/// 127.0.0.1 (which the certificate names too).
pub fn api(
    ca_pem: &str,
    ip: Ipv4Addr,
    jump: Option<&Jump>,
    timeout: Duration,
    gate: &InitGate,
) -> Result<(), BootstrapError> {
    // The CLI installs it; a library caller may not have.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = SocketAddr::from((ip, API_PORT));
    let tunnel = jump
        .map(|jump| Tunnel::start(jump.clone(), (Ipv4Addr::LOCALHOST, 0).into(), api))
        .transpose()
        .map_err(BootstrapError::ApiTunnel)?;
    let url = format!("https://{}/readyz", tunnel.as_ref().map_or(api, Tunnel::local_addr));
    let client = reqwest::Certificate::from_pem(ca_pem.as_bytes())
        .and_then(|ca| {
            reqwest::blocking::Client::builder()
                .tls_certs_only([ca])
                .no_proxy()
                .connect_timeout(Duration::from_secs(3))
                .timeout(Duration::from_secs(5))
                .build()
        })
        .map_err(BootstrapError::ApiClient)?;
    let start = Instant::now();
    loop {
        let gate_state = gate.state();
        if gate_state == InitGate::FAILED {
            return Err(BootstrapError::ControlPlaneFailed { node: String::new() });
        }
        let last_error = match client.get(&url).send() {
            Ok(response) if response.status().is_success() && gate_state == InitGate::DONE => {
                return Ok(());
            }
            Ok(response) if response.status().is_success() => "init not done yet".to_owned(),
            Ok(response) => format!("HTTP {}", response.status()),
            Err(e) => crate::error::chain(&e),
        };
        if start.elapsed() > timeout {
            let waited_secs = start.elapsed().as_secs();
            return Err(BootstrapError::ApiTimeout { url, waited_secs, last_error });
        }
        std::thread::sleep(API_POLL);
    }
}

/// Waits until each of `nodes` is Ready and every kube-system pod runs and is ready,
/// logging what it still waits for whenever that changes.
pub fn ready(
    session: &Session<'_>,
    nodes: &[&str],
    timeout: Duration,
) -> Result<(), BootstrapError> {
    let start = Instant::now();
    let mut last = Vec::new();
    loop {
        let late = match (
            get(session, "nodes", "get nodes"),
            get(session, "pods", "get pods -n kube-system"),
        ) {
            (Ok(n), Ok(p)) => {
                late(&n, &p, nodes).map_err(|source| BootstrapError::ParseKubectl {
                    node: session.node().name.clone(),
                    what: "get",
                    source,
                })?
            }
            (Err(Unanswered(why)), _) | (_, Err(Unanswered(why))) => {
                vec![format!("API server ({why})")]
            }
        };
        if late != last {
            let text = if late.is_empty() { "ready".to_owned() } else { late.join(", ") };
            session.log().line(&session.node().name, &format!("waiting: {text}"))?;
        }
        if late.is_empty() {
            return Ok(());
        }
        if start.elapsed() > timeout {
            let waited_secs = start.elapsed().as_secs();
            return Err(BootstrapError::NotReady { waited_secs, late: late.join(", ") });
        }
        last = late;
        std::thread::sleep(READY_POLL);
    }
}

/// kubectl failed (the API server restarting, say): worth asking again.
struct Unanswered(String);

fn get(session: &Session<'_>, what: &'static str, args: &str) -> Result<String, Unanswered> {
    match session.capture(what, &format!("{KUBECTL} {args} -o json")) {
        Ok(text) => Ok(text),
        Err(BootstrapError::Step { source, .. }) => match *source {
            SshError::CommandFailed { stderr_tail, .. } => {
                Err(Unanswered(stderr_tail.lines().last().unwrap_or_default().to_owned()))
            }
            other => Err(Unanswered(crate::error::chain(&other))),
        },
        Err(e) => Err(Unanswered(crate::error::chain(&e))),
    }
}

/// What is not ready yet, from `kubectl get nodes -o json` and `kubectl get pods -n
/// kube-system -o json`: `node NAME (why)` and `pod kube-system/NAME (why)`.
pub fn late(
    nodes_json: &str,
    pods_json: &str,
    expected: &[&str],
) -> Result<Vec<String>, serde_json::Error> {
    let nodes: Value = serde_json::from_str(nodes_json)?;
    let pods: Value = serde_json::from_str(pods_json)?;
    let items = |v: &Value| v["items"].as_array().cloned().unwrap_or_default();
    let mut late = Vec::new();
    let node_items = items(&nodes);
    for name in expected {
        let node = node_items.iter().find(|n| n["metadata"]["name"] == *name);
        let why = match node {
            None => Some("not registered".to_owned()),
            Some(node) => {
                let conditions =
                    node["status"]["conditions"].as_array().cloned().unwrap_or_default();
                let ready = conditions.iter().find(|c| c["type"] == "Ready");
                match ready {
                    Some(c) if c["status"] == "True" => None,
                    Some(c) => Some(c["reason"].as_str().unwrap_or("NotReady").to_owned()),
                    None => Some("no Ready condition".to_owned()),
                }
            }
        };
        if let Some(why) = why {
            late.push(format!("node {name} ({why})"));
        }
    }
    for pod in items(&pods) {
        let phase = pod["status"]["phase"].as_str().unwrap_or("Unknown");
        let containers = pod["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
        let all_ready = !containers.is_empty() && containers.iter().all(|c| c["ready"] == true);
        let why = match phase {
            "Succeeded" => None,
            "Running" if all_ready => None,
            "Running" => Some("containers not ready"),
            other => Some(other),
        };
        if let Some(why) = why {
            let name = pod["metadata"]["name"].as_str().unwrap_or("?");
            late.push(format!("pod kube-system/{name} ({why})"));
        }
    }
    Ok(late)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ready: &str) -> String {
        format!(
            r#"{{"metadata":{{"name":"{name}"}},"status":{{"conditions":[{{"type":"MemoryPressure","status":"False"}},{{"type":"Ready","status":"{ready}","reason":"KubeletNotReady"}}]}}}}"#
        )
    }

    fn pod(name: &str, phase: &str, ready: bool) -> String {
        format!(
            r#"{{"metadata":{{"name":"{name}"}},"status":{{"phase":"{phase}","containerStatuses":[{{"ready":{ready}}}]}}}}"#
        )
    }

    #[test]
    fn names_what_is_late() {
        let nodes =
            format!(r#"{{"items":[{},{}]}}"#, node("lab", "True"), node("lab-m02", "False"));
        let pods = format!(
            r#"{{"items":[{},{},{}]}}"#,
            pod("etcd-lab", "Running", true),
            pod("coredns-1", "Pending", false),
            pod("kube-proxy-x", "Running", false)
        );
        let late = late(&nodes, &pods, &["lab", "lab-m02", "lab-m03"]).unwrap();
        assert_eq!(
            late,
            [
                "node lab-m02 (KubeletNotReady)",
                "node lab-m03 (not registered)",
                "pod kube-system/coredns-1 (Pending)",
                "pod kube-system/kube-proxy-x (containers not ready)",
            ]
        );
    }

    #[test]
    fn all_ready_is_empty() {
        let nodes = format!(r#"{{"items":[{}]}}"#, node("lab", "True"));
        let pods = format!(r#"{{"items":[{}]}}"#, pod("etcd-lab", "Running", true));
        assert!(late(&nodes, &pods, &["lab"]).unwrap().is_empty());
        assert!(late("not json", "{}", &["lab"]).is_err());
    }

    #[test]
    fn api_poll_stops_when_the_control_plane_fails() {
        let (cert, _) = crate::bootstrap::pki::generate_ca(std::time::SystemTime::now()).unwrap();
        let gate = InitGate::default();
        gate.failed();
        let err = api(&cert, Ipv4Addr::LOCALHOST, None, Duration::from_secs(5), &gate).unwrap_err();
        assert!(matches!(err, BootstrapError::ControlPlaneFailed { .. }), "{err}");
    }
}
