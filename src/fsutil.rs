//! File-system helpers shared by the modules that own files: private directories and
//! atomic writes (temp file in the same directory, fsync, rename), so a crash never
//! leaves a half-written state file, key or kubeconfig.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Creates `dir` and its parents; the last component gets mode 0700 on Unix.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Creates (or truncates) `path` for writing, with mode 0600 on Unix from the start.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Replaces `path` with `contents` atomically; the file has mode 0600 on Unix.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_atomic_then(path, contents, |_| Ok(()))
}

/// Replaces `path` with `contents` atomically, the new file taking the owner, group and
/// mode of `original` (the metadata of the file it replaces) before it becomes visible:
/// rewriting a user's file, also as root through sudo, never takes it from them nor
/// opens it to others.
pub fn replace_keeping_owner(
    path: &Path,
    contents: &[u8],
    original: &fs::Metadata,
) -> io::Result<()> {
    write_atomic_then(path, contents, |file| {
        #[cfg(unix)]
        {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            let new = file.metadata()?;
            // Only when it differs: an unprivileged user may not chown even to itself
            // into a group it is not in.
            if (new.uid(), new.gid()) != (original.uid(), original.gid()) {
                std::os::unix::fs::fchown(file, Some(original.uid()), Some(original.gid()))?;
            }
            file.set_permissions(fs::Permissions::from_mode(original.mode() & 0o7777))?;
        }
        #[cfg(not(unix))]
        file.set_permissions(original.permissions())?;
        Ok(())
    })
}

/// The atomic write: `prepare` adjusts the temp file before the rename.
fn write_atomic_then(
    path: &Path,
    contents: &[u8],
    prepare: impl FnOnce(&File) -> io::Result<()>,
) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| io::Error::other("path has no file name"))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut file = create_private_file(&tmp)?;
        file.write_all(contents)?;
        prepare(&file)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[cfg(unix)]
    #[test]
    fn replace_keeping_owner_keeps_mode_owner_and_group() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let before = fs::metadata(&path).unwrap();
        replace_keeping_owner(&path, b"new", &before).unwrap();
        let after = fs::metadata(&path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_ne!(after.ino(), before.ino(), "replaced by a rename, not rewritten in place");
        assert_eq!(after.mode() & 0o7777, 0o640);
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn private_dir_is_0700() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        create_private_dir(&sub).unwrap();
        assert_eq!(fs::metadata(&sub).unwrap().permissions().mode() & 0o777, 0o700);
    }
}
