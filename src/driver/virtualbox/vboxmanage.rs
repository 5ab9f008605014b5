//! The `VBoxManage` wrapper: the only code that runs it. Finds the binary, checks its
//! version, runs one subcommand per method (logged by `Tool`), parses the output with
//! the pure functions of `parse.rs`, and turns VirtualBox's stderr status codes into
//! typed [`VBoxError`]s here, where the text is captured (what they mean is in
//! `known.rs`). Every call has a deadline ([`call_timeout`]); the networking flavour is
//! asked of VBoxManage when it is opened ([`HostOnlyMode`]). Syntax follows the
//! VirtualBox manual, chapter "VBoxManage" (one section per subcommand, cited per method).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::VBoxError;
use super::known::{Known, classify, driver_warning, typed};
use super::network::HostOnlyMode;
use super::parse::{self, HostOnlyIf, HostOnlyNet, Medium, Version, VmInfo};
use crate::net::Ipv4Cidr;
use crate::process::{ProcessError, Tool};

/// The oldest VirtualBox kubelab drives: 6.1 is the first release with `createmedium
/// --diffparent` and `modifymedium --type multiattach` under these names together with
/// the `--machinereadable` layout parsed here, and the oldest still in use (6.0 and
/// older are long out of support).
pub const MIN_VBOX_VERSION: Version = Version { major: 6, minor: 1, patch: 0 };
/// The first major release kubelab has not been checked against.
pub const UNSUPPORTED_MAJOR: u32 = 8;
/// How long a command refused because the VM's session is still being unlocked (just
/// after a power-off) is retried.
const SESSION_UNLOCK_WAIT: Duration = Duration::from_secs(10);
/// The longest any call but a disk copy may take (issue 12): `startvm` waits for the VM
/// process to power on, `createmedium` and `unregistervm --delete` write disks, and
/// `hostonlyif create` may wait on a Windows prompt; none takes minutes when healthy.
pub const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// `clonemedium` copies a whole disk, merging its parents: gigabytes, minutes on a slow
/// host disk (`image bake`'s export, issue 14). The only call allowed longer than
/// [`MAX_CALL_TIMEOUT`].
pub const DISK_COPY_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Queries (`showvminfo`, `list`, `getextradata`, `--version`) answer in well under a
/// second unless VBoxSVC is stuck.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(20);
/// Settings changes (`modifyvm`, `storageattach`, `controlvm`...) take a VM's session
/// lock and write its settings file.
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(60);
/// The default install folder on Windows (the MSI installer's).
pub const WINDOWS_DEFAULT_DIR: &str = r"C:\Program Files\Oracle\VirtualBox";
/// What `snapshot VM list` prints (on stdout, exit status 1) for a VM without snapshots.
const NO_SNAPSHOTS: &str = "This machine does not have any snapshots";
/// The environment variables VirtualBox's installers set to their install folder.
pub const INSTALL_DIR_ENVS: [&str; 2] = ["VBOX_MSI_INSTALL_PATH", "VBOX_INSTALL_PATH"];

