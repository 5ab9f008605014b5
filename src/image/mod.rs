//! Images: resolve a spec (catalogue name, URL + digest, local path) to a verified file
//! in the cache, downloading it if needed. `ensure` is what `up` and `image pull` call;
//! `list` and `remove` serve `image list` and `image rm`, `export` and `import` serve
//! `image export` and `image import`; `convert` puts an image in the driver's format.

mod archive;
pub mod baked;
pub mod cache;
pub mod catalog;
pub mod convert;
pub mod download;
mod error;
mod list;
mod transfer;

pub use error::ImageError;
pub use list::{CatalogImage, FormatStatus, ImageList, list, remove};
pub use transfer::{Exported, Imported, export, import};

use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::Digest as _;
use url::Url;

use crate::home::Home;
use crate::progress::Progress;
use cache::{Cache, Sidecar};
use catalog::{Algorithm, Digest, Expected, Format, Kind};

/// Where an image comes from, as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// A catalogue name (`debian-12`).
    Catalog(String),
    /// An `http`, `https` or `file` URL.
    Url(Url),
    /// A file on this machine.
    Path(PathBuf),
    /// `baked:<version>`: the newest baked image for that Kubernetes version in the cache.
    Baked(String),
}

impl ImageSource {
    /// Classifies `text`: `baked:<version>`, a URL if it has a scheme, a path if it has
    /// a separator or names an existing file, else a catalogue name.
    /// A URL keeps its userinfo here; [`ensure`] takes it off before anything shows or
    /// stores the URL, and errors show it redacted.
    pub fn parse(text: &str) -> Result<Self, ImageError> {
        let bad = |problem: &str| ImageError::BadSource {
            source_text: download::redact(text),
            problem: problem.to_owned(),
        };
        if let Some(version) = baked::parse_name(text) {
            crate::bootstrap::check_version(version)
                .map_err(|_| bad("baked:<version> wants a Kubernetes version such as v1.34.2"))?;
            return Ok(Self::Baked(version.to_owned()));
        }
        if text.contains("://") {
            let url = Url::parse(text)
                .map_err(|source| ImageError::BadUrl { url: download::redact(text), source })?;
            return match url.scheme() {
                "http" | "https" | "file" => Ok(Self::Url(url)),
                _ => Err(bad("only http, https and file URLs are supported")),
            };
        }
        if text.contains('/')
            || text.contains(std::path::MAIN_SEPARATOR)
            || Path::new(text).is_file()
        {
            return Ok(Self::Path(PathBuf::from(text)));
        }
        if catalog::is_name(text) {
            Ok(Self::Catalog(text.to_owned()))
        } else {
            Err(bad("not a catalogue name, URL or file"))
        }
    }
}

/// What `ensure` is asked for.
#[derive(Debug, Clone)]
pub struct ImageRequest {
    /// Where the image comes from.
    pub source: ImageSource,
    /// The format; default: the catalogue's `qcow2` (`iso` for ISO entries), or what
    /// a URL's or path's extension says, else `qcow2`.
    pub format: Option<Format>,
    /// The expected SHA-256 (overrides the catalogue's).
    pub sha256: Option<Digest>,
    /// Accept a remote URL without a digest.
    pub insecure_skip_verify: bool,
    /// The largest image accepted when the catalogue does not give its size
    /// (`--max-size`, default [`DEFAULT_MAX_SIZE_BYTES`]).
    pub max_size_bytes: u64,
}

/// The size bound of an image of unknown size: large enough for any lab disk image,
/// small enough that an endless source stops long before the disk is full.
pub const DEFAULT_MAX_SIZE_BYTES: u64 = 64 << 30;

/// A verified image in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CachedImage {
    /// The file, named by its SHA-256.
    pub path: PathBuf,
    /// Its SHA-256.
    pub sha256: String,
    /// Its format.
    pub format: Format,
    /// Its size.
    pub size_bytes: u64,
    /// Where it came from.
    pub url: String,
    /// The catalogue name it was pulled as.
    pub name: Option<String>,
    /// The SHA-256 of the cached image it was converted from, if it is a conversion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub converted_from: Option<String>,
}

