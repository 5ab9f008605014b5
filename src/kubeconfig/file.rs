//! Reading and rewriting a user's kubeconfig the way kubectl does, so the two never
//! interleave their writes: the lock is `<file>.lock`, created exclusively and removed
//! afterwards (client-go `tools/clientcmd/loader.go`, `lockFile`: `os.OpenFile(filename +
//! ".lock", os.O_CREATE|os.O_EXCL, 0)`); a missing parent directory is created like
//! client-go's `os.MkdirAll(dir, 0755)`; a new file gets mode 0600 (client-go's
//! `WriteToFile`), a rewritten one keeps its owner, group and mode; both are written
//! atomically. kubectl fails at once on a held lock; kubelab
//! waits up to [`LOCK_TIMEOUT`] for it.

use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::KubeconfigError;
use super::document::Kubeconfig;
use crate::fsutil;

/// How long kubelab waits for another writer's lock before giving up.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a held lock is checked again while waiting.
const LOCK_POLL: Duration = Duration::from_millis(50);

/// kubectl's lock file for `file`: `<file>.lock`.
pub fn lock_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Reads a kubeconfig; a missing file is an empty document.
pub fn read(path: &Path) -> Result<Kubeconfig, KubeconfigError> {
    match fs::read_to_string(path) {
        Ok(text) => Kubeconfig::parse(&text).map_err(|source| KubeconfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        }),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(Kubeconfig::default()),
        Err(source) => Err(KubeconfigError::Read { path: path.to_owned(), source }),
    }
}

/// Replaces `path` with `doc` atomically, mode 0600 (no lock: for files only kubelab writes).
pub fn write(path: &Path, doc: &Kubeconfig) -> Result<(), KubeconfigError> {
    let yaml = doc.to_yaml().map_err(|source| KubeconfigError::Serialize { source })?;
    fsutil::write_atomic(path, yaml.as_bytes())
        .map_err(|source| KubeconfigError::Write { path: path.to_owned(), source })
}

/// Applies `change` to the kubeconfig at `path` under kubectl's lock and returns what
/// `change` returned. The file is rewritten only if the document changed, so a no-op
/// keeps the user's comments and formatting; an unparsable file, or one `change` refuses
/// to change, is never overwritten. A symlinked kubeconfig (dotfile repositories) is
/// written through the link.
pub fn update<T>(
    path: &Path,
    change: impl FnOnce(Kubeconfig) -> Result<(Kubeconfig, T), KubeconfigError>,
) -> Result<T, KubeconfigError> {
    update_with_timeout(path, LOCK_TIMEOUT, change)
}

fn update_with_timeout<T>(
    path: &Path,
    timeout: Duration,
    change: impl FnOnce(Kubeconfig) -> Result<(Kubeconfig, T), KubeconfigError>,
) -> Result<T, KubeconfigError> {
    if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .map_err(|source| KubeconfigError::CreateDir { path: parent.to_owned(), source })?;
    }
    let _lock = KubectlLock::acquire(path, timeout)?;
    let target = through_symlink(path)?;
    let before = read(&target)?;
    let (after, output) = change(before.clone())?;
    if after != before {
        let io = |source| KubeconfigError::Write { path: target.clone(), source };
        match fs::metadata(&target) {
            Ok(original) => {
                let yaml =
                    after.to_yaml().map_err(|source| KubeconfigError::Serialize { source })?;
                fsutil::replace_keeping_owner(&target, yaml.as_bytes(), &original).map_err(io)?
            }
            Err(err) if err.kind() == ErrorKind::NotFound => write(&target, &after)?,
            Err(source) => return Err(io(source)),
        }
    }
    Ok(output)
}

/// The file a symlink at `path` points to, else `path`.
fn through_symlink(path: &Path) -> Result<PathBuf, KubeconfigError> {
    let is_link = fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_symlink());
    if !is_link {
        return Ok(path.to_owned());
    }
    fs::canonicalize(path).map_err(|source| KubeconfigError::Read { path: path.to_owned(), source })
}

/// A held `<file>.lock`; dropping it removes the lock file, also after an error.
struct KubectlLock {
    path: PathBuf,
}

impl KubectlLock {
    fn acquire(file: &Path, timeout: Duration) -> Result<Self, KubeconfigError> {
        let path = lock_path(file);
        let deadline = Instant::now() + timeout;
        loop {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(_) => return Ok(Self { path }),
                Err(err) if err.kind() == ErrorKind::AlreadyExists => {
                    if Instant::now() >= deadline {
                        return Err(KubeconfigError::Locked {
                            lock: path,
                            waited_secs: timeout.as_secs(),
                        });
                    }
                    std::thread::sleep(LOCK_POLL);
                }
                Err(source) => return Err(KubeconfigError::Lock { lock: path, source }),
            }
        }
    }
}

