//! The file `image export` writes and `image import` reads (issue 14: images for
//! air-gapped hosts). It is a tar archive (GNU headers, so images past 8 GiB fit) of
//! exactly two regular files, in this order and with nothing else:
//!
//! 1. `manifest.json`: a [`Manifest`], at most [`MAX_MANIFEST_BYTES`];
//! 2. `image.<format>` (`image.qcow2`, ...): the image, `size_bytes` long.
//!
//! `tar tf` lists it and `tar xf` unpacks it, but kubelab reads it strictly: no other
//! entry, name, type or order, so nothing in it can name a path to write to.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::ImageError;
use super::catalog::{Format, is_lower_hex, is_name};
use crate::fsutil;
use crate::progress::Progress;

/// The manifest format this kubelab writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;

/// The manifest's entry name.
const MANIFEST_ENTRY: &str = "manifest.json";

/// The largest manifest read: today's is a few hundred bytes; the lists a baked image
/// will add (packages, container images) fit many times over, and a huge one is refused
/// before it is held in memory.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// What the archive says about its image. Fields a later format adds (a baked image's
/// Kubernetes version, packages, container images) come with a new `format_version`;
/// unknown fields are refused, so no kubelab imports an image it cannot describe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The catalogue name the image was pulled as, if any.
    pub name: Option<String>,
    /// Where it was pulled from, without userinfo, query or fragment (they may carry
    /// credentials or signed tokens).
    pub source: String,
    /// Its format.
    pub format: Format,
    /// Its size.
    pub size_bytes: u64,
    /// Its SHA-256, lowercase hex.
    pub sha256: String,
}

impl Manifest {
    /// The image's entry name.
    fn image_entry(&self) -> String {
        format!("image.{}", self.format)
    }

    /// Checks what the cache will store from it: a known version, a digest that can name
    /// a file, a catalogue-shaped name, a URL.
    fn check(&self) -> Result<(), String> {
        if self.format_version != FORMAT_VERSION {
            return Err(format!(
                "manifest format_version {} (this kubelab reads {FORMAT_VERSION})",
                self.format_version
            ));
        }
        if !is_lower_hex(&self.sha256, 64) {
            return Err(format!("manifest sha256 {:?} is not 64 lowercase hex digits", self.sha256));
        }
        if let Some(name) = self.name.as_deref().filter(|n| !is_name(n)) {
            return Err(format!("manifest name {name:?} is not a catalogue name"));
        }
        url::Url::parse(&self.source)
            .map_err(|e| format!("manifest source {:?} is not a URL: {e}", self.source))?;
        Ok(())
    }
}

/// A reader that hashes and counts what passes through it, and reports progress.
struct Hashing<'a, R> {
    inner: R,
    sha256: sha2::Sha256,
    len: u64,
    progress: &'a dyn Progress,
}

impl<'a, R: Read> Hashing<'a, R> {
    fn new(inner: R, progress: &'a dyn Progress) -> Self {
        Self { inner, sha256: sha2::Sha256::new(), len: 0, progress }
    }

    /// Checks that what was read is the manifest's image.
    fn verify(self, manifest: &Manifest, path: &Path) -> Result<(), ImageError> {
        if self.len != manifest.size_bytes {
            return Err(ImageError::BadArchive {
                path: path.to_owned(),
                problem: format!(
                    "the image is {} bytes, the manifest says {} (cut short?)",
                    self.len, manifest.size_bytes
                ),
            });
        }
        let actual = hex::encode(self.sha256.finalize());
        if actual != manifest.sha256 {
            return Err(ImageError::ArchiveMismatch {
                path: path.to_owned(),
                expected: manifest.sha256.clone(),
                actual,
            });
        }
        Ok(())
    }
}

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha256.update(&buf[..n]);
        self.len += n as u64;
        self.progress.transfer_advance(n as u64);
        Ok(n)
    }
}

/// A regular-file entry header for `name` of `size_bytes`. Owner, mode and a zero mtime
/// are fixed, so one image always gives the same archive.
fn header(name: &str, size_bytes: u64) -> Result<tar::Header, io::Error> {
    let mut header = tar::Header::new_gnu();
    header.set_path(name)?;
    header.set_size(size_bytes);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    Ok(header)
}

/// Writes the archive of `manifest` and `image` (the archive `path` is for errors).
/// The image is streamed and checked against the manifest as it goes out: a cached file
/// changed since it was verified fails the export instead of travelling under a digest
/// it no longer has.
pub fn write(
    out: impl Write,
    manifest: &Manifest,
    image: impl Read,
    path: &Path,
    progress: &dyn Progress,
) -> Result<(), ImageError> {
    let write_err = |source| ImageError::WriteArchive { path: path.to_owned(), source };
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| write_err(e.into()))?;
    let mut builder = tar::Builder::new(io::BufWriter::new(out));
    let manifest_header = header(MANIFEST_ENTRY, json.len() as u64).map_err(write_err)?;
    builder.append(&manifest_header, json.as_slice()).map_err(write_err)?;
    let image_header = header(&manifest.image_entry(), manifest.size_bytes).map_err(write_err)?;
    let mut hashing = Hashing::new(image.take(manifest.size_bytes), progress);
    progress.transfer_start(&manifest.image_entry(), Some(manifest.size_bytes), 0);
    let appended = builder.append(&image_header, &mut hashing);
    progress.transfer_end();
    appended.map_err(write_err)?;
    hashing.verify(manifest, path)?;
    builder.into_inner().and_then(|mut buf| buf.flush()).map_err(write_err)
}

