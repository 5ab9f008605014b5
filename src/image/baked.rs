//! Baked images (`kubelab image bake`): a node disk with Kubernetes' prerequisites
//! installed and its container images pulled, stored in the image cache like any base
//! image (named by its SHA-256) with a manifest in its sidecar saying what it holds:
//! the base image and its digest, the Kubernetes version, package versions, container
//! images and their digests. `up` boots it as `baked:<version>`, or picks it by itself
//! for a cluster of that version made from the same base.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::cache::{Cache, Sidecar};
use super::catalog::{Format, is_lower_hex};
use super::{CachedImage, ImageError};
use crate::home::Home;

/// The prefix of `--image baked:<version>`.
pub const PREFIX: &str = "baked:";
/// Bounds on what a manifest lists, so a tampered sidecar cannot make kubelab hold or
/// print an endless one.
const MAX_ENTRIES: usize = 256;
const MAX_TEXT: usize = 256;

/// The base image a bake started from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Base {
    /// What was passed as `--from` (catalogue name, URL without credentials, path).
    pub source: String,
    /// Its SHA-256.
    pub sha256: String,
}

/// What a baked image holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baked {
    /// `vMAJOR.MINOR.PATCH`: what its kubeadm, kubelet and images are.
    pub kubernetes_version: String,
    /// What it was baked from.
    pub base: Base,
    /// The driver that baked it (`kvm2`, `virtualbox`).
    pub driver: String,
    /// When, UTC (`YYYY-MM-DDTHH:MM:SSZ`).
    pub baked_at: String,
    /// Debian package name -> version, as dpkg reports them in the guest.
    pub packages: BTreeMap<String, String>,
    /// Container image reference -> digest (`sha256:...`), as the runtime reports them.
    pub images: BTreeMap<String, String>,
}

impl Baked {
    /// Checks it like input (it is read back from the cache): a version, digests,
    /// references and package names of plain characters, bounded counts and lengths.
    pub fn check(&self) -> Result<(), String> {
        crate::bootstrap::check_version(&self.kubernetes_version)
            .map_err(|e| format!("kubernetes_version: {e}"))?;
        if !is_lower_hex(&self.base.sha256, 64) {
            return Err(format!(
                "base.sha256 {:?} is not 64 lowercase hex digits",
                self.base.sha256
            ));
        }
        let plain = |text: &str, extra: &str| {
            !text.is_empty()
                && text.len() <= MAX_TEXT
                && text.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
        };
        if !plain(&self.base.source, "/:.-_~%+@") {
            return Err(format!("base.source {:?} has unexpected characters", self.base.source));
        }
        if !matches!(self.driver.as_str(), "kvm2" | "virtualbox") {
            return Err(format!("driver {:?} is not kvm2 or virtualbox", self.driver));
        }
        if !plain(&self.baked_at, "-:TZ") {
            return Err(format!("baked_at {:?} is not a UTC time", self.baked_at));
        }
        if self.packages.len() > MAX_ENTRIES || self.images.len() > MAX_ENTRIES {
            return Err(format!("more than {MAX_ENTRIES} packages or images"));
        }
        for (name, version) in &self.packages {
            if !plain(name, "+-.") || !plain(version, "+-.:~") {
                return Err(format!("package {name:?} {version:?} has unexpected characters"));
            }
        }
        for (reference, digest) in &self.images {
            if !plain(reference, "/:.-_@") {
                return Err(format!("image {reference:?} has unexpected characters"));
            }
            if !digest.strip_prefix("sha256:").is_some_and(|hex| is_lower_hex(hex, 64)) {
                return Err(format!("image {reference:?} has digest {digest:?}, not sha256:<hex>"));
            }
        }
        Ok(())
    }

    /// How `--image` names it.
    pub fn image_name(&self) -> String {
        format!("{PREFIX}{}", self.kubernetes_version)
    }
}

/// The version `text` names if it is `baked:<version>`.
pub fn parse_name(text: &str) -> Option<&str> {
    text.strip_prefix(PREFIX)
}

/// A baked image in the cache, with its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BakedImage {
    /// The verified file.
    pub image: CachedImage,
    /// What it holds.
    pub baked: Baked,
}

/// Every verified baked image of the cache, newest first.
pub fn all(home: &Home) -> Result<Vec<BakedImage>, ImageError> {
    let cache = Cache::new(home);
    among(&cache.sidecars()?, |sidecar| cache.verify(sidecar))
}

/// The baked images of `sidecars` whose file `image` finds, newest first.
pub(super) fn among(
    sidecars: &[Sidecar],
    mut image: impl FnMut(&Sidecar) -> Result<Option<CachedImage>, ImageError>,
) -> Result<Vec<BakedImage>, ImageError> {
    let mut found = Vec::new();
    for sidecar in sidecars {
        let Some(baked) = sidecar.baked.clone() else { continue };
        if let Some(image) = image(sidecar)? {
            found.push(BakedImage { image, baked });
        }
    }
    found.sort_by(|a, b| b.baked.baked_at.cmp(&a.baked.baked_at));
    Ok(found)
}

/// The newest baked image for Kubernetes `version` (the one of digest `sha256` when
/// given).
pub fn find(home: &Home, version: &str, sha256: Option<&str>) -> Result<BakedImage, ImageError> {
    all(home)?
        .into_iter()
        .find(|b| {
            b.baked.kubernetes_version == version && sha256.is_none_or(|d| b.image.sha256 == d)
        })
        .ok_or_else(|| ImageError::NoBaked {
            version: version.to_owned(),
            sha256: sha256.map(str::to_owned),
        })
}

