//! The image cache under `<home>/cache/images/`: verified files named by their SHA-256
//! (`<sha256>.<format>`), a JSON sidecar per file (`<sha256>.<format>.json`: digests, size,
//! mtime, source URL) so a changed file is noticed and re-verified, partial downloads
//! (`<key>.part`), and per-key lock files in `<home>/cache/locks/` (kept out of the
//! image directory so a failed pull leaves nothing in it).

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::catalog::{Format, is_lower_hex, is_name};
use super::{CachedImage, ImageError};
use crate::fsutil;
use crate::home::Home;
use crate::lock::{self, FileLock};

/// What the sidecar records about a verified file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sidecar {
    /// SHA-256 of the file (also its name).
    pub sha256: String,
    /// SHA-512, when the source published one and it was checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
    /// The format it was pulled as.
    pub format: Format,
    /// Size in bytes when verified.
    pub size_bytes: u64,
    /// Modification time (nanoseconds since the epoch) when verified.
    pub mtime_ns: u128,
    /// Where it came from.
    pub url: String,
    /// The catalogue name it was pulled as, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What a baked image holds (`image bake`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baked: Option<super::baked::Baked>,
    /// The SHA-256 of the cached image this file was converted from (`image::convert`),
    /// if it is a conversion; absent in sidecars from before conversions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converted_from: Option<String>,
}

impl Sidecar {
    /// Reads the sidecar at `path` (never through a link) and checks it like input: the
    /// digests are lowercase hex of their length and the file is named after them.
    fn load(path: &Path) -> Result<Self, ImageError> {
        let bad = |field, why: String| ImageError::BadSidecar { path: path.to_owned(), field, why };
        let mut bytes = Vec::new();
        fsutil::open_nofollow(path, fs::OpenOptions::new().read(true))
            .and_then(|mut file| file.read_to_end(&mut bytes))
            .map_err(|e| bad("(file)", e.to_string()))?;
        let sidecar: Self =
            serde_json::from_slice(&bytes).map_err(|e| bad("(file)", e.to_string()))?;
        if !is_lower_hex(&sidecar.sha256, 64) {
            return Err(bad(
                "sha256",
                format!("{:?} is not 64 lowercase hex digits", sidecar.sha256),
            ));
        }
        if sidecar.sha512.as_deref().is_some_and(|hex| !is_lower_hex(hex, 128)) {
            return Err(bad("sha512", "not 128 lowercase hex digits".into()));
        }
        if sidecar.converted_from.as_deref().is_some_and(|hex| !is_lower_hex(hex, 64)) {
            return Err(bad("converted_from", "not 64 lowercase hex digits".into()));
        }
        if let Some(name) = sidecar.name.as_deref().filter(|n| !is_name(n)) {
            return Err(bad("name", format!("{name:?} is not a catalogue name")));
        }
        if let Some(Err(why)) = sidecar.baked.as_ref().map(super::baked::Baked::check) {
            return Err(bad("baked", why));
        }
        let expected = format!("{}.{}.json", sidecar.sha256, sidecar.format);
        if path.file_name().is_none_or(|n| *n != *expected) {
            return Err(bad("sha256", format!("the file is not named {expected}")));
        }
        Ok(sidecar)
    }
}

/// The cache directory of one home.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    locks: PathBuf,
    /// The home's root: cache directories are created below it without following links.
    root: PathBuf,
}

impl Cache {
    /// The cache of `home` (nothing is created yet).
    pub fn new(home: &Home) -> Self {
        let dir = home.image_cache_dir();
        let locks = dir.parent().unwrap_or(&dir).join("locks");
        Self { dir, locks, root: home.root().to_owned() }
    }

    /// The directory holding the images.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the cache and lock directories.
    pub fn create(&self) -> Result<(), ImageError> {
        for dir in [&self.dir, &self.locks] {
            fsutil::create_private_dir(&self.root, dir)
                .map_err(|source| ImageError::CreateCache { path: dir.clone(), source })?;
        }
        Ok(())
    }

