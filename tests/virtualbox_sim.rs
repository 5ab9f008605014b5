//! The VirtualBox backend end to end against the VBoxManage simulator
//! (`tests/vboxsim/VBoxManage`, a test double put first on PATH): the real `kubelab`
//! binary runs `up`, `status`, `down`, `up` and `delete` on a two-node profile, and
//! the tests assert the simulator's command transcript and that nothing is left (VMs,
//! media, host-only adapters, extra data, "guest" sshd processes). Each of the host
//! failures users meet most with VirtualBox has its own test.
//!
//! A started simulated VM is a real sshd on 127.0.0.1 (the NAT port forward) with the
//! node's host key from its seed ISO; kubelab logs in as user `kubelab`, which these
//! tests create on the machine when it is missing (they run as root, as CI does).
#![cfg(feature = "virtualbox")]
#![allow(clippy::unwrap_used)] // a test fails by panicking

#[allow(dead_code)] // the HTTP helpers are for other tests
mod util;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kubelab::driver::virtualbox::VirtualBoxDriver;
use kubelab::driver::virtualbox::vboxmanage::VBoxManage;
use kubelab::driver::{self, Driver, NetworkKind, NetworkSpec, Owner};
use serde_json::Value;
use util::{Kubelab, Run};

/// The simulator's directory, put first on PATH.
fn sim_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vboxsim")
}

/// A kubelab home, a simulator state directory and a fake VMDK base image.
struct Lab {
    kubelab: Kubelab,
    dir: tempfile::TempDir,
    fail: Option<&'static str>,
    /// Extra environment for `kubelab` (and so the simulator).
    env: Vec<(&'static str, String)>,
}

impl Lab {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // The guests' sshd reads authorized_keys as user kubelab.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.path().join("base.vmdk"), b"# Disk DescriptorFile (simulated)\n").unwrap();
        Self { kubelab: Kubelab::new(), dir, fail: None, env: Vec::new() }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("vbox")
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_in(&self.kubelab, "lab", args)
    }

