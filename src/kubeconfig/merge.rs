//! Pure changes to kubeconfig documents: turning kubeadm's admin.conf into one profile's
//! entries, merging them into a user's kubeconfig and removing them again.
//!
//! Entries are matched by name only: a same-name cluster, user or context is replaced
//! (so a recreated cluster never keeps an old CA), every other entry is left as it was.

use super::KubeconfigError;
use super::document::{Context, Kubeconfig, NamedCluster, NamedContext, NamedUser};

/// One profile's cluster, user and context, all named after the profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Entries {
    /// The cluster: the control plane's host-only address and the cluster CA, embedded.
    pub cluster: NamedCluster,
    /// The admin user with its client certificate and key, embedded.
    pub user: NamedUser,
    /// The context joining them.
    pub context: NamedContext,
}

impl Entries {
    /// The profile name shared by the three entries.
    pub fn name(&self) -> &str {
        &self.context.name
    }
}

/// The API server URL for the control plane at `ip` (kubeadm's default port 6443).
pub fn server_url(ip: std::net::IpAddr) -> String {
    format!("https://{}", std::net::SocketAddr::new(ip, 6443))
}

/// Takes the single cluster and user of kubeadm's `admin.conf` (or of a standalone copy
/// written by kubelab), names them and a context `name`, and points the cluster at
/// `server_url`. Certificates must be embedded (`-data` fields): paths would name files
/// on the node, which the host does not have.
pub fn entries_from_admin_conf(
    admin_conf: &str,
    name: &str,
    server_url: &str,
) -> Result<Entries, KubeconfigError> {
    let doc = Kubeconfig::parse(admin_conf)
        .map_err(|source| KubeconfigError::ParseAdminConf { source: Box::new(source) })?;
    let invalid = |why| KubeconfigError::AdminConf { why };
    let [mut cluster] = <[NamedCluster; 1]>::try_from(doc.clusters)
        .map_err(|_| invalid("it must hold exactly one cluster"))?;
    let [mut user] = <[NamedUser; 1]>::try_from(doc.users)
        .map_err(|_| invalid("it must hold exactly one user"))?;
    if cluster.cluster.certificate_authority.is_some() {
        return Err(invalid("the cluster CA is a file path instead of embedded data"));
    }
    if user.user.client_certificate.is_some() || user.user.client_key.is_some() {
        return Err(invalid(
            "the client certificate or key is a file path instead of embedded data",
        ));
    }
    // kubeadm writes one context; keep its namespace and extensions when there is one.
    let mut context = match <[NamedContext; 1]>::try_from(doc.contexts) {
        Ok([context]) => context,
        Err(_) => NamedContext::default(),
    };
    cluster.name = name.to_owned();
    cluster.cluster.server = Some(server_url.to_owned());
    user.name = name.to_owned();
    context.name = name.to_owned();
    context.context =
        Context { cluster: Some(name.to_owned()), user: Some(name.to_owned()), ..context.context };
    Ok(Entries { cluster, user, context })
}

/// Merges `entries` into `doc`, replacing same-name entries in place; with `set_current`,
/// makes the profile's context current.
///
/// Also returns the context to restore when the profile is deleted: the one that was
/// current before, if this merge switched away from it (`None` if nothing else was
/// current, or `set_current` is false, or the profile was already current, so a rerun of
/// `up` never forgets the context the first run switched away from).
pub fn merge(
    mut doc: Kubeconfig,
    entries: &Entries,
    set_current: bool,
) -> (Kubeconfig, Option<String>) {
    doc.api_version.get_or_insert_with(|| "v1".to_owned());
    doc.kind.get_or_insert_with(|| "Config".to_owned());
    replace(&mut doc.clusters, entries.cluster.clone());
    replace(&mut doc.users, entries.user.clone());
    replace(&mut doc.contexts, entries.context.clone());
    let mut previous = None;
    if set_current {
        previous = doc.current().filter(|current| *current != entries.name()).map(str::to_owned);
        doc.current_context = Some(entries.name().to_owned());
    }
    (doc, previous)
}

/// Removes exactly the cluster, user and context named `name`. If `name` was the current
/// context, `restore` becomes current when `doc` still has that context, else
/// `current-context` is unset.
pub fn remove(mut doc: Kubeconfig, name: &str, restore: Option<&str>) -> Kubeconfig {
    doc.clusters.retain(|entry| entry.name != name);
    doc.users.retain(|entry| entry.name != name);
    doc.contexts.retain(|entry| entry.name != name);
    if doc.current() == Some(name) {
        let restore = restore.filter(|context| doc.contexts.iter().any(|c| c.name == *context));
        doc.current_context = restore.map(str::to_owned);
    }
    doc
}

/// A list entry with a name.
trait Named {
    fn name(&self) -> &str;
}

macro_rules! named {
    ($($ty:ty),*) => {$(
        impl Named for $ty {
            fn name(&self) -> &str {
                &self.name
            }
        }
    )*};
}
named!(NamedCluster, NamedUser, NamedContext);

/// Puts `entry` where the first same-name entry was (dropping any duplicates), or at the
/// end if there was none.
fn replace<T: Named>(list: &mut Vec<T>, entry: T) {
    let name = entry.name().to_owned();
    let mut entry = Some(entry);
    let mut merged = Vec::with_capacity(list.len() + 1);
    for existing in list.drain(..) {
        if existing.name() != name {
            merged.push(existing);
        } else if let Some(entry) = entry.take() {
            merged.push(entry);
        }
    }
    merged.extend(entry);
    *list = merged;
}
