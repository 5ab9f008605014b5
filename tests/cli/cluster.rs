//! `up`, `status`, `ip`, `ssh`, `delete`, `list` and the global options, on what needs
//! no VM: validation before anything is created, saved-profile checks, error format and
//! exit codes. Real VMs are exercised by `scripts/dev/e2e.sh`.

use kubelab::reason;

use crate::util::Kubelab;

/// A saved two-node kvm2 profile `lab`, as `up` writes it (no VM behind it).
fn saved_profile(k: &Kubelab) {
    saved_profile_with(k, |_| {});
}

/// [`saved_profile`], changed by `edit` before it is written.
pub fn saved_profile_with(k: &Kubelab, edit: impl FnOnce(&mut serde_json::Value)) {
    saved_profile_named(k, "lab", edit);
}

/// A saved two-node kvm2 profile `name` (nodes `name` and `name-m02`) on libvirt's
/// in-memory test driver, changed by `edit` before it is written. That driver starts
/// every process with one running domain, `test`: profile `test`'s control plane runs.
pub fn saved_profile_named(k: &Kubelab, name: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let dir = k.home().join("profiles").join(name);
    std::fs::create_dir_all(&dir).expect("profile dir");
    let mut state = serde_json::json!({
        "format": 1, "profile": name, "driver": "kvm2", "accel": "tcg",
        // libvirt's in-memory test driver: `ssh` asks the driver for the address.
        "libvirt_uri": "test:///default",
        "bootstrapper": "none",
        "image": {"source": "ubuntu-24.04", "sha256": "ab".repeat(32), "format": "qcow2"},
        "cpus": 2, "memory_mib": 2048, "disk_gib": 20,
        "host_only_cidr": "192.168.39.0/24", "nat_cidr": "192.168.50.0/24",
        "nodes": [
            {"name": name, "role": "control-plane", "ip": "192.168.39.10",
             "nat_mac": "52:54:00:00:00:01", "host_only_mac": "52:54:00:00:00:02",
             "instance_id": format!("{name}-0123456789abcdef")},
            {"name": format!("{name}-m02"), "role": "worker", "ip": "192.168.39.11",
             "nat_mac": "52:54:00:00:00:03", "host_only_mac": "52:54:00:00:00:04",
             "instance_id": format!("{name}-m02-0123456789abcdef")}
        ]
    });
    edit(&mut state);
    std::fs::write(dir.join("profile.json"), state.to_string()).expect("profile.json");
}

// Drives a kvm2 profile (libvirt's test driver).
#[cfg(feature = "libvirt")]
#[test]
fn bad_options_are_refused_before_anything_is_created() {
    let k = Kubelab::new();
    let bad = reason::PROFILE_BAD_OPTION.exit_code;
    for (args, code, text) in [
        (vec!["up", "--memory", "2x"], bad, "unknown unit"),
        (vec!["up", "--memory", "1"], bad, "--memory 1 MiB is out of range"),
        (vec!["up", "--bootstrapper", "none", "--memory", "511"], bad, "use 512 to"),
        (vec!["up", "--disk", "3g"], bad, "--disk 3 GiB is out of range"),
        (vec!["up", "--network-cidr", "127.0.0.0/24"], bad, "not a private subnet"),
        (vec!["up", "--network-cidr", "0.0.0.0/24"], bad, "not a private subnet"),
        (vec!["up", "--network-cidr", "169.254.0.0/24"], bad, "not a private subnet"),
        (vec!["up", "--network-cidr", "224.0.0.0/24"], bad, "not a private subnet"),
        (vec!["up", "--network-cidr", "10.0.0.0/8"], bad, "prefix 8"),
        (
            vec!["up", "--libvirt-uri", "qemu+ext:///system?command=/bin/true"],
            reason::DRV_URI_REFUSED.exit_code,
            "transport \"ext\"",
        ),
        (vec!["up", "--disk", "0"], reason::PROFILE_BAD_OPTION.exit_code, "--disk"),
        (vec!["up", "--nodes", "0"], reason::PROFILE_BAD_OPTION.exit_code, "between 1 and 99"),
        (
            vec!["up", "--image", "no such image"],
            reason::IMG_BAD_SOURCE.exit_code,
            "not a catalogue",
        ),
        (
            vec!["up", "--image", "x.qcow2", "--image-sha256", "12ab"],
            reason::IMG_BAD_SOURCE.exit_code,
            "sha256",
        ),
        (vec!["-p", "Bad_Name", "up"], reason::PROFILE_NAME_INVALID.exit_code, "lowercase"),
        (vec!["up", "--kubernetes-version", "v1.30.0"], 75, "kubelab bootstraps v1.31.x to"),
        (vec!["up", "--kubernetes-repo", "ftp://mirror/"], bad, "only http and https"),
        (vec!["up", "--kubernetes-repo", "https://u:p@mirror/"], bad, "credentials"),
    ] {
        let run = k.run(&args).failure(code);
        assert!(run.stderr.contains(text), "{args:?}: {run}");
        assert!(run.stderr.starts_with("error: "), "{run}");
        assert!(run.stderr.contains("hint ("), "{run}");
    }
    let run = k.run(["up", "--network-cidr", "10.0.0.0/33"]);
    assert_eq!(run.code, Some(2), "clap rejects an invalid CIDR: {run}");
    assert!(crate::util::files_in(&k.home().join("profiles")).is_empty(), "nothing may be created");
}

