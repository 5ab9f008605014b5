//! `kubelab kubeconfig`, and which kubeconfig kubelab merges clusters into: the first
//! file of `$KUBECONFIG`, else `~/.kube/config` (kubectl's own rule), read from the
//! environment here and nowhere else.

use std::path::{Path, PathBuf};

use crate::Error;
use crate::bootstrap::{BootstrapError, BootstrapperKind};
use crate::cluster::ClusterState;
use crate::home::Home;
use crate::kubeconfig::{self, KubeconfigError, Owner};
use crate::profile::Profile;

/// The user's home directory variable.
const HOME_VAR: &str = if cfg!(windows) { "USERPROFILE" } else { "HOME" };

/// The kubeconfig `up` merges into and `delete` removes from.
pub fn user_path() -> Result<PathBuf, Error> {
    let listed = std::env::var_os("KUBECONFIG");
    let home = std::env::var_os(HOME_VAR).map(PathBuf::from);
    let path = kubeconfig::target_path(listed.as_deref(), home.as_deref().unwrap_or(Path::new("")));
    if home.is_none() && path == Path::new(".kube").join("config") {
        return Err(Error::NoHome);
    }
    Ok(path)
}

/// Who writes `profile`'s kubeconfig entries: this home (by its id) and the profile.
pub fn owner(home: &Home, profile: &Profile) -> Result<Owner, Error> {
    Ok(Owner { home_id: home.id()?.to_string(), profile: profile.name().to_string() })
}

/// `kubelab kubeconfig --path`: the profile's standalone kubeconfig.
pub fn path(profile: &Profile) -> Result<PathBuf, Error> {
    let state: ClusterState = profile.load_state()?;
    if state.bootstrapper.parse::<BootstrapperKind>()? == BootstrapperKind::None {
        let bootstrapper = state.bootstrapper;
        return Err(BootstrapError::NotKubernetes { profile: state.profile, bootstrapper }.into());
    }
    Ok(kubeconfig::standalone_path(profile.dir()))
}

/// `kubelab kubeconfig --print`: the standalone kubeconfig's text.
pub fn print(profile: &Profile) -> Result<String, Error> {
    let path = path(profile)?;
    std::fs::read_to_string(&path).map_err(|source| KubeconfigError::Read { path, source }.into())
}

/// `kubelab kubeconfig --update`: merges the profile's entries into `target` again,
/// pointed at the control plane's host-only address, and makes them current. It writes
/// the profile's record of what it merged, so it holds the profile's lock.
pub fn update(
    home: &Home,
    profile: &Profile,
    target: &Path,
    wait_lock: bool,
) -> Result<PathBuf, Error> {
    let _lock = profile.lock_existing(wait_lock)?;
    let text = print(profile)?;
    let state: ClusterState = profile.load_state()?;
    let server = super::remote::api_server_url(&state)?;
    kubeconfig::install(target, profile.dir(), &text, &owner(home, profile)?, &server, true)?;
    Ok(target.to_owned())
}
