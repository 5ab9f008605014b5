//! `doctor`: each check's line, reason and advice, and which failures fail the command,
//! on host states made deterministic: an empty PATH (no VBoxManage, qemu-img nor ssh),
//! libvirt's in-memory test driver, a libvirt socket that does not exist, corrupt and
//! stale profile directories, proxy variables, the VBoxManage simulator's flags, and
//! (in a private mount namespace, as root) a full home and no dnsmasq. `up` stops on
//! doctor's cheap checks before it creates anything.

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

/// `cmd` inside a private mount namespace (`unshare --mount`, root): `setup`, a shell
/// line, runs there first (a tmpfs mounted over a path), then the command, then
/// `after` (to list what the command left on that tmpfs before it goes with the
/// namespace). The host's own mounts and files are never changed.
fn in_private_mounts(cmd: &std::process::Command, setup: &str, after: &str) -> Run {
    let script = format!("set -e; {setup}; set +e; \"$@\"; rc=$?; {after}; exit $rc");
    let mut wrapped = std::process::Command::new("unshare");
    wrapped.args(["--mount", "--propagation", "private", "sh", "-c", &script, "sh", "env"]);
    // The command's environment goes through `env` (removals first, as it wants them),
    // so the setup keeps this PATH.
    let envs: Vec<_> = cmd.get_envs().collect();
    for (key, _) in envs.iter().filter(|(_, v)| v.is_none()) {
        wrapped.arg("-u").arg(key);
    }
    for (key, value) in envs.iter().filter_map(|(k, v)| Some((k, (*v)?))) {
        wrapped.arg(format!("{}={}", key.display(), value.display()));
    }
    wrapped.arg(cmd.get_program()).args(cmd.get_args());
    Run::from(wrapped.output().expect("run unshare"))
}

/// A home on a 1 MiB tmpfs: doctor fails on its disk space (a host check, so it
/// decides the exit code whatever the drivers find).
#[test]
fn home_on_a_full_file_system_fails_the_disk_space_check() {
    let k = Kubelab::new();
    let home = k.home().display().to_string();
    let run = in_private_mounts(
        &k.cmd(["doctor"]),
        &format!("mount -t tmpfs -o size=1m kubelab-test {home}"),
        "true",
    )
    .failure(reason::HOST_DISK_SPACE.exit_code);
    assert!(run.stdout.contains("FAIL  host        disk space"), "{run}");
    assert!(run.stdout.contains("MiB free in the file system of"), "{run}");
    assert!(run.stdout.contains("one image needs 1024 MiB"), "{run}");
}

/// `up` stops on the same check before it creates anything: the tmpfs holds only the
/// profile's lock afterwards (taken first, as for every `up`).
#[test]
fn up_stops_on_a_full_home_before_creating_anything() {
    let k = Kubelab::new();
    let home = k.home().display().to_string();
    let run = in_private_mounts(
        &k.cmd(["up", "-p", "lab"]),
        &format!("mount -t tmpfs -o size=1m kubelab-test {home}"),
        &format!("cd {home} && find . | sort"),
    )
    .failure(reason::HOST_DISK_SPACE.exit_code);
    assert!(run.stderr.contains("hint (HOST_DISK_SPACE)"), "{run}");
    assert_eq!(run.stdout, ".\n./locks\n./locks/lab.lock\n", "{run}");
}

/// A corrupt profile.json, a profile directory without one: warnings naming the
/// command that removes each (the checks never fail the command).
#[cfg(feature = "libvirt")]
#[test]
fn corrupt_and_stale_profiles_warn_with_the_command_that_removes_them() {
    let k = Kubelab::new();
    let profiles = k.home().join("profiles");
    std::fs::create_dir_all(profiles.join("broken")).unwrap();
    std::fs::write(profiles.join("broken/profile.json"), "{\"format\": 1").unwrap();
    std::fs::create_dir_all(profiles.join("stale/nodes")).unwrap();
    let args = ["doctor", "--driver", "kvm2", "--libvirt-uri", "test:///default", "-o", "json"];
    let run = k.run(args);
    let checks = checks(&run);
    let profile_checks: Vec<&Value> = checks.iter().filter(|c| c["name"] == "profiles").collect();
    assert_eq!(profile_checks.len(), 2, "{run}");
    let (broken, stale) = (profile_checks[0], profile_checks[1]);
    assert_eq!(
        (&broken["state"], &broken["reason"]["id"]),
        (&"warn".into(), &"PROFILE_STATE_CORRUPT".into())
    );
    let message = broken["message"].as_str().unwrap();
    assert!(message.starts_with("profile broken: profile state"), "{message}");
    assert!(message.ends_with("`kubelab delete --force -p broken` removes it"), "{message}");
    assert_eq!(
        (&stale["state"], &stale["reason"]["id"]),
        (&"warn".into(), &"PROFILE_STALE_DIR".into())
    );
    assert!(stale["message"].as_str().unwrap().contains("`kubelab delete -p stale`"), "{stale}");
}