    /// `kubelab -p PROFILE ARGS` in the home of `kubelab`, on this lab's simulator.
    fn run_in(&self, kubelab: &Kubelab, profile: &str, args: &[&str]) -> Run {
        let path = format!("{}:{}", sim_dir().display(), std::env::var("PATH").unwrap_or_default());
        let mut cmd = kubelab.cmd(["-p", profile].iter().chain(args));
        cmd.env("PATH", path).env("VBOXSIM_STATE", self.state_dir()).env_remove("VBOXSIM_FAIL");
        if let Some(fail) = self.fail {
            cmd.env("VBOXSIM_FAIL", fail);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        Run::from(cmd.output().expect("run kubelab"))
    }

    /// `up` of two nodes; the image is the fake VMDK unless `extra` has `--image`.
    fn up(&self, extra: &[&str]) -> Run {
        self.up_in(&self.kubelab, "lab", extra)
    }

    /// [`Lab::up`] of `profile` in the home of `kubelab`.
    fn up_in(&self, kubelab: &Kubelab, profile: &str, extra: &[&str]) -> Run {
        let image = self.dir.path().join("base.vmdk");
        let mut args =
            vec!["up", "--driver", "virtualbox", "--nodes", "2", "--bootstrapper", "none"];
        args.extend(["--ssh-timeout", "60"]);
        if !extra.contains(&"--image") {
            args.extend(["--image", image.to_str().unwrap()]);
        }
        args.extend(extra);
        self.run_in(kubelab, profile, &args)
    }

    /// The id of the kubelab home (`home-id`, made by the first command).
    fn home_id(&self) -> String {
        let text = fs::read_to_string(self.kubelab.home().join("home-id")).unwrap();
        text.trim_end().to_owned()
    }

    fn state(&self) -> Value {
        let text = fs::read_to_string(self.state_dir().join("state.json")).unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// The transcript lines since `from`, as `(subcommand words, vm)`.
    /// No VBoxManage call that creates something was made.
    fn assert_nothing_created(&self) {
        let created = ["hostonlyif create", "createvm", "createmedium", "setextradata"];
        let transcript = self.transcript();
        assert!(
            !transcript.iter().any(|l| created.iter().any(|c| l.starts_with(c))),
            "{transcript:?}"
        );
    }

    fn transcript(&self) -> Vec<String> {
        fs::read_to_string(self.state_dir().join("transcript.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The transcript lines naming VM `vm` (its own commands), shortened to their verbs.
    fn vm_commands(&self, vm: &str) -> Vec<String> {
        self.transcript()
            .iter()
            .filter(|l| l.split(' ').nth(1) == Some(vm) || l.contains(&format!("--name {vm} ")))
            .map(|l| {
                let words: Vec<&str> = l.split(' ').collect();
                match words[0] {
                    "controlvm" => format!("controlvm {}", words[2]),
                    "startvm" => format!("startvm {}", words[3]),
                    "createvm" => "createvm".to_owned(),
                    "storagectl" => format!("storagectl {}", words[4]),
                    "storageattach" => format!("storageattach {}", words[5]),
                    "snapshot" => format!("snapshot {}", words[2]),
                    verb => verb.to_owned(),
                }
            })
            .collect()
    }

    /// Every sshd the simulator started is gone (or a zombie awaiting its reaper).
    fn assert_no_guest_running(&self) {
        let pids = fs::read_to_string(self.state_dir().join("pids.log")).unwrap_or_default();
        for pid in pids.lines() {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            assert!(status.is_empty() || status.contains("State:\tZ"), "sshd {pid} still runs");
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Stop the simulated guests of a failed test, by the PIDs the simulator recorded.
        let pids = fs::read_to_string(self.state_dir().join("pids.log")).unwrap_or_default();
        for pid in pids.lines() {
            let _ = Command::new("kill").arg(pid).stderr(std::process::Stdio::null()).status();
        }
    }
}

fn obj_len(value: &Value, key: &str) -> usize {
    value.get(key).and_then(Value::as_object).map_or(0, serde_json::Map::len)
}

#[test]
fn up_status_down_up_delete_two_nodes() {
    let lab = Lab::new();
    let run = lab.up(&[]).success();
    assert!(run.stdout.contains("lab-m02"), "{run}");

    let state = lab.state();
    let vms = state["vms"].as_object().unwrap();
    assert_eq!(vms.keys().collect::<Vec<_>>(), ["lab", "lab-m02"]);
    let mut ports = BTreeMap::new();
    for (name, vm) in vms {
        assert_eq!(vm["state"], "running", "{name}");
        assert_eq!(vm["group"], "/kubelab-lab");
        assert_eq!(vm["extradata"]["kubelab/owner"], format!("{}/lab/{name}", lab.home_id()));
        let rule = vm["forwards"][0].as_str().unwrap();
        assert!(rule.starts_with("ssh,tcp,127.0.0.1,") && rule.ends_with(",,22"), "{rule}");
        ports.insert(name.clone(), rule.split(',').nth(3).unwrap().to_owned());
        assert_eq!(
            vm["storage"]["0"],
            format!("{}/profiles/lab/nodes/{name}/disk.vdi", lab.kubelab.home().display())
        );
        assert_eq!(vm["settings"]["--nic2"], "hostonly");
        assert_eq!(vm["settings"]["--hostonlyadapter2"], "vboxnet0");
    }
    assert_eq!(state["hostonlyifs"]["vboxnet0"]["ip"], "192.168.56.1");
    let base = state["media"].as_object().unwrap().values().filter(|m| m["type"] == "multiattach");
    assert_eq!(base.count(), 1, "one multi-attach base: {state}");

    // Around these, `showvminfo` calls read the state, the NEM check and SSH address.
    let changes = [
        "createvm",
        "setextradata",
        "modifyvm",
        "storagectl --add",
        "storageattach 0",
        "storageattach 2",
        "startvm headless",
        // The `clean` snapshot, once every node answers SSH (a duplicate name is refused
        // by kubelab: VirtualBox would take it).
        "controlvm pause",
        "snapshot list",
        "snapshot take",
        "controlvm resume",
    ];
    for vm in ["lab", "lab-m02"] {
        let commands = lab.vm_commands(vm);
        let (reads, acts): (Vec<&String>, Vec<&String>) =
            commands.iter().partition(|c| ["showvminfo", "getextradata"].contains(&c.as_str()));
        assert_eq!(acts, changes, "{vm}: {commands:?}");
        let start = commands.iter().position(|c| c == "startvm headless").unwrap();
        assert_eq!(commands[start - 1], "getextradata", "the owner is checked before starting");
        assert_eq!(commands[0], "showvminfo", "state is read before creating");
        assert_eq!(commands[start + 1], "showvminfo", "VBox.log is checked after starting");
        assert!(reads.len() >= 3);
    }
    let media: Vec<String> =
        lab.transcript().into_iter().filter(|l| l.contains("medium ")).collect();
    assert_eq!(media.iter().filter(|l| l.contains("--type multiattach")).count(), 1, "{media:?}");
    assert_eq!(media.iter().filter(|l| l.contains("--diffparent")).count(), 2, "{media:?}");
    let network: Vec<String> =
        lab.transcript().into_iter().filter(|l| l.starts_with("hostonlyif")).collect();
    assert_eq!(network.len(), 2, "{network:?}");
    assert_eq!(
        network[1],
        "hostonlyif ipconfig vboxnet0 --ip 192.168.56.1 --netmask 255.255.255.0"
    );

    let status = lab.run(&["-o", "json", "status"]).success();
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["accel"], "virtualbox", "VirtualBox runs its own hypervisor, not KVM");
    assert!(lab.run(&["status"]).success().stdout.contains("(virtualbox, virtualbox)"));
    for node in status["nodes"].as_array().unwrap() {
        let name = node["name"].as_str().unwrap();
        assert_eq!(node["state"], "running");
        assert_eq!(node["ssh_port"].to_string(), ports[name], "{name}");
    }

    lab.run(&["down"]).success();
    for vm in lab.state()["vms"].as_object().unwrap().values() {
        assert_eq!(vm["state"], "poweroff");
    }
    assert!(lab.vm_commands("lab").contains(&"controlvm acpipowerbutton".to_owned()));
    lab.assert_no_guest_running();

    let before = lab.transcript().len();
    lab.up(&[]).success();
    let again = &lab.transcript()[before..];
    assert!(!again.iter().any(|l| l.starts_with("createvm")), "{again:?}");
    assert_eq!(again.iter().filter(|l| l.starts_with("startvm")).count(), 2, "{again:?}");

    lab.run(&["delete"]).success();
    let state = lab.state();
    for key in ["vms", "media", "hostonlyifs", "hostonlynets", "extradata"] {
        assert_eq!(obj_len(&state, key), 0, "{key} left: {state}");
    }
    assert!(!lab.kubelab.home().join("profiles/lab").exists());
    lab.assert_no_guest_running();
    let closes: Vec<String> =
        lab.transcript().into_iter().filter(|l| l.starts_with("closemedium")).collect();
    assert!(closes.iter().all(|l| !l.contains(".vmdk --delete")), "base never deleted: {closes:?}");
}

/// Runs `up` with the simulator failing as told; returns the failed run.
fn up_failing(fail: &'static str, extra: &[&str], code: u8) -> (Lab, Run) {
    let mut lab = Lab::new();
    lab.fail = Some(fail);
    let run = lab.up(extra).failure(code);
    (lab, run)
}

#[test]
fn vtx_disabled_in_bios() {
    for fail in ["startvm:VERR_VMX_MSR_ALL_VMX_DISABLED", "startvm:VERR_SVM_DISABLED"] {
        let (_lab, run) = up_failing(fail, &[], 25);
        assert!(run.stderr.contains("hint (HOST_VTX_DISABLED): enable Intel VT-x"), "{run}");
        assert!(run.stderr.contains("disabled in the BIOS"), "VirtualBox's text is kept: {run}");
    }
}

#[test]
fn vtx_missing() {
    let (_lab, run) = up_failing("startvm:VERR_VMX_NO_VMX", &[], 26);
    assert!(run.stderr.contains("hint (HOST_VTX_MISSING)"), "{run}");
}

#[test]
fn kvm_holds_vtx_on_linux() {
    let (_lab, run) = up_failing("startvm:VERR_VMX_IN_VMX_ROOT_MODE", &[], 27);
    assert!(run.stderr.contains("hint (HOST_KVM_HOLDS_VTX)"), "{run}");
    assert!(run.stderr.contains("modprobe -r kvm_intel"), "{run}");
}

#[test]
fn hyperv_nem_turtle_fallback_and_nem_failure() {
    let (lab, run) = up_failing("startvm:NEM", &[], 28);
    assert!(run.stderr.contains("Attempting fall back to NEM"), "{run}");
    assert!(run.stderr.contains("bcdedit /set hypervisorlaunchtype off"), "{run}");
    assert!(lab.transcript().iter().any(|l| l.ends_with(" poweroff")), "slow VM is stopped");
    lab.assert_no_guest_running();
    let (_lab, run) = up_failing("startvm:VERR_NEM_VM_CREATE_FAILED", &[], 28);
    assert!(run.stderr.contains("dism.exe /Online /Disable-Feature:Microsoft-Hyper-V"), "{run}");
}

#[test]
fn hostonly_range_refused_before_anything_is_created() {
    let (lab, run) = up_failing("", &["--network-cidr", "10.213.7.0/24"], 31);
    assert!(
        run.stderr.contains("add the line `* 10.213.7.0/24` to /etc/vbox/networks.conf"),
        "{run}"
    );
    lab.assert_nothing_created();
}

/// A refused range saves nothing (issue 12): following the hint with another
/// `--network-cidr` then works, with no flag conflict, and the profile takes one /24
/// (its NAT subnet is VirtualBox's own 10.0.2.0/24).
#[test]
fn refused_range_saves_nothing_so_the_hint_can_be_followed() {
    let lab = Lab::new();
    let run = lab.up(&["--network-cidr", "10.213.7.0/24"]).failure(31);
    assert!(run.stderr.contains("hint (HOST_VBOX_HOSTONLY_RANGE)"), "{run}");
    assert!(!lab.kubelab.home().join("profiles/lab").exists(), "nothing saved");
    lab.up(&["--network-cidr", "192.168.57.0/24"]).success();
    let saved = lab.kubelab.home().join("profiles/lab/profile.json");
    let saved: Value = serde_json::from_str(&fs::read_to_string(saved).unwrap()).unwrap();
    assert_eq!(saved["host_only_cidr"], "192.168.57.0/24");
    assert_eq!(saved["nat_cidr"], "10.0.2.0/24");
    lab.run(&["delete"]).success();
}

/// `doctor` on a host with VirtualBox (the simulator): found, its version, its
/// host-only networks listed and networks.conf's default range. The simulator is
/// VirtualBox's user side only: VT-x and the kernel modules are this host's own, so
/// those checks alone may fail (they do on machines without VT-x).
#[test]
fn doctor_finds_virtualbox_and_its_host_only_networking() {
    let lab = Lab::new();
    let run = lab.run(&["doctor", "--driver", "virtualbox"]);
    for line in run.stdout.lines().filter(|l| l.starts_with("FAIL")) {
        let host_side = ["VT-x/AMD-V", "kernel modules"];
        assert!(host_side.iter().any(|check| line.contains(check)), "{run}");
    }
    assert!(
        run.stdout.contains("ok    virtualbox  VBoxManage            VirtualBox 7.0.14"),
        "{run}"
    );
    assert!(run.stdout.contains("ok    virtualbox  host-only networking"), "{run}");
    assert!(
        run.stdout.contains("ok    virtualbox  host-only ranges      192.168.56.0/21"),
        "{run}"
    );
    assert!(
        !lab.transcript().iter().any(|l| l.contains("create") || l.starts_with("set")),
        "read only"
    );
}

/// A `VBoxManage` script running the simulator with the environment `env` (`VAR=value`
/// words), for tests of the library (`Tool` passes no per-call environment).
fn wrapper(lab: &Lab, env: &str) -> PathBuf {
    let wrapper = lab.dir.path().join("VBoxManage");
    let script = format!(
        "#!/bin/sh\nVBOXSIM_STATE={} {env} exec {}/VBoxManage \"$@\"\n",
        lab.state_dir().display(),
        sim_dir().display()
    );
    fs::write(&wrapper, script).unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

/// Profile `profile`'s host-only network, in the home `0123456789abcdef`.
fn host_only_spec(profile: &str, cidr: &str) -> NetworkSpec {
    let (name, _) = driver::network_names(profile);
    NetworkSpec {
        bridge: driver::bridge_name(&name),
        name,
        owner: Owner::new("0123456789abcdef".parse().unwrap(), &profile.parse().unwrap()),
        kind: NetworkKind::HostOnly,
        cidr: cidr.parse().unwrap(),
        hosts: Vec::new(),
    }
}

fn reason_id(err: driver::DriverError) -> &'static str {
    let err = kubelab::Error::from(err);
    kubelab::reason::reason(&err).id
}

/// Where kubelab does not check networks.conf itself (Windows has none, or the file
/// changed), VirtualBox's own refusal of the address gets the same advice.
#[test]
fn hostonly_range_refused_by_virtualbox_itself() {
    let lab = Lab::new();
    let vbox = VBoxManage::at(wrapper(&lab, "")).unwrap();
    let adapter = vbox.hostonlyif_create(Duration::from_secs(30)).unwrap();
    let err = vbox.hostonlyif_ipconfig(&adapter, &"10.213.7.0/24".parse().unwrap()).unwrap_err();
    let kubelab::driver::virtualbox::VBoxError::HostOnlyRange { line, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(line, "* 10.213.7.0/24");
}

#[test]
fn hostonly_adapter_creation_waiting_on_a_hidden_prompt() {
    let lab = Lab::new();
    let vbox = VBoxManage::at(wrapper(&lab, "VBOXSIM_FAIL=hostonlyif-create:HANG")).unwrap();
    let driver = VirtualBoxDriver::new(vbox).with_hostonly_timeout(Duration::from_secs(2));
    let err = driver.ensure_network(&host_only_spec("lab", "192.168.58.0/24")).unwrap_err();
    assert_eq!(reason_id(err), "HOST_VBOX_HOSTONLY_PROMPT");
    let reason = &kubelab::reason::HOST_VBOX_HOSTONLY_PROMPT;
    assert!(reason.advice.contains("hidden behind other windows"));
    assert!(obj_len(&lab.state(), "hostonlyifs") == 0, "nothing half-created");
}

/// kubelab removes only the adapters it created, when the last network using them goes;
/// an adapter the user made for the subnet is used and left alone.
#[test]
fn hostonly_adapters_are_found_or_created_and_removed_by_their_last_user() {
    let lab = Lab::new();
    let vbox = VBoxManage::at(wrapper(&lab, "")).unwrap();
    let users = vbox.hostonlyif_create(Duration::from_secs(30)).unwrap();
    vbox.hostonlyif_ipconfig(&users, &"192.168.60.0/24".parse().unwrap()).unwrap();
    let driver = VirtualBoxDriver::new(vbox);
    let found = host_only_spec("found", "192.168.60.0/24");
    driver.ensure_network(&found).unwrap();
    let created = host_only_spec("lab", "192.168.61.0/24");
    driver.ensure_network(&created).unwrap();
    driver.ensure_network(&created).unwrap(); // idempotent
    let ifs = lab.state()["hostonlyifs"].clone();
    assert_eq!(ifs.as_object().unwrap().len(), 2, "{ifs}");
    assert_eq!(ifs["vboxnet1"]["ip"], "192.168.61.1");

    driver.delete_network(&created.name, &created.owner).unwrap();
    driver.delete_network(&found.name, &found.owner).unwrap();
    driver.delete_network(&found.name, &found.owner).unwrap(); // already gone
    let state = lab.state();
    assert_eq!(state["hostonlyifs"].as_object().unwrap().keys().collect::<Vec<_>>(), [&users]);
    assert_eq!(obj_len(&state, "extradata"), 0, "{state}");
}

/// Issue 14: VirtualBox cannot attach a qcow2 base image, so `up` converts it to VMDK
/// (qemu-img, cached) and the nodes boot the conversion; a qcow2 image qemu-img cannot
/// read is refused before any VM is created.
#[test]
fn qcow2_image_is_converted_to_vmdk_or_refused_before_a_vm_is_created() {
    let lab = Lab::new();
    let bad = lab.dir.path().join("bad.qcow2");
    fs::write(&bad, b"QFI\xfb simulated").unwrap();
    let run = lab.up(&["--image", bad.to_str().unwrap()]);
    let run = run.failure(kubelab::reason::BAKE_CONVERT_FAILED.exit_code);
    assert!(run.stderr.contains("hint (BAKE_CONVERT_FAILED)"), "{run}");
    assert!(!lab.transcript().iter().any(|l| l.starts_with("createvm")), "{:?}", lab.transcript());

    let image = lab.dir.path().join("base.qcow2");
    let made = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", image.to_str().unwrap(), "1M"])
        .status()
        .expect("qemu-img must be installed");
    assert!(made.success());
    lab.up(&["--image", image.to_str().unwrap(), "--no-snapshot"]).success();
    let state = lab.state();
    let disk = state["vms"]["lab"]["storage"]["0"].as_str().unwrap();
    let base = state["media"][disk]["parent"].as_str().unwrap();
    assert!(base.starts_with(lab.kubelab.home().to_str().unwrap()), "{base}");
    assert!(base.ends_with(".vmdk"), "the conversion is attached: {base}");
    let list = lab.run(&["image", "list"]).success().stdout;
    assert!(list.lines().any(|l| l.contains("vmdk") && l.contains("converted from ")), "{list}");
    lab.run(&["delete"]).success();
    lab.assert_no_guest_running();
}

#[test]
fn vboxmanage_missing_or_of_an_unsupported_version() {
    let mut lab = Lab::new();
    lab.env = vec![("PATH", "/usr/bin:/bin".into())];
    let run = lab.up(&[]).failure(29);
    assert!(run.stderr.contains("hint (HOST_VBOX_NOT_FOUND): install VirtualBox"), "{run}");
    lab.env = vec![("VBOXSIM_VERSION", "6.0.24r139119".into())];
    let run = lab.up(&[]).failure(30);
    assert!(run.stderr.contains("VirtualBox 6.0.24 is not supported"), "{run}");
    assert_eq!(lab.transcript(), ["--version"], "nothing but the version check ran");
}

/// Issue "Never touch what is not yours", on one simulated VirtualBox: a profile named
/// like another's worker is refused at once; a second home with the same profile name
/// is refused before it creates anything; a second home's profile of the same image
/// keeps the first home's base medium, which still has child disks, on `delete`.
#[test]
fn other_homes_and_worker_named_profiles_touch_nothing() {
    let lab = Lab::new();
    lab.up(&[]).success();
    let home_a = lab.home_id();
    let state_a = lab.state();

    let before = lab.transcript().len();
    let run = lab.up_in(&lab.kubelab, "lab-m02", &[]).failure(11);
    assert!(run.stderr.contains("hint (PROFILE_NAME_INVALID)"), "{run}");
    assert!(run.stderr.contains("ends like a worker node's name"), "{run}");
    assert_eq!(lab.transcript().len(), before, "VirtualBox not even asked");

    let home_b = Kubelab::new();
    let run = lab.up_in(&home_b, "lab", &[]).failure(43);
    assert!(run.stderr.contains("hint (DRV_VM_NOT_KUBELAB)"), "{run}");
    assert!(
        run.stderr
            .contains(&format!("VM lab belongs to kubelab home {home_a} profile lab node lab")),
        "{run}"
    );
    let changes = [
        "createvm",
        "setextradata",
        "modifyvm",
        "storage",
        "medium",
        "hostonlyif",
        "startvm",
        "controlvm",
        "unregistervm",
        "closemedium",
    ];
    let refused = &lab.transcript()[before..];
    assert!(!refused.iter().any(|l| changes.iter().any(|c| l.starts_with(c))), "{refused:?}");
    assert_eq!(lab.state(), state_a, "home a's VMs, media, adapter and records untouched");
    assert!(!home_b.home().join("profiles/lab").exists(), "nothing of the refused profile");
    lab.run_in(&home_b, "lab", &["delete"]).success();
    assert_eq!(lab.state(), state_a);

    // Home b's own profile of the same image: its own base medium (its cache's file).
    lab.up_in(&home_b, "other", &[]).success();
    lab.run_in(&home_b, "other", &["delete"]).success();
    let state = lab.state();
    assert_eq!(state["vms"], state_a["vms"], "home a's VMs untouched");
    assert_eq!(state["media"], state_a["media"], "home a's base medium kept: it has children");
    assert_eq!(state["extradata"], state_a["extradata"]);
    assert_eq!(state["hostonlyifs"], state_a["hostonlyifs"]);

    lab.run(&["delete"]).success();
    let state = lab.state();
    for key in ["vms", "media", "hostonlyifs", "hostonlynets", "extradata"] {
        assert_eq!(obj_len(&state, key), 0, "{key} left: {state}");
    }
    lab.assert_no_guest_running();
}

/// Issue 12: the host-only flavour is asked of VBoxManage, not chosen at build time:
/// VirtualBox 7 on macOS has no `list hostonlyifs`, so `up` makes a host-only network;
/// 7.x elsewhere and 6.1 have adapters.
#[test]
fn hostonly_flavour_is_asked_of_vboxmanage() {
    use kubelab::driver::virtualbox::network::HostOnlyMode;
    let lab = Lab::new();
    let mode = |env: &str| VBoxManage::at(wrapper(&lab, env)).unwrap().host_only_mode();
    assert_eq!(mode("VBOXSIM_HOST=darwin VBOXSIM_VERSION=7.1.4r165100"), HostOnlyMode::Network);
    assert_eq!(mode("VBOXSIM_HOST=darwin VBOXSIM_VERSION=7.0.20r163906"), HostOnlyMode::Network);
    assert_eq!(mode("VBOXSIM_HOST=linux VBOXSIM_VERSION=7.1.4r165100"), HostOnlyMode::Adapter);
    assert_eq!(mode("VBOXSIM_HOST=windows VBOXSIM_VERSION=7.0.20r163906"), HostOnlyMode::Adapter);
    assert_eq!(mode("VBOXSIM_HOST=darwin VBOXSIM_VERSION=6.1.50r161033"), HostOnlyMode::Adapter);

    let mut lab = Lab::new();
    lab.env = vec![("VBOXSIM_HOST", "darwin".into()), ("VBOXSIM_VERSION", "7.1.4r165100".into())];
    lab.up(&[]).success();
    let state = lab.state();
    assert_eq!(state["hostonlynets"]["kubelab-lab"]["lower"], "192.168.56.1", "{state}");
    for vm in state["vms"].as_object().unwrap().values() {
        assert_eq!(vm["settings"]["--nic2"], "hostonlynet");
        assert_eq!(vm["settings"]["--host-only-net2"], "kubelab-lab");
    }
    assert!(
        !lab.transcript().iter().any(|l| l.starts_with("hostonlyif")),
        "no adapters on macOS 7"
    );
    lab.run(&["delete"]).success();
    for key in ["vms", "media", "hostonlynets", "extradata"] {
        assert_eq!(obj_len(&lab.state(), key), 0, "{key} left");
    }
}

/// Windows: Hyper-V holds VT-x and VirtualBox has no raw mode under it.
#[test]
fn hyperv_raw_mode_unavailable() {
    let (_lab, run) = up_failing("startvm:VERR_SUPDRV_NO_RAW_MODE_HYPER_V_ROOT", &[], 28);
    assert!(run.stderr.contains("hint (HOST_HYPERV_ENABLED)"), "{run}");
    assert!(run.stderr.contains("VERR_SUPDRV_NO_RAW_MODE_HYPER_V_ROOT"), "{run}");
    assert!(run.stderr.contains("bcdedit /set hypervisorlaunchtype off"), "{run}");
    assert!(run.stderr.contains("Memory integrity"), "{run}");
}

/// Linux without vboxdrv: the launcher's warning stops `up` before anything is created.
#[test]
fn vboxdrv_not_loaded_stops_up_before_anything_is_created() {
    let (lab, run) = up_failing("vboxdrv:UNLOADED", &[], 38);
    assert!(run.stderr.contains("hint (HOST_VBOX_KERNEL_DRIVER)"), "{run}");
    assert!(run.stderr.contains("kernel driver vboxdrv is not loaded"), "{run}");
    assert!(run.stderr.contains("sudo /sbin/vboxconfig"), "{run}");
    lab.assert_nothing_created();
}

/// Linux without vboxnetadp, macOS with the kernel extension not allowed: `hostonlyif
/// create` cannot open /dev/vboxnetctl.
#[test]
fn vboxnetadp_not_loaded() {
    let (lab, run) = up_failing("hostonlyif-create:NO_VBOXNETCTL", &[], 38);
    assert!(run.stderr.contains("kernel driver vboxnetadp is not loaded"), "{run}");
    assert!(run.stderr.contains("failed to open /dev/vboxnetctl"), "{run}");
    assert!(run.stderr.contains("Privacy & Security"), "macOS advice too: {run}");
    assert!(!lab.transcript().iter().any(|l| l.starts_with("createvm")));
}

/// Windows: NetCfg cannot install the host-only adapter.
#[test]
fn windows_netcfg_failure_creating_an_adapter() {
    let (_lab, run) = up_failing("hostonlyif-create:NETCFG", &[], 39);
    assert!(run.stderr.contains("hint (HOST_VBOX_HOSTONLY_ADAPTER)"), "{run}");
    assert!(run.stderr.contains("Querying NetCfgInstanceId failed"), "{run}");
    assert!(run.stderr.contains("Device Manager"), "{run}");
}

/// The new adapter is missed by the next lookups (counted in calls): kubelab waits for
/// it, then configures it.
#[test]
fn new_adapter_not_yet_listed_is_waited_for() {
    let lab = Lab::new();
    let vbox = VBoxManage::at(wrapper(&lab, "VBOXSIM_FAIL=hostonlyif-visible:3")).unwrap();
    let driver = VirtualBoxDriver::new(vbox);
    driver.ensure_network(&host_only_spec("lab", "192.168.58.0/24")).unwrap();
    assert_eq!(lab.state()["hostonlyifs"]["vboxnet0"]["ip"], "192.168.58.1");
    let lists = lab.transcript().iter().filter(|l| *l == "list hostonlyifs").count();
    assert!(lists >= 5, "open, ensure, then 3 misses and a hit: {:?}", lab.transcript());
}

/// Still not listed at the deadline: the adapter is removed again (removal misses it
/// too at first, so it is retried) and nothing of it is left.
#[test]
fn new_adapter_never_listed_is_removed() {
    let lab = Lab::new();
    let vbox = VBoxManage::at(wrapper(&lab, "VBOXSIM_FAIL=hostonlyif-visible:2")).unwrap();
    let driver = VirtualBoxDriver::new(vbox).with_adapter_wait(Duration::ZERO);
    let err = driver.ensure_network(&host_only_spec("lab", "192.168.58.0/24")).unwrap_err();
    let chain = format!("{:?}", err);
    assert!(chain.contains("HostOnlyNotVisible") && chain.contains("removed: true"), "{chain}");
    assert_eq!(reason_id(err), "HOST_VBOX_HOSTONLY_ADAPTER");
    let state = lab.state();
    assert_eq!(obj_len(&state, "hostonlyifs"), 0, "{state}");
    assert_eq!(obj_len(&state, "extradata"), 0, "{state}");
    let removes = lab.transcript().iter().filter(|l| l.starts_with("hostonlyif remove")).count();
    assert_eq!(removes, 2, "{:?}", lab.transcript());
}

/// Issue 12: a hung call is killed at its deadline; the error names the call and the
/// limit, and the killed VBoxManage is gone.
#[test]
fn a_hung_call_is_killed_at_its_deadline() {
    let lab = Lab::new();
    let vbox = VBoxManage::at(wrapper(&lab, "VBOXSIM_FAIL=showvminfo:HANG")).unwrap();
    let driver = VirtualBoxDriver::new(vbox.with_call_limit(Duration::from_secs(1)));
    let started = std::time::Instant::now();
    let err = driver.state("lab").unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    let text = kubelab::Error::from(err);
    let chain: Vec<String> =
        std::iter::successors(Some(&text as &(dyn std::error::Error + 'static)), |e| e.source())
            .map(ToString::to_string)
            .collect();
    let chain = chain.join(": ");
    assert!(
        chain.contains("showvminfo lab --machinereadable` did not finish within 1 s"),
        "{chain}"
    );
    assert_eq!(kubelab::reason::reason(&text).id, "DRV_CALL_TIMEOUT");
    // No simulator process of this lab is left (the killed child was reaped).
    let state = lab.state_dir().to_string_lossy().into_owned();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let environ = fs::read(entry.path().join("environ")).unwrap_or_default();
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let ours = String::from_utf8_lossy(&environ).contains(&state)
            && String::from_utf8_lossy(&cmdline).contains("showvminfo");
        assert!(!ours, "VBoxManage {:?} still runs", entry.path());
    }
}

/// A VM whose process died (guru meditation) is Crashed, and its `VBox.log` tail says why.
#[test]
fn aborted_vm_is_crashed_and_its_log_tail_is_read() {
    let lab = Lab::new();
    let vbox = VBoxManage::at(wrapper(&lab, "VBOXSIM_FAIL=startvm:ABORTED")).unwrap();
    vbox.create_vm("lab", lab.dir.path(), "/kubelab-lab").unwrap();
    vbox.start_vm("lab").unwrap();
    let driver = VirtualBoxDriver::new(vbox);
    assert_eq!(driver.state("lab").unwrap(), driver::VmState::Crashed);
    let tail = driver.log_tail("lab", 4096).unwrap();
    assert!(tail.contains("Guru Meditation -2701"), "{tail}");
    let short = driver.log_tail("lab", 80).unwrap();
    assert!(short.len() <= 80 && short.ends_with("'Aborted'\n"), "{short:?}");
    assert_eq!(driver.log_tail("missing", 4096), None);
    // A VBox.log that is a link is never followed.
    let log = lab.dir.path().join("lab/Logs/VBox.log");
    fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &log).unwrap();
    assert_eq!(driver.log_tail("lab", 4096), None);
}

/// Issue "Never touch what is not yours", pre-marker profiles: VMs an older kubelab made
/// (in the profile's group, without an owner marker) are shown as foreign and refused
/// by `delete` as such; the commands its hint gives remove them, and
/// `delete` then removes the rest.
#[test]
fn vms_of_a_kubelab_from_before_markers_are_left_to_the_users_hint() {
    let lab = Lab::new();
    lab.up(&["--no-snapshot"]).success();
    let sim = |args: &[&str]| {
        let status = Command::new(wrapper(&lab, "")).args(args).status().unwrap();
        assert!(status.success(), "VBoxManage {args:?}");
    };
    for vm in ["lab", "lab-m02"] {
        sim(&["setextradata", vm, "kubelab/owner"]); // as an older kubelab left it
    }
    let status = lab.run(&["-o", "json", "status"]).success().stdout;
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["nodes"][1]["state"], "foreign", "{status}");
    let before = lab.state();
    let run = lab.run(&["delete"]).failure(kubelab::reason::DRV_VM_NOT_KUBELAB.exit_code);
    assert!(run.stderr.contains("hint (DRV_VM_NOT_KUBELAB)"), "{run}");
    assert!(run.stderr.contains("VBoxManage unregistervm NAME --delete"), "{run}");
    assert!(run.stderr.contains("from before owner markers"), "{run}");
    assert_eq!(lab.state()["vms"], before["vms"], "left alone");
    for vm in ["lab", "lab-m02"] {
        sim(&["controlvm", vm, "poweroff"]);
        sim(&["unregistervm", vm, "--delete"]);
    }
    lab.run(&["delete"]).success();
    let state = lab.state();
    for key in ["vms", "hostonlyifs", "extradata"] {
        assert_eq!(obj_len(&state, key), 0, "{key} left: {state}");
    }
    lab.assert_no_guest_running();
}

/// The names of VM `vm`'s snapshots in the simulator's state.
fn vm_snapshots(state: &Value, vm: &str) -> Vec<String> {
    state["vms"][vm]["snapshots"]
        .as_array()
        .map(|a| a.iter().map(|s| s["name"].as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// Issue 13 on VirtualBox: `up` takes `clean`; `snapshot save` pauses both nodes before
/// either is taken and resumes them after; `restore` powers each off, restores (the VM
/// is then `saved`), starts both from their saved state, sets the clocks over SSH and
/// waits for SSH; `delete` removes every node's part. Another profile's VM is never
/// touched, and `delete` removes the snapshots with the VMs.
#[test]
fn snapshot_save_list_restore_delete_and_reset() {
    let lab = Lab::new();
    let run = lab.up(&[]).success();
    assert!(run.stdout.contains("clean"), "{run}");
    lab.up_in(&lab.kubelab, "other", &[]).success();
    let other = lab.state()["vms"]["other"].clone();
    let guests = lab.state_dir().join("guests");
    let since = lab.transcript().len();

    lab.run(&["snapshot", "save", "s1"]).success();
    let save = &lab.transcript()[since..];
    let acts: Vec<&String> = save.iter().filter(|l| !l.starts_with("showvminfo")).collect();
    let last_pause = acts.iter().rposition(|l| l.ends_with(" pause")).unwrap();
    let first_take = acts.iter().position(|l| l.contains(" take ")).unwrap();
    let first_resume = acts.iter().position(|l| l.ends_with(" resume")).unwrap();
    assert!(last_pause < first_take, "every node paused before any is taken: {acts:?}");
    let last_take = acts.iter().rposition(|l| l.contains(" take ")).unwrap();
    assert!(last_take < first_resume, "{acts:?}");
    assert!(
        save.contains(&"snapshot lab take kubelab-s1 --description=taken by kubelab".to_owned()),
        "{save:?}"
    );
    let state = lab.state();
    for vm in ["lab", "lab-m02"] {
        assert_eq!(state["vms"][vm]["state"], "running");
        assert_eq!(vm_snapshots(&state, vm), ["kubelab-clean", "kubelab-s1"]);
        let sav = state["vms"][vm]["dir"].as_str().unwrap().to_owned() + "/Snapshots";
        assert!(fs::read_dir(&sav).unwrap().count() >= 4, "images and saved states: {sav}");
    }

    let list = lab.run(&["-o", "json", "snapshot", "list"]).success();
    let list: Value = serde_json::from_str(&list.stdout).unwrap();
    let names: Vec<&str> =
        list.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["clean", "s1"], "{list}");
    for snap in list.as_array().unwrap() {
        assert_eq!(snap["complete"], true, "{snap}");
        assert_eq!(snap["memory"], true, "{snap}");
        assert_eq!(snap["nodes"], serde_json::json!(["lab", "lab-m02"]));
        assert!(snap["disk_bytes"].as_u64().unwrap() > 0, "{snap}");
    }

    // A change to a node's disk is undone by the restore.
    let disk = lab.state()["vms"]["lab"]["storage"]["0"].as_str().unwrap().to_owned();
    fs::write(&disk, "changed after s1\n").unwrap();
    let before = lab.vm_commands("lab").len();
    let run = lab.run(&["snapshot", "restore", "s1"]).success();
    assert_eq!(fs::read_to_string(&disk).unwrap(), "vboxsim medium\n", "{run}");
    let restore = lab.vm_commands("lab")[before..].to_vec();
    let reads = ["showvminfo", "getextradata"];
    let acts: Vec<&String> = restore.iter().filter(|c| !reads.contains(&c.as_str())).collect();
    assert_eq!(
        acts,
        // ops checks that every node holds its part, then the driver finds it.
        [
            "snapshot list",
            "snapshot list",
            "controlvm poweroff",
            "snapshot restore",
            "startvm headless"
        ],
        "{restore:?}"
    );
    for vm in ["lab", "lab-m02"] {
        assert_eq!(lab.state()["vms"][vm]["state"], "running");
        let clock = fs::read_to_string(guests.join(vm).join("clock-set.log")).unwrap();
        assert!(clock.starts_with("now "), "the clock was set over SSH: {clock}");
    }

    // A disk-only snapshot of the stopped cluster: restored, the nodes stay stopped.
    lab.run(&["down"]).success();
    lab.run(&["snapshot", "save", "cold"]).success();
    let run = lab.run(&["-o", "json", "snapshot", "restore", "cold"]).success();
    let restored: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(restored["running"], false, "{run}");
    assert_eq!(lab.state()["vms"]["lab"]["state"], "poweroff");
    lab.up(&[]).success();

    // `reset` restores `clean`.
    lab.run(&["reset"]).success();
    assert_eq!(lab.state()["vms"]["lab-m02"]["state"], "running");

    lab.run(&["snapshot", "delete", "s1"]).success();
    lab.run(&["snapshot", "delete", "cold"]).success();
    let state = lab.state();
    for vm in ["lab", "lab-m02"] {
        assert_eq!(vm_snapshots(&state, vm), ["kubelab-clean"]);
    }
    let run = lab.run(&["snapshot", "restore", "s1"]).failure(80);
    assert!(run.stderr.contains("hint (SNAP_NOT_FOUND)"), "{run}");

    let other_now = lab.state()["vms"]["other"].clone();
    assert_eq!(other_now, other, "profile other's VM untouched");
    let on_other: Vec<String> =
        lab.transcript().into_iter().filter(|l| l.starts_with("snapshot other ")).collect();
    assert_eq!(on_other.len(), 2, "only other's own `up` took its clean: {on_other:?}");
    lab.run(&["delete"]).success();
    assert_eq!(
        lab.state()["vms"].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["other", "other-m02"]
    );
    lab.run_in(&lab.kubelab, "other", &["delete"]).success();
    for key in ["vms", "media", "hostonlyifs", "extradata"] {
        assert_eq!(obj_len(&lab.state(), key), 0, "{key} left");
    }
    lab.assert_no_guest_running();
}

/// The driver refuses a duplicate snapshot name (VirtualBox would take it) and restores
/// into a VM that the simulator, like VirtualBox, refuses to restore while it runs.
#[test]
fn duplicate_snapshot_refused_and_restore_powers_off_first() {
    let lab = Lab::new();
    lab.up(&["--no-snapshot"]).success();
    let vbox = VBoxManage::at(wrapper(&lab, "")).unwrap();
    let err = vbox.snapshot_restore("lab", "kubelab-x").unwrap_err();
    assert!(err.to_string().contains("VBoxManage failed"), "{err}");
    vbox.snapshot_take("lab", "kubelab-x", "by test").unwrap();
    let refused = vbox.snapshot_restore("lab", "kubelab-x").unwrap_err();
    let chain = format!("{:?}", refused);
    assert!(
        chain.contains(
            "Cannot delete the current state of the running machine (machine state: Running)"
        ),
        "{chain}"
    );
    let driver = VirtualBoxDriver::new(vbox.clone());
    let owner = Owner::new(lab.home_id().parse().unwrap(), &"lab".parse().unwrap());
    let err = driver.snapshot_save("lab", &owner, "x").unwrap_err();
    assert_eq!(reason_id(err), "DRV_BACKEND_FAILED");
    assert_eq!(vbox.snapshot_list("lab").unwrap(), ["kubelab-x"], "no duplicate taken");
    let err = driver.snapshot_restore("lab", &owner, "missing").unwrap_err();
    assert!(matches!(err, driver::DriverError::NoSuchSnapshot { .. }), "{err:?}");
    assert_eq!(lab.state()["vms"]["lab"]["state"], "running", "not powered off for nothing");
    driver.snapshot_restore("lab", &owner, "x").unwrap();
    assert_eq!(lab.state()["vms"]["lab"]["state"], "saved");
    driver.resume("lab", &owner).unwrap();
    assert_eq!(lab.state()["vms"]["lab"]["state"], "running");
    driver.pause("lab", &owner).unwrap();
    driver.pause("lab", &owner).unwrap(); // already paused
    driver.resume("lab", &owner).unwrap();
    driver.resume("lab", &owner).unwrap(); // already running
    driver.snapshot_delete("lab", &owner, "x").unwrap();
    driver.snapshot_delete("lab", &owner, "x").unwrap(); // already gone
    assert!(driver.snapshots("lab", &owner).unwrap().is_empty());
    assert!(driver.disk_usage("lab", &owner).unwrap() > 0);
    let stranger = Owner::new(lab.home_id().parse().unwrap(), &"other".parse().unwrap());
    let err = driver.pause("lab", &stranger).unwrap_err();
    assert_eq!(reason_id(err), "DRV_VM_NOT_KUBELAB");
    lab.run(&["delete"]).success();
}

/// Issue 14, `image bake`'s disk export on VirtualBox: refused while the node runs (the
/// simulator, like VirtualBox, would refuse to clone a disk a running VM writes) and
/// for another profile's VM, with nothing changed; of the stopped node, one standalone
/// VMDK holding the base image and the node's layer, not left registered; a second
/// export onto the same file is refused by VirtualBox and leaves that file alone.
#[test]
fn export_disk_of_a_stopped_node_is_one_standalone_vmdk() {
    let lab = Lab::new();
    lab.up(&["--no-snapshot"]).success();
    let vbox = VBoxManage::at(wrapper(&lab, "")).unwrap();
    let driver = VirtualBoxDriver::new(vbox);
    let owner = Owner::new(lab.home_id().parse().unwrap(), &"lab".parse().unwrap());
    let dest = lab.dir.path().join("baked.vmdk");
    let before = lab.state();

    let err = driver.export_disk("lab", &owner, &dest).unwrap_err();
    assert!(matches!(&err, driver::DriverError::NotStopped { name, .. } if name == "lab"));
    let err = kubelab::Error::from(err);
    let reason = kubelab::reason::reason(&err);
    assert_eq!((reason.id, reason.exit_code), ("BAKE_VM_NOT_STOPPED", 110));
    let stranger = Owner::new(lab.home_id().parse().unwrap(), &"other".parse().unwrap());
    let err = driver.export_disk("lab", &stranger, &dest).unwrap_err();
    assert_eq!(reason_id(err), "DRV_VM_NOT_KUBELAB");
    assert!(!dest.exists());
    assert_eq!(lab.state(), before, "nothing changed");
    assert!(!lab.transcript().iter().any(|l| l.starts_with("clonemedium")));
    // Asked anyway, VirtualBox refuses: the running VM holds the disk's write lock.
    let disk = before["vms"]["lab"]["storage"]["0"].as_str().unwrap().to_owned();
    let out = Command::new(wrapper(&lab, ""))
        .args(["clonemedium", "disk", &disk, dest.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("is locked for writing"), "{out:?}");
    assert!(!dest.exists());

    lab.run(&["down"]).success();
    let media = lab.state()["media"].clone();
    driver.export_disk("lab", &owner, &dest).unwrap();
    let base = fs::read_to_string(lab.dir.path().join("base.vmdk")).unwrap();
    assert_eq!(fs::read_to_string(&dest).unwrap(), base + "vboxsim medium\n", "parent merged");
    let dest_text = dest.to_str().unwrap();
    let tail: Vec<String> = lab.transcript().into_iter().rev().take(2).collect();
    assert_eq!(
        tail,
        [
            format!("closemedium disk {dest_text}"),
            format!("clonemedium disk {disk} {dest_text} --format VMDK")
        ]
    );
    assert_eq!(lab.state()["media"], media, "the clone is not left registered");

    let err = driver.export_disk("lab", &owner, &dest).unwrap_err();
    let chain = format!("{:?}", kubelab::Error::from(err));
    assert!(chain.contains("VERR_ALREADY_EXISTS"), "{chain}");
    assert!(fs::read_to_string(&dest).unwrap().ends_with("vboxsim medium\n"), "kept");
    assert_eq!(lab.state()["media"], media, "nothing registered");

    lab.run(&["delete"]).success();
    for key in ["vms", "media", "hostonlyifs", "extradata"] {
        assert_eq!(obj_len(&lab.state(), key), 0, "{key} left");
    }
    lab.assert_no_guest_running();
}

/// The simulator refuses what VirtualBox's `clonemedium` refuses (its doc comment).
#[test]
fn simulated_clonemedium_refuses_like_virtualbox() {
    let lab = Lab::new();
    let sim = |args: &[&str]| {
        let out = Command::new(wrapper(&lab, "")).args(args).output().unwrap();
        (out.status.code().unwrap(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let dir = lab.dir.path().to_str().unwrap().to_owned();
    let base = format!("{dir}/base.vmdk");
    let out = format!("{dir}/out.vdi");
    let (code, err) = sim(&["clonemedium", "disk", &format!("{dir}/missing.vdi"), &out]);
    assert_eq!(code, 1);
    assert!(err.contains("VERR_FILE_NOT_FOUND"), "{err}");
    let (code, err) = sim(&["clonemedium", "disk", &base]);
    assert_eq!(code, 2);
    assert!(err.contains("Mandatory output file parameter missing"), "{err}");
    let (code, err) = sim(&["clonemedium", "disk", &base, &out, "--format", "QCOW3"]);
    assert_eq!(code, 1);
    assert!(err.contains("Invalid medium storage format 'QCOW3'"), "{err}");
    let (code, err) = sim(&["clonemedium", "disk", &base, &out, "--variant", "Sparse"]);
    assert_eq!(code, 2);
    assert!(err.contains("Invalid medium variant 'Sparse'"), "{err}");
    let (code, err) = sim(&["clonemedium", "disk", &base, &out, "--existing", "--format", "VDI"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot be used with --existing"), "{err}");
    assert!(!Path::new(&out).exists());
    assert_eq!(sim(&["clonemedium", "disk", &base, &out, "--format", "vdi"]).0, 0);
    let state = lab.state();
    assert_eq!(state["media"][&out]["parent"], Value::Null, "a base medium");
    assert_eq!(state["media"][&out]["format"], "VDI");
}
