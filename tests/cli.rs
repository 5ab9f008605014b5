//! CLI integration tests: one binary, one module per command, each running the built
//! `kubelab` with `KUBELAB_HOME` set to a temporary directory.

mod util;

#[path = "cli/image.rs"]
mod image;

#[path = "cli/cluster.rs"]
mod cluster;

#[path = "cli/doctor.rs"]
mod doctor;

#[path = "cli/image_bounds.rs"]
mod image_bounds;
#[path = "cli/image_transfer.rs"]
mod image_transfer;
#[path = "cli/tamper.rs"]
mod tamper;

// Every locking test drives kvm2 profiles on libvirt's test driver.
#[cfg(feature = "libvirt")]
#[path = "cli/locking.rs"]
mod locking;