impl Drop for KubectlLock {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_file(&self.path) {
            tracing::warn!("cannot remove kubeconfig lock {}: {err}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubeconfig::document::NamedContext;

    fn add_context(
        name: &str,
    ) -> impl FnOnce(Kubeconfig) -> Result<(Kubeconfig, ()), KubeconfigError> {
        let context = NamedContext { name: name.to_owned(), ..NamedContext::default() };
        move |mut doc| {
            doc.contexts.push(context);
            Ok((doc, ()))
        }
    }

    #[test]
    fn missing_file_and_parent_are_created_0600_and_the_lock_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".kube/config");
        update(&path, add_context("a")).unwrap();
        assert_eq!(read(&path).unwrap().contexts[0].name, "a");
        assert!(!lock_path(&path).exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn held_lock_times_out_and_is_left_to_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        fs::write(lock_path(&path), "").unwrap();
        let err =
            update_with_timeout(&path, Duration::from_millis(200), add_context("a")).unwrap_err();
        assert!(
            matches!(&err, KubeconfigError::Locked { lock, .. } if *lock == lock_path(&path)),
            "{err}"
        );
        assert!(lock_path(&path).exists(), "someone else's lock must stay");
        let reason = crate::reason::reason(&crate::Error::from(err));
        assert_eq!(reason.id, "K8S_KUBECONFIG_LOCKED");
        assert!(!path.exists());
    }

    #[test]
    fn waits_for_a_lock_released_by_another_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        let lock = lock_path(&path);
        fs::write(&lock, "").unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            fs::remove_file(lock).unwrap();
        });
        update(&path, add_context("a")).unwrap();
        releaser.join().unwrap();
        assert_eq!(read(&path).unwrap().contexts.len(), 1);
    }

    #[test]
    fn unparsable_file_is_not_overwritten_and_the_lock_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        fs::write(&path, "clusters: [unclosed\n").unwrap();
        let err = update(&path, add_context("a")).unwrap_err();
        assert!(matches!(&err, KubeconfigError::Parse { path: p, .. } if *p == path), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "clusters: [unclosed\n");
        assert!(!lock_path(&path).exists());
    }

    #[test]
    fn unchanged_document_keeps_the_file_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        let text = "# my comment\napiVersion: v1\nkind: Config\ncontexts: [{name: a}]\n";
        fs::write(&path, text).unwrap();
        update(&path, |doc| Ok((doc, ()))).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
        let missing = dir.path().join("missing");
        update(&missing, |doc| Ok((doc, ()))).unwrap();
        assert!(!missing.exists());
    }

    #[cfg(unix)]
    #[test]
    fn rewrite_keeps_owner_group_and_mode() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        fs::write(&path, "apiVersion: v1\nkind: Config\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        // As root (the sudo case of the issue) the file belongs to someone else.
        let _ = std::os::unix::fs::chown(&path, Some(65534), Some(65534));
        let before = fs::metadata(&path).unwrap();
        update(&path, add_context("a")).unwrap();
        let after = fs::metadata(&path).unwrap();
        assert_eq!(read(&path).unwrap().contexts[0].name, "a");
        assert_eq!(
            (after.uid(), after.gid(), after.mode() & 0o7777),
            (before.uid(), before.gid(), 0o644)
        );
    }

    #[test]
    fn refused_change_leaves_the_file_byte_for_byte_and_releases_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        fs::write(&path, "contexts: [{name: a}]\n").unwrap();
        let err = update(&path, |_| -> Result<(Kubeconfig, ()), _> {
            Err(KubeconfigError::AdminConf { why: "refused" })
        })
        .unwrap_err();
        assert!(matches!(err, KubeconfigError::AdminConf { .. }), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "contexts: [{name: a}]\n");
        assert!(!lock_path(&path).exists());
    }

    #[cfg(unix)]
    #[test]
    fn symlinked_kubeconfig_is_written_through_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("dotfiles-config");
        fs::write(&real, "apiVersion: v1\nkind: Config\n").unwrap();
        let link = dir.path().join("config");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        update(&link, add_context("a")).unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(read(&real).unwrap().contexts[0].name, "a");
    }
}
