//! The NoCloud seed image: ISO 9660 with Rock Ridge and Joliet, volume label `cidata`,
//! holding `user-data`, `meta-data` and `network-config` under those exact lowercase
//! names (the plain ISO 9660 tree has `USER_DATA;1`; Linux mounts show the Rock Ridge
//! names, and blkid reads the label from the primary and Joliet descriptors).
//!
//! hadris-iso stamps the volume descriptors and directory records with the current
//! time, and offers no way to pass a fixed one; `fix_timestamps` overwrites those
//! fields after the image is built, so the same seed always gives the same bytes.

use std::io::{self, Cursor};
use std::path::Path;

use hadris_iso::joliet::JolietLevel;
use hadris_iso::read::PathSeparator;
use hadris_iso::rrip::RripOptions;
use hadris_iso::write::options::{BaseIsoLevel, CreationFeatures, IsoFormatOptions};
use hadris_iso::write::{InputEntry, InputMetadata, InputTree, IsoImageWriter};

use super::{CloudInitError, SeedFiles};
use crate::fsutil;

/// The volume label cloud-init's NoCloud datasource looks for.
pub const VOLUME_LABEL: &str = "cidata";

const SECTOR: usize = 2048;
/// Volume descriptors start at sector 16 (ECMA-119 6.2.1).
const FIRST_DESCRIPTOR: usize = 16;
/// 2000-01-01 00:00:00 UTC as a directory record date (ECMA-119 9.1.5: years since
/// 1900, month, day, hour, minute, second, UTC offset).
const RECORD_DATE: [u8; 7] = [100, 1, 1, 0, 0, 0, 0];
/// The same instant as a volume descriptor date (ECMA-119 8.4.26.1: digits, then the
/// UTC offset byte).
const DESCRIPTOR_DATE: &[u8; 17] = b"2000010100000000\0";

/// Writes `files` as a seed ISO at `path`, atomically and with mode 0600.
pub fn write_iso(files: &SeedFiles, path: &Path) -> Result<(), CloudInitError> {
    let write_error = |source| CloudInitError::WriteIso { path: path.to_owned(), source };
    let image = build(files).map_err(write_error)?;
    fsutil::write_atomic(path, &image).map_err(write_error)
}

/// The image bytes for `files`.
fn build(files: &SeedFiles) -> io::Result<Vec<u8>> {
    let documents = [
        ("user-data", &files.user_data),
        ("meta-data", &files.meta_data),
        ("network-config", &files.network_config),
    ];
    let tree = InputTree {
        path_separator: PathSeparator::ForwardSlash,
        entries: documents
            .iter()
            .map(|(name, text)| InputEntry {
                // Readable by root only in the guest, as it holds the private host key.
                metadata: InputMetadata { mode: Some(0o400), ..InputMetadata::default() },
                ..InputEntry::file(*name, text.as_bytes())
            })
            .collect(),
    };
    let options = IsoFormatOptions {
        volume_name: VOLUME_LABEL.into(),
        system_id: None,
        volume_set_id: None,
        publisher_id: None,
        preparer_id: None,
        application_id: Some("KUBELAB".into()),
        sector_size: SECTOR,
        features: CreationFeatures {
            filenames: BaseIsoLevel::Level2 { supports_lowercase: false, supports_rrip: true },
            joliet: Some(JolietLevel::Level3),
            // Timestamps off: each would be "now", and the image must be reproducible.
            rock_ridge: Some(RripOptions { preserve_timestamps: false, ..RripOptions::default() }),
            ..CreationFeatures::default()
        },
        path_separator: PathSeparator::ForwardSlash,
        strict_charset: false,
    };
    let mut image = IsoImageWriter::create(Cursor::new(Vec::new()), tree, options)
        .map_err(io::Error::other)?
        .into_inner();
    fix_timestamps(&mut image)?;
    Ok(image)
}

