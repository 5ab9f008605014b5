//! Files kubelab reads back from its home are input, and its writes never follow a
//! link: each reproduction of the issue "Never touch what is not yours" (classes 2
//! and 3) as an assertion that the command refuses and the target is untouched.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use kubelab::reason;

#[cfg(feature = "libvirt")]
use crate::cluster::saved_profile_named;
use crate::cluster::saved_profile_with;
use crate::util::Kubelab;

/// A directory outside the home holding one file whose content must survive.
fn victim() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("victim dir");
    fs::write(dir.path().join("precious"), "keep").expect("victim file");
    dir
}

fn assert_untouched(dir: &Path) {
    assert_eq!(fs::read_to_string(dir.join("precious")).expect("victim file"), "keep");
    assert_eq!(fs::read_dir(dir).expect("victim dir").count(), 1, "nothing added");
}

#[test]
fn node_name_leaving_the_profile_is_refused_and_the_directory_survives() {
    let k = Kubelab::new();
    saved_profile_with(&k, |s| s["nodes"][1]["name"] = "../../victim".into());
    // Where `nodes/../../victim` of profile `lab` points.
    let target = k.home().join("profiles/victim");
    fs::create_dir_all(&target).unwrap();
    fs::write(target.join("precious"), "keep").unwrap();
    let code = reason::PROFILE_STATE_CORRUPT.exit_code;
    let run = k.run(["-p", "lab", "node", "delete", "../../victim"]).failure(code);
    assert!(run.stderr.contains("profile.json is corrupt: field nodes[1].name"), "{run}");
    assert!(run.stderr.contains("hint (PROFILE_STATE_CORRUPT)"), "{run}");
    assert_untouched(&target);
}

// Drives a kvm2 profile (libvirt's test driver).
#[cfg(feature = "libvirt")]
#[test]
fn libvirt_uri_that_runs_a_program_is_refused_on_status() {
    let k = Kubelab::new();
    let pwned = k.home().join("pwned");
    let uri = format!("qemu+ext:///system?command=/bin/touch%20{}", pwned.display());
    saved_profile_with(&k, |s| s["libvirt_uri"] = uri.clone().into());
    for cmd in [["-p", "lab", "status"], ["-p", "lab", "down"]] {
        let run = k.run(cmd).failure(reason::PROFILE_STATE_CORRUPT.exit_code);
        assert!(run.stderr.contains("field libvirt_uri"), "{run}");
        assert!(run.stderr.contains("transport \"ext\""), "{run}");
    }
    // From the flag, refused before anything is created.
    let run = k.run(["-p", "new", "up", "--libvirt-uri", &uri]);
    let run = run.failure(reason::DRV_URI_REFUSED.exit_code);
    assert!(run.stderr.contains("hint (DRV_URI_REFUSED)"), "{run}");
    assert!(!k.home().join("profiles/new").exists(), "{run}");
    assert!(!pwned.exists(), "the URI's command ran");
}

#[test]
fn sidecar_digest_leaving_the_cache_is_refused_and_nothing_is_deleted() {
    let k = Kubelab::new();
    let cache = k.home().join("cache/images");
    fs::create_dir_all(&cache).unwrap();
    // `cache/images/../../x.qcow2` is the home's `x.qcow2`.
    fs::write(k.home().join("x.qcow2"), "keep").unwrap();
    let sidecar = serde_json::json!({
        "sha256": "../../x", "format": "qcow2", "size_bytes": 4, "mtime_ns": 0,
        "url": "file:///x", "name": "ubuntu-24.04"
    });
    fs::write(cache.join("evil.json"), sidecar.to_string()).unwrap();
    let code = reason::IMG_CACHE_CORRUPT.exit_code;
    for cmd in [vec!["image", "rm", "ubuntu-24.04"], vec!["image", "list"]] {
        let run = k.run(&cmd).failure(code);
        assert!(run.stderr.contains("evil.json is corrupt: field sha256"), "{cmd:?}: {run}");
    }
    assert_eq!(fs::read_to_string(k.home().join("x.qcow2")).unwrap(), "keep");
    assert!(cache.join("evil.json").exists(), "a refused file is left for the user");
}

#[test]
fn symlinked_lock_is_not_truncated() {
    let k = Kubelab::new();
    saved_profile_with(&k, |_| {});
    let outside = victim();
    fs::create_dir_all(k.home().join("locks")).unwrap();
    symlink(outside.path().join("precious"), k.home().join("locks/lab.lock")).unwrap();
    let run = k.run(["-p", "lab", "down"]).failure(reason::PROFILE_LINK_REFUSED.exit_code);
    assert!(run.stderr.contains("is a symbolic link"), "{run}");
    assert_untouched(outside.path());
}

// Drives a kvm2 profile (libvirt's test driver).
#[cfg(feature = "libvirt")]
#[test]
fn symlinked_journal_is_not_written_through() {
    let k = Kubelab::new();
    saved_profile_with(&k, |_| {});
    let outside = victim();
    let journal = k.home().join("profiles/lab/journal.jsonl");
    symlink(outside.path().join("precious"), &journal).unwrap();
    // Forgets the VM: the atomic rewrite replaces the link itself, never its target
    // (appending through a link is refused: see the journal unit tests).
    k.run(["-p", "lab", "node", "delete", "lab-m02"]).success();
    assert_untouched(outside.path());
    assert!(!fs::symlink_metadata(&journal).unwrap().file_type().is_symlink());
    assert!(fs::read_to_string(&journal).unwrap().contains("kubelab-lab"));
}

