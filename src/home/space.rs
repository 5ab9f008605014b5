//! Free space in the file system of kubelab's home, which holds the image cache (and
//! VirtualBox's node disks): `up` refuses to start when one image cannot fit there,
//! and `up` and `doctor` warn when a small cluster would not (issue 12).

use std::io;
use std::path::Path;

use super::HomeError;

/// Below this, `up` fails before it creates anything: one base image must fit (the
/// catalogue's cloud images are 0.6-0.9 GiB; a download grows in the cache under a
/// temporary name and is renamed, so it never needs two copies).
pub const MIN_FREE_BYTES: u64 = 1 << 30;
/// Below this, `up` and `doctor` warn: a base image (up to 1 GiB) plus three nodes'
/// copy-on-write disks, each of which grows to about 3 GiB once kubeadm has pulled the
/// Kubernetes and CNI images.
pub const LOW_FREE_BYTES: u64 = 10 << 30;

/// What the free space allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// Room for a small cluster.
    Enough {
        /// Free MiB.
        free_mib: u64,
    },
    /// Room for an image, not for a small cluster ([`LOW_FREE_BYTES`]).
    Low {
        /// Free MiB.
        free_mib: u64,
    },
    /// Not measured: this OS has no `statvfs`.
    Unknown,
}

/// Judges `free_bytes` in the file system of `path`: [`HomeError::LowSpace`] below
/// [`MIN_FREE_BYTES`].
pub fn judge(path: &Path, free_bytes: Option<u64>) -> Result<Space, HomeError> {
    let Some(free) = free_bytes else { return Ok(Space::Unknown) };
    let free_mib = free >> 20;
    if free < MIN_FREE_BYTES {
        let (path, needed_mib) = (path.to_owned(), MIN_FREE_BYTES >> 20);
        Err(HomeError::LowSpace { path, free_mib, needed_mib })
    } else if free < LOW_FREE_BYTES {
        Ok(Space::Low { free_mib })
    } else {
        Ok(Space::Enough { free_mib })
    }
}

/// The bytes an unprivileged user may still write in the file system holding `path`
/// (its nearest existing ancestor: the home may not exist yet); `None` off Unix.
pub fn free_bytes(path: &Path) -> io::Result<Option<u64>> {
    #[cfg(unix)]
    {
        let existing = path.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
        let stat = rustix::fs::statvfs(existing)?;
        Ok(Some(stat.f_bavail.saturating_mul(stat.f_frsize)))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fails_below_one_image_and_warns_below_a_small_cluster() {
        let path = Path::new("/home/ann/.kubelab");
        let err = judge(path, Some(MIN_FREE_BYTES - 1)).unwrap_err();
        assert!(matches!(err, HomeError::LowSpace { free_mib: 1023, needed_mib: 1024, .. }));
        assert!(err.to_string().contains("/home/ann/.kubelab"), "{err}");
        assert_eq!(judge(path, Some(MIN_FREE_BYTES)).unwrap(), Space::Low { free_mib: 1024 });
        let plenty = judge(path, Some(LOW_FREE_BYTES)).unwrap();
        assert_eq!(plenty, Space::Enough { free_mib: 10 << 10 });
        assert_eq!(judge(path, None).unwrap(), Space::Unknown);
    }

    #[cfg(unix)]
    #[test]
    fn measures_the_nearest_existing_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(&dir.path().join("not/yet")).unwrap();
        assert!(free.is_some_and(|b| b > 0), "{free:?}");
    }
}
