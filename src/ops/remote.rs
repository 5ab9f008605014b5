//! Clusters on a remote libvirt host (docs/remote-libvirt.md): the host's key pinned in
//! the profile, the host's own checks (tools, routes) run on it over SSH, the nodes and
//! the API server reached through it.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use crate::Error;
use crate::cluster::{ClusterState, NodeState};
use crate::driver::{AccelPolicy, HostReport};
use crate::home::Home;
use crate::net::{self, Ipv4Cidr};
use crate::profile::{self, Profile};
use crate::ssh::{Jump, JumpError, Tunnel};

/// The profile's file holding the libvirt hosts' pinned SSH keys.
pub const PINNED_HOSTS: &str = "libvirt_known_hosts";

/// The jump to the libvirt host at `uri` (a node's `host`), pinned in `profile`; `None`
/// for a daemon on this machine.
pub fn jump(profile: &Profile, uri: Option<&str>) -> Result<Option<Jump>, Error> {
    match uri {
        None => Ok(None),
        Some(uri) => Ok(Jump::for_uri(uri, profile.dir().join(PINNED_HOSTS))?),
    }
}

/// The jump to the host `node` lives on.
pub fn node_jump(profile: &Profile, node: &NodeState) -> Result<Option<Jump>, Error> {
    jump(profile, node.host.as_deref())
}

/// Pins the host's key from the user's known_hosts unless the profile already holds it
/// (it is never replaced: a changed key must be refused). ssh would follow a link there
/// to whatever file it names, so a link is refused.
pub fn ensure_pinned(jump: &Jump) -> Result<(), Error> {
    let path = &jump.known_hosts;
    crate::fsutil::refuse_link(path)
        .map_err(|source| JumpError::Io { path: path.clone(), source })?;
    if path.exists() {
        return Ok(());
    }
    Ok(jump.pin()?)
}

/// Programs a libvirt host needs (libvirt runs them for kubelab's pools and networks).
const HOST_TOOLS: &[&str] = &["qemu-img", "dnsmasq"];

/// What `up` learns of the libvirt host itself.
#[derive(Debug)]
pub struct HostFacts {
    /// The subnets its routes use, which a new profile must avoid as a local host's.
    pub routes: Vec<Ipv4Cidr>,
    /// Whether it is itself a VM (`hypervisor` CPU flag): nested KVM is not trusted.
    pub nested: bool,
}

/// Checks the libvirt host over SSH: its tools are installed; reads its routes and
/// whether it is a VM.
pub fn check_host(jump: &Jump) -> Result<HostFacts, Error> {
    let tools = HOST_TOOLS.join(" ");
    let out = jump.run(&format!(
        "for t in {tools}; do command -v $t >/dev/null || [ -x /usr/sbin/$t ] || echo missing $t; \
         done; grep -qw hypervisor /proc/cpuinfo && echo nested; cat {}",
        net::routes::PROC_NET_ROUTE
    ))?;
    let missing: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("missing ")).collect();
    if !missing.is_empty() {
        let tools = missing.join(", ");
        return Err(JumpError::MissingTools { jump: jump.destination(), tools }.into());
    }
    let nested = out.lines().any(|l| l == "nested");
    let table: Vec<&str> =
        out.lines().skip_while(|l| l.starts_with("missing ") || *l == "nested").collect();
    let routes = net::routes::parse_proc_net_route(&table.join("\n"))
        .map_err(|source| crate::driver::DriverError::Routes { source })?;
    Ok(HostFacts { routes: routes.into_iter().map(|r| r.cidr).collect(), nested })
}

