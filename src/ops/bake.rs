//! `kubelab image bake`: boots the base image once as a one-node profile of its own
//! (`bake-<random>`, made by `up` with the same driver code as any cluster, so it is
//! listed, locked and deletable like one), runs the node prerequisites and pulls through
//! the kubeadm bootstrapper's bake steps, powers the VM off, copies its disk out of the
//! hypervisor into the image cache as a baked image with its manifest, and deletes the
//! profile. A failed bake keeps the profile for inspection (`kubelab ssh -p NAME`, its
//! log) and says how to remove it.

use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::lifecycle::{self, Corrupt};
use super::provision;
use super::up::{self, UpOptions};
use crate::Error;
use crate::bootstrap::{self, BootstrapperKind};
use crate::cluster::ClusterState;
use crate::driver::DriverKind;
use crate::home::Home;
use crate::image::baked::{self, Baked, BakedImage, Base};
use crate::profile::Profile;
use crate::progress::Progress;

/// The bake VM's size: enough for kubeadm's preflight and the images, whatever the
/// clusters that boot the image later ask for (the disk grows with each node's own).
const CPUS: u32 = 2;
const MEMORY_MIB: u64 = 2048;
const DISK_GIB: u64 = 20;

/// What `image bake` was asked for.
#[derive(Debug, Clone, Default)]
pub struct BakeOptions {
    /// `--from`: the base image (default: `up`'s).
    pub from: Option<String>,
    /// `--from-sha256`.
    pub from_sha256: Option<String>,
    /// Accept a URL without a digest.
    pub insecure_skip_verify: bool,
    /// `--kubernetes-version` (default: `up`'s).
    pub kubernetes_version: Option<String>,
    /// `--kubernetes-repo`.
    pub kubernetes_repo: Option<String>,
    /// `--registry-mirror`: where the guest pulls container images from during the bake.
    pub registry_mirror: Option<String>,
    /// `--driver` (default: `up`'s).
    pub driver: Option<DriverKind>,
    /// `--libvirt-uri`.
    pub libvirt_uri: Option<String>,
    /// How long to wait for the VM's SSH.
    pub ssh_timeout: Duration,
}

/// What `image bake` made.
#[derive(Debug, Serialize)]
pub struct BakeReport {
    /// The baked image in the cache, with its manifest.
    pub image: BakedImage,
    /// How long the bake took, in seconds.
    pub secs: f64,
}

/// Runs `image bake`.
pub fn bake(home: &Home, opts: &BakeOptions, progress: &dyn Progress) -> Result<BakeReport, Error> {
    let started = Instant::now();
    let version =
        opts.kubernetes_version.as_deref().unwrap_or(bootstrap::DEFAULT_KUBERNETES_VERSION);
    bootstrap::check_version(version)?;
    let name = crate::cloudinit::instance_id("bake")[..13].to_owned();
    let profile = Profile::new(home, name.parse()?);
    let up_opts = UpOptions {
        driver: opts.driver,
        libvirt_uri: opts.libvirt_uri.clone(),
        nodes: Some(1),
        cpus: Some(CPUS),
        memory_mib: Some(MEMORY_MIB),
        disk_gib: Some(DISK_GIB),
        image: opts.from.clone(),
        image_sha256: opts.from_sha256.clone(),
        insecure_skip_verify: opts.insecure_skip_verify,
        ssh_timeout: opts.ssh_timeout,
        bootstrapper: Some(BootstrapperKind::None),
        registry_mirror: opts.registry_mirror.clone(),
        no_baked: true,
        ..UpOptions::default()
    };
    progress.message(&format!("baking Kubernetes {version} in profile {name}"));
    let made = (|| {
        let state = up::up(home, &profile, &up_opts, progress)?.state;
        store(home, &profile, state, opts, version, progress)
    })();
    match made {
        Ok(image) => {
            lifecycle::delete(home, &profile, false, Corrupt::Refuse, progress)?;
            Ok(BakeReport { image, secs: started.elapsed().as_secs_f64() })
        }
        Err(e) => {
            if profile.exists() {
                progress.message(&format!(
                    "the bake's profile {name} is kept for a look (`kubelab ssh -p {name}`, \
                     its log {}); `kubelab delete -p {name}` removes it",
                    profile.dir().join("kubelab.log").display()
                ));
            }
            Err(e)
        }
    }
}

/// Prepares the bake VM, powers it off and stores its disk as a baked image.
fn store(
    home: &Home,
    profile: &Profile,
    mut state: ClusterState,
    opts: &BakeOptions,
    version: &str,
    progress: &dyn Progress,
) -> Result<BakedImage, Error> {
    let base = Base { source: state.image.source.clone(), sha256: state.image.sha256.clone() };
    // The VM is seen as an uninitialized one-node kubeadm cluster of `version`.
    state.bootstrapper = BootstrapperKind::Kubeadm.as_str().to_owned();
    state.kubernetes_version = Some(version.to_owned());
    state.kubernetes_repo = opts.kubernetes_repo.clone();
    state.registry_mirror = opts.registry_mirror.clone();
    let driver = lifecycle::open_driver(&state)?;
    let contents = provision::with_bootstrapper(&*driver, profile, &state, progress, |_, c| {
        bootstrap::bake_node(c)
    })?;
    progress.message("powering the bake's VM off");
    lifecycle::down(profile, false)?;
    let node = state.node(None)?.name.clone();
    let owner = provision::owner(profile)?;
    let unix = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let (date, time) = crate::snapshot::utc(unix.as_secs());
    let baked = Baked {
        kubernetes_version: version.to_owned(),
        base,
        driver: state.driver.clone(),
        baked_at: format!("{date}T{time}Z"),
        packages: contents.packages,
        images: contents.images,
    };
    let format = crate::image::convert::disk_image_format(driver.disk_format());
    progress.message(&format!("copying {node}'s disk into the image cache"));
    let stored = baked::store(home, format, baked, |part| driver.export_disk(&node, &owner, part))?;
    Ok(stored?)
}
