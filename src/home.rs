//! The kubelab home directory (`--home`, `KUBELAB_HOME`, else `~/.kubelab`) and the
//! layout under it: `profiles/<name>/`, `locks/` and `cache/images/`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The root of everything kubelab keeps on disk.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// A home rooted at `root` (nothing is created yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where profile directories live.
    pub fn profiles_dir(&self) -> PathBuf {
        self.root.join("profiles")
    }

    /// Where the lock files live: `<profile>.lock` per profile and `networks.lock` for
    /// the choice of subnets. Outside the profile directories, because a lock file must
    /// never be removed while another process may wait on it: that waiter would hold a
    /// lock on an unlinked file while the next command locks a new one, and two
    /// commands would run at once. Lock files are small and are never removed.
    pub fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }

    /// Takes the home-wide lock that serialises the choice of subnets and the creation
    /// of networks across this home's profiles (`<home>/locks/networks.lock`).
    pub fn lock_networks(&self, wait: bool) -> Result<crate::lock::FileLock, crate::Error> {
        self.lock("networks.lock", "the networks of this kubelab home", wait)
    }

    /// Takes the lock `<home>/locks/<file>`, creating its directory (0700, no links).
    pub fn lock(
        &self,
        file: &str,
        what: &str,
        wait: bool,
    ) -> Result<crate::lock::FileLock, crate::Error> {
        let dir = self.locks_dir();
        crate::fsutil::create_private_dir(&self.root, &dir)
            .map_err(|source| crate::lock::LockError::Io { path: dir.clone(), source })?;
        Ok(crate::lock::acquire(&dir.join(file), what, wait)?)
    }

    /// Where verified images are cached, named by their SHA-256.
    pub fn image_cache_dir(&self) -> PathBuf {
        self.root.join("cache").join("images")
    }
}

/// The default home: `%USERPROFILE%\.kubelab` on Windows, `$HOME/.kubelab` elsewhere.
/// `env` looks up an environment variable; it is a parameter so the Windows rule is
/// tested on every host.
pub fn default_root(windows: bool, env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let var = if windows { "USERPROFILE" } else { "HOME" };
    env(var).filter(|v| !v.is_empty()).map(|dir| PathBuf::from(dir).join(".kubelab"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_root_per_platform() {
        let env = |var: &str| match var {
            "HOME" => Some(OsString::from("/home/ann")),
            "USERPROFILE" => Some(OsString::from(r"C:\Users\ann")),
            _ => None,
        };
        assert_eq!(default_root(false, env), Some(PathBuf::from("/home/ann/.kubelab")));
        assert_eq!(default_root(true, env), Some(PathBuf::from(r"C:\Users\ann").join(".kubelab")));
        assert_eq!(default_root(false, |_| None), None);
    }
}