// Drives a kvm2 profile (libvirt's test driver).
#[cfg(feature = "libvirt")]
#[test]
fn symlinked_nodes_dir_gets_no_host_keys() {
    let k = Kubelab::new();
    // Profile `test`: its control plane runs in libvirt's test driver, so `ssh` goes on
    // to write the host keys.
    saved_profile_named(&k, "test", |_| {});
    let outside = victim();
    symlink(outside.path(), k.home().join("profiles/test/nodes")).unwrap();
    let run = k.run(["-p", "test", "ssh", "--print-command"]);
    let run = run.failure(reason::PROFILE_LINK_REFUSED.exit_code);
    assert!(run.stderr.contains("nodes is a symbolic link"), "{run}");
    assert_untouched(outside.path());
}

#[test]
fn symlinked_profile_dir_is_refused() {
    let k = Kubelab::new();
    saved_profile_with(&k, |_| {});
    let outside = tempfile::tempdir().unwrap();
    let moved = outside.path().join("lab");
    fs::rename(k.home().join("profiles/lab"), &moved).unwrap();
    symlink(&moved, k.home().join("profiles/lab")).unwrap();
    let run = k.run(["-p", "lab", "down"]).failure(reason::PROFILE_LINK_REFUSED.exit_code);
    assert!(run.stderr.contains("profiles/lab is a symbolic link"), "{run}");
    let names: Vec<_> = fs::read_dir(&moved).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["profile.json"], "no lock or other file was written there");
}

/// `kubelab ARGS` with the user's kubeconfig inside the test's home, so a forced delete
/// (which always cleans the kubeconfig by marker) never reads the real one.
#[cfg(feature = "libvirt")]
fn run_isolated(k: &Kubelab, args: &[&str]) -> crate::util::Run {
    let kubeconfig = k.home().join("kubeconfig");
    crate::util::Run::from(k.cmd(args).env("KUBECONFIG", kubeconfig).output().expect("run"))
}

// Drives a kvm2 profile (libvirt's test driver).
#[cfg(feature = "libvirt")]
#[test]
fn corrupt_profile_is_deleted_only_with_force() {
    let k = Kubelab::new();
    saved_profile_with(&k, |_| {});
    let dir = k.home().join("profiles/lab");
    fs::write(dir.join("profile.json"), "{not json").unwrap();
    let run = run_isolated(&k, &["-p", "lab", "delete"]);
    let run = run.failure(reason::PROFILE_STATE_CORRUPT.exit_code);
    assert!(run.stderr.contains("hint (PROFILE_STATE_CORRUPT)"), "{run}");
    assert!(run.stderr.contains("`kubelab delete --force -p NAME`"), "{run}");
    assert!(dir.join("profile.json").exists(), "a refused delete changes nothing");
    let force = ["-p", "lab", "delete", "--force", "--libvirt-uri", "test:///default"];
    let run = run_isolated(&k, &force).success();
    assert!(run.stdout.contains("profile lab: deleted"), "{run}");
    assert!(run.stderr.contains("profile lab is corrupt"), "{run}");
    assert!(!dir.exists(), "{run}");
}

// Drives kvm2 profiles (libvirt's test driver).
#[cfg(feature = "libvirt")]
#[test]
fn delete_all_passes_a_corrupt_profile_and_force_removes_it() {
    let k = Kubelab::new();
    saved_profile_named(&k, "bad", |s| s["nodes"][1]["name"] = "../../victim".into());
    saved_profile_named(&k, "good", |_| {});
    let run = run_isolated(&k, &["delete", "--all"]).success();
    assert!(run.stdout.contains("profile good: deleted"), "{run}");
    assert!(run.stdout.contains("profile bad: kept"), "{run}");
    assert!(run.stderr.contains("warning: profile bad kept"), "{run}");
    assert!(run.stderr.contains("field nodes[1].name"), "{run}");
    assert!(run.stderr.contains("`kubelab delete --force -p bad`"), "{run}");
    assert!(!k.home().join("profiles/good").exists(), "{run}");
    assert!(k.home().join("profiles/bad/profile.json").exists(), "{run}");
    let run = run_isolated(&k, &["delete", "--all", "--force", "--libvirt-uri", "test:///default"]);
    let run = run.success();
    assert!(run.stdout.contains("profile bad: deleted"), "{run}");
    assert!(!k.home().join("profiles/bad").exists(), "{run}");
}

// Drives a kvm2 profile (libvirt's test driver).
#[cfg(feature = "libvirt")]
#[test]
fn journal_naming_another_vm_is_refused_and_force_deletes_by_marker() {
    let k = Kubelab::new();
    saved_profile_with(&k, |_| {});
    let dir = k.home().join("profiles/lab");
    // libvirt's test driver always has the domain `test`: a tampered journal names it.
    fs::write(dir.join("journal.jsonl"), "{\"kind\":\"vm\",\"name\":\"test\"}\n").unwrap();
    let run = run_isolated(&k, &["-p", "lab", "delete"]);
    let run = run.failure(reason::PROFILE_STATE_CORRUPT.exit_code);
    assert!(run.stderr.contains("journal.jsonl is corrupt: line 1: VM \"test\""), "{run}");
    assert!(run.stderr.contains("`kubelab delete --force -p NAME`"), "{run}");
    assert!(dir.join("journal.jsonl").exists(), "{run}");
    let force = ["-p", "lab", "delete", "--force", "--libvirt-uri", "test:///default"];
    run_isolated(&k, &force).success();
    assert!(!dir.exists());
}