/// Reads the archive at `path` from `input`, strictly (see the module doc). `prepare`
/// gets the checked manifest and returns the file to stream the image into, or `None`
/// to stop there (the image is already cached). That file is created afresh, never
/// through a link; the image is hashed on the way, and its size and SHA-256 are checked
/// against the manifest, and the archive's end, before this returns `Ok`. On any error
/// the file is removed.
pub fn read(
    input: impl Read,
    path: &Path,
    progress: &dyn Progress,
    prepare: impl FnOnce(&Manifest) -> Result<Option<PathBuf>, ImageError>,
) -> Result<Manifest, ImageError> {
    let bad = |problem: String| ImageError::BadArchive { path: path.to_owned(), problem };
    let mut archive = tar::Archive::new(input);
    // Raw: GNU long-name and PAX entries are not merged into the next entry but seen,
    // and refused, as entries of their own.
    let mut entries = archive
        .entries()
        .map_err(|source| ImageError::ReadLocal { path: path.to_owned(), source })?
        .raw(true);

    let entry = expect_entry(&mut entries, MANIFEST_ENTRY, path)?;
    let size = entry_size(&entry, path)?;
    if size > MAX_MANIFEST_BYTES {
        return Err(bad(format!("{MANIFEST_ENTRY} is {size} bytes, over {MAX_MANIFEST_BYTES}")));
    }
    let mut json = Vec::new();
    entry
        .take(MAX_MANIFEST_BYTES)
        .read_to_end(&mut json)
        .map_err(|source| ImageError::ReadLocal { path: path.to_owned(), source })?;
    if json.len() as u64 != size {
        return Err(bad(format!("{MANIFEST_ENTRY} is cut short")));
    }
    let manifest: Manifest =
        serde_json::from_slice(&json).map_err(|e| bad(format!("{MANIFEST_ENTRY}: {e}")))?;
    manifest.check().map_err(bad)?;

    let Some(part) = prepare(&manifest)? else {
        return Ok(manifest);
    };
    let result = (|| {
        let name = manifest.image_entry();
        let entry = expect_entry(&mut entries, &name, path)?;
        let size = entry_size(&entry, path)?;
        if size != manifest.size_bytes {
            return Err(bad(format!(
                "{name} is {size} bytes, the manifest says {}",
                manifest.size_bytes
            )));
        }
        let mut out = fsutil::create_private_file(&part)
            .map_err(|source| ImageError::WritePart { path: part.to_owned(), source })?;
        let mut hashing = Hashing::new(entry, progress);
        progress.transfer_start(&name, Some(size), 0);
        let copied = copy(&mut hashing, &mut out, path, &part);
        progress.transfer_end();
        copied?;
        hashing.verify(&manifest, path)?;
        match entries.next() {
            None => Ok(()),
            Some(Ok(extra)) => Err(bad(format!("unexpected entry {:?} after the image", entry_name(&extra)))),
            Some(Err(_)) => Err(bad("unexpected data after the image".to_owned())),
        }
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result.map(|()| manifest)
}

/// The next entry, which must be the regular file `name`.
fn expect_entry<'a, R: Read>(
    entries: &mut tar::Entries<'a, R>,
    name: &str,
    path: &Path,
) -> Result<tar::Entry<'a, R>, ImageError> {
    let bad = |problem: String| ImageError::BadArchive { path: path.to_owned(), problem };
    let entry = entries
        .next()
        .ok_or_else(|| bad(format!("it ends before {name}")))?
        // The tar error quotes the raw header bytes: not fit to print.
        .map_err(|_| bad(format!("no valid tar header where {name} belongs")))?;
    let found = entry_name(&entry);
    if found != name || entry.header().entry_type() != tar::EntryType::Regular {
        return Err(bad(format!("found entry {found:?} where the file {name} belongs")));
    }
    Ok(entry)
}

fn entry_name(entry: &tar::Entry<'_, impl Read>) -> String {
    String::from_utf8_lossy(&entry.path_bytes()).into_owned()
}

fn entry_size(entry: &tar::Entry<'_, impl Read>, path: &Path) -> Result<u64, ImageError> {
    entry
        .header()
        .size()
        .map_err(|e| ImageError::BadArchive { path: path.to_owned(), problem: e.to_string() })
}

/// Copies `from` (the archive's image) to `to` (the part file at `part`), telling a read
/// error from a write error.
fn copy(from: &mut impl Read, to: &mut File, archive: &Path, part: &Path) -> Result<(), ImageError> {
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(ImageError::ReadLocal { path: archive.to_owned(), source }),
        };
        to.write_all(&buf[..n])
            .map_err(|source| ImageError::WritePart { path: part.to_owned(), source })?;
    }
}
