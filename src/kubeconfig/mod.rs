//! The profile's kubeconfig (issue 5): kubeadm's admin.conf, pointed at the control
//! plane's host-only address, merged into the user's kubeconfig as a cluster, user and
//! context named after the profile, and removed again by `delete`.
//!
//! Where things live:
//! - the user's kubeconfig: the first file of `$KUBECONFIG`, else `~/.kube/config`
//!   ([`target_path`]), changed under kubectl's lock ([`update`]);
//! - a standalone copy with only this profile's entries: `<profile dir>/kubeconfig`
//!   ([`standalone_path`]), for `kubelab kubeconfig --path/--print`;
//! - the context that was current before `up` switched to the profile:
//!   `<profile dir>/kubeconfig.previous-context`, read back by [`uninstall`]; it goes
//!   away with the profile directory.
//!
//! kubelab changes only entries it wrote: each carries the [`OWNER_EXTENSION`] marker
//! naming the home and the profile (see `merge`); a foreign entry with the profile's
//! name is refused ([`KubeconfigError::NameTaken`]) and the file is left as it was.
//!
//! `document` holds the typed document, `merge` the pure changes, `file` the file I/O.

mod document;
mod file;
mod merge;

use std::ffi::OsStr;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

pub use document::{
    AuthInfo, Cluster, Context, Extra, Kubeconfig, NamedCluster, NamedContext, NamedExtension,
    NamedUser, Preferences,
};
pub use file::{LOCK_TIMEOUT, lock_path, read, update, write};
pub use merge::{
    Clash, Entries, OWNER_EXTENSION, Owner, check_owned, entries_from_admin_conf, merge, remove,
    server_url,
};

use crate::fsutil;

/// The standalone copy's file name in the profile directory.
const STANDALONE_FILE: &str = "kubeconfig";
/// The remembered previous context's file name in the profile directory.
const PREVIOUS_CONTEXT_FILE: &str = "kubeconfig.previous-context";

/// Errors reading, merging or writing kubeconfig files.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    /// The control plane's admin.conf is not YAML.
    #[error("cannot parse the control plane's admin.conf")]
    ParseAdminConf {
        /// The YAML parser's error.
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    /// The control plane's admin.conf is not shaped like kubeadm's.
    #[error("unusable admin.conf from the control plane: {why}")]
    AdminConf {
        /// What is wrong with it.
        why: &'static str,
    },
    /// A kubeconfig could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A kubeconfig is not valid YAML or not shaped like a kubeconfig; it is left as is.
    #[error("cannot parse kubeconfig {}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The YAML parser's error.
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    /// A kubeconfig document could not be turned into YAML (a bug).
    #[error("cannot serialize the kubeconfig")]
    Serialize {
        /// The serializer's error.
        #[source]
        source: serde_saphyr::SerializeError,
    },
    /// The kubeconfig's directory could not be created.
    #[error("cannot create directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// kubectl's lock file could not be created for another reason than being held.
    #[error("cannot create kubeconfig lock {}", lock.display())]
    Lock {
        /// The lock file, `<kubeconfig>.lock`.
        lock: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Another writer (kubectl, kubelab) held the lock for the whole wait, or a crashed
    /// one left it behind.
    #[error("kubeconfig lock {} still exists after {waited_secs} s", lock.display())]
    Locked {
        /// The lock file, `<kubeconfig>.lock`.
        lock: PathBuf,
        /// How long kubelab waited.
        waited_secs: u64,
    },
    /// The kubeconfig has an entry with the profile's name that kubelab did not write
    /// for this profile of this home.
    #[error(
        "{} already has a {kind} named \"{name}\" that this kubelab profile did not create",
        path.display()
    )]
    NameTaken {
        /// The kubeconfig.
        path: PathBuf,
        /// `cluster`, `user` or `context`.
        kind: &'static str,
        /// The entry's name.
        name: String,
    },
    /// A kubeconfig (or the remembered previous context) could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// The kubeconfig kubelab merges into: the first non-empty entry of `$KUBECONFIG` (an OS
/// path list, `:`-separated on Unix, `;` on Windows), else `<home>/.kube/config`.
///
/// kubectl reads the files of `$KUBECONFIG` in order and the first one to set a value
/// wins, so entries and `current-context` written to the first file take effect.
pub fn target_path(kubeconfig_env: Option<&OsStr>, home: &Path) -> PathBuf {
    kubeconfig_env
        .and_then(|list| std::env::split_paths(list).find(|path| !path.as_os_str().is_empty()))
        .unwrap_or_else(|| home.join(".kube").join("config"))
}

