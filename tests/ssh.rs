//! `kubelab::ssh` and `kubelab::keys` against a real OpenSSH server: each test starts
//! `/usr/sbin/sshd` on a free 127.0.0.1 port with a host key made by `keys`, logs in as
//! root (these tests run as root, as the project's CI does) and stops sshd by PID when it
//! ends, also when it fails.
#![allow(clippy::unwrap_used)] // a test fails by panicking

#[path = "ssh/sshd.rs"]
mod sshd;

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::ops::ControlFlow;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kubelab::keys::{self, KeyPair, KnownHost};
use kubelab::ssh::{self, Connection, ExitStatus, Output, SshError, Stream, WaitState};

use sshd::{Sshd, TIMEOUT, chain, kill, signal, target};

/// Runs `command`, returning its lines as ("out"|"err", line) and the log text.
fn run(
    connection: &Connection,
    command: &str,
) -> (Result<(), SshError>, Vec<(Stream, String)>, String) {
    let mut log = Vec::new();
    let mut lines = Vec::new();
    let mut on_line = |stream, line: &str| lines.push((stream, line.to_owned()));
    let result = connection.run(command, &mut Output { log: &mut log, on_line: &mut on_line });
    (result, lines, String::from_utf8(log).unwrap())
}

fn reason_id(err: SshError) -> &'static str {
    kubelab::reason::reason(&kubelab::Error::Ssh(err)).id
}

#[test]
fn runs_commands_and_scripts_with_streamed_output() {
    let sshd = Sshd::start();
    let connection = sshd.connect();
    let (result, lines, log) = run(&connection, "echo hello; echo oops >&2; printf 'no newline'");
    result.unwrap();
    assert_eq!(
        lines,
        [
            (Stream::Stdout, "hello".to_owned()),
            (Stream::Stderr, "oops".to_owned()),
            (Stream::Stdout, "no newline".to_owned())
        ]
    );
    assert!(log.contains("[node] $ echo hello") && log.contains("[node] out: hello\n"), "{log}");
    assert!(
        log.contains("[node] err: oops\n") && log.contains("[node] exit: exit status 0"),
        "{log}"
    );

    // A script on stdin with quoted arguments; the same connection serves many commands.
    let mut seen = Vec::new();
    let mut on_line = |_, line: &str| seen.push(line.to_owned());
    let script = "set -eu\necho \"[$1] [$2]\"\nread -r rest || echo \"stdin closed\"\n";
    connection
        .run_script(
            "10-test.sh",
            script,
            &["a b", "it's"],
            false,
            &mut Output { log: &mut std::io::sink(), on_line: &mut on_line },
        )
        .unwrap();
    assert_eq!(seen, ["[a b] [it's]", "stdin closed"]);
}

