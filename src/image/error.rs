//! `ImageError`: every way resolving, downloading, verifying or caching an image fails.

use std::path::PathBuf;

use super::catalog::{Algorithm, Format};
use crate::lock::LockError;
use crate::process::ProcessError;

/// Errors resolving, downloading, verifying and caching images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The name is not in the catalogue.
    #[error("unknown image \"{name}\"; known images: {known}")]
    UnknownName {
        /// The name given.
        name: String,
        /// The catalogue's names, comma-separated.
        known: String,
    },
    /// The catalogue entry is not published in the requested format.
    #[error("image \"{name}\" has no {format} file; it has: {available}")]
    FormatUnavailable {
        /// The entry.
        name: String,
        /// The format asked for.
        format: Format,
        /// The formats it has, comma-separated.
        available: String,
    },
    /// An embedded catalogue file does not parse (a build defect).
    #[error("catalogue file {file} is invalid")]
    Catalog {
        /// The file under `images/`.
        file: String,
        /// The parse error.
        #[source]
        source: toml::de::Error,
    },
    /// An embedded catalogue entry is incomplete (a build defect).
    #[error("catalogue entry \"{name}\" is invalid: {problem}")]
    CatalogEntry {
        /// The entry.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// The image spec is neither a catalogue name, a supported URL nor a file.
    #[error("cannot use \"{source_text}\" as an image: {problem}")]
    BadSource {
        /// The spec given.
        source_text: String,
        /// Why it is refused.
        problem: String,
    },
    /// The URL does not parse.
    #[error("invalid image URL \"{url}\"")]
    BadUrl {
        /// The URL given.
        url: String,
        /// The parse error.
        #[source]
        source: url::ParseError,
    },
    /// A digest is not hex of the right length.
    #[error("invalid {algorithm} digest \"{digest}\": expected {} hex characters", if *.algorithm == Algorithm::Sha256 { 64 } else { 128 })]
    BadDigest {
        /// The algorithm.
        algorithm: Algorithm,
        /// The text given.
        digest: String,
    },
    /// A remote URL came without a digest and without `--insecure-skip-verify`.
    #[error("refusing to download {url} without a digest to verify it against")]
    DigestRequired {
        /// The URL.
        url: String,
    },
    /// The release's checksum file does not list the image.
    #[error("{checksums_url} lists no {algorithm} digest for {file_name}")]
    NotListed {
        /// The checksum file.
        checksums_url: String,
        /// The file name looked up.
        file_name: String,
        /// The digest algorithm expected.
        algorithm: Algorithm,
    },
    /// The downloaded bytes do not match the expected digest; the file was deleted.
    #[error(
        "checksum mismatch for {url}: expected {algorithm} {expected}, got {actual}; the download was deleted"
    )]
    ChecksumMismatch {
        /// Where the bytes came from.
        url: String,
        /// The algorithm compared.
        algorithm: Algorithm,
        /// The expected digest.
        expected: String,
        /// The digest of what was received.
        actual: String,
    },
    /// The HTTP client cannot be built (TLS set-up).
    #[error("cannot set up the HTTP client")]
    HttpClient {
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The request failed before a response (connect, proxy, TLS, timeout).
    #[error("cannot download {url}")]
    Request {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("downloading {url} failed: HTTP status {status}")]
    HttpStatus {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// Reading the response body failed (connection reset, read-idle timeout).
    #[error("download of {url} was interrupted")]
    ReadBody {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The body ended before the announced length.
    #[error("download of {url} ended after {got} of {expected} bytes")]
    Truncated {
        /// The URL.
        url: String,
        /// Bytes received in total.
        got: u64,
        /// Bytes announced.
        expected: u64,
    },
    /// A local image is not a regular file (a device, FIFO, directory, socket): such a
    /// source may never end, so it is refused before anything is read from it.
    #[error("cannot use {} as an image: it is {kind}, not a regular file", path.display())]
    NotRegularFile {
        /// The path given.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// The image is (or announced to be) larger than the bound: the catalogue's size, else
    /// `--max-size`; the partial file was deleted.
    #[error("{url} exceeds the size limit of {limit_bytes} bytes; the download was deleted")]
    TooLarge {
        /// Where the bytes came from.
        url: String,
        /// The limit.
        limit_bytes: u64,
    },
    /// The server redirected to a URL kubelab does not download from (`file://`, ...).
    #[error("{url} redirects to a {scheme}: URL; only http and https redirects are followed")]
    RedirectRefused {
        /// The URL asked for.
        url: String,
        /// The scheme of the redirect target.
        scheme: String,
    },
    /// A local image file cannot be read.
    #[error("cannot read image file {}", path.display())]
    ReadLocal {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The cache directory cannot be created.
    #[error("cannot create image cache directory {}", path.display())]
    CreateCache {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The cache or a cached file cannot be read.
    #[error("cannot read image cache {}", path.display())]
    ReadCache {
        /// The directory or file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The partial download cannot be written.
    #[error("cannot write partial download {}", path.display())]
    WritePart {
        /// The `.part` file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The verified file cannot be moved into place.
    #[error("cannot store verified image as {}", path.display())]
    Commit {
        /// The final path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A sidecar metadata file cannot be written.
    #[error("cannot write image metadata {}", path.display())]
    WriteSidecar {
        /// The sidecar.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A cached file cannot be deleted.
    #[error("cannot remove cached image file {}", path.display())]
    Remove {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The per-image cache lock cannot be taken.
    #[error("cannot lock the image cache entry")]
    Lock {
        /// The cause.
        #[source]
        source: LockError,
    },
    /// A sidecar cannot be trusted: unreadable, not JSON, or a field breaks the rules
    /// kubelab writes it by (its digest names files, so it must be plain hex).
    #[error("image metadata {} is corrupt: field {field}: {why}", path.display())]
    BadSidecar {
        /// The sidecar.
        path: PathBuf,
        /// The field at fault (`(file)` for the whole file).
        field: &'static str,
        /// What is wrong.
        why: String,
    },
    /// `--image baked:<version>` names no baked image in the cache.
    #[error("no baked image for Kubernetes {version}{} in the cache", sha256.as_deref().map(|d| format!(" with digest {d}")).unwrap_or_default())]
    NoBaked {
        /// The version asked for.
        version: String,
        /// The digest a saved profile pins, if any.
        sha256: Option<String>,
    },
    /// `image rm` or `image export` found nothing cached under that name or digest.
    #[error("no cached image matches \"{target}\"; cached: {cached}")]
    NotCached {
        /// The name or digest given.
        target: String,
        /// The cached images (name or source, format, digest), or `none`.
        cached: String,
    },
    /// `image export` was given a name or digest prefix that selects several images.
    #[error("\"{target}\" matches several cached images: {matches}; give a longer digest")]
    Ambiguous {
        /// The name or digest given.
        target: String,
        /// The images it matches (name or source, format, digest).
        matches: String,
    },
    /// The export archive cannot be written; the partial file was removed.
    #[error("cannot write image archive {}", path.display())]
    WriteArchive {
        /// The archive.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not an archive `image export` writes: wrong entries, sizes or manifest,
    /// or cut short. Nothing entered the cache.
    #[error("{} is not a valid kubelab image archive: {problem}", path.display())]
    BadArchive {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The archived image does not hash to its manifest's digest (or, on export, the
    /// cached file no longer does). Nothing entered the cache.
    #[error("checksum mismatch in {}: the manifest says sha256 {expected}, the image is {actual}", path.display())]
    ArchiveMismatch {
        /// The archive.
        path: PathBuf,
        /// The manifest's SHA-256.
        expected: String,
        /// The SHA-256 of the bytes read.
        actual: String,
    },
    /// `qemu-img convert` of a cached image into the format the driver boots failed or
    /// could not run. Nothing entered the cache.
    #[error("cannot convert {} to {format}", path.display())]
    Convert {
        /// The cached image.
        path: PathBuf,
        /// The format asked for.
        format: Format,
        /// Why (qemu-img missing, its stderr, its deadline); boxed, as it is large.
        #[source]
        source: Box<ProcessError>,
    },
}