#[test]
fn flags_contradicting_the_saved_profile_are_refused() {
    let k = Kubelab::new();
    saved_profile(&k);
    let code = reason::PROFILE_FLAG_CONFLICT.exit_code;
    let run = k.run(["-p", "lab", "up", "--nodes", "3"]).failure(code);
    assert!(run.stderr.contains("was created with --nodes 2, not 3"), "{run}");
    let run = k.run(["-p", "lab", "up", "--memory", "4g"]).failure(code);
    assert!(run.stderr.contains("--memory (MiB) 2048, not 4096"), "{run}");
    let run = k.run(["-p", "lab", "up", "--image", "debian-12"]).failure(code);
    assert!(run.stderr.contains("node add"), "the hint says what to do: {run}");
}

// Drives a kvm2 profile (libvirt's test driver).
#[cfg(feature = "libvirt")]
#[test]
fn ip_and_ssh_command_come_from_the_saved_profile() {
    let k = Kubelab::new();
    saved_profile(&k);
    assert_eq!(k.run(["-p", "lab", "ip"]).success().stdout, "192.168.39.10\n");
    assert_eq!(k.run(["-p", "lab", "ip", "lab-m02"]).success().stdout, "192.168.39.11\n");
    let json = k.run(["-p", "lab", "-o", "json", "ip", "lab-m02"]).success().stdout;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json, serde_json::json!({"node": "lab-m02", "ip": "192.168.39.11"}));
    let run = k.run(["-p", "lab", "ip", "lab-m09"]).failure(reason::PROFILE_UNKNOWN_NODE.exit_code);
    assert!(run.stderr.contains("nodes: lab, lab-m02"), "{run}");

    // Profile `test`: its control plane is the test driver's running domain.
    saved_profile_named(&k, "test", |_| {});
    let line = k.run(["-p", "test", "ssh", "--print-command"]).success().stdout;
    let profile = k.home().join("profiles/test");
    assert!(line.starts_with("ssh -i "), "{line}");
    assert!(
        line.contains(&format!("UserKnownHostsFile={}", profile.join("known_hosts").display()))
    );
    assert!(line.contains("StrictHostKeyChecking=yes"), "{line}");
    assert!(line.contains("ConnectTimeout=10"), "a stopped node cannot hang ssh: {line}");
    assert!(line.trim_end().ends_with("-p 22 kubelab@192.168.39.10"), "{line}");
    let json = k.run(["-p", "test", "-o", "json", "ssh", "--print-command"]).success().stdout;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["command"], line.trim_end(), "{json}");
    assert_eq!(json["argv"][0], "ssh", "{json}");
    // The key files and known_hosts exist now, and known_hosts pins both nodes.
    let known = std::fs::read_to_string(profile.join("known_hosts")).unwrap();
    assert_eq!(known.lines().count(), 2, "{known}");
    assert!(known.starts_with("192.168.39.10 ssh-ed25519 "), "{known}");
}

