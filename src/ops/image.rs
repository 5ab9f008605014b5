//! `kubelab image list|pull|rm`: thin wrappers over `crate::image`, which `up` also
//! uses (through `image::ensure`) to get a verified base image.

use crate::home::Home;
use crate::image::{self, CachedImage, ImageList, ImageRequest};
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
