//! Format conversion for the driver (issue 14): a cached image in another format than
//! the driver boots (a URL's qcow2 for VirtualBox, a VMDK for kvm2, a bake of the other
//! driver) is converted once with `qemu-img convert`, and the result is cached beside
//! it like any image, its sidecar naming the source's digest (`converted_from`), so the
//! next `up` finds it, re-verifies it like any cache entry, and `image rm` of the
//! source removes it.

use std::ffi::OsStr;
use std::time::Duration;

use super::cache::{self, Cache, Sidecar};
use super::catalog::Format;
use super::{CachedImage, ImageError};
use crate::driver::DiskFormat;
use crate::home::Home;
use crate::process::Tool;
use crate::progress::Progress;

/// How long one conversion may take: it reads and writes the whole disk, gigabytes, and
/// is only killed when something is clearly stuck.
pub const CONVERT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// `image` in a format the driver boots: as it is when it is one (or an ISO or raw
/// image, which are not converted), else its conversion ([`in_format`]) to qcow2 for
/// kvm2 or VMDK for VirtualBox (which also attaches VDI as it is).
pub fn for_driver(
    home: &Home,
    image: CachedImage,
    disk: DiskFormat,
    progress: &dyn Progress,
) -> Result<CachedImage, ImageError> {
    match (disk, image.format) {
        (_, Format::Iso | Format::Raw) | (DiskFormat::Vmdk, Format::Vdi) => Ok(image),
        _ => in_format(home, &image, disk_image_format(disk), progress),
    }
}

/// The image format of a driver's disks.
pub fn disk_image_format(disk: DiskFormat) -> Format {
    match disk {
        DiskFormat::Qcow2 => Format::Qcow2,
        DiskFormat::Vmdk => Format::Vmdk,
    }
}