/// Where `VBoxManage` is: `PATH` first, then the installers' variables, then (Windows)
/// the default folder. `env` and `exists` are injected so every case is unit-tested.
pub fn locate(
    windows: bool,
    env: impl Fn(&str) -> Option<OsString>,
    exists: impl Fn(&Path) -> bool,
) -> Result<PathBuf, VBoxError> {
    let exe = if windows { "VBoxManage.exe" } else { "VBoxManage" };
    let separator = if windows { ';' } else { ':' };
    let mut dirs: Vec<PathBuf> = env("PATH")
        .map(|p| {
            p.to_string_lossy()
                .split(separator)
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    dirs.extend(INSTALL_DIR_ENVS.iter().filter_map(|v| env(v)).map(PathBuf::from));
    if windows {
        dirs.push(PathBuf::from(WINDOWS_DEFAULT_DIR));
    }
    // Windows folders are joined with `\`, also when these tests run on Linux.
    let candidate = |d: &PathBuf| match d.to_string_lossy() {
        text if windows && text.ends_with('\\') => PathBuf::from(format!("{text}{exe}")),
        text if windows => PathBuf::from(format!("{text}\\{exe}")),
        _ => d.join(exe),
    };
    dirs.iter().map(candidate).find(|p| exists(p)).ok_or_else(|| VBoxError::NotFound {
        searched: if windows {
            format!("PATH, %VBOX_MSI_INSTALL_PATH%, %VBOX_INSTALL_PATH%, {WINDOWS_DEFAULT_DIR}")
        } else {
            "PATH, $VBOX_MSI_INSTALL_PATH, $VBOX_INSTALL_PATH".to_owned()
        },
    })
}

/// Whether kubelab supports `version` (6.1 and 7.x).
pub fn check_version(version: Version) -> Result<(), VBoxError> {
    if version < MIN_VBOX_VERSION || version.major >= UNSUPPORTED_MAJOR {
        return Err(VBoxError::UnsupportedVersion { found: version.to_string() });
    }
    Ok(())
}

/// How long `VBoxManage ARGS` may take: [`QUERY_TIMEOUT`] for queries,
/// [`MAX_CALL_TIMEOUT`] for calls that start a VM, write disks (snapshots write a saved
/// state of the VM's memory, or merge images) or create adapters, [`DISK_COPY_TIMEOUT`]
/// for a disk's clone, [`CHANGE_TIMEOUT`] for the rest.
pub fn call_timeout<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Duration {
    let word = |i: usize| args.get(i).map(|a| a.as_ref().to_string_lossy().into_owned());
    match (word(0).as_deref(), word(1).as_deref(), word(2).as_deref()) {
        (Some("--version" | "showvminfo" | "list" | "getextradata" | "showmediuminfo"), ..)
        | (Some("snapshot"), _, Some("list")) => QUERY_TIMEOUT,
        (Some("startvm" | "createmedium" | "unregistervm" | "snapshot"), ..)
        | (Some("hostonlyif"), Some("create"), _) => MAX_CALL_TIMEOUT,
        (Some("clonemedium"), ..) => DISK_COPY_TIMEOUT,
        _ => CHANGE_TIMEOUT,
    }
}

/// One `VBoxManage`, its version checked and its host-only flavour known.
#[derive(Debug, Clone)]
pub struct VBoxManage {
    tool: Tool,
    version: Version,
    mode: HostOnlyMode,
    /// The launcher's warning that vboxdrv is not loaded, if `--version` printed one.
    driver_warning: Option<String>,
    /// A cap on every call's deadline (tests make hung calls fail fast).
    limit: Duration,
}

impl VBoxManage {
    /// Finds `VBoxManage` (see [`locate`]) and checks its version.
    pub fn open() -> Result<Self, VBoxError> {
        let path = locate(cfg!(windows), |v| std::env::var_os(v), Path::is_file)?;
        Self::at(path)
    }

    /// The `VBoxManage` at `path`, its version checked; asks it whether it has host-only
    /// adapters (6.1, 7.x on Linux and Windows) or only host-only networks (7.x on
    /// macOS, where `list hostonlyifs` is an unknown subcommand), rather than assuming
    /// by the platform kubelab was built for.
    pub fn at(path: impl Into<OsString>) -> Result<Self, VBoxError> {
        let mut vbox = Self {
            tool: Tool::new(path),
            version: MIN_VBOX_VERSION,
            mode: HostOnlyMode::Adapter,
            driver_warning: None,
            limit: DISK_COPY_TIMEOUT,
        };
        let out = vbox.run(&["--version"])?;
        vbox.version = parse::parse_version(&out)
            .ok_or_else(|| VBoxError::Parse { command: "--version".into(), output: out.clone() })?;
        check_version(vbox.version)?;
        vbox.driver_warning = driver_warning(&out);
        if vbox.version.major >= 7 {
            vbox.mode = match vbox.run(&["list", "hostonlyifs"]) {
                Ok(_) => HostOnlyMode::Adapter,
                Err(VBoxError::Command { source: ProcessError::Failed { stderr, .. } })
                    if classify(&stderr) == Some(Known::NoHostOnlyIfs) =>
                {
                    HostOnlyMode::Network
                }
                Err(e) => return Err(e),
            };
        }
        Ok(vbox)
    }

    /// Caps every call's deadline at `limit` (the defaults are [`call_timeout`]).
    pub fn with_call_limit(mut self, limit: Duration) -> Self {
        self.limit = limit;
        self
    }

    /// The version found.
    pub fn version(&self) -> Version {
        self.version
    }

    /// How VMs join a host-only network on this VirtualBox.
    pub fn host_only_mode(&self) -> HostOnlyMode {
        self.mode
    }

    /// The launcher's warning that the vboxdrv kernel module is not loaded, if any.
    pub fn kernel_driver_warning(&self) -> Option<&str> {
        self.driver_warning.as_deref()
    }

    /// Runs `VBoxManage ARGS` within its [`call_timeout`]; known failures become their
    /// typed errors.
    fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<String, VBoxError> {
        self.run_within(args, call_timeout(args))
    }

    fn run_within<S: AsRef<std::ffi::OsStr>>(
        &self,
        args: &[S],
        timeout: Duration,
    ) -> Result<String, VBoxError> {
        let timeout = Some(timeout.min(self.limit));
        let deadline = Instant::now() + SESSION_UNLOCK_WAIT;
        loop {
            match self.tool.run_within(args, timeout) {
                Ok(out) => return Ok(out.stdout),
                Err(ProcessError::Failed { stderr, .. })
                    if classify(&stderr) == Some(Known::SessionLocked)
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(source) => {
                    return Err(typed(source, args.first().map(|a| a.as_ref().to_string_lossy())));
                }
            }
        }
    }

    /// `showvminfo VM --machinereadable` (manual: "VBoxManage showvminfo"); `None` if
    /// the VM is not registered.
    pub fn show_vm_info(&self, vm: &str) -> Result<Option<VmInfo>, VBoxError> {
        match self.run(&["showvminfo", vm, "--machinereadable"]) {
            Ok(out) => VmInfo::parse(&out)
                .map(Some)
                .ok_or_else(|| VBoxError::Parse { command: "showvminfo".into(), output: out }),
            Err(VBoxError::NoSuchVm { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `list vms` (manual: "VBoxManage list").
    pub fn list_vms(&self) -> Result<Vec<String>, VBoxError> {
        Ok(parse::parse_vm_list(&self.run(&["list", "vms"])?))
    }

    /// `list hostonlyifs`.
    pub fn list_hostonlyifs(&self) -> Result<Vec<HostOnlyIf>, VBoxError> {
        Ok(parse::parse_hostonlyifs(&self.run(&["list", "hostonlyifs"])?))
    }

    /// `list hostonlynets` (7.0+).
    pub fn list_hostonlynets(&self) -> Result<Vec<HostOnlyNet>, VBoxError> {
        Ok(parse::parse_hostonlynets(&self.run(&["list", "hostonlynets"])?))
    }

    /// `list hdds` or `list dvds` (`kind`).
    pub fn list_media(&self, kind: &str) -> Result<Vec<Medium>, VBoxError> {
        Ok(parse::parse_media(&self.run(&["list", kind])?))
    }

    /// `hostonlyif create` (manual: "VBoxManage hostonlyif"); the new adapter's name.
    /// On Windows it can wait on a hidden permission prompt, hence the timeout.
    pub fn hostonlyif_create(&self, timeout: Duration) -> Result<String, VBoxError> {
        let out = match self.run_within(&["hostonlyif", "create"], timeout) {
            Err(VBoxError::Timeout { source: ProcessError::TimedOut { secs, .. } }) => {
                return Err(VBoxError::HostOnlyPrompt { secs });
            }
            other => other?,
        };
        parse::parse_created_hostonlyif(&out)
            .ok_or(VBoxError::Parse { command: "hostonlyif create".into(), output: out })
    }

    /// `createvm --name VM --basefolder DIR --groups GROUP --ostype Linux_64 --register`
    /// (manual: "VBoxManage createvm").
    pub fn create_vm(&self, vm: &str, basefolder: &Path, group: &str) -> Result<(), VBoxError> {
        let dir = basefolder.to_string_lossy();
        let args = ["createvm", "--name", vm, "--basefolder", &dir, "--groups", group];
        self.run(&[&args[..], &["--ostype", "Linux_64", "--register"]].concat()).map(drop)
    }

    /// `modifyvm VM ARGS` (manual: "VBoxManage modifyvm"); see `vm::modify_vm_args`.
    pub fn modify_vm(&self, vm: &str, args: &[String]) -> Result<(), VBoxError> {
        self.run(&prefixed(&["modifyvm", vm], args)).map(drop)
    }

    /// `storagectl VM ARGS` (manual: "VBoxManage storagectl").
    pub fn storagectl(&self, vm: &str, args: &[String]) -> Result<(), VBoxError> {
        self.run(&prefixed(&["storagectl", vm], args)).map(drop)
    }

    /// `storageattach VM ARGS` (manual: "VBoxManage storageattach").
    pub fn storage_attach(&self, vm: &str, args: &[String]) -> Result<(), VBoxError> {
        self.run(&prefixed(&["storageattach", vm], args)).map(drop)
    }

    /// `createmedium disk ARGS` (manual: "VBoxManage createmedium").
    pub fn create_medium(&self, args: &[String]) -> Result<(), VBoxError> {
        self.run(&prefixed(&["createmedium", "disk"], args)).map(drop)
    }

    /// `clonemedium disk SRC DEST --format FORMAT`: a standalone copy, parents merged in
    /// (manual: "VBoxManage clonemedium").
    pub fn clone_medium(&self, src: &str, dest: &str, format: &str) -> Result<(), VBoxError> {
        self.run(&["clonemedium", "disk", src, dest, "--format", format]).map(drop)
    }

    /// `modifymedium disk ARGS` (manual: "VBoxManage modifymedium").
    pub fn modify_medium(&self, args: &[String]) -> Result<(), VBoxError> {
        self.run(&prefixed(&["modifymedium", "disk"], args)).map(drop)
    }

    /// `showmediuminfo disk|dvd FILE`; `None` if VirtualBox cannot open it.
    pub fn show_medium_info(&self, kind: &str, file: &str) -> Result<Option<Medium>, VBoxError> {
        match self.run(&["showmediuminfo", kind, file]) {
            Ok(out) => Ok(parse::parse_media(&out).into_iter().next()),
            Err(VBoxError::Command { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `closemedium disk|dvd FILE [--delete]` (manual: "VBoxManage closemedium").
    pub fn close_medium(&self, kind: &str, file: &str, delete: bool) -> Result<(), VBoxError> {
        let mut args = vec!["closemedium", kind, file];
        if delete {
            args.push("--delete");
        }
        self.run(&args).map(drop)
    }

    /// `startvm VM --type headless` (manual: "VBoxManage startvm").
    pub fn start_vm(&self, vm: &str) -> Result<(), VBoxError> {
        self.run(&["startvm", vm, "--type", "headless"]).map(drop)
    }

    /// `controlvm VM ACTION` (`acpipowerbutton`, `poweroff`, `resume`; manual:
    /// "VBoxManage controlvm").
    pub fn control_vm(&self, vm: &str, action: &str) -> Result<(), VBoxError> {
        self.run(&["controlvm", vm, action]).map(drop)
    }

    /// `snapshot VM take NAME --description=TEXT` (manual: "VBoxManage snapshot"):
    /// without `--live`, VirtualBox pauses a running VM while it saves its state.
    pub fn snapshot_take(&self, vm: &str, name: &str, description: &str) -> Result<(), VBoxError> {
        let description = format!("--description={description}");
        self.run(&["snapshot", vm, "take", name, &description]).map(drop)
    }

    /// `snapshot VM restore NAME`: refused while the VM runs or is paused.
    pub fn snapshot_restore(&self, vm: &str, name: &str) -> Result<(), VBoxError> {
        self.run(&["snapshot", vm, "restore", name]).map(drop)
    }

    /// `snapshot VM delete NAME`.
    pub fn snapshot_delete(&self, vm: &str, name: &str) -> Result<(), VBoxError> {
        self.run(&["snapshot", vm, "delete", name]).map(drop)
    }

    /// `snapshot VM list --machinereadable`: the names of all the VM's snapshots.
    /// Without any, VBoxManage says so on stdout and exits 1: that is an empty list.
    pub fn snapshot_list(&self, vm: &str) -> Result<Vec<String>, VBoxError> {
        match self.run(&["snapshot", vm, "list", "--machinereadable"]) {
            Ok(out) => Ok(parse::parse_snapshot_names(&out)),
            Err(VBoxError::Command { source: ProcessError::Failed { stdout, .. } })
                if stdout.contains(NO_SNAPSHOTS) =>
            {
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    }

    /// `discardstate VM`: a saved VM becomes powered off.
    pub fn discard_state(&self, vm: &str) -> Result<(), VBoxError> {
        self.run(&["discardstate", vm]).map(drop)
    }

    /// `unregistervm VM --delete` (manual: "VBoxManage unregistervm"): the VM's files
    /// and the disks only it uses.
    pub fn unregister_vm(&self, vm: &str) -> Result<(), VBoxError> {
        self.run(&["unregistervm", vm, "--delete"]).map(drop)
    }

    /// `hostonlyif ipconfig IF --ip GATEWAY --netmask MASK`: the host's address on
    /// `cidr`. VirtualBox's own refusal (`E_ACCESSDENIED`, networks.conf) becomes
    /// [`VBoxError::HostOnlyRange`].
    pub fn hostonlyif_ipconfig(&self, name: &str, cidr: &Ipv4Cidr) -> Result<(), VBoxError> {
        let ip = cidr.gateway().unwrap_or(cidr.network()).to_string();
        let mask = cidr.netmask().to_string();
        match self.run(&["hostonlyif", "ipconfig", name, "--ip", &ip, "--netmask", &mask]) {
            Err(VBoxError::Command { source: ProcessError::Failed { stderr, .. } })
                if classify(&stderr) == Some(Known::AccessDenied) =>
            {
                Err(VBoxError::HostOnlyRange {
                    cidr: cidr.to_string(),
                    allowed: "VirtualBox refused it (E_ACCESSDENIED)".into(),
                    line: format!("* {cidr}"),
                    path: super::network::NETWORKS_CONF.into(),
                })
            }
            other => other.map(drop),
        }
    }

    /// `hostonlyif remove IF`.
    pub fn hostonlyif_remove(&self, name: &str) -> Result<(), VBoxError> {
        self.run(&["hostonlyif", "remove", name]).map(drop)
    }

    /// `hostonlynet add --name=N --netmask=M --lower-ip=L --upper-ip=U --enable`
    /// (manual: "VBoxManage hostonlynet", 7.0+).
    pub fn hostonlynet_add(
        &self,
        name: &str,
        mask: &str,
        lower: &str,
        upper: &str,
    ) -> Result<(), VBoxError> {
        let args = [
            "hostonlynet".to_owned(),
            "add".to_owned(),
            format!("--name={name}"),
            format!("--netmask={mask}"),
            format!("--lower-ip={lower}"),
            format!("--upper-ip={upper}"),
            "--enable".to_owned(),
        ];
        self.run(&args).map(drop)
    }

    /// `hostonlynet remove --name=N`.
    pub fn hostonlynet_remove(&self, name: &str) -> Result<(), VBoxError> {
        self.run(&["hostonlynet".to_owned(), "remove".to_owned(), format!("--name={name}")])
            .map(drop)
    }

    /// `getextradata global enumerate` (manual: "VBoxManage getextradata").
    pub fn extradata(&self) -> Result<std::collections::BTreeMap<String, String>, VBoxError> {
        Ok(parse::parse_extradata(&self.run(&["getextradata", "global", "enumerate"])?))
    }

    /// `getextradata TARGET KEY` (`global` or a VM); `None` when no value is set.
    pub fn get_extradata(&self, target: &str, key: &str) -> Result<Option<String>, VBoxError> {
        Ok(parse::parse_extradata_value(&self.run(&["getextradata", target, key])?))
    }

    /// `setextradata TARGET KEY [VALUE]` (`global` or a VM); no value deletes the key.
    pub fn set_extradata(
        &self,
        target: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), VBoxError> {
        let mut args = vec!["setextradata", target, key];
        args.extend(value);
        self.run(&args).map(drop)
    }
}

/// `head` then `tail`, as one argument list.
fn prefixed(head: &[&str], tail: &[String]) -> Vec<String> {
    head.iter().map(|h| (*h).to_owned()).chain(tail.iter().cloned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_prefers_path_then_install_env_then_windows_default() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| OsString::from(v))
        };
        let on_path = locate(false, env(&[("PATH", "/usr/bin:/opt/vb")]), |p| {
            p == Path::new("/opt/vb/VBoxManage")
        });
        assert_eq!(on_path.unwrap(), PathBuf::from("/opt/vb/VBoxManage"));
        let msi = env(&[("PATH", r"C:\Windows"), ("VBOX_MSI_INSTALL_PATH", r"D:\Oracle\VB\")]);
        let found = locate(true, msi, |p| p == Path::new(r"D:\Oracle\VB\VBoxManage.exe"));
        assert_eq!(found.unwrap(), PathBuf::from(r"D:\Oracle\VB\VBoxManage.exe"));
        let default = locate(true, env(&[]), |p| {
            p == Path::new(r"C:\Program Files\Oracle\VirtualBox\VBoxManage.exe")
        });
        assert!(default.is_ok());
        let missing = locate(false, env(&[("PATH", "/usr/bin")]), |_| false).unwrap_err();
        assert!(matches!(missing, VBoxError::NotFound { .. }));
    }

    #[test]
    fn versions_6_1_and_7_are_supported() {
        let v = |major, minor| Version { major, minor, patch: 0 };
        assert!(check_version(v(6, 1)).is_ok());
        assert!(check_version(v(7, 1)).is_ok());
        assert!(check_version(v(6, 0)).is_err());
        assert!(check_version(v(8, 0)).is_err());
    }

    /// Issue 12: every call has a deadline, seconds for queries, none over two minutes but
    /// a disk's copy.
    #[test]
    fn every_call_has_a_deadline_that_fits_it() {
        assert_eq!(call_timeout(&["showvminfo", "lab", "--machinereadable"]), QUERY_TIMEOUT);
        assert_eq!(call_timeout(&["list", "vms"]), QUERY_TIMEOUT);
        assert_eq!(call_timeout(&["--version"]), QUERY_TIMEOUT);
        assert_eq!(call_timeout(&["modifyvm", "lab", "--cpus", "2"]), CHANGE_TIMEOUT);
        assert_eq!(call_timeout(&["hostonlyif", "ipconfig", "vboxnet0"]), CHANGE_TIMEOUT);
        assert_eq!(call_timeout(&["startvm", "lab", "--type", "headless"]), MAX_CALL_TIMEOUT);
        assert_eq!(call_timeout(&["hostonlyif", "create"]), MAX_CALL_TIMEOUT);
        assert_eq!(call_timeout(&["snapshot", "lab", "list", "--machinereadable"]), QUERY_TIMEOUT);
        assert_eq!(call_timeout(&["snapshot", "lab", "take", "kubelab-s1"]), MAX_CALL_TIMEOUT);
        assert_eq!(call_timeout(&["snapshot", "lab", "restore", "kubelab-s1"]), MAX_CALL_TIMEOUT);
        assert!(QUERY_TIMEOUT < Duration::from_secs(60));
        assert!(CHANGE_TIMEOUT <= MAX_CALL_TIMEOUT);
        assert!(MAX_CALL_TIMEOUT <= Duration::from_secs(120));
        let clone = ["clonemedium", "disk", "/n.vdi", "/x.vmdk", "--format", "VMDK"];
        assert_eq!(call_timeout(&clone), DISK_COPY_TIMEOUT);
    }
}
