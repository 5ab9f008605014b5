//! One function per command: the CLI converts its arguments to options, calls one of
//! these and prints what it returns. No argument parsing and no printing here.

pub mod bake;
pub mod doctor;
#[cfg(test)]
mod fixture;
pub mod image;
pub mod kubeconfig;
pub mod lifecycle;
pub mod node;
pub mod provision;
pub mod remote;
pub mod snapshot;
pub mod ssh;
pub mod up;

use crate::home::Home;
use crate::profile::{self, Summary};

/// `kubelab list`: every profile with its saved state.
pub fn list(home: &Home) -> Result<Vec<Summary>, crate::Error> {
    Ok(profile::list(home)?)
}

/// `run` on every item, each in its own thread; the results in the items' order.
pub(crate) fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    run: impl Fn(&T) -> Result<R, crate::Error> + Sync,
) -> Vec<Result<R, crate::Error>> {
    std::thread::scope(|scope| {
        let run = &run;
        let handles: Vec<_> = items.iter().map(|item| scope.spawn(move || run(item))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or(Err(crate::Error::Panicked))).collect()
    })
}