/// `image` converted to `want`: `image` itself if it is in `want` already, else the
/// verified cached conversion, else a new one (`qemu-img convert`, under the cache's
/// per-key lock so two `up`s convert once). A failed conversion leaves nothing in the
/// cache. The disk formats' names are qemu-img's (`qcow2`, `vmdk`, `vdi`, `raw`).
pub fn in_format(
    home: &Home,
    image: &CachedImage,
    want: Format,
    progress: &dyn Progress,
) -> Result<CachedImage, ImageError> {
    if image.format == want {
        return Ok(image.clone());
    }
    let cache = Cache::new(home);
    cache.create()?;
    let lookup =
        || cache.find(|s| s.format == want && s.converted_from.as_deref() == Some(&image.sha256));
    let hit = |hit: CachedImage| {
        progress.message(&format!("converted image is cached: {}", hit.path.display()));
        Ok(hit)
    };
    if let Some(found) = lookup()? {
        return hit(found);
    }
    let key = format!("{}-to-{want}", image.sha256);
    let _lock = cache.lock(&key, || {
        progress
            .message(&format!("waiting for another kubelab converting {}", image.path.display()));
    })?;
    if let Some(found) = lookup()? {
        return hit(found);
    }
    progress.message(&format!(
        "converting {} to {want} (once: the result is cached)",
        image.path.display()
    ));
    let part = cache.part_path(&key);
    let args = [
        OsStr::new("convert"),
        OsStr::new("-f"),
        OsStr::new(image.format.as_str()),
        OsStr::new("-O"),
        OsStr::new(want.as_str()),
        image.path.as_os_str(),
        part.as_os_str(),
    ];
    let converted = Tool::new("qemu-img")
        .run_within(args, Some(CONVERT_TIMEOUT))
        .map_err(|e| ImageError::Convert {
            path: image.path.clone(),
            format: want,
            source: e.into(),
        })
        .and_then(|_| cache::hash_file(&part));
    let sha256 = converted.inspect_err(|_| {
        let _ = std::fs::remove_file(&part);
    })?;
    let sidecar = Sidecar {
        sha256,
        sha512: None,
        format: want,
        size_bytes: 0,
        mtime_ns: 0,
        url: image.url.clone(),
        name: None,
        // A conversion of a baked image is found through its source, which `baked::all`
        // lists once.
        baked: None,
        converted_from: Some(image.sha256.clone()),
    };
    cache.commit(&part, sidecar).inspect_err(|_| {
        let _ = std::fs::remove_file(&part);
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Mutex;

    use super::*;

    /// Records the progress messages (a cache hit says so; a conversion says so).
    #[derive(Default)]
    struct Said(Mutex<Vec<String>>);

    impl Progress for Said {
        fn message(&self, text: &str) {
            self.0.lock().unwrap().push(text.to_owned());
        }
    }

    impl Said {
        fn converted(&self) -> usize {
            self.0.lock().unwrap().iter().filter(|m| m.starts_with("converting ")).count()
        }
    }

    /// Runs a real qemu-img (CI installs it: a missing one fails the test, never skips).
    fn qemu_img(args: &[&str]) -> String {
        let out = Tool::new("qemu-img").run(args).expect("qemu-img must be installed");
        out.stdout
    }

    /// A 1 MiB qcow2 image committed to the cache of `home` as a pulled image would be.
    fn cached_qcow2(home: &Home, dir: &Path) -> CachedImage {
        let file = dir.join("src.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", file.to_str().unwrap(), "1M"]);
        cached(home, &file, Format::Qcow2)
    }

    fn cached(home: &Home, file: &Path, format: Format) -> CachedImage {
        let cache = Cache::new(home);
        cache.create().unwrap();
        let part = cache.part_path("src");
        std::fs::copy(file, &part).unwrap();
        let sidecar = Sidecar {
            sha256: cache::hash_file(&part).unwrap(),
            sha512: None,
            format,
            size_bytes: 0,
            mtime_ns: 0,
            url: "file:///src".into(),
            name: None,
            baked: None,
            converted_from: None,
        };
        cache.commit(&part, sidecar).unwrap()
    }

    fn format_of(path: &Path) -> String {
        let info = qemu_img(&["info", "--output", "json", path.to_str().unwrap()]);
        let info: serde_json::Value = serde_json::from_str(&info).unwrap();
        info["format"].as_str().unwrap().to_owned()
    }

    fn mtime(path: &Path) -> std::time::SystemTime {
        std::fs::metadata(path).unwrap().modified().unwrap()
    }

    #[test]
    fn qcow2_is_converted_once_to_vmdk_and_to_vdi() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("home"));
        let source = cached_qcow2(&home, dir.path());
        let said = Said::default();
        for (want, qemu_name) in [(Format::Vmdk, "vmdk"), (Format::Vdi, "vdi")] {
            let image = in_format(&home, &source, want, &said).unwrap();
            assert_eq!(
                (image.format, image.converted_from.as_deref()),
                (want, Some(&*source.sha256))
            );
            assert_eq!(format_of(&image.path), qemu_name);
            assert_eq!(image.path, home.image_cache_dir().join(format!("{}.{want}", image.sha256)));
            let written = mtime(&image.path);
            let again = in_format(&home, &source, want, &said).unwrap();
            assert_eq!(again, image, "a cache hit");
            assert_eq!(mtime(&image.path), written, "not converted again");
        }
        assert_eq!(said.converted(), 2, "{:?}", said.0);
        assert_eq!(in_format(&home, &source, Format::Qcow2, &said).unwrap(), source);
        // The source's conversions are listed as such and go with it.
        let listed = crate::image::list(&home).unwrap().other;
        assert_eq!(listed.iter().filter(|i| i.converted_from.is_some()).count(), 2);
        let removed = crate::image::remove(&home, &source.sha256).unwrap();
        assert_eq!(removed.len(), 3);
        assert_eq!(std::fs::read_dir(home.image_cache_dir()).unwrap().count(), 0);
    }

    /// Two `up`s at once: one converts, the other waits for it and uses its result.
    #[test]
    fn concurrent_calls_convert_once() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("home"));
        let source = cached_qcow2(&home, dir.path());
        let said = Said::default();
        let images: Vec<CachedImage> = std::thread::scope(|s| {
            let calls: Vec<_> = (0..2)
                .map(|_| s.spawn(|| in_format(&home, &source, Format::Vdi, &said).unwrap()))
                .collect();
            calls.into_iter().map(|c| c.join().unwrap()).collect()
        });
        assert_eq!(images[0], images[1]);
        assert_eq!(said.converted(), 1, "{:?}", said.0);
    }

    #[test]
    fn for_driver_converts_only_what_the_driver_cannot_boot() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("home"));
        let qcow2 = cached_qcow2(&home, dir.path());
        let said = Said::default();
        assert_eq!(for_driver(&home, qcow2.clone(), DiskFormat::Qcow2, &said).unwrap(), qcow2);
        let vmdk = for_driver(&home, qcow2, DiskFormat::Vmdk, &said).unwrap();
        assert_eq!(vmdk.format, Format::Vmdk);
        let vdi = in_format(&home, &vmdk, Format::Vdi, &said).unwrap();
        assert_eq!(for_driver(&home, vdi.clone(), DiskFormat::Vmdk, &said).unwrap(), vdi);
        assert_eq!(for_driver(&home, vdi, DiskFormat::Qcow2, &said).unwrap().format, Format::Qcow2);
        let iso = CachedImage { format: Format::Iso, ..vmdk.clone() };
        assert_eq!(for_driver(&home, iso.clone(), DiskFormat::Qcow2, &said).unwrap(), iso);
        let raw = CachedImage { format: Format::Raw, ..vmdk };
        assert_eq!(for_driver(&home, raw.clone(), DiskFormat::Vmdk, &said).unwrap(), raw);
    }

    #[test]
    fn failed_conversion_leaves_nothing_in_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("home"));
        let corrupt = dir.path().join("corrupt.qcow2");
        std::fs::write(&corrupt, b"QFI\xfb but not a qcow2 header at all").unwrap();
        let source = cached(&home, &corrupt, Format::Qcow2);
        let before: Vec<_> = std::fs::read_dir(home.image_cache_dir()).unwrap().collect();
        let err = in_format(&home, &source, Format::Vmdk, &()).unwrap_err();
        let ImageError::Convert { source, .. } = &err else { panic!("{err:?}") };
        assert!(matches!(**source, crate::process::ProcessError::Failed { .. }), "{err:?}");
        let reason = crate::reason::reason(&crate::Error::from(err));
        assert_eq!(reason.id, "BAKE_CONVERT_FAILED");
        let after: Vec<_> = std::fs::read_dir(home.image_cache_dir()).unwrap().collect();
        assert_eq!(after.len(), before.len(), "only the source: no part, no sidecar");
    }

    #[test]
    fn tampered_conversion_is_reverified_and_redone() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("home"));
        let source = cached_qcow2(&home, dir.path());
        let said = Said::default();
        let image = in_format(&home, &source, Format::Vmdk, &said).unwrap();
        let mut bytes = std::fs::read(&image.path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&image.path, &bytes).unwrap();
        let redone = in_format(&home, &source, Format::Vmdk, &said).unwrap();
        assert_eq!(said.converted(), 2, "{:?}", said.0);
        // (A VMDK names a random content id, so the new file has another digest.)
        assert_eq!(crate::image::cache::hash_file(&redone.path).unwrap(), redone.sha256);
        assert_eq!(format_of(&redone.path), "vmdk");
        let sidecars = Cache::new(&home).sidecars().unwrap();
        assert_eq!(sidecars.len(), 2, "the source and one conversion: {sidecars:?}");
    }

    #[test]
    fn old_sidecars_load_and_a_bad_converted_from_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("home"));
        let source = cached_qcow2(&home, dir.path());
        let cache = Cache::new(&home);
        let json = home.image_cache_dir().join(format!("{}.qcow2.json", source.sha256));
        let text = std::fs::read_to_string(&json).unwrap();
        assert!(!text.contains("converted_from"), "{text}");
        let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
        value["converted_from"] = "../etc".into();
        std::fs::write(&json, value.to_string()).unwrap();
        let err = cache.sidecars().unwrap_err();
        assert!(matches!(err, ImageError::BadSidecar { field: "converted_from", .. }), "{err}");
    }
}