// Drives a kvm2 profile (libvirt's test driver).
#[cfg(feature = "libvirt")]
#[test]
fn ssh_to_a_node_that_is_not_running_fails_at_once() {
    let k = Kubelab::new();
    saved_profile_named(&k, "test", |_| {});
    let code = reason::GUEST_NOT_RUNNING.exit_code;
    // No VM `test-m02` exists: `ssh` is never started (it would wait on a dead address).
    for cmd in [vec!["ssh", "test-m02", "--", "true"], vec!["ssh", "test-m02", "--print-command"]] {
        let run = k.cmd(["-p", "test"]).args(&cmd).output().expect("run kubelab");
        let run = crate::util::Run::from(run).failure(code);
        assert!(run.stderr.contains("node test-m02 is missing, not running"), "{run}");
        assert!(run.stderr.contains("hint (GUEST_NOT_RUNNING)"), "{run}");
    }
}

#[test]
fn failures_with_json_output_print_one_error_object() {
    let k = Kubelab::new();
    for cmd in [vec!["status"], vec!["ip"], vec!["down"], vec!["ssh", "--print-command"]] {
        let run = k.cmd(["-o", "json"]).args(&cmd).output().expect("run kubelab");
        let run = crate::util::Run::from(run).failure(reason::PROFILE_NOT_FOUND.exit_code);
        let json: serde_json::Value =
            serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run}"));
        let error = &json["error"];
        assert_eq!(error["reason"], "PROFILE_NOT_FOUND", "{cmd:?}: {json}");
        assert_eq!(error["exit_code"], reason::PROFILE_NOT_FOUND.exit_code, "{json}");
        assert_eq!(error["hint"], reason::PROFILE_NOT_FOUND.advice, "{json}");
        assert!(error["message"].as_str().unwrap().contains("does not exist"), "{json}");
        assert!(run.stderr.contains("hint (PROFILE_NOT_FOUND)"), "text on stderr too: {run}");
    }
}

// Drives a kvm2 profile (libvirt's test driver).
#[cfg(feature = "libvirt")]
#[test]
fn every_printing_command_honours_json_output() {
    let k = Kubelab::new();
    saved_profile_named(&k, "test", |s| s["bootstrapper"] = "kubeadm".into());
    let json = |args: &[&str]| -> serde_json::Value {
        let run = crate::util::Run::from(
            k.cmd(["-p", "test", "-o", "json"]).args(args).output().unwrap(),
        );
        serde_json::from_str(&run.success().stdout).expect("one JSON document")
    };
    let standalone = k.home().join("profiles/test/kubeconfig");
    std::fs::write(&standalone, "apiVersion: v1\nkind: Config\n").unwrap();
    assert_eq!(json(&["kubeconfig", "--path"])["path"], standalone.to_str().unwrap());
    assert_eq!(json(&["kubeconfig"])["kubeconfig"], "apiVersion: v1\nkind: Config\n");
    let logs = json(&["logs", "test-m02"]);
    assert!(logs["console"].as_str().unwrap().contains("no console log"), "{logs}");
    assert!(logs["cloud_init"].is_null(), "{logs}");
    assert!(logs["cloud_init_error"].as_str().unwrap().contains("not running"), "{logs}");
    let deleted =
        crate::util::Run::from(k.cmd(["-p", "none", "-o", "json", "delete"]).output().unwrap());
    let deleted: serde_json::Value = serde_json::from_str(&deleted.success().stdout).unwrap();
    assert_eq!(deleted, serde_json::json!({"profiles": [{"name": "none", "existed": false}]}));
}

#[test]
fn missing_profile_errors_and_delete_is_idempotent() {
    let k = Kubelab::new();
    let code = reason::PROFILE_NOT_FOUND.exit_code;
    for cmd in [vec!["status"], vec!["ip"], vec!["down"], vec!["ssh", "--print-command"]] {
        let run = k.run(&cmd).failure(code);
        assert!(run.stderr.contains("profile \"kubelab\" does not exist"), "{cmd:?}: {run}");
    }
    let run = k.run(["delete"]).success();
    assert!(run.stdout.contains("does not exist"), "{run}");
    assert_eq!(k.run(["delete", "--all"]).success().stdout, "");
}