#[test]
fn wrong_host_key_is_refused_before_anything_runs() {
    let sshd = Sshd::start();
    let impostor_dir = tempfile::tempdir().unwrap();
    let expected = keys::host_key(impostor_dir.path(), "node").unwrap();
    let marker = sshd.path("ran");
    let err = ssh::connect(&target(sshd.addr, &expected), &sshd.user_key, TIMEOUT).unwrap_err();
    let SshError::HostKeyMismatch { expected_fingerprint, actual_fingerprint, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(expected_fingerprint, &expected.fingerprint());
    assert_eq!(actual_fingerprint, &sshd.host_key.fingerprint());
    let text = err.to_string();
    assert!(text.contains(&expected.fingerprint()) && text.contains(&sshd.host_key.fingerprint()));
    assert_eq!(reason_id(err), "GUEST_HOSTKEY_MISMATCH");

    // Waiting does not retry a wrong key; nothing was run and no login happened.
    let start = Instant::now();
    let mut progress = Vec::new();
    let err = ssh::wait_until_reachable(
        &target(sshd.addr, &expected),
        &sshd.user_key,
        Duration::from_secs(30),
        &mut |state, _: &SshError| {
            progress.push(state);
            ControlFlow::Continue(())
        },
    )
    .unwrap_err();
    assert!(matches!(err, SshError::HostKeyMismatch { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(5) && progress.is_empty());
    assert!(!marker.exists());
    assert!(!sshd.log().contains("Accepted publickey"), "{}", sshd.log());

    // The right key on the same server logs in and runs (so the above proves the check).
    run(&sshd.connect(), &format!("touch {}", marker.display())).0.unwrap();
    assert!(marker.exists());
    assert!(sshd.log().contains("Accepted publickey for root"), "{}", sshd.log());
}

#[test]
fn wrong_user_key_is_an_auth_error() {
    let sshd = Sshd::start();
    let other = tempfile::tempdir().unwrap();
    let stranger = keys::user_key(other.path()).unwrap();
    let err = ssh::connect(&sshd.target(), &stranger, TIMEOUT).unwrap_err();
    assert!(matches!(err, SshError::Auth { ref user, .. } if user == "root"), "{err:?}");
    assert_eq!(reason_id(err), "GUEST_SSH_AUTH");
}

#[test]
fn failing_command_reports_status_and_stderr_tail() {
    let sshd = Sshd::start();
    let connection = sshd.connect();
    let (result, _, _) =
        run(&connection, "for i in $(seq 1 30); do echo line$i >&2; done; echo fine; exit 3");
    let err = result.unwrap_err();
    let SshError::CommandFailed { status, stderr_tail, .. } = &err else { panic!("{err:?}") };
    assert_eq!(status, &ExitStatus::Code(3));
    let tail: Vec<_> = stderr_tail.lines().collect();
    let expected: Vec<_> = (11..=30).map(|i| format!("line{i}")).collect();
    assert_eq!(tail, expected);
    assert!(err.to_string().contains("failed with exit status 3"), "{err}");
    assert_eq!(reason_id(err), "GUEST_COMMAND_FAILED");

    let (result, _, _) = run(&connection, "kill -TERM $$");
    let err = result.unwrap_err();
    assert!(
        matches!(&err, SshError::CommandFailed { status: ExitStatus::Signal(s), .. } if s == "TERM"),
        "{err:?}"
    );
}

#[test]
fn ten_mib_upload_and_download_are_byte_identical() {
    use std::os::unix::fs::PermissionsExt;
    let sshd = Sshd::start();
    let connection = sshd.connect();
    let mut data = Vec::with_capacity(10 << 20);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while data.len() < 10 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    let local = sshd.path("local.bin");
    fs::write(&local, &data).unwrap();
    // sshd runs on this machine, so its "remote" paths are local paths too.
    let remote = sshd.path("remote.bin");
    let remote = remote.to_str().unwrap();
    connection.upload(&local, remote, 0o640).unwrap();
    assert!(fs::read(remote).unwrap() == data, "uploaded bytes differ");
    assert_eq!(fs::metadata(remote).unwrap().permissions().mode() & 0o7777, 0o640);
    // Uploading over an existing file sets the new mode too.
    connection.upload(&local, remote, 0o600).unwrap();
    assert_eq!(fs::metadata(remote).unwrap().permissions().mode() & 0o7777, 0o600);

    let back = sshd.path("back.bin");
    connection.download(remote, &back).unwrap();
    assert!(fs::read(&back).unwrap() == data, "downloaded bytes differ");
    assert_eq!(fs::metadata(&back).unwrap().permissions().mode() & 0o777, 0o600);

    let err = connection.download("/nonexistent/file", &sshd.path("x")).unwrap_err();
    assert!(matches!(err, SshError::Download { .. }), "{err:?}");
    assert!(!sshd.path("x").exists() && !sshd.path("x.part").exists());
}

#[test]
fn killed_sshd_mid_command_is_a_clean_error() {
    let sshd = Sshd::start();
    let connection = sshd.connect();
    let start = Instant::now();
    let mut killed = false;
    let mut on_line = |_, line: &str| {
        if line == "started" {
            // The connection's sshd processes first, then what they ran (`sleep`).
            let mut procs = sshd.descendants();
            procs.sort_by_key(|(_, comm)| comm != "sshd");
            for (pid, _) in procs {
                kill(pid);
            }
            killed = true;
        }
    };
    let mut log = Vec::new();
    let result = connection
        .run("echo started; sleep 30", &mut Output { log: &mut log, on_line: &mut on_line });
    let err = result.unwrap_err();
    assert!(killed);
    assert!(matches!(err, SshError::ConnectionLost { .. }), "{err:?}");
    assert!(err.to_string().contains("lost the connection to node"), "{err}");
    assert_eq!(reason_id(err), "GUEST_SSH_UNREACHABLE");
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    // The connection stays unusable, with errors rather than hangs.
    assert!(run(&connection, "true").0.is_err());
}

#[test]
fn frozen_node_is_a_timeout_not_a_hang() {
    let sshd = Sshd::start();
    let mut connection = sshd.connect();
    connection.set_timeout(Duration::from_secs(3));
    let start = Instant::now();
    // Stopped sshd processes keep the TCP connection open but never answer, like a VM
    // that hangs or vanishes without closing its connections.
    let mut on_line = |_, line: &str| {
        if line == "started" {
            for (pid, comm) in sshd.descendants() {
                if comm == "sshd" {
                    signal(pid, "-STOP");
                }
            }
        }
    };
    let result = connection.run(
        "echo started; sleep 30",
        &mut Output { log: &mut std::io::sink(), on_line: &mut on_line },
    );
    let err = result.unwrap_err();
    let waited = start.elapsed();
    assert!(waited >= Duration::from_secs(3) && waited < Duration::from_secs(6), "{waited:?}");
    assert!(chain(&err).contains("the node sent nothing for 3s"), "{}", chain(&err));
    assert!(matches!(err, SshError::ConnectionLost { .. }), "{err:?}");
}

#[test]
fn silent_command_is_kept_alive_past_the_timeout() {
    let sshd = Sshd::start();
    let mut connection = sshd.connect();
    // Keepalives go out every second (libssh2 counts whole seconds), well within 4 s.
    connection.set_timeout(Duration::from_secs(4));
    let (result, lines, _) = run(&connection, "sleep 6; echo done");
    result.unwrap();
    assert_eq!(lines, [(Stream::Stdout, "done".to_owned())]);
}

#[test]
fn silent_port_times_out_as_banner_not_yet() {
    // Accepts TCP connections and holds them without a word, like a port forward to a
    // guest whose sshd is not up.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().map_while(Result::ok).collect();
        drop(held);
    });
    let dir = tempfile::tempdir().unwrap();
    let host = keys::host_key(dir.path(), "node").unwrap();
    let user = keys::user_key(dir.path()).unwrap();

    let start = Instant::now();
    let err = ssh::connect(&target(addr, &host), &user, Duration::from_secs(1)).unwrap_err();
    assert!(matches!(err, SshError::Handshake { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());

    let start = Instant::now();
    let mut states = Vec::new();
    let err = ssh::wait_until_reachable(
        &target(addr, &host),
        &user,
        Duration::from_secs(3),
        &mut |state, _: &SshError| {
            states.push(state);
            ControlFlow::Continue(())
        },
    )
    .unwrap_err();
    let waited = start.elapsed();
    // It stops at the deadline, give or take libssh2's millisecond timer.
    assert!(waited >= Duration::from_millis(2900) && waited < Duration::from_secs(5), "{waited:?}");
    assert!(
        matches!(err, SshError::Timeout { last_state: WaitState::BannerNotYet, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("(banner not yet)"), "{err}");
    assert!(!states.is_empty() && states.iter().all(|s| *s == WaitState::BannerNotYet));
    assert_eq!(reason_id(err), "GUEST_SSH_TIMEOUT");
}

#[test]
fn closed_port_times_out_as_port_closed() {
    let dir = tempfile::tempdir().unwrap();
    let host = keys::host_key(dir.path(), "node").unwrap();
    let user = keys::user_key(dir.path()).unwrap();
    let start = Instant::now();
    // Port 1 (tcpmux) is privileged and unused: unlike a port found free a moment ago,
    // no other test's listener can take it meanwhile.
    let closed: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let err = ssh::wait_until_reachable(
        &target(closed, &host),
        &user,
        Duration::from_millis(1500),
        &mut |state, _: &SshError| {
            assert_eq!(state, WaitState::PortClosed);
            ControlFlow::Continue(())
        },
    )
    .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
    assert!(matches!(err, SshError::Timeout { last_state: WaitState::PortClosed, .. }), "{err:?}");
    assert!(chain(&err).contains("cannot connect to node"), "{}", chain(&err));
}

#[test]
fn waiting_goes_through_auth_not_ready_until_the_key_is_installed() {
    let sshd = Sshd::start_unauthorized();
    let mut states = Vec::new();
    let connection = ssh::wait_until_reachable(
        &sshd.target(),
        &sshd.user_key,
        Duration::from_secs(30),
        &mut |state, _: &SshError| {
            // What cloud-init does on a booting node, after the first refused login.
            if state == WaitState::AuthNotReady {
                sshd.authorize_user_key();
            }
            states.push(state);
            ControlFlow::Continue(())
        },
    )
    .unwrap();
    assert_eq!(states, [WaitState::AuthNotReady]);
    let (result, lines, _) = run(&connection, "echo ready");
    result.unwrap();
    assert_eq!(lines, [(Stream::Stdout, "ready".to_owned())]);
}

#[test]
fn system_ssh_trusts_the_known_hosts_file_and_nothing_else() {
    let sshd = Sshd::start();
    let profile = sshd.dir.path();
    let host = sshd.addr.ip().to_string();
    let port = sshd.addr.port();
    let ssh = |key: &KeyPair| {
        let known = KnownHost { host: &host, port, key: key.public_key() };
        let known_hosts = keys::write_known_hosts(profile, &[known]).unwrap();
        let argv = keys::ssh_command_line(sshd.user_key.path(), &known_hosts, "root", &host, port);
        Command::new(&argv[0])
            .args(&argv[1..])
            .args(["-o", "BatchMode=yes", "echo", "via-ssh"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = ssh(&sshd.host_key);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "via-ssh\n");

    let other = tempfile::tempdir().unwrap();
    let out = ssh(&keys::host_key(other.path(), "node").unwrap());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"), "{stderr}");
}

#[test]
fn fingerprints_match_ssh_keygen() {
    let dir = tempfile::tempdir().unwrap();
    let key = keys::user_key(dir.path()).unwrap();
    let out = Command::new("ssh-keygen").arg("-l").arg("-f").arg(key.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    // "256 SHA256:... kubelab (ED25519)"
    assert_eq!(text.split_whitespace().nth(1), Some(key.fingerprint().as_str()));
}

#[test]
fn the_caller_stops_the_wait_at_once() {
    // A closed port, as while a VM boots; the caller learns the VM died and gives up.
    let dir = tempfile::tempdir().unwrap();
    let host = keys::host_key(dir.path(), "node").unwrap();
    let user = keys::user_key(dir.path()).unwrap();
    let closed: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let start = Instant::now();
    let mut calls = 0;
    let err = ssh::wait_until_reachable(
        &target(closed, &host),
        &user,
        Duration::from_secs(60),
        &mut |_, _: &SshError| {
            calls += 1;
            if calls == 2 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        },
    )
    .unwrap_err();
    assert!(matches!(err, SshError::Abandoned { .. }), "{err:?}");
    assert_eq!(calls, 2);
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
}

/// The sshd itself as the jump host (a remote libvirt host), its key pinned in a file
/// of the test's: `ssh -W` to the same sshd, whose key libssh2 checks again.
fn jump_via(sshd: &Sshd, pinned_key: &str) -> ssh::Jump {
    let pinned = sshd.path("libvirt_known_hosts");
    fs::write(&pinned, format!("[127.0.0.1]:{} {pinned_key}\n", sshd.addr.port())).unwrap();
    let uri = format!(
        "qemu+ssh://root@127.0.0.1:{}/system?keyfile={}",
        sshd.addr.port(),
        sshd.user_key.path().display()
    );
    ssh::Jump::for_uri(&uri, pinned).unwrap().unwrap()
}

#[test]
fn a_node_behind_a_jump_host_is_reached_with_both_keys_pinned() {
    let sshd = Sshd::start();
    let mut through = sshd.target();
    through.jump = Some(jump_via(&sshd, &sshd.host_key.public_openssh().unwrap()));
    let connection = ssh::connect(&through, &sshd.user_key, TIMEOUT)
        .unwrap_or_else(|e| panic!("{}\nsshd log:\n{}", chain(&e), sshd.log()));
    let (result, lines, _) = run(&connection, "echo through");
    result.unwrap();
    assert_eq!(lines, [(Stream::Stdout, "through".to_owned())]);
    // Two logins: the jump's (ssh) and the node's (libssh2), and one forwarding.
    assert!(sshd.log().matches("Accepted publickey for root").count() >= 2, "{}", sshd.log());
    drop(connection);
    // The node's key is still checked behind the jump.
    let impostor_dir = tempfile::tempdir().unwrap();
    let other = keys::host_key(impostor_dir.path(), "node").unwrap();
    let mut wrong_node = target(sshd.addr, &other);
    wrong_node.jump = through.jump.clone();
    let err = ssh::connect(&wrong_node, &sshd.user_key, TIMEOUT).unwrap_err();
    assert_eq!(reason_id(err), "GUEST_HOSTKEY_MISMATCH");
}

#[test]
fn a_jump_host_whose_key_changed_is_refused_before_any_login() {
    let sshd = Sshd::start();
    let impostor_dir = tempfile::tempdir().unwrap();
    let old = keys::host_key(impostor_dir.path(), "libvirt-host").unwrap();
    let jump = jump_via(&sshd, &old.public_openssh().unwrap());
    let mut through = sshd.target();
    through.jump = Some(jump.clone());
    let err = ssh::connect(&through, &sshd.user_key, TIMEOUT).unwrap_err();
    let SshError::Jump { source: ssh::JumpError::KeyChanged { .. }, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(reason_id(err), "GUEST_JUMP_HOSTKEY");
    let err = jump.run("true").unwrap_err();
    assert!(matches!(err, ssh::JumpError::KeyChanged { .. }), "{err:?}");
    assert!(!sshd.log().contains("Accepted publickey"), "{}", sshd.log());
}

#[test]
fn a_closed_port_behind_the_jump_reads_as_port_closed() {
    let sshd = Sshd::start();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut through = target(closed, &sshd.host_key);
    through.jump = Some(jump_via(&sshd, &sshd.host_key.public_openssh().unwrap()));
    let err = ssh::connect(&through, &sshd.user_key, TIMEOUT).unwrap_err();
    assert!(matches!(err, SshError::Connect { .. }), "{err:?}");
    assert!(chain(&err).contains("open failed"), "{}", chain(&err));
}

#[test]
fn the_tunnel_forwards_each_connection_through_the_jump() {
    use std::io::{Read, Write};
    let sshd = Sshd::start();
    let jump = jump_via(&sshd, &sshd.host_key.public_openssh().unwrap());
    // The "API server": answers each connection with what it was sent, reversed.
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = server.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in server.incoming() {
            let mut stream = stream.unwrap();
            let mut buf = [0u8; 4];
            stream.read_exact(&mut buf).unwrap();
            buf.reverse();
            stream.write_all(&buf).unwrap();
        }
    });
    let tunnel = ssh::Tunnel::start(jump.clone(), "127.0.0.1:0".parse().unwrap(), to).unwrap();
    let local = tunnel.local_addr();
    // A second tunnel on the same port (`kubelab tunnel` run twice) is refused.
    let err = ssh::Tunnel::start(jump, local, to).unwrap_err();
    assert_eq!(kubelab::reason::reason(&err.into()).id, "HOST_PORT_BUSY");
    for word in ["ping", "pong"] {
        let mut client = std::net::TcpStream::connect(local).unwrap();
        client.set_read_timeout(Some(TIMEOUT)).unwrap();
        client.write_all(word.as_bytes()).unwrap();
        let mut back = String::new();
        client.read_to_string(&mut back).unwrap();
        assert_eq!(back, word.chars().rev().collect::<String>());
    }
    drop(tunnel);
    assert!(std::net::TcpStream::connect(local).is_err(), "the tunnel still listens");
}
