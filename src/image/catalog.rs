//! The image catalogue: one TOML file per image under `images/`, embedded in the binary
//! at build time, and the value types its entries are made of (formats, digests).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use url::Url;

use super::ImageError;

/// The catalogue files, embedded so the binary needs nothing beside it. A unit test
/// checks that every `images/*.toml` is listed here.
const FILES: &[(&str, &str)] = &[
    ("images/debian-12.toml", include_str!("../../images/debian-12.toml")),
    ("images/ubuntu-24.04.toml", include_str!("../../images/ubuntu-24.04.toml")),
];

/// What an image boots as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An installer or live ISO, booted beside a blank data disk.
    Iso,
    /// A ready-made disk, used as the base of a copy-on-write overlay.
    Disk,
}

impl Kind {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Iso => "iso",
            Self::Disk => "disk",
        }
    }
}

/// A file format an image is published in.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// QEMU copy-on-write disk (libvirt/kvm2).
    Qcow2,
    /// VMware disk, which VirtualBox attaches directly.
    Vmdk,
    /// VirtualBox's own disk format.
    Vdi,
    /// ISO 9660 image.
    Iso,
    /// Raw disk bytes (VirtualBox takes them through `convertfromraw`).
    Raw,
}

impl Format {
    /// The lowercase name, used as the cache file's extension.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Qcow2 => "qcow2",
            Self::Vmdk => "vmdk",
            Self::Vdi => "vdi",
            Self::Iso => "iso",
            Self::Raw => "raw",
        }
    }

    /// The format a file name's extension names, if any (`.img` is how Ubuntu names
    /// its qcow2 images).
    pub fn from_file_name(name: &str) -> Option<Self> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        Some(match ext.as_str() {
            "qcow2" | "img" => Self::Qcow2,
            "vmdk" => Self::Vmdk,
            "vdi" => Self::Vdi,
            "iso" => Self::Iso,
            "raw" => Self::Raw,
            _ => return None,
        })
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A digest algorithm kubelab verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// SHA-256; the cache is keyed by it.
    Sha256,
    /// SHA-512, the only digest Debian publishes for its cloud images.
    Sha512,
}

impl Algorithm {
    /// The length of a hex digest.
    fn hex_len(self) -> usize {
        match self {
            Self::Sha256 => 64,
            Self::Sha512 => 128,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        })
    }
}

/// A validated digest: the algorithm and lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// Which algorithm.
    pub algorithm: Algorithm,
    /// Lowercase hex of the expected length.
    pub hex: String,
}

/// Whether `text` is exactly `len` lowercase hex digits, as kubelab writes digests.
pub fn is_lower_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `text` has the shape of a catalogue name (`debian-12`, `ubuntu-24.04`): what
/// sidecars and archive manifests may record as a name.
pub fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

impl Digest {
    /// Parses `hex` (either case) as an `algorithm` digest.
    pub fn parse(algorithm: Algorithm, hex: &str) -> Result<Self, ImageError> {
        let ok = hex.len() == algorithm.hex_len() && hex.bytes().all(|b| b.is_ascii_hexdigit());
        if !ok {
            return Err(ImageError::BadDigest { algorithm, digest: hex.to_owned() });
        }
        Ok(Self { algorithm, hex: hex.to_ascii_lowercase() })
    }
}

impl FromStr for Digest {
    type Err = ImageError;

    /// A SHA-256 in hex, optionally prefixed `sha256:`.
    fn from_str(text: &str) -> Result<Self, ImageError> {
        Self::parse(Algorithm::Sha256, text.strip_prefix("sha256:").unwrap_or(text))
    }
}

/// One published file of an image, as written in its TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatEntry {
    /// Where to download it (a dated release directory, never "current").
    pub url: Url,
    /// Its SHA-256, pinned when a public source shows it.
    pub sha256: Option<String>,
    /// The release's checksum file, read at pull time when no digest is pinned.
    pub checksums_url: Option<Url>,
    /// The algorithm of `checksums_url` (`SHA256SUMS` or `SHA512SUMS`).
    pub checksums_algorithm: Option<Algorithm>,
    /// Its size in bytes, when known before downloading.
    pub size_bytes: Option<u64>,
    /// Where the digest was read (required: no digest without a source).
    pub source: String,
}

/// How a catalogue file is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// A pinned digest.
    Digest(Digest),
    /// The digest listed for the file's name in a published checksum file.
    ChecksumsFile {
        /// The checksum file.
        url: Url,
        /// Its algorithm.
        algorithm: Algorithm,
    },
}

impl FormatEntry {
    /// What the downloaded file must match.
    pub fn expected(&self, name: &str) -> Result<Expected, ImageError> {
        match (&self.sha256, &self.checksums_url) {
            (Some(hex), _) => Ok(Expected::Digest(Digest::parse(Algorithm::Sha256, hex)?)),
            (None, Some(url)) => Ok(Expected::ChecksumsFile {
                url: url.clone(),
                algorithm: self.checksums_algorithm.unwrap_or(Algorithm::Sha256),
            }),
            (None, None) => Err(ImageError::CatalogEntry {
                name: name.to_owned(),
                problem: format!("format {} has neither sha256 nor checksums_url", self.url),
            }),
        }
    }
}