/// The standalone copy of a profile's kubeconfig.
pub fn standalone_path(profile_dir: &Path) -> PathBuf {
    profile_dir.join(STANDALONE_FILE)
}

/// The whole document of a standalone copy: only `entries`, with their context current.
pub fn standalone(entries: &Entries) -> Kubeconfig {
    Kubeconfig {
        api_version: Some("v1".to_owned()),
        kind: Some("Config".to_owned()),
        clusters: vec![entries.cluster.clone()],
        users: vec![entries.user.clone()],
        contexts: vec![entries.context.clone()],
        current_context: Some(entries.name().to_owned()),
        ..Kubeconfig::default()
    }
}

/// Writes the standalone copy (mode 0600), see [`standalone`].
pub fn write_standalone(profile_dir: &Path, entries: &Entries) -> Result<PathBuf, KubeconfigError> {
    let path = standalone_path(profile_dir);
    write(&path, &standalone(entries))?;
    Ok(path)
}

/// Fails with [`KubeconfigError::NameTaken`] when the kubeconfig at `path` has an entry
/// with `owner`'s profile name that `owner` did not write: `up` checks this before it
/// creates anything. A missing file has no clash.
pub fn check_free(path: &Path, owner: &Owner) -> Result<(), KubeconfigError> {
    check_owned(&read(path)?, owner).map_err(|clash| name_taken(path, clash))
}

fn name_taken(path: &Path, Clash { kind, name }: Clash) -> KubeconfigError {
    KubeconfigError::NameTaken { path: path.to_owned(), kind, name }
}

/// What [`install`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Installed {
    /// The kubeconfig the entries were merged into.
    pub path: PathBuf,
    /// The standalone copy in the profile directory.
    pub standalone: PathBuf,
    /// The context that was current before, if this install switched away from it.
    pub previous_context: Option<String>,
}

/// `up`'s kubeconfig step: builds `owner`'s entries from kubeadm's `admin_conf` with
/// the API server at `server_url` (see [`server_url`]), writes the standalone copy,
/// merges the entries into `kubeconfig_path` (making them current with `set_current`,
/// i.e. unless `--keep-context`) and remembers the context it switched away from for
/// [`uninstall`]. A same-name entry `owner` did not write leaves the file unchanged and
/// fails with [`KubeconfigError::NameTaken`].
///
/// `kubelab kubeconfig --update` is the same call with the standalone copy's text as
/// `admin_conf`.
pub fn install(
    kubeconfig_path: &Path,
    profile_dir: &Path,
    admin_conf: &str,
    owner: &Owner,
    server_url: &str,
    set_current: bool,
) -> Result<Installed, KubeconfigError> {
    let entries = entries_from_admin_conf(admin_conf, owner, server_url)?;
    let standalone = write_standalone(profile_dir, &entries)?;
    let previous_context = update(kubeconfig_path, |doc| {
        merge(doc, &entries, owner, set_current).map_err(|clash| name_taken(kubeconfig_path, clash))
    })?;
    if let Some(previous) = &previous_context {
        let path = profile_dir.join(PREVIOUS_CONTEXT_FILE);
        fsutil::write_atomic(&path, previous.as_bytes())
            .map_err(|source| KubeconfigError::Write { path, source })?;
    }
    Ok(Installed { path: kubeconfig_path.to_owned(), standalone, previous_context })
}

/// `delete`'s kubeconfig step: removes exactly the cluster, user and context `owner`
/// wrote from `kubeconfig_path` (same-name entries of others stay); if the profile's
/// context was current, the context `up` switched away from becomes current again when
/// it still exists, else none is. A missing kubeconfig is left missing.
pub fn uninstall(
    kubeconfig_path: &Path,
    profile_dir: &Path,
    owner: &Owner,
) -> Result<(), KubeconfigError> {
    if !kubeconfig_path.exists() {
        // Nothing to remove; do not leave a lock directory such as `~/.kube` behind.
        return Ok(());
    }
    let previous = remembered_context(profile_dir)?;
    update(kubeconfig_path, |doc| Ok((remove(doc, owner, previous.as_deref()), ())))
}

/// The context [`install`] remembered in the profile directory, if any.
pub fn remembered_context(profile_dir: &Path) -> Result<Option<String>, KubeconfigError> {
    let path = profile_dir.join(PREVIOUS_CONTEXT_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text).filter(|name| !name.is_empty())),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(KubeconfigError::Read { path, source }),
    }
}

#[cfg(test)]
mod tests;