/// The preflight's acceleration (`first`) decided again with what the libvirt host
/// said of itself: one that is a VM gets TCG, as a local one does. Only libvirt has
/// remote hosts; a build without it has nothing to decide again.
pub fn accel(
    first: &HostReport,
    facts: &HostFacts,
    policy: AccelPolicy,
) -> Result<HostReport, Error> {
    #[cfg(all(feature = "libvirt", target_os = "linux"))]
    return Ok(crate::driver::host::remote_accel(first, facts.nested, policy)?);
    #[cfg(not(all(feature = "libvirt", target_os = "linux")))]
    {
        let _ = (facts, policy);
        Ok(first.clone())
    }
}

/// A 127.0.0.1 port for a new remote profile's `kubelab tunnel`: free now, and saved by
/// none of the home's other profiles.
pub fn choose_tunnel_port(home: &Home) -> Result<u16, Error> {
    let taken: Vec<u64> = profile::list(home)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.state.as_ref()?.pointer("/tunnel_port")?.as_u64())
        .collect();
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let io = |source| JumpError::Listen { addr: any, source };
    for _ in 0..64 {
        let listener = TcpListener::bind(any).map_err(io)?;
        let port = listener.local_addr().map_err(io)?.port();
        if !taken.contains(&u64::from(port)) {
            return Ok(port);
        }
    }
    Err(io(std::io::Error::other("every port offered is saved by another profile")).into())
}

/// The API server's URL for the kubeconfig: the control plane's host-only address, or
/// for a remote cluster the local end of `kubelab tunnel` (the certificate names
/// 127.0.0.1 too).
pub fn api_server_url(state: &ClusterState) -> Result<String, Error> {
    Ok(match state.tunnel_port {
        Some(port) => format!("https://{}", SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
        None => crate::kubeconfig::server_url(state.node(None)?.ip.into()),
    })
}

/// The API server's port on the control plane (kubeadm's default, which kubelab uses).
const API_PORT: u16 = 6443;

/// `kubelab tunnel`: forwards the profile's `127.0.0.1:<tunnel_port>` (its kubeconfig's
/// server) to the control plane's API server through the libvirt host, after one login
/// there proves the pinned key still holds. A local profile needs none and is refused.
pub fn tunnel(profile: &Profile) -> Result<(Tunnel, String), Error> {
    let state: ClusterState = profile.load_state()?;
    let cp = state.node(None)?;
    let (Some(jump), Some(port)) = (node_jump(profile, cp)?, state.tunnel_port) else {
        let server = api_server_url(&state)?;
        return Err(JumpError::NotRemote { profile: state.profile.clone(), server }.into());
    };
    ensure_pinned(&jump)?;
    jump.run("true")?;
    let via = jump.destination();
    let to = SocketAddr::from((cp.ip, API_PORT));
    let tunnel = Tunnel::start(jump, SocketAddr::from((Ipv4Addr::LOCALHOST, port)), to)?;
    Ok((tunnel, format!("{to} through {via}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_profile_needs_no_jump() {
        let dir = tempfile::tempdir().unwrap();
        let profile = Profile::new(&Home::new(dir.path()), "lab".parse().unwrap());
        assert!(jump(&profile, None).unwrap().is_none());
        assert!(jump(&profile, Some("qemu:///system")).unwrap().is_none());
        let j = jump(&profile, Some("qemu+ssh://root@lab/system")).unwrap().unwrap();
        assert_eq!(j.known_hosts, profile.dir().join(PINNED_HOSTS));
    }

    #[test]
    fn a_link_in_place_of_the_pinned_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let profile = Profile::new(&Home::new(dir.path()), "lab".parse().unwrap());
        profile.create_dir().unwrap();
        let j = jump(&profile, Some("qemu+ssh://root@lab/system")).unwrap().unwrap();
        let other = dir.path().join("attacker_known_hosts");
        std::fs::write(&other, "lab ssh-ed25519 AAAA\n").unwrap();
        std::os::unix::fs::symlink(&other, &j.known_hosts).unwrap();
        let err = ensure_pinned(&j).unwrap_err();
        assert_eq!(crate::reason::reason(&err).id, "PROFILE_LINK_REFUSED", "{err:?}");
    }
}