/// A request resolved to one URL and how to check it.
struct Plan {
    /// The URL without userinfo: the only form shown or stored.
    url: Url,
    credentials: Option<download::Credentials>,
    format: Format,
    name: Option<String>,
    expected: Option<Expected>,
    limit_bytes: u64,
}

impl Plan {
    fn new(req: &ImageRequest) -> Result<Self, ImageError> {
        let pinned = req.sha256.clone().map(Expected::Digest);
        let guess =
            |name: &str| req.format.or(Format::from_file_name(name)).unwrap_or(Format::Qcow2);
        match &req.source {
            ImageSource::Catalog(name) => {
                let entry = catalog::find(name)?;
                let default = if entry.kind == Kind::Iso { Format::Iso } else { Format::Qcow2 };
                let format = req.format.unwrap_or(default);
                let file = entry.format(format)?;
                let expected = match pinned {
                    Some(digest) => digest,
                    None => file.expected(name)?,
                };
                let (url, limit_bytes) =
                    (file.url.clone(), file.size_bytes.unwrap_or(req.max_size_bytes));
                Ok(Self {
                    url,
                    credentials: None,
                    format,
                    name: Some(entry.name),
                    expected: Some(expected),
                    limit_bytes,
                })
            }
            ImageSource::Url(url) => {
                let mut url = url.clone();
                let credentials = download::Credentials::take(&mut url);
                if url.scheme() == "file" {
                    download::regular_file_len(&download::file_path(&url)?)?;
                } else if pinned.is_none() && !req.insecure_skip_verify {
                    return Err(ImageError::DigestRequired { url: url.to_string() });
                }
                let last = url.path_segments().and_then(|mut s| s.next_back()).unwrap_or("");
                let format = guess(last);
                let limit_bytes = req.max_size_bytes;
                Ok(Self { url, credentials, format, name: None, expected: pinned, limit_bytes })
            }
            ImageSource::Baked(version) => Err(ImageError::BadSource {
                source_text: format!("{}{version}", baked::PREFIX),
                problem: "baked images are found in the cache, never downloaded".to_owned(),
            }),
            ImageSource::Path(path) => {
                let absolute = std::path::absolute(path)
                    .map_err(|source| ImageError::ReadLocal { path: path.clone(), source })?;
                let url = Url::from_file_path(&absolute).map_err(|()| ImageError::BadSource {
                    source_text: path.display().to_string(),
                    problem: "not an absolute file path".to_owned(),
                })?;
                download::regular_file_len(&absolute)?;
                let name =
                    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                Ok(Self {
                    url,
                    credentials: None,
                    format: guess(&name),
                    name: None,
                    expected: pinned,
                    limit_bytes: req.max_size_bytes,
                })
            }
        }
    }

    /// Names the lock and the partial file: the SHA-256 when known, else the URL's hash.
    fn key(&self) -> String {
        match &self.expected {
            Some(Expected::Digest(d)) if d.algorithm == Algorithm::Sha256 => d.hex.clone(),
            _ => format!("url-{}", &hex::encode(sha2::Sha256::digest(self.url.as_str()))[..32]),
        }
    }

    /// A verified cache entry for this plan. Entries checked against a published
    /// checksum file or pulled without a digest are found by URL (release directories
    /// are dated, so their files do not change); a local file without a digest is
    /// copied again, as it may have changed.
    fn lookup(&self, cache: &Cache) -> Result<Option<CachedImage>, ImageError> {
        let same = |s: &Sidecar| s.format == self.format;
        match &self.expected {
            Some(Expected::Digest(d)) => cache.find(|s| same(s) && matches_digest(s, d)),
            _ if self.url.scheme() == "file" => Ok(None),
            // A conversion keeps its source's URL but is not what the URL serves.
            _ => {
                cache.find(|s| same(s) && s.url == self.url.as_str() && s.converted_from.is_none())
            }
        }
    }
}

fn matches_digest(sidecar: &Sidecar, digest: &Digest) -> bool {
    match digest.algorithm {
        Algorithm::Sha256 => sidecar.sha256 == digest.hex,
        Algorithm::Sha512 => sidecar.sha512.as_deref() == Some(digest.hex.as_str()),
    }
}

