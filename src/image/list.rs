//! `image list` and `image rm`: the catalogue with its cache status, and removal of
//! cached images by catalogue name or digest.

use std::path::PathBuf;

use serde::Serialize;

use super::baked::{self, BakedImage};
use super::cache::{Cache, Sidecar};
use super::catalog::{self, Format, Kind};
use super::{CachedImage, ImageError};
use crate::home::Home;

/// One format of a catalogue entry and whether it is cached.
#[derive(Debug, Clone, Serialize)]
pub struct FormatStatus {
    /// The format.
    pub format: Format,
    /// Where it is downloaded from.
    pub url: String,
    /// The cached file's size, else the declared size if known.
    pub size_bytes: Option<u64>,
    /// The cached file, if any.
    pub cached: Option<PathBuf>,
}

/// A catalogue entry with its cache status.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogImage {
    /// The name.
    pub name: String,
    /// Disk or ISO.
    pub kind: Kind,
    /// One line about it.
    pub description: String,
    /// The default SSH user.
    pub ssh_user: String,
    /// What is installed.
    pub preinstalled: String,
    /// Its formats.
    pub formats: Vec<FormatStatus>,
}

/// What `image list` shows.
#[derive(Debug, Clone, Serialize)]
pub struct ImageList {
    /// The catalogue.
    pub catalog: Vec<CatalogImage>,
    /// Baked images (`image bake`), newest first.
    pub baked: Vec<BakedImage>,
    /// Other cached images, pulled by URL or path, and conversions (of any image).
    pub other: Vec<CachedImage>,
}

/// The catalogue with cache status, and the other cached images (not re-verified).
pub fn list(home: &Home) -> Result<ImageList, ImageError> {
    let cache = Cache::new(home);
    let sidecars = cache.sidecars()?;
    let cached: Vec<CachedImage> = sidecars.iter().filter_map(|s| cache.present(s)).collect();
    let catalog = catalog::all()?
        .into_iter()
        .map(|entry| {
            let formats = entry
                .formats
                .iter()
                .map(|(format, file)| {
                    let hit = cached
                        .iter()
                        .find(|c| c.format == *format && c.name.as_deref() == Some(&entry.name));
                    FormatStatus {
                        format: *format,
                        url: file.url.to_string(),
                        size_bytes: hit.map(|c| c.size_bytes).or(file.size_bytes),
                        cached: hit.map(|c| c.path.clone()),
                    }
                })
                .collect();
            CatalogImage {
                name: entry.name,
                kind: entry.kind,
                description: entry.description,
                ssh_user: entry.ssh_user,
                preinstalled: entry.preinstalled,
                formats,
            }
        })
        .collect();
    let baked = baked::among(&sidecars, |s| Ok(cache.present(s)))?;
    let other = cached
        .into_iter()
        .filter(|c| c.name.is_none() && !baked.iter().any(|b| b.image.sha256 == c.sha256))
        .collect();
    Ok(ImageList { catalog, baked, other })
}

/// Removes the cached images `target` names ([`selector`]) and their conversions
/// (`image::convert`: derived from the source, they would be left nameless); returns
/// what was removed.
pub fn remove(home: &Home, target: &str) -> Result<Vec<CachedImage>, ImageError> {
    let selects = selector(target)?;
    let cache = Cache::new(home);
    let sidecars = cache.sidecars()?;
    let chosen: Vec<&Sidecar> = sidecars.iter().filter(|s| selects(s)).collect();
    let sources: Vec<&str> = chosen.iter().map(|s| s.sha256.as_str()).collect();
    let conversions = sidecars.iter().filter(|s| {
        s.converted_from.as_deref().is_some_and(|from| sources.contains(&from)) && !selects(s)
    });
    let mut removed = Vec::new();
    for sidecar in chosen.iter().copied().chain(conversions) {
        if let Some(image) = cache.present(sidecar) {
            removed.push(image);
        }
        cache.remove(sidecar)?;
    }
    if removed.is_empty() {
        return Err(ImageError::NotCached {
            target: target.to_owned(),
            cached: describe(&sidecars),
        });
    }
    Ok(removed)
}

/// The one cached image `target` names ([`selector`]); the error lists the candidates
/// when there is none or more than one.
pub fn select(cache: &Cache, target: &str) -> Result<Sidecar, ImageError> {
    let selects = selector(target)?;
    let sidecars = cache.sidecars()?;
    let mut hits: Vec<Sidecar> = sidecars.iter().filter(|s| selects(s)).cloned().collect();
    match hits.len() {
        0 => Err(ImageError::NotCached { target: target.to_owned(), cached: describe(&sidecars) }),
        1 => Ok(hits.remove(0)),
        _ => Err(ImageError::Ambiguous { target: target.to_owned(), matches: describe(&hits) }),
    }
}

/// Which sidecars `target` names: those pulled as catalogue name `target`, baked images
/// of `baked:<version>`, or whose SHA-256 is or starts with `target` (at least 12 hex
/// characters, so a short prefix never picks an image by chance). An unknown name is an error listing the catalogue.
fn selector(target: &str) -> Result<impl Fn(&Sidecar) -> bool, ImageError> {
    let is_digest = target.len() >= 12 && target.bytes().all(|b| b.is_ascii_hexdigit());
    let is_baked = baked::parse_name(target).is_some();
    if !is_digest && !is_baked {
        catalog::find(target)?;
    }
    let (name, prefix) = (target.to_owned(), target.to_ascii_lowercase());
    Ok(move |s: &Sidecar| {
        if is_digest {
            s.sha256.starts_with(&prefix)
        } else if is_baked {
            s.baked.as_ref().is_some_and(|b| b.image_name() == name)
        } else {
            s.name.as_deref() == Some(&name)
        }
    })
}

/// `name-or-source (format, sha256:first-12)` for each sidecar, for error messages.
fn describe(sidecars: &[Sidecar]) -> String {
    if sidecars.is_empty() {
        return "none".to_owned();
    }
    let one = |s: &Sidecar| {
        format!(
            "{} ({}, sha256:{})",
            s.name.as_deref().unwrap_or(&s.url),
            s.format,
            &s.sha256[..12]
        )
    };
    sidecars.iter().map(one).collect::<Vec<_>>().join(", ")
}
