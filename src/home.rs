//! The kubelab home directory (`--home`, `KUBELAB_HOME`, else `~/.kubelab`) and the
//! layout under it: `profiles/<name>/`, `cache/images/` and `home-id`.

use std::ffi::OsString;
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

/// The file holding the home id.
const ID_FILE: &str = "home-id";
/// Hex characters in a home id (16 random bytes).
const ID_HEX_LEN: usize = 32;

/// Errors reading or creating the home id.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// The id file cannot be read or created.
    #[error("cannot read or create the home id {}", path.display())]
    Io {
        /// The id file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The id file holds something else than 32 lowercase hex characters.
    #[error("the home id {} is not {ID_HEX_LEN} lowercase hex characters", path.display())]
    Invalid {
        /// The id file.
        path: PathBuf,
    },
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

    /// Where verified images are cached, named by their SHA-256.
    pub fn image_cache_dir(&self) -> PathBuf {
        self.root.join("cache").join("images")
    }

    /// This home's id: 16 random bytes as hex, created on first use and read back
    /// (validated) afterwards. Ownership markers carry it, so two homes on one machine
    /// (or one hypervisor) never take each other's objects for their own, even when
    /// their profiles share a name.
    pub fn id(&self) -> Result<String, HomeError> {
        let path = self.root.join(ID_FILE);
        let io = |source| HomeError::Io { path: path.clone(), source };
        match fs::read_to_string(&path) {
            Ok(text) => return valid_id(&text).ok_or(HomeError::Invalid { path }),
            Err(err) if err.kind() == ErrorKind::NotFound => {}
            Err(source) => return Err(io(source)),
        }
        crate::fsutil::create_private_dir(&self.root, &self.root).map_err(io)?;
        let id = random_id();
        // `create_new`: when two first runs race, the loser reads the winner's id.
        match fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                file.write_all(id.as_bytes()).and_then(|()| file.sync_all()).map_err(io)?;
                Ok(id)
            }
            Err(err) if err.kind() == ErrorKind::AlreadyExists => {
                let text = fs::read_to_string(&path).map_err(io)?;
                valid_id(&text).ok_or(HomeError::Invalid { path })
            }
            Err(source) => Err(io(source)),
        }
    }
}

/// `text` as a home id, if it is one (a trailing newline from an editor is allowed).
fn valid_id(text: &str) -> Option<String> {
    let id = text.strip_suffix('\n').unwrap_or(text);
    let ok = id.len() == ID_HEX_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    ok.then(|| id.to_owned())
}

fn random_id() -> String {
    use ssh_key::rand_core::{OsRng, RngCore};
    let mut bytes = [0u8; ID_HEX_LEN / 2];
    OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
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
    fn id_is_created_once_and_validated_when_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("home"));
        let id = home.id().unwrap();
        assert_eq!(id.len(), ID_HEX_LEN);
        assert_eq!(home.id().unwrap(), id);
        assert_ne!(Home::new(dir.path().join("other")).id().unwrap(), id);
        for bad in ["", "xyz", &format!("A{}", &id[1..]), &format!("{id}0"), "../../etc/passwd"] {
            fs::write(home.root().join(ID_FILE), bad).unwrap();
            assert!(matches!(home.id(), Err(HomeError::Invalid { .. })), "{bad:?}");
            assert_eq!(fs::read_to_string(home.root().join(ID_FILE)).unwrap(), bad);
        }
    }
}