/// Resolves `req` to a verified image in the cache of `home`: a cache hit is used as it
/// is (re-verified if its size or mtime changed); otherwise it is downloaded (resuming
/// a partial file), verified while streaming and moved into place. Concurrent calls for
/// the same image wait for each other, and the later one reuses the download.
pub fn ensure(
    home: &Home,
    req: &ImageRequest,
    progress: &dyn Progress,
) -> Result<CachedImage, ImageError> {
    if let ImageSource::Baked(version) = &req.source {
        let pinned = req.sha256.as_ref().map(|d| d.hex.as_str());
        return baked::find(home, version, pinned).map(|b| b.image);
    }
    fetch_plan(home, Plan::new(req)?, progress)
}

fn fetch_plan(home: &Home, plan: Plan, progress: &dyn Progress) -> Result<CachedImage, ImageError> {
    let cache = Cache::new(home);
    cache.create()?;
    if let Some(hit) = plan.lookup(&cache)? {
        progress.message(&format!("image is cached: {}", hit.path.display()));
        return Ok(hit);
    }
    let key = plan.key();
    let _lock = cache.lock(&key, || {
        progress.message(&format!("waiting for another kubelab downloading {}", plan.url));
    })?;
    if let Some(hit) = plan.lookup(&cache)? {
        progress.message(&format!("image is cached: {}", hit.path.display()));
        return Ok(hit);
    }
    let config = download::Config::from_env();
    let expected = match &plan.expected {
        Some(Expected::Digest(d)) => Some(d.clone()),
        Some(Expected::ChecksumsFile { url, algorithm }) => {
            Some(published_digest(&config, url, *algorithm, &plan.url)?)
        }
        None => None,
    };
    progress.message(&format!("downloading {}", plan.url));
    let part = cache.part_path(&key);
    let want_sha512 = expected.as_ref().is_some_and(|d| d.algorithm == Algorithm::Sha512);
    let fetched = download::fetch(
        &config,
        &plan.url,
        plan.credentials.as_ref(),
        &part,
        want_sha512,
        plan.limit_bytes,
        progress,
    );
    let hashes = match fetched {
        Ok(hashes) => hashes,
        Err(err) => {
            // Keep only an interrupted HTTP download, to resume; every other failure
            // (too large, refused, local) leaves nothing behind.
            let interrupted = matches!(
                err,
                ImageError::Request { .. }
                    | ImageError::ReadBody { .. }
                    | ImageError::Truncated { .. }
            );
            let empty = std::fs::metadata(&part).map_or(true, |m| m.len() == 0);
            if empty || !interrupted || plan.url.scheme() == "file" {
                let _ = std::fs::remove_file(&part);
            }
            return Err(err);
        }
    };
    if let Some(d) = &expected {
        let actual = match d.algorithm {
            Algorithm::Sha256 => hashes.sha256.clone(),
            Algorithm::Sha512 => hashes.sha512.clone().unwrap_or_default(),
        };
        if actual != d.hex {
            let _ = std::fs::remove_file(&part);
            return Err(ImageError::ChecksumMismatch {
                url: plan.url.to_string(),
                algorithm: d.algorithm,
                expected: d.hex.clone(),
                actual,
            });
        }
    }
    cache.commit(
        &part,
        Sidecar {
            sha256: hashes.sha256,
            sha512: hashes.sha512,
            format: plan.format,
            size_bytes: hashes.size_bytes,
            mtime_ns: 0,
            url: plan.url.to_string(),
            name: plan.name,
            baked: None,
            converted_from: None,
        },
    )
}

