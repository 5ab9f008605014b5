//! Pure changes to kubeconfig documents: turning kubeadm's admin.conf into one profile's
//! entries, merging them into a user's kubeconfig and removing them again.
//!
//! Ownership: every entry kubelab writes carries an extension named [`OWNER_EXTENSION`]
//! holding the home id and the profile ([`Owner`]); kubectl keeps extensions through its
//! own rewrites. A same-name entry with this owner's marker is replaced (so a recreated
//! cluster never keeps an old CA); a same-name entry without it is foreign, and the
//! merge is refused ([`Clash`]); `remove` takes only marked entries. Every other entry
//! is left as it was.

use serde_json::{Value, json};

use super::KubeconfigError;
use super::document::{Context, Kubeconfig, NamedCluster, NamedContext, NamedExtension, NamedUser};

/// The name of the extension marking the cluster, user and context kubelab wrote.
pub const OWNER_EXTENSION: &str = "kubelab.io/owner";

/// Who writes a profile's entries: a kubelab home (by its id, `Home::id`) and one of its
/// profiles, whose name the entries carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The home's id.
    pub home_id: String,
    /// The profile's name, also the name of its cluster, user and context.
    pub profile: String,
}

impl Owner {
    fn payload(&self) -> Value {
        json!({"home": self.home_id, "profile": self.profile})
    }

    /// Whether `extensions` hold exactly this owner's marker.
    fn marks(&self, extensions: Option<&Vec<NamedExtension>>) -> bool {
        let payload = self.payload();
        extensions
            .into_iter()
            .flatten()
            .any(|e| e.name == OWNER_EXTENSION && e.extension == payload)
    }

    /// Puts this owner's marker in `extensions`, replacing any other owner marker.
    fn mark(&self, extensions: &mut Option<Vec<NamedExtension>>) {
        let list = extensions.get_or_insert_with(Vec::new);
        list.retain(|e| e.name != OWNER_EXTENSION);
        list.push(NamedExtension {
            name: OWNER_EXTENSION.to_owned(),
            extension: self.payload(),
            extra: Default::default(),
        });
    }
}

/// An entry with the profile's name that this owner did not write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clash {
    /// `cluster`, `user` or `context`.
    pub kind: &'static str,
    /// The entry's name.
    pub name: String,
}

/// One profile's cluster, user and context, all named after the profile and marked.
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
/// written by kubelab), names them and a context after `owner`'s profile, marks all
/// three as `owner`'s and points the cluster at `server_url`. Certificates must be
/// embedded (`-data` fields): paths would name files on the node, which the host does
/// not have.
pub fn entries_from_admin_conf(
    admin_conf: &str,
    owner: &Owner,
    server_url: &str,
) -> Result<Entries, KubeconfigError> {
    let name = owner.profile.as_str();
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
    owner.mark(&mut cluster.cluster.extensions);
    owner.mark(&mut user.user.extensions);
    owner.mark(&mut context.context.extensions);
    Ok(Entries { cluster, user, context })
}

/// The first entry named after `owner`'s profile that `owner` did not write, if any.
pub fn check_owned(doc: &Kubeconfig, owner: &Owner) -> Result<(), Clash> {
    let name = owner.profile.as_str();
    let clusters = doc.clusters.iter().map(|e| ("cluster", e.name(), e.extensions()));
    let users = doc.users.iter().map(|e| ("user", e.name(), e.extensions()));
    let contexts = doc.contexts.iter().map(|e| ("context", e.name(), e.extensions()));
    match clusters
        .chain(users)
        .chain(contexts)
        .find(|(_, entry, extensions)| *entry == name && !owner.marks(*extensions))
    {
        Some((kind, _, _)) => Err(Clash { kind, name: name.to_owned() }),
        None => Ok(()),
    }
}

/// Merges `entries` (written by `owner`) into `doc`, replacing `owner`'s same-name
/// entries in place; with `set_current`, makes the profile's context current. A
/// same-name entry `owner` did not write is a [`Clash`], and `doc` is not changed.
///
/// Also returns the context to restore when the profile is deleted: the one that was
/// current before, if this merge switched away from it (`None` if nothing else was
/// current, or `set_current` is false, or the profile was already current, so a rerun of
/// `up` never forgets the context the first run switched away from).
pub fn merge(
    mut doc: Kubeconfig,
    entries: &Entries,
    owner: &Owner,
    set_current: bool,
) -> Result<(Kubeconfig, Option<String>), Clash> {
    check_owned(&doc, owner)?;
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
    Ok((doc, previous))
}

/// Removes the cluster, user and context `owner` wrote (named after its profile and
/// carrying its marker); same-name entries of anyone else stay. If the removed context
/// was current, `restore` becomes current when `doc` still has that context, else
/// `current-context` is unset.
pub fn remove(mut doc: Kubeconfig, owner: &Owner, restore: Option<&str>) -> Kubeconfig {
    let name = owner.profile.as_str();
    let theirs = |entry: &dyn Named| entry.name() != name || !owner.marks(entry.extensions());
    doc.clusters.retain(|entry| theirs(entry));
    doc.users.retain(|entry| theirs(entry));
    let before = doc.contexts.len();
    doc.contexts.retain(|entry| theirs(entry));
    let removed_context = doc.contexts.len() < before;
    if removed_context && doc.current() == Some(name) {
        let restore = restore.filter(|context| doc.contexts.iter().any(|c| c.name == *context));
        doc.current_context = restore.map(str::to_owned);
    }
    doc
}

/// A list entry with a name and the extensions of what it names.
trait Named {
    fn name(&self) -> &str;
    fn extensions(&self) -> Option<&Vec<NamedExtension>>;
}

macro_rules! named {
    ($($ty:ty => $field:ident),*) => {$(
        impl Named for $ty {
            fn name(&self) -> &str {
                &self.name
            }
            fn extensions(&self) -> Option<&Vec<NamedExtension>> {
                self.$field.extensions.as_ref()
            }
        }
    )*};
}
named!(NamedCluster => cluster, NamedUser => user, NamedContext => context);

/// Puts `entry` where the first same-name entry was (dropping any duplicates, all the
/// owner's after [`check_owned`]), or at the end if there was none.
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
