//! File-system helpers for every file kubelab writes under its home: private directories
//! that are never symbolic links, files opened without following a link (`O_NOFOLLOW`),
//! and atomic writes (a fresh `O_EXCL` temp file in the same directory, fsync, rename).
//! A crash never leaves a half-written file, and a link planted in the home never
//! redirects a write outside it (issue "Never touch what is not yours", class 3).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A write refused because the path, or a directory on the way to it, is a symbolic
/// link (or not a directory where one is needed). Carried inside an `io::Error`, so
/// every module keeps its own error variant; `reason` finds it in the chain.
#[derive(Debug, thiserror::Error)]
#[error("{} is {what}; kubelab never writes through links in its home", path.display())]
pub struct LinkRefused {
    /// The offending path.
    pub path: PathBuf,
    /// `a symbolic link` or `not a directory`.
    pub what: &'static str,
}

/// The [`LinkRefused`] inside `err`, if that is what it carries.
pub fn link_refused(err: &io::Error) -> Option<&LinkRefused> {
    err.get_ref().and_then(|inner| inner.downcast_ref())
}

fn refused(path: &Path, what: &'static str) -> io::Error {
    io::Error::other(LinkRefused { path: path.to_owned(), what })
}

/// `ELOOP` from an `O_NOFOLLOW` open means the last component is a link.
fn nofollow_error(path: &Path, err: io::Error) -> io::Error {
    #[cfg(unix)]
    if err.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
        return refused(path, "a symbolic link");
    }
    #[cfg(unix)]
    if err.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) {
        return refused(path, "not a directory");
    }
    err
}

/// `options` with `O_NOFOLLOW` (and mode 0600 for files it creates) on Unix; elsewhere
/// a link is refused by [`refuse_link`] before the open.
fn nofollow(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let flags = rustix::fs::OFlags::NOFOLLOW.bits();
        options.custom_flags(i32::try_from(flags).unwrap_or(i32::MAX)).mode(0o600);
    }
    options
}

/// Refuses `path` if it is a symbolic link (a missing path is fine).
pub fn refuse_link(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(refused(path, "a symbolic link")),
        _ => Ok(()),
    }
}

/// Opens `path` with `options`, never through a link at its last component.
pub fn open_nofollow(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    #[cfg(not(unix))]
    refuse_link(path)?;
    nofollow(options).open(path).map_err(|e| nofollow_error(path, e))
}

/// The last `max_bytes` of the file at `path` (lossily UTF-8), read without following
/// a link and without reading the rest; a line cut by the limit is dropped. `None` when
/// it cannot be read (missing, a link, not a file).
pub fn read_tail(path: &Path, max_bytes: u64) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = open_nofollow(path, OpenOptions::new().read(true)).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let start = meta.len().saturating_sub(max_bytes);
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut buf = Vec::new();
    file.take(max_bytes).read_to_end(&mut buf).ok()?;
    Some(tail_text(&buf, start > 0))
}

/// The last bytes of a log as text (lossily UTF-8); when `cut`, the bytes start after
/// the log's beginning, so their first line is partial and dropped. Shared by
/// [`read_tail`] and the logs a hypervisor keeps (a remote libvirt's console log).
pub fn tail_text(bytes: &[u8], cut: bool) -> String {
    let text = String::from_utf8_lossy(bytes);
    match text.split_once('\n') {
        Some((_, rest)) if cut => rest.to_owned(),
        _ => text.into_owned(),
    }
}

/// Opens `path` for appending, creating it (mode 0600), never through a link.
pub fn open_append(path: &Path) -> io::Result<File> {
    open_nofollow(path, OpenOptions::new().create(true).append(true))
}

/// Creates (or truncates) `path` for writing, mode 0600 from the start, never through a
/// link.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    open_nofollow(path, OpenOptions::new().write(true).create(true).truncate(true))
}

/// Creates `dir` (mode 0700) and every missing directory between `root` and it. `root`
/// is trusted and created if missing (the user may have linked the home elsewhere);
/// below it, a symbolic link or a non-directory anywhere on the way is refused with
/// [`LinkRefused`].
pub fn create_private_dir(root: &Path, dir: &Path) -> io::Result<()> {
    let outside = || {
        let why = format!("{} is not a plain path below {}", dir.display(), root.display());
        io::Error::new(io::ErrorKind::InvalidInput, why)
    };
    let rel = dir.strip_prefix(root).map_err(|_| outside())?;
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.recursive(true).create(root)?;
    builder.recursive(false);
    let mut path = root.to_owned();
    for part in rel.components() {
        let Component::Normal(name) = part else {
            return Err(outside());
        };
        path.push(name);
        match builder.create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let meta = fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            return Err(refused(&path, "a symbolic link"));
        }
        if !meta.is_dir() {
            return Err(refused(&path, "not a directory"));
        }
    }
    set_private_dir_mode(&path)
}