/// The digest the release's checksum file lists for the file `image` names.
fn published_digest(
    config: &download::Config,
    checksums_url: &Url,
    algorithm: Algorithm,
    image: &Url,
) -> Result<Digest, ImageError> {
    let file_name = image.path_segments().and_then(|mut s| s.next_back()).unwrap_or_default();
    let text = download::fetch_text(config, checksums_url)?;
    catalog::find_in_checksums(&text, file_name, algorithm).ok_or_else(|| ImageError::NotListed {
        checksums_url: checksums_url.to_string(),
        file_name: file_name.to_owned(),
        algorithm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_classified() {
        assert_eq!(
            ImageSource::parse("debian-12").unwrap(),
            ImageSource::Catalog("debian-12".into())
        );
        assert!(matches!(ImageSource::parse("https://h/x.img").unwrap(), ImageSource::Url(_)));
        assert!(matches!(ImageSource::parse("file:///x.img").unwrap(), ImageSource::Url(_)));
        assert_eq!(ImageSource::parse("./x.img").unwrap(), ImageSource::Path("./x.img".into()));
        let err = ImageSource::parse("ftp://h/x").unwrap_err();
        assert!(matches!(err, ImageError::BadSource { .. }), "{err}");
        assert!(matches!(
            ImageSource::parse("http://[::1").unwrap_err(),
            ImageError::BadUrl { .. }
        ));
        assert!(matches!(
            ImageSource::parse("Bad Name").unwrap_err(),
            ImageError::BadSource { .. }
        ));
    }

    #[test]
    fn remote_url_needs_a_digest_unless_insecure() {
        let mut req = ImageRequest {
            source: ImageSource::parse("http://127.0.0.1/x.vmdk").unwrap(),
            format: None,
            sha256: None,
            insecure_skip_verify: false,
            max_size_bytes: DEFAULT_MAX_SIZE_BYTES,
        };
        assert!(matches!(Plan::new(&req), Err(ImageError::DigestRequired { .. })));
        req.insecure_skip_verify = true;
        let plan = Plan::new(&req).unwrap();
        assert_eq!(plan.format, Format::Vmdk);
        assert!(plan.key().starts_with("url-"));
    }

    /// A plan like a catalogue entry verified through a `SHA512SUMS` file (as Debian
    /// publishes), served from disk.
    fn sha512_plan(dir: &Path, listed: &str) -> Plan {
        let image = dir.join("disk.qcow2");
        std::fs::write(&image, b"image bytes").unwrap();
        let sums = dir.join("SHA512SUMS");
        std::fs::write(&sums, format!("{listed}  disk.qcow2\n{}  other.raw\n", "0".repeat(128)))
            .unwrap();
        Plan {
            url: Url::from_file_path(&image).unwrap(),
            credentials: None,
            format: Format::Qcow2,
            name: Some("debian-test".into()),
            expected: Some(Expected::ChecksumsFile {
                url: Url::from_file_path(&sums).unwrap(),
                algorithm: Algorithm::Sha512,
            }),
            limit_bytes: DEFAULT_MAX_SIZE_BYTES,
        }
    }

    #[test]
    fn checksum_file_digest_is_verified_with_its_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("home"));
        let good = hex::encode(sha2::Sha512::digest(b"image bytes"));
        let image = fetch_plan(&home, sha512_plan(dir.path(), &good), &()).unwrap();
        assert_eq!(image.sha256, hex::encode(sha2::Sha256::digest(b"image bytes")));
        let sidecars = Cache::new(&home).sidecars().unwrap();
        assert_eq!(sidecars[0].sha512.as_deref(), Some(good.as_str()));
        assert_eq!(sidecars[0].name.as_deref(), Some("debian-test"));

        let home = Home::new(dir.path().join("home2"));
        let err = fetch_plan(&home, sha512_plan(dir.path(), &"1".repeat(128)), &()).unwrap_err();
        assert!(matches!(err, ImageError::ChecksumMismatch { algorithm: Algorithm::Sha512, .. }));
        assert_eq!(std::fs::read_dir(home.image_cache_dir()).unwrap().count(), 0);
    }

    #[test]
    fn image_missing_from_the_checksum_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("home"));
        let mut plan = sha512_plan(dir.path(), &"1".repeat(128));
        plan.url = Url::from_file_path(dir.path().join("unlisted.qcow2")).unwrap();
        let err = fetch_plan(&home, plan, &()).unwrap_err();
        assert!(matches!(err, ImageError::NotListed { .. }), "{err}");
    }

    #[test]
    fn catalogue_plan_uses_the_pinned_digest_as_key() {
        let req = ImageRequest {
            source: ImageSource::Catalog("ubuntu-24.04".into()),
            format: None,
            sha256: None,
            insecure_skip_verify: false,
            max_size_bytes: DEFAULT_MAX_SIZE_BYTES,
        };
        let plan = Plan::new(&req).unwrap();
        assert_eq!(plan.format, Format::Qcow2);
        assert_eq!(plan.key(), "78547d336e4c8f98864fd3088a7ab393d7ab970885263578404bad7fc7c5e5d8");
    }
}
