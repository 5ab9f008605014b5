//! Which libvirt URIs kubelab connects with, whether they come from `--libvirt-uri`,
//! `LIBVIRT_DEFAULT_URI` or a saved `profile.json`. libvirt runs programs for some URIs
//! (`qemu+ext:///system?command=PROG`, `netcat=` on the remote host), so an allow-list
//! keeps a tampered state file or a pasted URI from running anything.

/// Drivers kubelab uses: QEMU, and libvirt's in-memory test driver.
const SCHEMES: &[&str] = &["qemu", "test"];
/// Transports (`qemu+TRANSPORT://`) that only open a connection. `ext` is missing: it
/// runs the `command=` program.
const TRANSPORTS: &[&str] = &["unix", "ssh", "libssh", "libssh2", "tcp", "tls"];
/// Query parameters that only choose how to connect. Left out: `command` (ext),
/// `netcat` (a program run on the remote host), `no_verify` and `known_hosts_verify`
/// (turn off certificate and host-key checks), `name` (another URI for the daemon).
const PARAMS: &[&str] =
    &["socket", "keyfile", "known_hosts", "sshauth", "no_tty", "pkipath", "mode", "proxy"];

/// Why `uri` is refused, if it is.
pub fn check(uri: &str) -> Result<(), String> {
    let url = url::Url::parse(uri).map_err(|e| format!("not a URI ({e})"))?;
    let (scheme, transport) = match url.scheme().split_once('+') {
        Some((scheme, transport)) => (scheme, Some(transport)),
        None => (url.scheme(), None),
    };
    if !SCHEMES.contains(&scheme) {
        return Err(format!("driver {scheme:?} is not one of {}", SCHEMES.join(", ")));
    }
    if let Some(transport) = transport.filter(|t| !TRANSPORTS.contains(t)) {
        return Err(format!("transport {transport:?} is not one of {}", TRANSPORTS.join(", ")));
    }
    // libvirt matches parameter names without regard to case.
    for (name, _) in url.query_pairs() {
        if !PARAMS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(format!("parameter {name:?} is not one of {}", PARAMS.join(", ")));
        }
    }
    if url.fragment().is_some() {
        return Err("a URI fragment (#...) has no meaning to libvirt".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_uris_pass() {
        for uri in [
            "qemu:///system",
            "qemu:///session",
            "test:///default",
            "qemu+ssh://user@host/system",
            "qemu+ssh://user@host:2222/system?keyfile=/home/u/.ssh/id&no_tty=1",
            "qemu+tls://host/system?pkipath=/etc/pki",
            "qemu+unix:///system?socket=/run/libvirt/libvirt-sock",
            "qemu+libssh2://host/system?known_hosts=/k&sshauth=privkey",
        ] {
            assert_eq!(check(uri), Ok(()), "{uri}");
        }
    }

    #[test]
    fn uris_that_run_programs_or_skip_checks_are_refused() {
        for (uri, why) in [
            ("qemu+ext:///system?command=/bin/touch%20/tmp/pwned", "transport \"ext\""),
            ("qemu+ssh://h/system?netcat=/tmp/evil", "parameter \"netcat\""),
            ("qemu+ssh://h/system?Command=/bin/sh", "parameter \"Command\""),
            ("qemu+tls://h/system?no_verify=1", "no_verify"),
            ("qemu+ssh://h/system?known_hosts_verify=ignore", "known_hosts_verify"),
            ("qemu:///system?name=qemu+ext:///x", "parameter \"name\""),
            ("xen:///system", "driver \"xen\""),
            ("lxc:///", "driver \"lxc\""),
            ("qemu:///system#x", "fragment"),
            ("system", "not a URI"),
            ("", "not a URI"),
        ] {
            let err = check(uri).unwrap_err();
            assert!(err.contains(why), "{uri}: {err}");
        }
    }
}