/// Sets every date in the descriptors and directory records of `image` to a fixed one.
fn fix_timestamps(image: &mut [u8]) -> io::Result<()> {
    let mut start = FIRST_DESCRIPTOR * SECTOR;
    loop {
        let descriptor = slice(image, start, SECTOR)?;
        if &descriptor[1..6] != b"CD001" {
            return Err(malformed("volume descriptor without the CD001 identifier"));
        }
        match descriptor[0] {
            // Primary (1) and supplementary/Joliet (2): creation and modification dates
            // at bytes 813 and 830, the root directory record at byte 156.
            1 | 2 => {
                slice(image, start + 813, 17)?.copy_from_slice(DESCRIPTOR_DATE);
                slice(image, start + 830, 17)?.copy_from_slice(DESCRIPTOR_DATE);
                fix_record(image, start + 156, 0)?;
            }
            // The set terminator.
            255 => return Ok(()),
            _ => {}
        }
        start += SECTOR;
    }
}

/// Fixes the record at `offset` and, for a directory, every record in it. ECMA-119
/// 9.1: length at byte 0, extent at 2 and data length at 10 (little-endian halves of
/// both-endian fields), date at 18, flags at 25 (bit 1: directory), name length at 32
/// and name at 33 (`.` and `..` are the one-byte names 0 and 1).
fn fix_record(image: &mut [u8], offset: usize, depth: usize) -> io::Result<()> {
    let record = slice(image, offset, 34)?;
    record[18..25].copy_from_slice(&RECORD_DATE);
    if record[25] & 2 == 0 {
        return Ok(());
    }
    if depth > 8 {
        return Err(malformed("directories nested deeper than 8 levels"));
    }
    let extent = u32::from_le_bytes([record[2], record[3], record[4], record[5]]) as usize;
    let len = u32::from_le_bytes([record[10], record[11], record[12], record[13]]) as usize;
    let start = extent * SECTOR;
    let mut pos = start;
    while pos < start + len {
        let record_len = usize::from(slice(image, pos, 1)?[0]);
        if record_len == 0 {
            // Records never cross a sector boundary; the rest of this sector is padding.
            pos = (pos / SECTOR + 1) * SECTOR;
            continue;
        }
        let name = slice(image, pos + 32, 2)?;
        let is_self_or_parent = name[0] == 1 && (name[1] == 0 || name[1] == 1);
        if is_self_or_parent {
            slice(image, pos, 25)?[18..25].copy_from_slice(&RECORD_DATE);
        } else {
            fix_record(image, pos, depth + 1)?;
        }
        pos += record_len;
    }
    Ok(())
}

fn slice(image: &mut [u8], start: usize, len: usize) -> io::Result<&mut [u8]> {
    image.get_mut(start..start + len).ok_or_else(|| malformed("a record points past the image"))
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("unexpected ISO layout: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hadris_iso::read::IsoImage;

    fn read_back(image: &[u8], name: &str) -> Vec<u8> {
        let iso = IsoImage::open(Cursor::new(image)).unwrap();
        let entry = iso.find_path(name).unwrap().unwrap_or_else(|| panic!("{name} missing"));
        iso.read_file(&entry).unwrap()
    }

    fn files() -> SeedFiles {
        SeedFiles {
            user_data: "#cloud-config\nhostname: a\n".into(),
            meta_data: "instance-id: a-1\n".into(),
            network_config: "version: 2\n".into(),
        }
    }

    #[test]
    fn builds_are_byte_identical_across_seconds() {
        let first = build(&files()).unwrap();
        // Not synchronisation: the clock must pass a second boundary, so that any
        // timestamp left unfixed would differ between the two builds.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert!(first == build(&files()).unwrap());
    }

    #[test]
    fn files_read_back_under_their_names() {
        let image = build(&files()).unwrap();
        let files = files();
        assert_eq!(read_back(&image, "/user-data"), files.user_data.as_bytes());
        assert_eq!(read_back(&image, "/meta-data"), files.meta_data.as_bytes());
        assert_eq!(read_back(&image, "/network-config"), files.network_config.as_bytes());
    }

    #[cfg(unix)]
    #[test]
    fn write_iso_is_private_and_atomic() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.iso");
        write_iso(&files(), &path).unwrap();
        write_iso(&files(), &path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let err = write_iso(&files(), &dir.path().join("missing/seed.iso")).unwrap_err();
        assert!(matches!(err, CloudInitError::WriteIso { .. }), "{err}");
    }
}
