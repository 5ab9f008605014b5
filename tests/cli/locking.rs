//! Concurrent kubelab processes on one home: the issue "Never touch what is not yours"
//! (class 4). Each test orders the processes with real signals (a lock the test holds,
//! the "waiting" line a queued process prints, requests reaching a scripted HTTP
//! server), never with sleeps.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::sync::{Barrier, Mutex};

use kubelab::home::Home;
use kubelab::profile::Profile;
use kubelab::reason;
use sha2::Digest;

use crate::cluster::saved_profile_named;
use crate::util::{HttpServer, Kubelab, Reply, Run};

/// A boot image file in `dir` and its SHA-256 (the test driver never reads it).
pub fn image_file(dir: &Path, seed: u64) -> (String, String) {
    let data = crate::util::test_data(4096, seed);
    let path = dir.join(format!("image-{seed}.qcow2"));
    std::fs::write(&path, &data).expect("image file");
    (path.to_str().expect("utf-8 path").to_owned(), hex::encode(sha2::Sha256::digest(&data)))
}

/// Blocks until `child` prints the line saying it waits for a busy lock; the rest of
/// its stderr is collected by the returned thread.
fn until_waiting(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert_ne!(stderr.read_line(&mut line).expect("stderr"), 0, "exited early:\n{seen}");
        seen.push_str(&line);
        if line.contains("is busy") && line.contains("waiting") {
            break;
        }
    }
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        seen + &rest
    })
}

fn state(k: &Kubelab, profile: &str) -> serde_json::Value {
    let path = k.home().join("profiles").join(profile).join("profile.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("profile.json")).expect("json")
}

/// `up --wait` queued behind another command reads the profile once it holds the lock:
/// the other command's change (here: a node removed) survives.
#[test]
fn up_queued_on_the_lock_keeps_what_the_holder_saved() {
    let k = Kubelab::new();
    let (image, digest) = image_file(k.home(), 1);
    saved_profile_named(&k, "lab", |s| {
        s["image"] = serde_json::json!({"source": image, "sha256": digest, "format": "qcow2"});
    });
    let profile = Profile::new(&Home::new(k.home()), "lab".parse().unwrap());
    let held = profile.lock(false).expect("the test holds the lock");

    let mut up = k.cmd(["-p", "lab", "--wait", "up", "--ssh-timeout", "1"]);
    let mut up = up.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn up");
    let stderr = until_waiting(&mut up);
    // What a `node delete` holding the lock does: the worker leaves the state.
    let mut changed = state(&k, "lab");
    changed["nodes"].as_array_mut().unwrap().truncate(1);
    std::fs::write(k.home().join("profiles/lab/profile.json"), changed.to_string()).unwrap();
    drop(held);

    up.wait().expect("up ends");
    let stderr = stderr.join().unwrap();
    let nodes = state(&k, "lab")["nodes"].as_array().unwrap().clone();
    assert_eq!(nodes.len(), 1, "up saved the copy it read before the lock:\n{stderr}");
}

/// A fresh `up` that fails removes its profile directory but not the lock a second
/// `up` waits on: while that second `up` runs, a third finds the profile busy.
#[test]
fn failed_fresh_up_leaves_the_lock_to_the_command_waiting_on_it() {
    let k = Kubelab::new();
    let data = crate::util::test_data(4096, 2);
    let digest = hex::encode(sha2::Sha256::digest(&data));
    let (seen, requests) = mpsc::channel::<usize>();
    let (release, go) = mpsc::channel::<()>();
    let (seen, go) = (Mutex::new(seen), Mutex::new(go));
    let server = HttpServer::start(move |_, index| {
        if index >= 2 {
            // Only a third `up` that got past the lock gets here.
            return Reply::new(410, "a third up ran");
        }
        seen.lock().unwrap().send(index).unwrap();
        go.lock().unwrap().recv().unwrap();
        if index == 0 { Reply::new(404, "gone") } else { Reply::new(200, data.clone()) }
    });
    let url = server.url("image.qcow2");
    let up = |wait: bool| {
        let mut args = vec!["-p", "lab", "up", "--driver", "kvm2", "--bootstrapper", "none"];
        args.extend(["--libvirt-uri", "test:///default", "--ssh-timeout", "1"]);
        args.extend(["--image", &url, "--image-sha256", &digest]);
        if wait {
            args.push("--wait");
        }
        let mut cmd = k.cmd(args);
        cmd.env("KUBELAB_DOWNLOAD_RETRIES", "0").stdout(Stdio::null()).stderr(Stdio::piped());
        cmd
    };

    let first = up(false).spawn().expect("spawn first up");
    assert_eq!(requests.recv().unwrap(), 0, "the first up holds the lock and downloads");
    let mut second = up(true).spawn().expect("spawn second up");
    let second_stderr = until_waiting(&mut second);
    release.send(()).unwrap();
    let first = Run::from(first.wait_with_output().unwrap());
    let first = first.failure(reason::IMG_DOWNLOAD_FAILED.exit_code);
    assert!(!k.home().join("profiles/lab").exists(), "failed fresh up cleans up: {first}");
    assert!(k.home().join("locks/lab.lock").is_file(), "but keeps the lock file");

    assert_eq!(requests.recv().unwrap(), 1, "the second up holds the lock and downloads");
    let third = Run::from(up(false).output().unwrap()).failure(reason::PROFILE_BUSY.exit_code);
    assert!(third.stderr.contains(&format!("held by PID {}", second.id())), "{third}");
    release.send(()).unwrap();
    second.wait().unwrap();
    let second_stderr = second_stderr.join().unwrap();
    assert!(!second_stderr.contains("PROFILE_BUSY"), "{second_stderr}");
    assert_eq!(server.requests().len(), 2, "no third download");
}

/// Two profiles created at once get distinct subnets: the libvirt test driver is
/// private to each process, so only the home's networks lock and the subnets the
/// other profile saved keep them apart.
#[test]
fn profiles_created_at_once_get_distinct_subnets() {
    let k = Kubelab::new();
    let images = [crate::util::test_data(4096, 3), crate::util::test_data(4096, 4)];
    let digests = images.clone().map(|d| hex::encode(sha2::Sha256::digest(&d)));
    // Both downloads are answered together: both `up`s choose their subnets at once.
    let both = Barrier::new(2);
    let server = HttpServer::start(move |req, _| {
        both.wait();
        let index = usize::from(req.target.ends_with("b.qcow2"));
        Reply::new(200, images[index].clone())
    });
    let spawn = |name: &str, file: &str, digest: &str| -> Child {
        let mut args = vec!["-p", name, "up", "--driver", "kvm2", "--bootstrapper", "none"];
        args.extend(["--libvirt-uri", "test:///default", "--ssh-timeout", "1"]);
        let url = server.url(file);
        args.extend(["--image", &url, "--image-sha256", digest]);
        k.cmd(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn up")
    };
    let mut one = spawn("one", "a.qcow2", &digests[0]);
    let mut two = spawn("two", "b.qcow2", &digests[1]);
    one.wait().unwrap();
    two.wait().unwrap();
    let (one, two) = (state(&k, "one"), state(&k, "two"));
    let mut subnets: Vec<&str> = [&one, &two]
        .iter()
        .flat_map(|s| [s["host_only_cidr"].as_str(), s["nat_cidr"].as_str()])
        .map(|c| c.expect("a saved subnet"))
        .collect();
    let all = subnets.join(", ");
    subnets.sort_unstable();
    subnets.dedup();
    assert_eq!(subnets.len(), 4, "two profiles share a subnet: {all}");
}
