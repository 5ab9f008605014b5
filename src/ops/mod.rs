//! One function per command: the CLI converts its arguments to options, calls one of
//! these and prints what it returns. No argument parsing and no printing here.

pub mod image;
pub mod kubeconfig;
pub mod lifecycle;
pub mod node;
pub mod provision;
pub mod ssh;
pub mod up;

use crate::home::Home;
use crate::profile::{self, Summary};

/// `kubelab list`: every profile with its saved state.
pub fn list(home: &Home) -> Result<Vec<Summary>, crate::Error> {
    Ok(profile::list(home)?)
}
