//! Profiles: one cluster each, a directory `<home>/profiles/<name>/` (mode 0700) holding
//! its state file `profile.json` (written atomically, mode 0600), and its lock
//! `<home>/locks/<name>.lock`.
//!
//! Locking rule: every command that writes anything of a profile (its state, keys,
//! known_hosts, journal, node files) takes the lock first and reads the state only
//! after that, so it never saves a copy another command changed meanwhile. Read-only
//! commands (`status`, `ip`, `list`, `kubeconfig --print/--path`) read without it: the
//! state file is replaced atomically, so they see the old or the new document, and a
//! running `up` does not make them fail.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::fsutil;
use crate::home::Home;
use crate::lock::FileLock;

/// The default profile name (also the control-plane node's name).
pub const DEFAULT_PROFILE: &str = "kubelab";
/// Longest profile name: leaves room for node suffixes (`-m02`) and libvirt/VirtualBox
/// object prefixes within the 63-character DNS label limit.
pub const MAX_NAME_LEN: usize = 40;
const STATE_FILE: &str = "profile.json";

/// Errors about profiles.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The name is not a DNS-1123 label of at most [`MAX_NAME_LEN`] characters.
    #[error("invalid profile name {name:?}: {why}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// What rule it breaks.
        why: &'static str,
    },
    /// The profile has no state file.
    #[error("profile {name:?} does not exist")]
    NotFound {
        /// The profile's name.
        name: String,
    },
    /// Creating the profile directory failed.
    #[error("cannot create profile directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Reading the state file failed.
    #[error("cannot read profile state {}", path.display())]
    ReadState {
        /// The state file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The state file is not valid JSON for this version of kubelab.
    #[error("profile state {} is corrupt", path.display())]
    ParseState {
        /// The state file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The state file parses but a field breaks the rules its flag follows: changed by
    /// hand or tampered with. Nothing is done with it.
    #[error("profile state {} is corrupt: field {}: {}", path.display(), .field.field, .field.why)]
    InvalidState {
        /// The state file.
        path: PathBuf,
        /// The first field at fault.
        field: InvalidField,
    },
    /// Writing the state file failed.
    #[error("cannot write profile state {}", path.display())]
    WriteState {
        /// The state file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Listing the profiles directory failed.
    #[error("cannot list profiles in {}", path.display())]
    List {
        /// The profiles directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// A field of a state file that fails its check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidField {
    /// Its path in the file, e.g. `nodes[1].name`.
    pub field: String,
    /// What is wrong with its value.
    pub why: String,
}

impl InvalidField {
    /// `field` is wrong because of `why`.
    pub fn new(field: impl Into<String>, why: impl fmt::Display) -> Self {
        Self { field: field.into(), why: why.to_string() }
    }
}

/// What a profile's state file holds. It is input: [`Profile::load_state`] checks every
/// field with [`State::check`] as it would check the flag that set it.
pub trait State: DeserializeOwned {
    /// The first field that is not valid for the profile `name`.
    fn check(&self, name: &ProfileName) -> Result<(), InvalidField>;
}

/// The raw document, for `kubelab list`, which only shows it.
impl State for serde_json::Value {
    fn check(&self, _: &ProfileName) -> Result<(), InvalidField> {
        Ok(())
    }
}

/// A validated profile name: a DNS-1123 label (lowercase letters, digits, `-`, starting
/// with a letter, not ending with `-`) of at most [`MAX_NAME_LEN`] characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ProfileName(String);

impl FromStr for ProfileName {
    type Err = ProfileError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let invalid = |why| Err(ProfileError::InvalidName { name: name.to_owned(), why });
        if name.is_empty() {
            return invalid("it is empty");
        }
        if name.len() > MAX_NAME_LEN {
            return invalid("it is longer than 40 characters");
        }
        if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return invalid("use only lowercase letters, digits and '-'");
        }
        if !name.as_bytes()[0].is_ascii_lowercase() {
            return invalid("it must start with a lowercase letter");
        }
        if name.ends_with('-') {
            return invalid("it must not end with '-'");
        }
        if ends_like_a_worker(name) {
            return invalid(
                "it ends like a worker node's name (-m and digits): the VMs of profile \
                 \"lab-m02\" and the second node of profile \"lab\" would share a name",
            );
        }
        Ok(Self(name.to_owned()))
    }
}

/// Whether `name` ends in `-m` and two or more digits, as worker nodes are named
/// (`<profile>-m02`, see `cluster::node_name`): such a profile's control plane would share
/// its VM name with another profile's worker.
fn ends_like_a_worker(name: &str) -> bool {
    name.rsplit_once("-m")
        .is_some_and(|(_, n)| n.len() >= 2 && n.bytes().all(|b| b.is_ascii_digit()))
}

impl ProfileName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProfileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One profile's directory. Opening it creates nothing; the first save creates it.
#[derive(Debug, Clone)]
pub struct Profile {
    name: ProfileName,
    dir: PathBuf,
    /// The home's root: directories below it are created without following links.
    root: PathBuf,
    /// The home, for its lock directory.
    home: Home,
}

impl Profile {
    /// The profile `name` under `home`.
    pub fn new(home: &Home, name: ProfileName) -> Self {
        let dir = home.profiles_dir().join(name.as_str());
        Self { name, dir, root: home.root().to_owned(), home: home.clone() }
    }

    /// The profile's name.
    pub fn name(&self) -> &ProfileName {
        &self.name
    }

    /// The home the profile is in.
    pub fn home(&self) -> Home {
        Home::new(self.root.clone())
    }

    /// The profile's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the profile has a state file.
    pub fn exists(&self) -> bool {
        self.state_path().is_file()
    }

    /// Takes the profile's exclusive lock (`<home>/locks/<name>.lock`, see
    /// [`Home::locks_dir`] for why it lives there). Creates nothing in the profile
    /// directory, and refuses one that is a symbolic link.
    pub fn lock(&self, wait: bool) -> Result<FileLock, crate::Error> {
        let what = format!("profile {:?}", self.name.as_str());
        let lock = self.home.lock(&format!("{}.lock", self.name), &what, wait)?;
        fsutil::refuse_link(&self.dir)
            .map_err(|source| ProfileError::CreateDir { path: self.dir.clone(), source })?;
        Ok(lock)
    }

    /// Takes the lock of a profile that must already exist (`NotFound` otherwise, and
    /// nothing is created). Checked again once the lock is held: a `delete` may have
    /// run while this command waited.
    pub fn lock_existing(&self, wait: bool) -> Result<FileLock, crate::Error> {
        let not_found = || ProfileError::NotFound { name: self.name.to_string() }.into();
        if !self.exists() {
            return Err(not_found());
        }
        let lock = self.lock(wait)?;
        if !self.exists() {
            return Err(not_found());
        }
        Ok(lock)
    }

    /// Reads and checks the state file; `NotFound` if the profile has none.
    pub fn load_state<T: State>(&self) -> Result<T, ProfileError> {
        let path = self.state_path();
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ProfileError::NotFound { name: self.name.to_string() });
            }
            Err(source) => return Err(ProfileError::ReadState { path, source }),
        };
        parse_state(&path, &text, &self.name)
    }

    /// Writes the state file atomically (mode 0600). Call with the lock held.
    pub fn save_state<T: Serialize>(&self, state: &T) -> Result<(), ProfileError> {
        let path = self.state_path();
        let mut json = serde_json::to_vec_pretty(state)
            .map_err(|source| ProfileError::ParseState { path: path.clone(), source })?;
        json.push(b'\n');
        self.create_dir()?;
        fsutil::write_atomic(&path, &json)
            .map_err(|source| ProfileError::WriteState { path, source })
    }

    /// Creates the directory (0700), refusing a link anywhere below the home's root.
    pub fn create_dir(&self) -> Result<(), ProfileError> {
        fsutil::create_private_dir(&self.root, &self.dir)
            .map_err(|source| ProfileError::CreateDir { path: self.dir.clone(), source })
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }
}

