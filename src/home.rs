//! The kubelab home directory (`--home`, `KUBELAB_HOME`, else `~/.kubelab`), the
//! layout under it (`home-id`, `profiles/<name>/`, `locks/`, `cache/images/`) and the
//! home's id.
//!
//! Many homes share one hypervisor (two users, or `KUBELAB_HOME` pointing elsewhere), and
//! their profiles may have the same names: every hypervisor object kubelab creates
//! carries the home's id in its owner marker (see `driver::Owner`), so one home never
//! adopts or deletes another's objects.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::fsutil;

pub mod space;

pub use space::Space;

/// The file holding the home's id, directly under its root.
pub const HOME_ID_FILE: &str = "home-id";
/// How many lowercase hex digits a home id has (64 random bits).
pub const HOME_ID_LEN: usize = 16;

/// Errors about the home: its id, its free space.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// The id file could not be read or created.
    #[error("cannot read or create the home id {}", path.display())]
    Io {
        /// The id file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The id file holds something kubelab does not write.
    #[error("home id {} is corrupt: {why}", path.display())]
    Corrupt {
        /// The id file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The free space of the home's file system could not be read.
    #[error("cannot read the free space of {}", path.display())]
    FreeSpace {
        /// The home.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The home's file system cannot hold even one image.
    #[error("only {free_mib} MiB free in the file system of {}: one image needs {needed_mib} MiB", path.display())]
    LowSpace {
        /// The home.
        path: PathBuf,
        /// What is free.
        free_mib: u64,
        /// What one image needs ([`space::MIN_FREE_BYTES`]).
        needed_mib: u64,
    },
}

/// A home's id: [`HOME_ID_LEN`] lowercase hex digits, random, made once per home.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HomeId(String);

impl FromStr for HomeId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() != HOME_ID_LEN {
            return Err(format!("{text:?} is not {HOME_ID_LEN} characters long"));
        }
        if !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(format!("{text:?} is not lowercase hexadecimal"));
        }
        Ok(Self(text.to_owned()))
    }
}

impl HomeId {
    /// A new random id.
    fn random() -> Self {
        use ssh_key::rand_core::{OsRng, RngCore};
        Self(format!("{:016x}", OsRng.next_u64()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HomeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

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

    /// The free space of the home's file system, judged by [`space::judge`].
    pub fn check_space(&self) -> Result<Space, HomeError> {
        let free = space::free_bytes(&self.root)
            .map_err(|source| HomeError::FreeSpace { path: self.root.clone(), source })?;
        space::judge(&self.root, free)
    }

    /// The home's id, read from [`HOME_ID_FILE`], which is made on first use. The file is
    /// input like every other: a link, or content other than the id and a newline, is
    /// an error, never replaced (the hypervisor's objects carry the old id). Two
    /// processes making it at once agree: each writes a temp file and links it into
    /// place, which fails for the second, who then reads the first's.
    pub fn id(&self) -> Result<HomeId, HomeError> {
        let path = self.root.join(HOME_ID_FILE);
        let io_err = |source| HomeError::Io { path: path.clone(), source };
        match read_id(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
            Ok(text) => return parse_id(&path, &text),
        }
        fsutil::create_private_dir(&self.root, &self.root).map_err(io_err)?;
        let id = HomeId::random();
        let tmp = path.with_file_name(format!("{HOME_ID_FILE}.tmp.{}", HomeId::random()));
        let made = (|| {
            let mut file =
                fsutil::open_nofollow(&tmp, OpenOptions::new().write(true).create_new(true))?;
            file.write_all(format!("{id}\n").as_bytes())?;
            file.sync_all()?;
            fs::hard_link(&tmp, &path)
        })();
        let _ = fs::remove_file(&tmp);
        match made {
            Ok(()) => Ok(id),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                parse_id(&path, &read_id(&path).map_err(io_err)?)
            }
            Err(e) => Err(io_err(e)),
        }
    }
}

/// The id file's text, never read through a link.
fn read_id(path: &Path) -> io::Result<String> {
    let mut file = fsutil::open_nofollow(path, OpenOptions::new().read(true))?;
    let mut text = String::new();
    // One byte more than a valid file, so a longer one is seen as such.
    Read::by_ref(&mut file).take(HOME_ID_LEN as u64 + 2).read_to_string(&mut text)?;
    Ok(text)
}

/// Checks the id file's text: exactly the id and one newline.
fn parse_id(path: &Path, text: &str) -> Result<HomeId, HomeError> {
    let corrupt = |why: String| HomeError::Corrupt { path: path.to_owned(), why };
    let id = text.strip_suffix('\n').ok_or_else(|| corrupt("no final newline".into()))?;
    id.parse().map_err(corrupt)
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

    #[test]
    fn id_is_made_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("home"));
        let id = home.id().unwrap();
        assert_eq!(id.as_str().len(), HOME_ID_LEN);
        assert_eq!(home.id().unwrap(), id, "the same id every time");
        let text = fs::read_to_string(home.root().join(HOME_ID_FILE)).unwrap();
        assert_eq!(text, format!("{id}\n"));
        let other = Home::new(dir.path().join("other")).id().unwrap();
        assert_ne!(other, id, "each home its own");
        let names: Vec<_> =
            fs::read_dir(home.root()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [HOME_ID_FILE], "no temp file left");
    }

    #[test]
    fn a_bad_id_file_is_an_error_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let path = dir.path().join(HOME_ID_FILE);
        for (text, why) in [
            ("0123456789abcdef", "newline"),
            ("0123456789abcde\n", "16 characters"),
            ("0123456789abcdef0\n", "16 characters"),
            ("0123456789ABCDEF\n", "lowercase"),
            ("0123456789abcdeg\n", "lowercase"),
            ("", "newline"),
        ] {
            fs::write(&path, text).unwrap();
            let err = home.id().unwrap_err();
            assert!(matches!(err, HomeError::Corrupt { .. }), "{text:?}: {err:?}");
            assert!(err.to_string().contains(why), "{text:?}: {err}");
            assert_eq!(fs::read_to_string(&path).unwrap(), text, "left as found");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_linked_id_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        fs::write(&target, "0123456789abcdef\n").unwrap();
        let home = Home::new(dir.path().join("home"));
        fs::create_dir(home.root()).unwrap();
        std::os::unix::fs::symlink(&target, home.root().join(HOME_ID_FILE)).unwrap();
        assert!(matches!(home.id(), Err(HomeError::Io { .. })));
    }
}
