//! `kubelab image list|pull|rm|export|import`: thin wrappers over `crate::image`, which
//! `up` also uses (through `image::ensure`) to get a verified base image.

use std::path::Path;

use super::up::DEFAULT_IMAGE;
use crate::home::Home;
use crate::image::{self, CachedImage, Exported, ImageList, ImageRequest, Imported};
use crate::progress::Progress;

/// `kubelab image list`: the catalogue with cache status, and other cached images.
pub fn list(home: &Home) -> Result<ImageList, crate::Error> {
    Ok(image::list(home)?)
}

/// `kubelab image pull`: the verified cached image for `req`, downloaded if needed.
pub fn pull(
    home: &Home,
    req: &ImageRequest,
    progress: &dyn Progress,
) -> Result<CachedImage, crate::Error> {
    Ok(image::ensure(home, req, progress)?)
}

/// `kubelab image rm`: removes the cached images for a catalogue name or digest.
pub fn remove(home: &Home, target: &str) -> Result<Vec<CachedImage>, crate::Error> {
    Ok(image::remove(home, target)?)
}

/// `kubelab image export`: writes the cached image `target` names (default: the image
/// `up` uses by default) to the archive `dest`.
pub fn export(
    home: &Home,
    dest: &Path,
    target: Option<&str>,
    progress: &dyn Progress,
) -> Result<Exported, crate::Error> {
    Ok(image::export(home, target.unwrap_or(DEFAULT_IMAGE), dest, progress)?)
}

/// `kubelab image import`: verifies the archive at `path` and stores its image in the
/// cache.
pub fn import(home: &Home, path: &Path, progress: &dyn Progress) -> Result<Imported, crate::Error> {
    Ok(image::import(home, path, progress)?)
}