    /// Where a partial download for `key` is kept between attempts and runs.
    pub fn part_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.part"))
    }

    /// Takes the lock for `key`, waiting for another pull of the same image;
    /// `on_wait` runs once if the lock is busy.
    pub fn lock(&self, key: &str, on_wait: impl FnOnce()) -> Result<FileLock, ImageError> {
        let path = self.locks.join(format!("image-{key}.lock"));
        let what = format!("image cache entry {key}");
        match lock::acquire(&path, &what, false) {
            Err(lock::LockError::Busy { .. }) => {
                on_wait();
                lock::acquire(&path, &what, true)
            }
            other => other,
        }
        .map_err(|source| ImageError::Lock { source })
    }

    fn image_path(&self, sha256: &str, format: Format) -> PathBuf {
        self.dir.join(format!("{sha256}.{format}"))
    }

    fn sidecar_path(&self, sidecar: &Sidecar) -> PathBuf {
        self.dir.join(format!("{}.{}.json", sidecar.sha256, sidecar.format))
    }

    /// Every sidecar in the cache, each checked ([`Sidecar::load`]): one that cannot be
    /// trusted is an error, never skipped, since its digest names the files `remove`
    /// deletes.
    pub fn sidecars(&self) -> Result<Vec<Sidecar>, ImageError> {
        let read_dir = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(ImageError::ReadCache { path: self.dir.clone(), source }),
        };
        let mut sidecars = Vec::new();
        for entry in read_dir {
            let path = entry
                .map_err(|source| ImageError::ReadCache { path: self.dir.clone(), source })?
                .path();
            if path.extension().is_some_and(|x| x == "json") {
                sidecars.push(Sidecar::load(&path)?);
            }
        }
        sidecars.sort_by(|a, b| a.sha256.cmp(&b.sha256));
        Ok(sidecars)
    }

    /// The image `sidecar` describes, if its file exists (not verified: for listing).
    pub fn present(&self, sidecar: &Sidecar) -> Option<CachedImage> {
        let path = self.image_path(&sidecar.sha256, sidecar.format);
        let (size_bytes, _) = stat(&path)?;
        Some(CachedImage {
            path,
            sha256: sidecar.sha256.clone(),
            format: sidecar.format,
            size_bytes,
            url: sidecar.url.clone(),
            name: sidecar.name.clone(),
            converted_from: sidecar.converted_from.clone(),
        })
    }

    /// The cached image `sidecar` describes, if its file is still the one verified:
    /// same size and mtime, or else re-hashed and found equal (the sidecar is then
    /// refreshed). A file that changed is removed with its sidecar and `None` returned.
    pub fn verify(&self, sidecar: &Sidecar) -> Result<Option<CachedImage>, ImageError> {
        let Some(image) = self.present(sidecar) else {
            return Ok(None);
        };
        let path = &image.path;
        let (size_bytes, mtime_ns) = stat(path).unwrap_or_default();
        if size_bytes == sidecar.size_bytes && mtime_ns == sidecar.mtime_ns {
            return Ok(Some(image));
        }
        tracing::info!(path = %path.display(), "cached image changed since it was verified");
        if hash_file(path)? == sidecar.sha256 {
            self.write_sidecar(&Sidecar { size_bytes, mtime_ns, ..sidecar.clone() })?;
            return Ok(Some(image));
        }
        self.remove(sidecar)?;
        Ok(None)
    }

    /// The verified cached image whose sidecar satisfies `matches`.
    pub fn find(
        &self,
        matches: impl Fn(&Sidecar) -> bool,
    ) -> Result<Option<CachedImage>, ImageError> {
        for sidecar in self.sidecars()?.iter().filter(|s| matches(s)) {
            if let Some(image) = self.verify(sidecar)? {
                return Ok(Some(image));
            }
        }
        Ok(None)
    }

    /// Moves the verified `part` into the cache under its digest and writes its sidecar
    /// (size and mtime are taken from the file).
    pub fn commit(&self, part: &Path, sidecar: Sidecar) -> Result<CachedImage, ImageError> {
        let path = self.image_path(&sidecar.sha256, sidecar.format);
        fs::rename(part, &path)
            .map_err(|source| ImageError::Commit { path: path.clone(), source })?;
        let (size_bytes, mtime_ns) =
            stat(&path).ok_or_else(|| ImageError::Commit { path: path.clone(), source: gone() })?;
        let sidecar = Sidecar { size_bytes, mtime_ns, ..sidecar };
        self.write_sidecar(&sidecar)?;
        self.present(&sidecar).ok_or(ImageError::Commit { path, source: gone() })
    }

    /// Deletes the image `sidecar` describes and the sidecar itself.
    pub fn remove(&self, sidecar: &Sidecar) -> Result<(), ImageError> {
        for path in [self.image_path(&sidecar.sha256, sidecar.format), self.sidecar_path(sidecar)] {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(ImageError::Remove { path, source: e });
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn write_sidecar(&self, sidecar: &Sidecar) -> Result<(), ImageError> {
        let path = self.sidecar_path(sidecar);
        let json = serde_json::to_vec_pretty(sidecar)
            .map_err(|e| ImageError::WriteSidecar { path: path.clone(), source: e.into() })?;
        fsutil::write_atomic(&path, &json)
            .map_err(|source| ImageError::WriteSidecar { path, source })
    }
}

fn gone() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotFound, "file vanished after rename")
}

