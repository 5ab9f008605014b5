//! `doctor`: each check's line, reason and advice, and which failures fail the command,
//! on host states made deterministic: an empty PATH (no VBoxManage, qemu-img nor ssh),
//! libvirt's in-memory test driver, a libvirt socket that does not exist.

use kubelab::reason;
#[cfg(feature = "libvirt")]
use serde_json::Value;

use crate::util::{Kubelab, Run};

/// `kubelab doctor ARGS` with an empty directory as PATH.
fn doctor_without_tools(k: &Kubelab, args: &[&str]) -> Run {
    let empty = tempfile::tempdir().expect("empty PATH dir");
    let mut cmd = k.cmd(["doctor"].iter().chain(args));
    cmd.env("PATH", empty.path())
        .env_remove("VBOX_MSI_INSTALL_PATH")
        .env_remove("VBOX_INSTALL_PATH");
    Run::from(cmd.output().expect("run kubelab"))
}

/// The checks of a `-o json` run.
#[cfg(feature = "libvirt")]
fn checks(run: &Run) -> Vec<Value> {
    let report: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run}"));
    report["checks"].as_array().expect("checks array").clone()
}

#[cfg(feature = "libvirt")]
fn find<'a>(checks: &'a [Value], scope: &str, name: &str) -> &'a Value {
    let found = checks.iter().find(|c| c["scope"] == scope && c["name"] == name);
    found.unwrap_or_else(|| panic!("no check {scope}/{name} in {checks:?}"))
}

#[cfg(feature = "virtualbox")]
#[test]
fn virtualbox_without_vboxmanage_fails_with_its_hint() {
    let k = Kubelab::new();
    let run = doctor_without_tools(&k, &["--driver", "virtualbox"])
        .failure(reason::HOST_VBOX_NOT_FOUND.exit_code);
    assert!(run.stdout.contains("FAIL  virtualbox  VBoxManage"), "{run}");
    assert!(run.stdout.contains("hint (HOST_VBOX_NOT_FOUND): install VirtualBox"), "{run}");
    // No ssh on PATH only warns: kubelab's own connections need none.
    assert!(run.stdout.contains("warn  host        ssh client"), "{run}");
    assert!(run.stdout.contains("hint (HOST_TOOL_MISSING)"), "{run}");
    assert!(!run.stdout.contains("kvm2"), "only the driver asked for: {run}");
}

/// The JSON shape, and the exit code of the deciding driver's first failure: on the
/// test driver libvirt answers, and without qemu-img on PATH kvm2 cannot work.
#[cfg(feature = "libvirt")]
#[test]
fn kvm2_checks_as_json_fail_on_missing_qemu_img() {
    let k = Kubelab::new();
    let args = ["--driver", "kvm2", "--libvirt-uri", "test:///default", "-o", "json"];
    let run = doctor_without_tools(&k, &args).failure(reason::HOST_QEMU_IMG_MISSING.exit_code);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["driver"], "kvm2");
    let checks = checks(&run);
    for check in &checks {
        let keys: Vec<&String> = check.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["message", "name", "reason", "scope", "state"], "{check}");
        assert!(["ok", "warn", "fail"].contains(&check["state"].as_str().unwrap()), "{check}");
        assert_eq!(check["reason"].is_null(), check["state"] == "ok", "{check}");
    }
    let libvirt = find(&checks, "kvm2", "libvirt");
    assert_eq!(libvirt["state"], "ok");
    assert!(libvirt["message"].as_str().unwrap().contains("(libvirt "), "{libvirt}");
    let qemu_img = find(&checks, "kvm2", "qemu-img");
    assert_eq!(qemu_img["state"], "fail");
    assert_eq!(qemu_img["reason"]["id"], "HOST_QEMU_IMG_MISSING");
    assert_eq!(qemu_img["reason"]["exit_code"], reason::HOST_QEMU_IMG_MISSING.exit_code);
    assert!(qemu_img["reason"]["advice"].as_str().unwrap().contains("qemu-utils"));
    let accel = find(&checks, "kvm2", "acceleration");
    assert_ne!(accel["state"], "fail", "KVM or the TCG fallback: {accel}");
    assert_eq!(find(&checks, "host", "home")["state"], "ok");
    assert!(
        ["ok", "fail"].contains(&find(&checks, "kvm2", "host routes")["state"].as_str().unwrap())
    );
}

#[cfg(feature = "libvirt")]
#[test]
fn kvm2_without_libvirtd_says_what_to_install_and_start() {
    let k = Kubelab::new();
    let uri = "qemu+unix:///system?socket=/nonexistent/kubelab/libvirt-sock";
    let run = k
        .run(["doctor", "--driver", "kvm2", "--libvirt-uri", uri])
        .failure(reason::HOST_LIBVIRT_UNREACHABLE.exit_code);
    assert!(run.stdout.contains("FAIL  kvm2        libvirt"), "{run}");
    assert!(run.stdout.contains("No such file or directory"), "the socket is missing: {run}");
    assert!(run.stdout.contains("libvirt-daemon-system qemu-system-x86"), "{run}");
    assert!(run.stdout.contains("sudo systemctl enable --now libvirtd"), "{run}");
}

#[test]
fn unknown_driver_is_a_bad_option() {
    let k = Kubelab::new();
    let run = k.run(["doctor", "--driver", "xen"]).failure(reason::PROFILE_BAD_OPTION.exit_code);
    assert!(run.stderr.contains("unknown driver \"xen\""), "{run}");
}
