//! Exclusive advisory locks on files (`File::try_lock`), used for profiles and cache
//! entries. The holder writes its PID into the lock file so a second process can say who
//! holds it. The lock is released when the `FileLock` is dropped or the process dies.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Errors taking a lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock and the caller asked not to wait.
    #[error("{what} is busy, held by {}", holder(*.pid))]
    Busy {
        /// What the lock protects, e.g. `profile "kubelab"`.
        what: String,
        /// The holder's PID, when it could be read.
        pid: Option<u32>,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

fn holder(pid: Option<u32>) -> String {
    pid.map_or_else(|| "another process".to_owned(), |pid| format!("PID {pid}"))
}

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

/// Takes the exclusive lock on `path` (created if missing). With `wait`, blocks until
/// the holder releases it; without, fails at once with [`LockError::Busy`].
pub fn acquire(path: &Path, what: &str, wait: bool) -> Result<FileLock, LockError> {
    let io = |source| LockError::Io { path: path.to_owned(), source };
    // Never through a link: the holder truncates the file to write its PID.
    let mut file = crate::fsutil::open_nofollow(
        path,
        OpenOptions::new().read(true).write(true).create(true).truncate(false),
    )
    .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) if wait => {
            // Said before blocking, so the user knows why nothing happens (and a test
            // knows this process is queued).
            tracing::warn!("{what} is busy, held by {}; waiting", holder(read_pid(&mut file)));
            file.lock().map_err(io)?;
        }
        Err(TryLockError::WouldBlock) => {
            return Err(LockError::Busy { what: what.to_owned(), pid: read_pid(&mut file) });
        }
        Err(TryLockError::Error(source)) => return Err(io(source)),
    }
    file.set_len(0).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    write!(file, "{}", std::process::id()).map_err(io)?;
    file.flush().map_err(io)?;
    Ok(FileLock { _file: file })
}

/// The PID the holder wrote, if readable (Windows refuses reads of a locked file).
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_busy_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let _held = acquire(&path, "profile \"a\"", false).unwrap();
        let err = acquire(&path, "profile \"a\"", false).unwrap_err();
        let LockError::Busy { pid, .. } = &err else { panic!("{err:?}") };
        assert_eq!(*pid, Some(std::process::id()));
        assert_eq!(
            err.to_string(),
            format!("profile \"a\" is busy, held by PID {}", std::process::id())
        );
    }

    #[test]
    fn lock_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        drop(acquire(&path, "x", false).unwrap());
        acquire(&path, "x", false).unwrap();
    }
}