/// Size and mtime (ns since the epoch) of `path`, if it is a file.
fn stat(path: &Path) -> Option<(u64, u128)> {
    let meta = fs::metadata(path).ok().filter(|m| m.is_file())?;
    let mtime = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some((meta.len(), mtime.as_nanos()))
}

/// The SHA-256 of a whole file (re-verifying a changed cache entry, hashing a conversion).
pub(super) fn hash_file(path: &Path) -> Result<String, ImageError> {
    let io = |source| ImageError::ReadCache { path: path.to_owned(), source };
    let mut file = File::open(path).map_err(io)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sidecar_for(cache: &Cache, bytes: &[u8]) -> Sidecar {
        let sha256 = hex::encode(sha2::Sha256::digest(bytes));
        let part = cache.part_path("k");
        fs::write(&part, bytes).unwrap();
        let sidecar = Sidecar {
            sha256,
            sha512: None,
            format: Format::Qcow2,
            size_bytes: 0,
            mtime_ns: 0,
            url: "file:///x".into(),
            name: None,
            baked: None,
            converted_from: None,
        };
        cache.commit(&part, sidecar).unwrap();
        cache.sidecars().unwrap().remove(0)
    }

    #[test]
    fn changed_file_is_rehashed_and_dropped_when_different() {
        let home = tempfile::tempdir().unwrap();
        let cache = Cache::new(&Home::new(home.path()));
        cache.create().unwrap();
        let sidecar = sidecar_for(&cache, b"hello");
        let image = cache.verify(&sidecar).unwrap().unwrap();
        assert_eq!(fs::read(&image.path).unwrap(), b"hello");
        fs::write(&image.path, b"HELLO").unwrap();
        assert_eq!(cache.verify(&sidecar).unwrap(), None);
        assert_eq!(fs::read_dir(cache.dir()).unwrap().count(), 0);
    }

    #[test]
    fn touched_but_equal_file_is_kept_and_sidecar_refreshed() {
        let home = tempfile::tempdir().unwrap();
        let cache = Cache::new(&Home::new(home.path()));
        cache.create().unwrap();
        let sidecar = sidecar_for(&cache, b"hello");
        let stale = Sidecar { mtime_ns: 1, ..sidecar.clone() };
        assert!(cache.verify(&stale).unwrap().is_some());
        assert_eq!(cache.sidecars().unwrap(), vec![sidecar]);
    }
}
