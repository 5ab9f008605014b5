//! One error type for every command; each variant wraps one module's error, so
//! `reason::reason` can match the step that failed.

use crate::{lock::LockError, profile::ProfileError};

/// Any failure a kubelab command can end with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Profile names, directories and state files.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// Exclusive locks on profiles and cache entries.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// Neither `--home`, `KUBELAB_HOME` nor the user's home directory is set.
    #[error("cannot find a home directory for kubelab: set KUBELAB_HOME or pass --home")]
    NoHome,
    /// Writing output to the terminal or a pipe.
    #[error("cannot write output")]
    Output(#[source] std::io::Error),
}

/// `err` and its causes on one line, joined by `: ` (for lists and JSON output).
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
