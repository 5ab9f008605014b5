//! `image export` and `image import`: a cached image to one archive file
//! ([`super::archive`]) and back, for hosts without the network (issue 14).
//!
//! Import checks the archive's integrity (sizes, SHA-256), not its provenance: the
//! image keeps the name and source its manifest records, as a pull would have, since
//! the user chose to trust the file by importing it.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use serde::Serialize;
use url::Url;

use super::archive::{self, FORMAT_VERSION, Manifest};
use super::cache::{Cache, Sidecar};
use super::{CachedImage, ImageError, download, list};
use crate::fsutil::{self, AtomicFile};
use crate::home::Home;
use crate::lock::FileLock;
use crate::progress::Progress;

/// What `image export` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Exported {
    /// The archive file.
    pub archive: PathBuf,
    /// The cached image it holds.
    pub image: CachedImage,
}

/// What `image import` stored.
#[derive(Debug, Clone, Serialize)]
pub struct Imported {
    /// The archive file.
    pub archive: PathBuf,
    /// The image in the cache.
    pub image: CachedImage,
    /// The image was cached already, and the archive's image was not read.
    pub already_cached: bool,
}

/// Writes the cached image `target` names (a catalogue name or a digest prefix) to the
/// archive `dest`, atomically: a temp file beside it is renamed over it once complete,
/// and removed on any failure.
pub fn export(
    home: &Home,
    target: &str,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<Exported, ImageError> {
    let cache = Cache::new(home);
    let sidecar = list::select(&cache, target)?;
    let image = cache.verify(&sidecar)?.ok_or_else(|| ImageError::NotCached {
        target: target.to_owned(),
        cached: "none (its file changed and was dropped)".to_owned(),
    })?;
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        name: image.name.clone(),
        source: public_source(&image.url),
        format: image.format,
        size_bytes: image.size_bytes,
        sha256: image.sha256.clone(),
        baked: sidecar.baked.clone(),
    };
    let write_err = |source| ImageError::WriteArchive { path: dest.to_owned(), source };
    let input = fsutil::open_nofollow(&image.path, File::options().read(true))
        .map_err(|source| ImageError::ReadCache { path: image.path.clone(), source })?;
    let mut out = AtomicFile::create(dest).map_err(write_err)?;
    progress.message(&format!("exporting {} to {}", image.path.display(), dest.display()));
    archive::write(out.file(), &manifest, input, dest, progress)?;
    out.commit().map_err(write_err)?;
    Ok(Exported { archive: dest.to_owned(), image })
}

/// `url` without userinfo, query and fragment: a signed download URL's token must not
/// travel with the image.
fn public_source(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => download::redact(url),
    }
}

/// Imports the archive at `path` into the cache: the image is streamed into a part
/// file, checked against the manifest, and only then moved into the cache with its
/// sidecar, as a download is. An image already cached is left as it is.
pub fn import(home: &Home, path: &Path, progress: &dyn Progress) -> Result<Imported, ImageError> {
    download::regular_file_len(path)?;
    let input = File::open(path)
        .map_err(|source| ImageError::ReadLocal { path: path.to_owned(), source })?;
    let cache = Cache::new(home);
    cache.create()?;
    let mut hit = None;
    // Held until the commit: a concurrent pull or import of the same image waits.
    let mut _lock: Option<FileLock> = None;
    let manifest = archive::read(BufReader::new(input), path, progress, |manifest| {
        hit = cached(&cache, manifest)?;
        if hit.is_none() {
            _lock = Some(cache.lock(&manifest.sha256, || {
                progress.message("waiting for another kubelab storing the same image");
            })?);
            hit = cached(&cache, manifest)?;
        }
        if hit.is_some() {
            return Ok(None);
        }
        progress.message(&format!("importing {}", path.display()));
        Ok(Some(cache.part_path(&manifest.sha256)))
    })?;
    if let Some(image) = hit {
        progress.message(&format!("image is cached already: {}", image.path.display()));
        return Ok(Imported { archive: path.to_owned(), image, already_cached: true });
    }
    let part = cache.part_path(&manifest.sha256);
    let sidecar = Sidecar {
        sha256: manifest.sha256,
        sha512: None,
        format: manifest.format,
        size_bytes: manifest.size_bytes,
        mtime_ns: 0,
        url: manifest.source,
        name: manifest.name,
        baked: manifest.baked,
        converted_from: None,
    };
    let image = cache.commit(&part, sidecar).inspect_err(|_| {
        let _ = std::fs::remove_file(&part);
    })?;
    Ok(Imported { archive: path.to_owned(), image, already_cached: false })
}

/// The verified cached image with the manifest's digest and format.
fn cached(cache: &Cache, manifest: &Manifest) -> Result<Option<CachedImage>, ImageError> {
    cache.find(|s| s.sha256 == manifest.sha256 && s.format == manifest.format)
}
