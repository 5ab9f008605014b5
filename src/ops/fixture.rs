//! What the unit tests of `ops` share: a kubelab home in a temporary directory with a
//! local boot image, and `up` run against the in-memory hypervisor
//! ([`crate::driver::mem`]) until an injected failure stops it (before SSH, which these
//! tests never reach).

use std::path::PathBuf;
use std::time::Duration;

use crate::Error;
use crate::bootstrap::BootstrapperKind;
use crate::cluster::{self, ClusterState};
use crate::driver::mem::{MemDriver, When};
use crate::home::Home;
use crate::ops::up::{self, UpOptions, UpReport};
use crate::profile::Profile;

/// A home with a boot image next to it.
pub struct Lab {
    _dir: tempfile::TempDir,
    /// The home.
    pub home: Home,
    image: PathBuf,
}

impl Lab {
    /// A new home; its image has the same bytes (and digest) in every `Lab`, as two
    /// homes pulling one catalogue image would.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let image = dir.path().join("image.qcow2");
        std::fs::write(&image, b"not really a disk image").expect("image");
        let home = Home::new(dir.path().join("home"));
        Self { _dir: dir, home, image }
    }

    /// The profile `name` of this home.
    pub fn profile(&self, name: &str) -> Profile {
        Profile::new(&self.home, name.parse().expect("profile name"))
    }

    /// `up` options for `nodes` nodes of the local image, without Kubernetes.
    pub fn options(&self, nodes: u32) -> UpOptions {
        UpOptions {
            nodes: Some(nodes),
            image: Some(self.image.to_str().expect("utf-8 path").to_owned()),
            bootstrapper: Some(BootstrapperKind::None),
            ssh_timeout: Duration::ZERO,
            ..UpOptions::default()
        }
    }

    /// `up` of `profile` with `opts` on `hv`.
    pub fn up(&self, hv: &MemDriver, profile: &str, opts: &UpOptions) -> Result<UpReport, Error> {
        let _installed = hv.install();
        up::up(&self.home, &self.profile(profile), opts, &())
    }

    /// A profile of `nodes` nodes whose VMs exist, stopped: its `up` failed when it
    /// started them (and so never waited for SSH); their starts keep failing.
    pub fn created(&self, hv: &MemDriver, profile: &str, nodes: u32) -> ClusterState {
        for index in 0..nodes {
            hv.fail("start", When::Object(cluster::node_name(profile, index)));
        }
        self.up(hv, profile, &self.options(nodes)).expect_err("start fails");
        self.profile(profile).load_state().expect("saved state")
    }
}
