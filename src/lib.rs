//! kubelab: VM-based Kubernetes lab clusters on libvirt/QEMU-KVM and VirtualBox.
//!
//! The `kubelab` binary is a thin CLI (`cli`) over the operations in `ops`; every other
//! module owns one part of the work (see `../shared/DESIGN.md`). Each module's own doc
//! says what it owns.
#![warn(missing_docs)]

pub mod cli;
pub mod error;
pub mod fsutil;
pub mod home;
pub mod lock;
pub mod ops;
pub mod profile;
pub mod progress;
pub mod reason;

pub use error::Error;