/// A proxy without NO_PROXY for kubelab's subnets warns with the value to set.
#[cfg(feature = "libvirt")]
#[test]
fn proxy_without_no_proxy_warns_with_the_value_to_set() {
    let k = Kubelab::new();
    let args = ["doctor", "--driver", "kvm2", "--libvirt-uri", "test:///default", "-o", "json"];
    let mut cmd = k.cmd(args);
    cmd.env("HTTPS_PROXY", "http://127.0.0.1:9").env("NO_PROXY", "localhost,127.0.0.1");
    let run = Run::from(cmd.output().expect("run kubelab"));
    let found = checks(&run);
    let proxy = find(&found, "host", "proxy");
    assert_eq!(proxy["state"], "warn", "{proxy}");
    assert_eq!(proxy["reason"]["id"], "HOST_PROXY_NO_PROXY");
    let message = proxy["message"].as_str().unwrap();
    assert!(message.contains("export NO_PROXY=localhost,127.0.0.1,192.168.0.0/16"), "{message}");
    // Covered, it is fine.
    let mut cmd = k.cmd(args);
    cmd.env("HTTPS_PROXY", "http://127.0.0.1:9").env("no_proxy", "192.168.0.0/16");
    let run = Run::from(cmd.output().expect("run kubelab"));
    assert_eq!(find(&checks(&run), "host", "proxy")["state"], "ok", "{run}");
}

/// No dnsmasq in /usr/sbin (a tmpfs over it, in a private mount namespace) nor on an
/// empty PATH: a local QEMU daemon could start no network, so kvm2 fails.
#[cfg(feature = "libvirt")]
#[test]
fn kvm2_without_dnsmasq_fails_with_the_package_to_install() {
    let k = Kubelab::new();
    let empty = tempfile::tempdir().unwrap();
    let uri = "qemu+unix:///system?socket=/nonexistent/kubelab/libvirt-sock";
    let mut cmd = k.cmd(["doctor", "--driver", "kvm2", "--libvirt-uri", uri]);
    cmd.env("PATH", empty.path());
    let run = in_private_mounts(&cmd, "mount -t tmpfs kubelab-test /usr/sbin", "true");
    assert_ne!(run.code, Some(0), "{run}");
    assert!(run.stdout.contains("FAIL  kvm2        dnsmasq               dnsmasq not found (looked in: /usr/sbin/dnsmasq, "), "{run}");
    assert!(run.stdout.contains("hint (HOST_DNSMASQ_MISSING)"), "{run}");
    assert!(run.stdout.contains("dnsmasq-base"), "{run}");
}

/// The simulator's launcher warning (`VBOXSIM_FAIL=vboxdrv:UNLOADED`): the kernel
/// modules check fails with VirtualBox's own line.
#[cfg(feature = "virtualbox")]
#[test]
fn virtualbox_without_vboxdrv_fails_the_kernel_modules_check() {
    let k = Kubelab::new();
    let state = tempfile::tempdir().unwrap();
    let sim = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vboxsim");
    let path = format!("{}:{}", sim.display(), std::env::var("PATH").unwrap_or_default());
    let mut cmd = k.cmd(["doctor", "--driver", "virtualbox"]);
    cmd.env("PATH", path)
        .env("VBOXSIM_STATE", state.path())
        .env("VBOXSIM_FAIL", "vboxdrv:UNLOADED");
    let run = Run::from(cmd.output().expect("run kubelab"));
    assert_ne!(run.code, Some(0), "{run}");
    assert!(
        run.stdout.contains("ok    virtualbox  VBoxManage            VirtualBox 7.0.14"),
        "{run}"
    );
    let line = run.stdout.lines().find(|l| l.contains("kernel modules")).unwrap_or_default();
    assert!(line.starts_with("FAIL  virtualbox"), "{run}");
    assert!(line.contains("vboxdrv kernel module is not loaded"), "{run}");
    assert!(run.stdout.contains("hint (HOST_VBOX_KERNEL_DRIVER)"), "{run}");
    assert!(
        run.stdout.contains("ok    virtualbox  Hyper-V               does not apply (not Windows)"),
        "{run}"
    );
}

/// A warning of the cheap checks never stops `up`: with a proxy that NO_PROXY does not
/// bypass, `up` prints the warning and goes on to the driver (here a refused URI, the
/// next step, so nothing is created).
#[cfg(feature = "libvirt")]
#[test]
fn up_prints_the_proxy_warning_and_goes_on() {
    let k = Kubelab::new();
    let mut cmd =
        k.cmd(["up", "-p", "lab", "--driver", "kvm2", "--libvirt-uri", "qemu+ext:///system"]);
    cmd.env("HTTPS_PROXY", "http://127.0.0.1:9");
    let run =
        Run::from(cmd.output().expect("run kubelab")).failure(reason::DRV_URI_REFUSED.exit_code);
    assert!(run.stderr.contains("warning (HOST_PROXY_NO_PROXY): HTTPS_PROXY is set"), "{run}");
    assert!(run.stderr.contains("export NO_PROXY=192.168.0.0/16"), "{run}");
    assert!(!k.home().join("profiles/lab").exists(), "{run}");
}