/// Parses and checks the state file `path` of profile `name` from its bytes `text`.
pub fn parse_state<T: State>(
    path: &Path,
    text: &[u8],
    name: &ProfileName,
) -> Result<T, ProfileError> {
    let state: T = serde_json::from_slice(text)
        .map_err(|source| ProfileError::ParseState { path: path.to_owned(), source })?;
    state
        .check(name)
        .map_err(|field| ProfileError::InvalidState { path: path.to_owned(), field })?;
    Ok(state)
}

/// What `kubelab list` shows of a profile, read from its state file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Summary {
    /// The profile's name.
    pub name: String,
    /// The state file's fields, or `None` when it could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<serde_json::Value>,
    /// Why the state could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Every profile under `home` that has a state file, sorted by name. A missing profiles
/// directory means no profiles; a corrupt state file is listed with its error.
pub fn list(home: &Home) -> Result<Vec<Summary>, ProfileError> {
    let mut out = Vec::new();
    for profile in dirs(home)?.into_iter().filter(Profile::exists) {
        let (state, error) = match profile.load_state::<serde_json::Value>() {
            Ok(state) => (Some(state), None),
            Err(e) => (None, Some(crate::error::chain(&e))),
        };
        out.push(Summary { name: profile.name.to_string(), state, error });
    }
    Ok(out)
}