/// Sets 0700 through a descriptor opened without following links, so a link swapped in
/// after the check above cannot redirect the chmod.
fn set_private_dir_mode(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::DIRECTORY;
        let handle = OpenOptions::new()
            .read(true)
            .custom_flags(i32::try_from(flags.bits()).unwrap_or(i32::MAX))
            .open(dir)
            .map_err(|e| nofollow_error(dir, e))?;
        handle.set_permissions(fs::Permissions::from_mode(0o700))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Distinguishes the temp files of concurrent writers in one process.
static TMP_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Replaces `path` with `contents` atomically (mode 0600 on Unix). The temp file is new
/// (`O_EXCL`, so never a planted file or link) and sits in the same directory; the
/// rename replaces a link at `path` itself instead of writing through it.
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
    let mut out = AtomicFile::create(path)?;
    out.file().write_all(contents)?;
    prepare(out.file())?;
    out.commit()
}

/// A file written under a fresh temporary name beside its destination and renamed over
/// it only once complete, for writes too large to hold in memory (`image export`). The
/// temp file is new (`O_EXCL`, so never a planted file or link); dropped without
/// [`commit`](Self::commit), it is removed, so a failure leaves nothing behind.
#[derive(Debug)]
pub struct AtomicFile {
    tmp: PathBuf,
    path: PathBuf,
    file: File,
    committed: bool,
}

impl AtomicFile {
    /// Creates the temp file for `path` (mode 0600 on Unix).
    pub fn create(path: &Path) -> io::Result<Self> {
        let name = path.file_name().ok_or_else(|| io::Error::other("path has no file name"))?;
        loop {
            let mut tmp_name = name.to_os_string();
            let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            tmp_name.push(format!(".tmp.{}.{n}", std::process::id()));
            let tmp = path.with_file_name(tmp_name);
            match open_nofollow(&tmp, OpenOptions::new().write(true).create_new(true)) {
                Ok(file) => {
                    return Ok(Self { tmp, path: path.to_owned(), file, committed: false });
                }
                // A stale temp file of a crashed process with the same PID: take the next.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < u32::MAX => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The temp file, to write to.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Flushes the temp file to disk and renames it over the destination (replacing a
    /// link there instead of writing through it).
    pub fn commit(mut self) -> io::Result<()> {
        self.file.sync_all()?;
        fs::rename(&self.tmp, &self.path)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_tail_is_bounded_drops_a_cut_line_and_refuses_links() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("VBox.log");
        fs::write(&log, "first line\nsecond line\nthird\n").unwrap();
        assert_eq!(read_tail(&log, 1000).unwrap(), "first line\nsecond line\nthird\n");
        assert_eq!(read_tail(&log, 15).unwrap(), "third\n", "the cut `line` is dropped");
        assert_eq!(read_tail(&dir.path().join("missing"), 10), None);
        assert_eq!(read_tail(dir.path(), 10), None, "a directory");
        #[cfg(unix)]
        {
            let link = dir.path().join("link.log");
            std::os::unix::fs::symlink(&log, &link).unwrap();
            assert_eq!(read_tail(&link, 1000), None, "a link is never followed");
        }
    }

    #[test]
    fn atomic_file_is_removed_unless_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image.tar");
        fs::write(&path, b"old").unwrap();
        let mut out = AtomicFile::create(&path).unwrap();
        out.file().write_all(b"partial").unwrap();
        drop(out);
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file is left");
        let mut out = AtomicFile::create(&path).unwrap();
        out.file().write_all(b"new").unwrap();
        out.commit().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

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
        create_private_dir(dir.path(), &sub).unwrap();
        assert_eq!(fs::metadata(&sub).unwrap().permissions().mode() & 0o777, 0o700);
        assert!(create_private_dir(&sub, dir.path()).is_err(), "outside the root");
        assert!(create_private_dir(dir.path(), &dir.path().join("a/../x")).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn links_are_never_written_through() {
        use std::os::unix::fs::{PermissionsExt, symlink};
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        fs::set_permissions(outside.path(), fs::Permissions::from_mode(0o755)).unwrap();

        let link = dir.path().join("lock");
        symlink(&victim, &link).unwrap();
        for err in [create_private_file(&link).unwrap_err(), open_append(&link).unwrap_err()] {
            assert!(link_refused(&err).is_some(), "{err}");
        }
        // The atomic write replaces the link itself.
        write_atomic(&link, b"new").unwrap();
        assert!(!fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");

        // A linked directory anywhere below the root is refused, and left as it was.
        symlink(outside.path(), dir.path().join("nodes")).unwrap();
        for target in ["nodes", "nodes/lab"] {
            let err = create_private_dir(dir.path(), &dir.path().join(target)).unwrap_err();
            assert!(link_refused(&err).is_some(), "{target}: {err}");
        }
        assert!(!outside.path().join("lab").exists());
        assert_eq!(fs::metadata(outside.path()).unwrap().permissions().mode() & 0o777, 0o755);
        // A file where a directory belongs is refused too.
        fs::write(dir.path().join("file"), "").unwrap();
        let err = create_private_dir(dir.path(), &dir.path().join("file/x")).unwrap_err();
        assert_eq!(link_refused(&err).unwrap().what, "not a directory");
    }

    #[test]
    fn write_atomic_skips_a_stale_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        // Other tests write too: cover the next names any of them may take first.
        let n = TMP_COUNTER.load(Ordering::Relaxed);
        for i in n..n + 64 {
            fs::write(dir.path().join(format!("f.tmp.{}.{i}", std::process::id())), "").unwrap();
        }
        write_atomic(&path, b"fresh").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"fresh");
    }
}