/// The newest baked image made from the base image `source` (`sha256` when known) for
/// Kubernetes `version`, if there is one.
pub fn matching(
    home: &Home,
    source: &str,
    sha256: Option<&str>,
    version: &str,
) -> Result<Option<BakedImage>, ImageError> {
    Ok(all(home)?.into_iter().find(|b| {
        b.baked.kubernetes_version == version
            && match sha256 {
                Some(digest) => b.baked.base.sha256 == digest,
                None => b.baked.base.source == source,
            }
    }))
}

/// Stores the disk `export` writes (to the path it is given) as a baked image: hashed,
/// moved into the cache under its digest with `baked` in its sidecar. Nothing is left
/// in the cache when `export` or the hashing fails.
pub fn store<E>(
    home: &Home,
    format: Format,
    baked: Baked,
    export: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<Result<BakedImage, ImageError>, E> {
    let cache = Cache::new(home);
    if let Err(e) = cache.create() {
        return Ok(Err(e));
    }
    let key = format!("bake-{}", crate::cloudinit::instance_id("part"));
    let part = cache.part_path(&key);
    let _ = std::fs::remove_file(&part);
    if let Err(e) = export(&part) {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    let result = (|| {
        let sha256 = super::cache::hash_file(&part)?;
        let sidecar = Sidecar {
            sha256,
            sha512: None,
            format,
            size_bytes: 0,
            mtime_ns: 0,
            url: baked.image_name(),
            name: None,
            baked: Some(baked.clone()),
            converted_from: None,
        };
        cache.commit(&part, sidecar)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    Ok(result.map(|image| BakedImage { image, baked }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Baked {
        Baked {
            kubernetes_version: "v1.34.2".into(),
            base: Base { source: "ubuntu-24.04".into(), sha256: "a".repeat(64) },
            driver: "kvm2".into(),
            baked_at: "2026-12-02T07:00:00Z".into(),
            packages: [("kubeadm".to_owned(), "1.34.2-1.1".to_owned())].into(),
            images: [(
                "registry.k8s.io/pause:3.10.1".to_owned(),
                format!("sha256:{}", "b".repeat(64)),
            )]
            .into(),
        }
    }

    #[test]
    fn manifests_are_checked_like_input() {
        assert_eq!(sample().check(), Ok(()));
        let bad: [fn(&mut Baked); 6] = [
            |b| b.kubernetes_version = "latest".into(),
            |b| b.base.sha256 = "A".repeat(64),
            |b| b.base.source = "$(reboot)".into(),
            |b| {
                b.images.insert("x/y:z".into(), "md5:00".into());
            },
            |b| {
                b.packages.insert("kube adm".into(), "1".into());
            },
            |b| {
                b.packages = (0..=MAX_ENTRIES).map(|i| (format!("p{i}"), "1".to_owned())).collect();
            },
        ];
        for (i, spoil) in bad.iter().enumerate() {
            let mut baked = sample();
            spoil(&mut baked);
            assert!(baked.check().is_err(), "case {i}: {baked:?}");
        }
    }

    #[test]
    fn stored_bake_is_found_by_version_digest_and_base() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("home"));
        let stored = store(&home, Format::Qcow2, sample(), |part| std::fs::write(part, b"disk"))
            .unwrap()
            .unwrap();
        assert_eq!(stored.image.url, "baked:v1.34.2");
        assert_eq!(find(&home, "v1.34.2", None).unwrap(), stored);
        assert_eq!(find(&home, "v1.34.2", Some(&stored.image.sha256)).unwrap(), stored);
        assert!(matches!(find(&home, "v1.33.0", None), Err(ImageError::NoBaked { .. })));
        assert!(matches!(
            find(&home, "v1.34.2", Some(&"c".repeat(64))),
            Err(ImageError::NoBaked { .. })
        ));
        let by_digest = matching(&home, "other", Some(&"a".repeat(64)), "v1.34.2").unwrap();
        assert_eq!(by_digest, Some(stored.clone()));
        assert_eq!(matching(&home, "ubuntu-24.04", None, "v1.34.2").unwrap(), Some(stored));
        assert_eq!(matching(&home, "ubuntu-24.04", None, "v1.35.0").unwrap(), None);
        assert_eq!(matching(&home, "debian-12", None, "v1.34.2").unwrap(), None);
    }

    #[test]
    fn failed_export_leaves_nothing_in_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("home"));
        let failed = store(&home, Format::Qcow2, sample(), |part| {
            std::fs::write(part, b"half")?;
            Err::<(), _>(std::io::Error::other("VM gone"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read_dir(home.image_cache_dir()).unwrap().count(), 0);
    }

    #[test]
    fn export_and_import_carry_the_manifest_to_another_home() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (Home::new(dir.path().join("one")), Home::new(dir.path().join("two")));
        let stored = store(&one, Format::Qcow2, sample(), |part| std::fs::write(part, b"disk"))
            .unwrap()
            .unwrap();
        let archive = dir.path().join("baked.tar");
        super::super::export(&one, "baked:v1.34.2", &archive, &()).unwrap();
        let imported = super::super::import(&two, &archive, &()).unwrap();
        assert_eq!(imported.image.sha256, stored.image.sha256);
        assert_eq!(find(&two, "v1.34.2", None).unwrap().baked, sample());
    }

    #[test]
    fn a_tampered_manifest_makes_the_cache_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("home"));
        let stored = store(&home, Format::Qcow2, sample(), |part| std::fs::write(part, b"disk"))
            .unwrap()
            .unwrap();
        let sidecar = format!("{}.json", stored.image.path.display());
        let text = std::fs::read_to_string(&sidecar).unwrap();
        std::fs::write(&sidecar, text.replace("registry.k8s.io/pause", "x y")).unwrap();
        assert!(matches!(all(&home), Err(ImageError::BadSidecar { .. })));
    }
}
