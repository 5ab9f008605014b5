//! kubelab: VM-based Kubernetes lab clusters on libvirt/QEMU-KVM and VirtualBox.
//!
//! The `kubelab` binary is a thin CLI (`cli`) over the operations in `ops`; every other
//! module owns one part of the work (see `../shared/DESIGN.md`). Each module's own doc
//! says what it owns.
#![warn(missing_docs)]

/// Kubernetes on the nodes: the `Bootstrapper` trait, `none` and `kubeadm`.
pub mod bootstrap;
pub mod cli;
/// The cloud-init NoCloud seed: rendered documents and the `cidata` ISO.
pub mod cloudinit;
pub mod cluster;
/// The `Driver` trait (VMs, disks, networks) and its hypervisor backends.
pub mod driver;
pub mod error;
pub mod fsutil;
pub mod home;
/// Image catalogue, cache and downloader: `image::ensure` yields a verified cached image.
pub mod image;
pub mod journal;
/// The profile's user key, each node's host key, and the known-hosts file for `ssh`.
pub mod keys;
/// The profile's kubeconfig: admin.conf merged into the user's kubeconfig, and removed.
pub mod kubeconfig;
pub mod lock;
/// IPv4 subnets, host routes, node addresses and deterministic MAC addresses.
pub mod net;
pub mod ops;
/// Running external tools (`Tool`, `ProcessError`).
pub mod process;
pub mod profile;
pub mod progress;
pub mod reason;
pub mod snapshot;
/// Host-key-pinned SSH to nodes: run scripts, copy files, wait until reachable.
pub mod ssh;

pub use error::Error;