/// Every directory under the home's profiles directory named like a profile, with or
/// without a state file, sorted by name (`doctor` looks at those without one too).
pub fn dirs(home: &Home) -> Result<Vec<Profile>, ProfileError> {
    let dir = home.profiles_dir();
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(ProfileError::List { path: dir, source }),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ProfileError::List { path: dir.clone(), source })?;
        let name = entry.file_name().to_str().and_then(|n| n.parse::<ProfileName>().ok());
        if let Some(name) = name.filter(|_| entry.file_type().is_ok_and(|t| t.is_dir())) {
            out.push(Profile::new(home, name));
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        for name in
            ["kubelab", "a", "lab-2", "lab-m2", "lab-mx02", "lab-m02a", "m02", &"a".repeat(40)]
        {
            assert!(name.parse::<ProfileName>().is_ok(), "{name}");
        }
    }

    #[test]
    fn invalid_names_say_why() {
        for (name, why) in [
            ("", "empty"),
            ("Lab", "lowercase"),
            ("2lab", "start with"),
            ("lab-", "end with"),
            ("lab_1", "lowercase"),
            ("../etc", "lowercase"),
            (&"a".repeat(41), "40"),
            ("lab-m02", "worker node"),
            ("lab-m100", "worker node"),
            ("a-m00", "worker node"),
        ] {
            let err = name.parse::<ProfileName>().unwrap_err().to_string();
            assert!(err.contains(why), "{name}: {err}");
        }
    }

    #[test]
    fn state_round_trips_and_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let profile = Profile::new(&home, "lab".parse().unwrap());
        assert!(matches!(
            profile.load_state::<serde_json::Value>(),
            Err(ProfileError::NotFound { .. })
        ));
        let _lock = profile.lock(false).unwrap();
        profile.save_state(&serde_json::json!({"driver": "kvm2"})).unwrap();
        let state: serde_json::Value = profile.load_state().unwrap();
        assert_eq!(state["driver"], "kvm2");
        // A directory without state (e.g. a node's files only) is not a profile.
        fs::create_dir_all(home.profiles_dir().join("empty/nodes")).unwrap();
        let listed = list(&home).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "lab");
    }

    #[test]
    fn corrupt_state_is_listed_with_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let profile = Profile::new(&home, "bad".parse().unwrap());
        fs::create_dir_all(profile.dir()).unwrap();
        fs::write(profile.dir().join(STATE_FILE), "{not json").unwrap();
        let listed = list(&home).unwrap();
        assert!(listed[0].error.as_deref().unwrap().contains("corrupt"));
    }

    #[test]
    fn second_lock_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let profile = Profile::new(&Home::new(dir.path()), "lab".parse().unwrap());
        let _held = profile.lock(false).unwrap();
        let err = profile.lock(false).unwrap_err().to_string();
        assert!(err.contains("profile \"lab\" is busy, held by PID"), "{err}");
        // The lock is not in the profile directory, which removing a profile deletes.
        assert!(dir.path().join("locks/lab.lock").is_file());
        assert!(!profile.dir().exists(), "locking creates nothing in the profile");
    }
}
