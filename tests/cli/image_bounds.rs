//! `kubelab image pull` on sources that never end or are not what they claim: devices,
//! FIFOs, endless and oversized bodies, redirects out of HTTP, and URLs with
//! credentials, which must reach the server and nothing else.

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use kubelab::reason;

use crate::util::{HttpServer, Kubelab, Reply, Run, files_in, test_data};

/// Far longer than any of these runs takes; a regression that hangs fails here instead.
const DEADLINE: Duration = Duration::from_secs(60);

/// Runs `cmd`, killing it (by its pid) and failing the test if it outlives [`DEADLINE`].
fn run_guarded(mut cmd: Command) -> Run {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run kubelab");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(output) => Run::from(output.expect("wait for kubelab")),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("kubelab did not finish within {DEADLINE:?}");
        }
    }
}

/// Every file under the home (the cache, its partial files and sidecars, ids).
fn leftovers_in_cache(k: &Kubelab) -> Vec<std::path::PathBuf> {
    files_in(&k.home().join("cache/images"))
}

#[cfg(unix)]
#[test]
fn devices_fifos_and_directories_are_refused_before_reading() {
    let k = Kubelab::new();
    let fifo = k.home().join("pipe.img");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("run mkfifo");
    assert!(made.success());
    let code = reason::IMG_NOT_REGULAR_FILE.exit_code;
    for (source, kind) in [
        ("/dev/zero".to_owned(), "a device"),
        (fifo.display().to_string(), "a FIFO"),
        (format!("file://{}", fifo.display()), "a FIFO"),
        (k.home().display().to_string(), "a directory"),
    ] {
        let run = run_guarded(k.cmd(["image", "pull", &source])).failure(code);
        assert!(run.stderr.contains(kind), "{run}");
        assert!(run.stderr.contains("IMG_NOT_REGULAR_FILE"), "{run}");
    }
    assert_eq!(leftovers_in_cache(&k), Vec::<std::path::PathBuf>::new());
}

#[test]
fn endless_body_stops_at_the_cap_and_leaves_nothing() {
    let server = HttpServer::start(|_, _| Reply::endless(test_data(64 * 1024, 21)));
    let k = Kubelab::new();
    let mut cmd = k.cmd(["image", "pull", &server.url("disk.qcow2"), "--insecure-skip-verify"]);
    cmd.args(["--max-size", "8m"]);
    let run = run_guarded(cmd).failure(reason::IMG_TOO_LARGE.exit_code);
    assert!(run.stderr.contains("8388608 bytes"), "{run}");
    assert_eq!(leftovers_in_cache(&k), Vec::<std::path::PathBuf>::new());
    assert_eq!(server.requests().len(), 1, "not retried");
}

#[test]
fn announced_length_over_the_cap_is_refused_before_reading_the_body() {
    let server = HttpServer::start(|_, _| Reply::new(200, vec![7u8; 64 << 20]));
    let k = Kubelab::new();
    let mut cmd = k.cmd(["image", "pull", &server.url("disk.qcow2"), "--insecure-skip-verify"]);
    cmd.args(["--max-size", "1m"]);
    run_guarded(cmd).failure(reason::IMG_TOO_LARGE.exit_code);
    assert_eq!(leftovers_in_cache(&k), Vec::<std::path::PathBuf>::new());
    // The server wrote at most what the socket buffers took before kubelab hung up.
    assert!(server.total_body_bytes() < 64 << 20, "{}", server.total_body_bytes());
}

#[test]
fn redirect_to_a_file_url_is_refused_as_such() {
    let server = HttpServer::start(|_, _| {
        let mut reply = Reply::new(302, Vec::new());
        reply.headers.push(("Location".into(), "file:///etc/passwd".into()));
        reply
    });
    let k = Kubelab::new();
    let cmd = k.cmd(["image", "pull", &server.url("disk.qcow2"), "--insecure-skip-verify"]);
    let run = run_guarded(cmd).failure(reason::IMG_REDIRECT_REFUSED.exit_code);
    assert!(run.stderr.contains("redirects to a file: URL"), "{run}");
    assert!(!run.stderr.contains("HTTP status"), "{run}");
    assert_eq!(leftovers_in_cache(&k), Vec::<std::path::PathBuf>::new());
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if std::fs::read(&path)
            .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
        {
            found.push(path);
        }
    }
    found
}

#[test]
fn credentials_in_the_url_authenticate_and_appear_nowhere() {
    let data = test_data(200_000, 22);
    // `Basic base64("ann:pa55-s3cret")`.
    let expected = "Basic YW5uOnBhNTUtczNjcmV0";
    let server = HttpServer::start(move |req, _| match req.authorization.as_deref() {
        Some(auth) if auth == expected => Reply::new(200, data.clone()),
        _ => Reply::new(401, Vec::new()),
    });
    let k = Kubelab::new();
    let url = server.url("disk.qcow2").replace("http://", "http://ann:pa55-s3cret@");
    let pull = k.cmd(["image", "pull", &url, "--insecure-skip-verify"]);
    let pulled = run_guarded(pull).success();
    let listed = k.run(["image", "list", "-o", "json"]).success();
    let wrong = url.replace("disk.qcow2", "missing.qcow2").replace("pa55", "bad");
    let failed = run_guarded(k.cmd(["image", "pull", &wrong, "--insecure-skip-verify"]))
        .failure(reason::IMG_DOWNLOAD_FAILED.exit_code);
    assert_eq!(server.requests()[0].authorization.as_deref(), Some(expected));
    for run in [&pulled, &listed, &failed] {
        assert!(!run.stdout.contains("s3cret") && !run.stderr.contains("s3cret"), "{run}");
        assert!(!run.stdout.contains("ann:") && !run.stderr.contains("ann:"), "{run}");
    }
    assert!(listed.stdout.contains(&server.url("disk.qcow2")), "{listed}");
    assert_eq!(files_containing(k.home(), "s3cret"), Vec::<std::path::PathBuf>::new());
}
