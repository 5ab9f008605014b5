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

/// What the archive says about its image. Unknown fields are refused, so no kubelab
/// imports an image it cannot describe.
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
    /// What a baked image holds; absent for other images (and unknown to kubelabs
    /// from before `image bake`, which refuse such an archive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baked: Option<super::baked::Baked>,
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
            return Err(format!(
                "manifest sha256 {:?} is not 64 lowercase hex digits",
                self.sha256
            ));
        }
        if let Some(name) = self.name.as_deref().filter(|n| !is_name(n)) {
            return Err(format!("manifest name {name:?} is not a catalogue name"));
        }
        url::Url::parse(&self.source)
            .map_err(|e| format!("manifest source {:?} is not a URL: {e}", self.source))?;
        if let Some(baked) = &self.baked {
            baked.check().map_err(|why| format!("manifest baked: {why}"))?;
        }
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
            Some(Ok(extra)) => {
                Err(bad(format!("unexpected entry {:?} after the image", entry_name(&extra))))
            }
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
fn copy(
    from: &mut impl Read,
    to: &mut File,
    archive: &Path,
    part: &Path,
) -> Result<(), ImageError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGE: &[u8] = b"qcow2 image bytes, not really";

    fn manifest_of(bytes: &[u8]) -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            name: Some("debian-12".into()),
            source: "https://example.org/disk.qcow2".into(),
            format: Format::Qcow2,
            size_bytes: bytes.len() as u64,
            sha256: hex::encode(sha2::Sha256::digest(bytes)),
            baked: None,
        }
    }

    fn exported(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write(&mut out, &manifest_of(bytes), bytes, Path::new("x.tar"), &()).unwrap();
        out
    }

    /// An archive of `entries` as given (any name, no checks), for malformed inputs.
    fn crafted(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn manifest_json(manifest: &Manifest) -> Vec<u8> {
        serde_json::to_vec(manifest).unwrap()
    }

    /// Reads `archive` into a part file; returns the result and the part's bytes, if
    /// it is left.
    fn import(archive: &[u8]) -> (Result<Manifest, ImageError>, Option<Vec<u8>>) {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("k.part");
        let result = read(archive, Path::new("x.tar"), &(), |_| Ok(Some(part.clone())));
        (result, std::fs::read(&part).ok())
    }

    fn problem(result: Result<Manifest, ImageError>) -> String {
        match result {
            Err(ImageError::BadArchive { problem, .. }) => problem,
            other => panic!("expected BadArchive, got {other:?}"),
        }
    }

    #[test]
    fn round_trip() {
        let archive = exported(IMAGE);
        let (result, part) = import(&archive);
        assert_eq!(result.unwrap(), manifest_of(IMAGE));
        assert_eq!(part.unwrap(), IMAGE);
    }

    #[test]
    fn already_cached_stops_after_the_manifest() {
        let archive = exported(IMAGE);
        let result = read(archive.as_slice(), Path::new("x.tar"), &(), |_| Ok(None));
        assert_eq!(result.unwrap(), manifest_of(IMAGE));
    }

    #[test]
    fn truncated_archive_is_refused_and_the_part_removed() {
        let archive = exported(IMAGE);
        let cut = archive.len() - 1024 - 512 + 10; // inside the image's data block
        let (result, part) = import(&archive[..cut]);
        assert!(problem(result).contains("cut short"));
        assert_eq!(part, None);
        assert!(problem(import(&archive[..100]).0).contains("manifest.json"));
    }

    #[test]
    fn tampered_byte_is_a_checksum_mismatch_naming_both_digests() {
        let mut archive = exported(IMAGE);
        let at = archive.windows(IMAGE.len()).position(|w| w == IMAGE).unwrap();
        archive[at] = b'Q';
        let (result, part) = import(&archive);
        match result {
            Err(ImageError::ArchiveMismatch { expected, actual, .. }) => {
                assert_eq!(expected, manifest_of(IMAGE).sha256);
                let mut tampered = IMAGE.to_vec();
                tampered[0] = b'Q';
                assert_eq!(actual, hex::encode(sha2::Sha256::digest(&tampered)));
            }
            other => panic!("expected ArchiveMismatch, got {other:?}"),
        }
        assert_eq!(part, None);
    }

    #[test]
    fn extra_entries_are_refused() {
        let json = manifest_json(&manifest_of(IMAGE));
        let after = crafted(&[("manifest.json", &json), ("image.qcow2", IMAGE), ("x", b"y")]);
        let (result, part) = import(&after);
        assert!(problem(result).contains("\"x\" after the image"));
        assert_eq!(part, None);
        let between = crafted(&[("manifest.json", &json), ("x", b"y"), ("image.qcow2", IMAGE)]);
        assert!(problem(import(&between).0).contains("found entry \"x\""));
    }

    #[test]
    fn traversing_names_are_refused() {
        let json = manifest_json(&manifest_of(IMAGE));
        let first = crafted(&[("../x", &json)]);
        assert!(problem(import(&first).0).contains("found entry \"../x\""));
        let second = crafted(&[("manifest.json", &json), ("../image.qcow2", IMAGE)]);
        assert!(problem(import(&second).0).contains("found entry \"../image.qcow2\""));
    }

    #[test]
    fn oversize_manifest_is_refused_before_it_is_read() {
        let huge = vec![b' '; usize::try_from(MAX_MANIFEST_BYTES).unwrap() + 1];
        let archive = crafted(&[("manifest.json", &huge)]);
        assert!(problem(import(&archive).0).contains("over"));
    }

    #[test]
    fn sizes_must_match_the_manifest() {
        let mut manifest = manifest_of(IMAGE);
        manifest.size_bytes += 1;
        let archive =
            crafted(&[("manifest.json", &manifest_json(&manifest)), ("image.qcow2", IMAGE)]);
        let (result, part) = import(&archive);
        assert!(problem(result).contains("the manifest says"));
        assert_eq!(part, None);
    }

    #[test]
    fn manifest_is_read_strictly() {
        let mut value = serde_json::to_value(manifest_of(IMAGE)).unwrap();
        value["kubernetes_version"] = "v1.34.2".into();
        let json = serde_json::to_vec(&value).unwrap();
        let archive = crafted(&[("manifest.json", &json), ("image.qcow2", IMAGE)]);
        assert!(problem(import(&archive).0).contains("unknown field"));
        let bad = |edit: fn(&mut Manifest)| {
            let mut manifest = manifest_of(IMAGE);
            edit(&mut manifest);
            let json = manifest_json(&manifest);
            problem(import(&crafted(&[("manifest.json", &json), ("image.qcow2", IMAGE)])).0)
        };
        assert!(bad(|m| m.format_version = 2).contains("format_version 2"));
        assert!(bad(|m| m.sha256 = "../../etc".into()).contains("sha256"));
        assert!(bad(|m| m.name = Some("../x".into())).contains("name"));
        assert!(bad(|m| m.format = Format::Vmdk).contains("where the file image.vmdk belongs"));
    }

    #[test]
    fn export_fails_when_the_image_is_not_what_the_manifest_says() {
        let mut manifest = manifest_of(IMAGE);
        manifest.sha256 = "0".repeat(64);
        let err = write(Vec::new(), &manifest, IMAGE, Path::new("x.tar"), &()).unwrap_err();
        assert!(matches!(err, ImageError::ArchiveMismatch { .. }), "{err}");
        let short = &IMAGE[..5];
        let err =
            write(Vec::new(), &manifest_of(IMAGE), short, Path::new("x.tar"), &()).unwrap_err();
        assert!(matches!(err, ImageError::BadArchive { .. }), "{err}");
    }
}