/// One catalogue entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The name users type (`kubelab image pull debian-12`).
    pub name: String,
    /// Disk or ISO.
    pub kind: Kind,
    /// One line for `image list`.
    pub description: String,
    /// The user cloud-init creates and kubelab logs in as.
    pub ssh_user: String,
    /// What is installed in the image.
    pub preinstalled: String,
    /// The published files, by format.
    pub formats: BTreeMap<Format, FormatEntry>,
}

impl Entry {
    /// The entry's file in `format`.
    pub fn format(&self, format: Format) -> Result<&FormatEntry, ImageError> {
        self.formats.get(&format).ok_or_else(|| ImageError::FormatUnavailable {
            name: self.name.clone(),
            format,
            available: self.formats.keys().map(|f| f.as_str()).collect::<Vec<_>>().join(", "),
        })
    }
}

/// Every catalogue entry, sorted by name.
pub fn all() -> Result<Vec<Entry>, ImageError> {
    let mut entries = FILES
        .iter()
        .map(|(file, text)| {
            let entry: Entry = toml::from_str(text)
                .map_err(|source| ImageError::Catalog { file: (*file).to_owned(), source })?;
            for format in entry.formats.values() {
                format.expected(&entry.name)?;
            }
            Ok(entry)
        })
        .collect::<Result<Vec<_>, ImageError>>()?;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// The entry called `name`; the error lists the known names.
pub fn find(name: &str) -> Result<Entry, ImageError> {
    let entries = all()?;
    let known = entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(", ");
    entries
        .into_iter()
        .find(|e| e.name == name)
        .ok_or_else(|| ImageError::UnknownName { name: name.to_owned(), known })
}

/// The digest a `SHA256SUMS`/`SHA512SUMS` file lists for `file_name` (lines are
/// `<hex> <name>` or `<hex> *<name>`, as coreutils writes them).
pub fn find_in_checksums(text: &str, file_name: &str, algorithm: Algorithm) -> Option<Digest> {
    text.lines().find_map(|line| {
        let (hex, rest) = line.split_once(char::is_whitespace)?;
        let name = rest.trim_start();
        let name = name.strip_prefix('*').unwrap_or(name).trim_end();
        if name != file_name {
            return None;
        }
        Digest::parse(algorithm, hex).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogue_file_is_embedded_and_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("images");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".toml"))
            .map(|n| format!("images/{n}"))
            .collect();
        on_disk.sort();
        let embedded: Vec<String> = FILES.iter().map(|(f, _)| (*f).to_owned()).collect();
        assert_eq!(on_disk, embedded);
        let entries = all().unwrap();
        assert_eq!(entries.len(), FILES.len());
        for entry in &entries {
            assert!(entry.formats.contains_key(&Format::Qcow2), "{}", entry.name);
            for f in entry.formats.values() {
                assert_eq!(f.url.scheme(), "https", "{}", f.url);
                assert!(!f.url.as_str().contains("current"), "{}", f.url);
                assert!(!f.source.is_empty());
            }
        }
    }

    #[test]
    fn unknown_name_lists_the_known_ones() {
        let err = find("nope").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown image \"nope\"; known images: debian-12, ubuntu-24.04"
        );
    }

    #[test]
    fn missing_format_names_the_available_ones() {
        let entry = find("debian-12").unwrap();
        let err = entry.format(Format::Vdi).unwrap_err();
        assert!(err.to_string().contains("qcow2, raw"), "{err}");
    }

    #[test]
    fn digest_parsing_checks_length_and_hex() {
        let hex = "AB".repeat(32);
        let d: Digest = format!("sha256:{hex}").parse().unwrap();
        assert_eq!(d.hex, "ab".repeat(32));
        assert!("abc".parse::<Digest>().is_err());
        assert!("zz".repeat(32).parse::<Digest>().is_err());
        assert!(Digest::parse(Algorithm::Sha512, &"ab".repeat(32)).is_err());
        assert!(Digest::parse(Algorithm::Sha512, &"ab".repeat(64)).is_ok());
    }

    #[test]
    fn checksum_files_match_whole_names() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let text = format!("{a} *disk.img\r\n{b}  disk.img.manifest\nnot a line\n");
        let found = find_in_checksums(&text, "disk.img", Algorithm::Sha256).unwrap();
        assert_eq!(found.hex, a);
        assert_eq!(
            find_in_checksums(&text, "disk.img.manifest", Algorithm::Sha256).unwrap().hex,
            b
        );
        assert_eq!(find_in_checksums(&text, "disk", Algorithm::Sha256), None);
        assert_eq!(find_in_checksums(&text, "disk.img", Algorithm::Sha512), None);
    }

    #[test]
    fn format_from_file_name() {
        assert_eq!(Format::from_file_name("noble.img"), Some(Format::Qcow2));
        assert_eq!(Format::from_file_name("a.VMDK"), Some(Format::Vmdk));
        assert_eq!(Format::from_file_name("a.tar.xz"), None);
        assert_eq!(Format::from_file_name("noext"), None);
    }
}
