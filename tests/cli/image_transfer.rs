//! `kubelab image export|import` (issue 14): a cached image carried to another home in
//! one archive; a tampered or cut archive changes nothing in the cache.

use std::path::{Path, PathBuf};

use kubelab::reason;
use sha2::Digest as _;

use crate::util::{Kubelab, Run, files_in, test_data};

/// A home holding one local image, pulled by path; returns its digest.
fn home_with_image(k: &Kubelab, data: &[u8]) -> String {
    let src = k.home().join("disk.qcow2");
    std::fs::write(&src, data).expect("write the local image");
    k.run(["image", "pull", src.to_str().expect("utf-8 path")]).success();
    hex::encode(sha2::Sha256::digest(data))
}

fn json(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run}"))
}

fn cached_files(k: &Kubelab) -> Vec<PathBuf> {
    files_in(&k.home().join("cache/images"))
}

/// Exports the one image of a fresh home to `dir/image.tar`; returns the archive and
/// the image's digest.
fn exported(dir: &Path, data: &[u8]) -> (PathBuf, String) {
    let a = Kubelab::new();
    let digest = home_with_image(&a, data);
    let archive = dir.join("image.tar");
    a.run(["image", "export", archive.to_str().expect("utf-8 path"), &digest[..12]]).success();
    (archive, digest)
}

#[test]
fn export_then_import_into_an_empty_home_keeps_the_digest() {
    let data = test_data(700_000, 21);
    let a = Kubelab::new();
    let digest = home_with_image(&a, &data);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    let archive_arg = archive.to_str().unwrap();
    let run = a.run(["-o", "json", "image", "export", archive_arg, &digest[..12]]).success();
    let out = json(&run);
    assert_eq!(out["archive"], archive_arg);
    assert_eq!(out["image"]["sha256"], digest.as_str());
    assert_eq!(out["image"]["size_bytes"], 700_000);
    assert_eq!(files_in(dir.path()), std::slice::from_ref(&archive), "no temp file is left");

    let b = Kubelab::new();
    let run = b.run(["-o", "json", "image", "import", archive_arg]).success();
    let out = json(&run);
    assert_eq!(out["image"]["sha256"], digest.as_str());
    assert_eq!(out["already_cached"], false);
    let image = PathBuf::from(out["image"]["path"].as_str().unwrap());
    assert_eq!(std::fs::read(&image).unwrap(), data);

    let list = json(&b.run(["image", "list", "-o", "json"]).success());
    assert_eq!(list["other"][0]["sha256"], digest.as_str());
    assert_eq!(list["other"][0]["size_bytes"], 700_000);

    let run = b.run(["image", "import", archive_arg]).success();
    assert!(run.stderr.contains("image is cached already"), "{run}");
    let run = b.run(["-o", "json", "image", "import", archive_arg]).success();
    assert_eq!(json(&run)["already_cached"], true);
}

#[test]
fn tampered_or_cut_archive_leaves_the_cache_empty() {
    let data = test_data(300_000, 22);
    let dir = tempfile::tempdir().unwrap();
    let (archive, digest) = exported(dir.path(), &data);
    let mut bytes = std::fs::read(&archive).unwrap();
    let b = Kubelab::new();

    let at = bytes.windows(64).position(|w| w == &data[1000..1064]).unwrap();
    bytes[at] ^= 0xff;
    let tampered = dir.path().join("tampered.tar");
    std::fs::write(&tampered, &bytes).unwrap();
    let code = reason::IMG_CHECKSUM_MISMATCH.exit_code;
    let run = b.run(["image", "import", tampered.to_str().unwrap()]).failure(code);
    assert!(run.stderr.contains(&digest), "names the manifest's digest: {run}");
    assert!(run.stderr.contains("hint (IMG_CHECKSUM_MISMATCH)"), "{run}");
    assert_eq!(cached_files(&b), Vec::<PathBuf>::new());

    let cut = dir.path().join("cut.tar");
    std::fs::write(&cut, &bytes[..at]).unwrap();
    let run = b
        .run(["image", "import", cut.to_str().unwrap()])
        .failure(reason::XFER_BAD_ARCHIVE.exit_code);
    assert!(run.stderr.contains("hint (XFER_BAD_ARCHIVE)"), "{run}");
    assert_eq!(cached_files(&b), Vec::<PathBuf>::new());
}

#[test]
fn export_of_an_image_not_cached_errors_with_a_hint_and_writes_nothing() {
    let a = Kubelab::new();
    let digest = home_with_image(&a, &test_data(1000, 23));
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    let archive_arg = archive.to_str().unwrap();
    let run =
        a.run(["image", "export", archive_arg, "nosuch"]).failure(reason::IMG_NOT_FOUND.exit_code);
    assert!(run.stderr.contains("known images: debian-12, ubuntu-24.04"), "{run}");
    assert!(run.stderr.contains("hint (IMG_NOT_FOUND)"), "{run}");
    // The default is `up`'s image, which is not cached; the error lists what is.
    let run = a.run(["image", "export", archive_arg]).failure(reason::IMG_NOT_CACHED.exit_code);
    assert!(run.stderr.contains("no cached image matches \"ubuntu-24.04\""), "{run}");
    assert!(run.stderr.contains(&format!("sha256:{}", &digest[..12])), "{run}");
    assert!(run.stderr.contains("hint (IMG_NOT_CACHED)"), "{run}");
    assert_eq!(files_in(dir.path()), Vec::<PathBuf>::new());
}

#[test]
fn export_replaces_a_link_instead_of_writing_through_it() {
    let a = Kubelab::new();
    let digest = home_with_image(&a, &test_data(1000, 24));
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("precious");
    std::fs::write(&victim, "keep").unwrap();
    let archive = dir.path().join("image.tar");
    std::os::unix::fs::symlink(&victim, &archive).unwrap();
    a.run(["image", "export", archive.to_str().unwrap(), &digest]).success();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    assert!(std::fs::symlink_metadata(&archive).unwrap().is_file());
}