#[test]
fn list_shows_profiles_as_text_and_json() {
    let k = Kubelab::new();
    assert!(k.run(["list"]).success().stdout.contains("no profiles"));
    saved_profile(&k);
    let text = k.run(["list"]).success().stdout;
    assert!(text.starts_with("lab ") && text.contains("kvm2"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&k.run(["list", "-o", "json"]).success().stdout).unwrap();
    assert_eq!(json[0]["name"], "lab");
    assert_eq!(json[0]["state"]["nodes"][1]["name"], "lab-m02");
}

// Drives a kvm2 profile (libvirt's test driver).
#[cfg(feature = "libvirt")]
#[test]
fn version_and_completion() {
    let k = Kubelab::new();
    let run = k.run(["version"]).success();
    assert_eq!(run.stdout, format!("kubelab {}\n", env!("CARGO_PKG_VERSION")));
    let json: serde_json::Value =
        serde_json::from_str(&k.run(["version", "-o", "json"]).success().stdout).unwrap();
    assert!(json["drivers"].as_array().unwrap().iter().any(|d| d == "kvm2"), "{json}");
    let script = k.run(["completion", "bash"]).success().stdout;
    assert!(script.contains("kubelab") && script.contains("image"), "bash completion");
}

// Drives a kvm2 profile (libvirt's test driver).
#[cfg(feature = "libvirt")]
#[test]
fn failed_node_add_rolls_the_node_back() {
    let k = Kubelab::new();
    let (image, digest) = crate::locking::image_file(k.home(), 5);
    saved_profile_named(&k, "lab", |s| {
        s["image"] = serde_json::json!({"source": image, "sha256": digest, "format": "qcow2"});
    });
    // libvirt's test driver cannot upload into a volume: creating lab-m03's VM fails
    // after its seed, node files, journal entry and profile entry were made.
    let run = k.run(["-p", "lab", "node", "add", "--ssh-timeout", "1"]);
    assert_ne!(run.code, Some(0), "{run}");
    assert!(run.stderr.contains("hint ("), "{run}");
    assert!(!run.stderr.contains("cannot roll back"), "{run}");
    let profile = k.home().join("profiles/lab");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(profile.join("profile.json")).unwrap())
            .unwrap();
    let names: Vec<&str> =
        state["nodes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["lab", "lab-m02"], "no phantom node: {run}");
    assert!(!profile.join("nodes/lab-m03").exists(), "seed and host key are gone: {run}");
    let journal = std::fs::read_to_string(profile.join("journal.jsonl")).unwrap_or_default();
    assert!(!journal.contains("lab-m03"), "journal still lists the VM: {journal}");
    let status = k.run(["-p", "lab", "status"]).success().stdout;
    assert!(!status.contains("lab-m03"), "{status}");
}

/// `--driver kvm2` where no libvirtd listens (its socket is missing): the hint names the
/// packages to install and how to start the daemon, and nothing is saved.
#[cfg(feature = "libvirt")]
#[test]
fn kvm2_without_libvirtd_names_the_packages_and_the_service() {
    let k = Kubelab::new();
    let uri = "qemu+unix:///system?socket=/nonexistent/kubelab/libvirt-sock";
    let run = k
        .run(["up", "--driver", "kvm2", "--libvirt-uri", uri])
        .failure(reason::HOST_LIBVIRT_UNREACHABLE.exit_code);
    assert!(run.stderr.contains("cannot reach libvirt at qemu+unix:///system"), "{run}");
    for text in ["libvirt-daemon-system qemu-system-x86", "libvirt qemu-kvm"] {
        assert!(run.stderr.contains(text), "{text}: {run}");
    }
    assert!(run.stderr.contains("sudo systemctl enable --now libvirtd"), "{run}");
    assert!(!k.home().join("profiles/kubelab").exists(), "nothing saved: {run}");
}
