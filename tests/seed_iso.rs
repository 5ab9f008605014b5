//! The seed ISO as other tools see it: golden `xorriso`/`isoinfo` output, every file read
//! back byte for byte through the Rock Ridge and Joliet trees, and a property test that
//! `render` + `write_iso` never panic and always give an image that reads back.
//!
//! Needs `xorriso` and `isoinfo` (Debian: xorriso, genisoimage). Golden files live in
//! `tests/fixtures/seed/`; after an intended change, rerun with `KUBELAB_BLESS=1` to
//! rewrite them, and review the diff.
#![allow(clippy::unwrap_used)] // a test fails by panicking

use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::Command;

use hadris_iso::read::IsoImage;
use kubelab::cloudinit::{self, CloudInitError, SeedFiles, SeedSpec};
use proptest::prelude::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed").join(name)
}

fn read_fixture(name: &str) -> String {
    fs::read_to_string(fixture(name)).unwrap()
}

/// The seed of the golden tests: fixed keys, instance id and addresses.
fn fixture_spec() -> SeedSpec {
    SeedSpec {
        hostname: "lab-m01".into(),
        instance_id: "lab-m01-0123456789abcdef".into(),
        user: cloudinit::DEFAULT_USER.into(),
        user_public_key: read_fixture("user_ed25519.pub"),
        host_key_private: read_fixture("host_ed25519"),
        host_key_public: read_fixture("host_ed25519.pub"),
        nat_mac: "52:54:00:12:34:56".into(),
        hostonly_mac: "52:54:00:ab:cd:ef".into(),
        hostonly_address: [192, 168, 59, 11].into(),
        hostonly_prefix: 24,
        extra_user_data: None,
    }
}

/// Compares `actual` with the golden file `name`, or rewrites it under `KUBELAB_BLESS`.
fn assert_golden(name: &str, actual: &str) {
    let path = fixture(name);
    if std::env::var_os("KUBELAB_BLESS").is_some() {
        fs::write(&path, actual).unwrap();
        return;
    }
    let expected = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        actual, expected,
        "{name} differs from the golden file (KUBELAB_BLESS=1 rewrites it)"
    );
}

/// Runs a tool and returns its stdout; a missing tool fails the test with a hint.
fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).env("LC_ALL", "C").output().unwrap_or_else(|e| {
        panic!(
            "cannot run {program} ({e}): install it (Debian: apt-get install xorriso genisoimage)"
        )
    });
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn write_fixture_iso(dir: &Path) -> (SeedFiles, PathBuf) {
    let files = cloudinit::render(&fixture_spec()).unwrap();
    let iso = dir.join("seed.iso");
    cloudinit::write_iso(&files, &iso).unwrap();
    (files, iso)
}

fn documents(files: &SeedFiles) -> [(&'static str, &str); 3] {
    [
        ("user-data", &files.user_data),
        ("meta-data", &files.meta_data),
        ("network-config", &files.network_config),
    ]
}

#[test]
fn rendered_documents_match_golden_files() {
    let files = cloudinit::render(&fixture_spec()).unwrap();
    for (name, text) in documents(&files) {
        assert_golden(&format!("expected/{name}"), text);
    }
}

#[test]
fn iso_has_cidata_label_joliet_rock_ridge_and_lowercase_names() {
    let dir = tempfile::tempdir().unwrap();
    let (_, iso) = write_fixture_iso(dir.path());
    let iso = iso.to_str().unwrap();
    assert_golden("expected/xorriso-ls.txt", &run("xorriso", &["-indev", iso, "-ls"]));
    assert_golden("expected/isoinfo-d.txt", &run("isoinfo", &["-d", "-i", iso]));
    assert_golden("expected/isoinfo-R-l.txt", &run("isoinfo", &["-R", "-l", "-i", iso]));
    assert_golden("expected/isoinfo-J-l.txt", &run("isoinfo", &["-J", "-l", "-i", iso]));
    // cloud-init finds the seed by label through blkid, which may read the label from
    // the Joliet descriptor rather than the primary one.
    assert_eq!(run("blkid", &["-p", "-o", "value", "-s", "LABEL", iso]), "cidata\n");
}

#[test]
fn every_file_reads_back_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let (files, iso) = write_fixture_iso(dir.path());
    let out = dir.path().join("extracted");
    let iso_arg = iso.to_str().unwrap();
    run("xorriso", &["-osirrox", "on", "-indev", iso_arg, "-extract", "/", out.to_str().unwrap()]);
    let mut extracted: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    extracted.sort();
    assert_eq!(extracted, ["meta-data", "network-config", "user-data"]);
    for (name, text) in documents(&files) {
        assert_eq!(fs::read_to_string(out.join(name)).unwrap(), text, "xorriso {name}");
        let path = format!("/{name}");
        for tree in ["-R", "-J"] {
            let read = run("isoinfo", &[tree, "-i", iso_arg, "-x", &path]);
            assert_eq!(read, text, "isoinfo {tree} {name}");
        }
    }
}

#[test]
fn same_input_gives_byte_identical_images() {
    let dir = tempfile::tempdir().unwrap();
    let (files, first) = write_fixture_iso(dir.path());
    let second = dir.path().join("again.iso");
    cloudinit::write_iso(&files, &second).unwrap();
    assert!(fs::read(first).unwrap() == fs::read(second).unwrap());
}

/// Reads `name` from the image with hadris-iso's reader.
fn read_back(iso: &Path, name: &str) -> Vec<u8> {
    let image = IsoImage::open(BufReader::new(File::open(iso).unwrap())).unwrap();
    let entry = image.find_path(name).unwrap().unwrap_or_else(|| panic!("{name} missing"));
    image.read_file(&entry).unwrap()
}

/// Strings that are valid for the field most of the time, and anything at all otherwise.
fn mostly(valid: &'static str, any: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![7 => valid, 1 => any]
}

/// Extra user-data: valid cloud-config with arbitrary strings (written as JSON, which
/// YAML readers accept), cloud-config made of keys and YAML punctuation, or any text.
fn extra_user_data() -> impl Strategy<Value = Option<String>> {
    let valid = (
        prop::collection::vec("\\PC{0,30}", 0..4),
        prop::collection::vec("[a-z0-9][a-z0-9.+-]{0,9}", 0..3),
    )
        .prop_map(|(runcmd, packages)| {
            let doc = serde_json::json!({ "runcmd": runcmd, "packages": packages });
            format!("#cloud-config\n{doc}\n")
        });
    let fragment = prop_oneof![
        Just("runcmd:"),
        Just("packages:"),
        Just("users:"),
        Just("write_files:"),
        Just("hostname:"),
        Just("ssh_keys:"),
        Just("bootcmd:"),
        Just("cloud_final_modules:"),
        Just("\n"),
        Just("\n  "),
        Just("- "),
        Just(": "),
        Just("["),
        Just("]"),
        Just("{"),
        Just("}"),
        Just(", "),
        Just("'"),
        Just("\""),
        Just("0644"),
        Just("yes"),
        Just("kubelab"),
        Just("&a "),
        Just("*a"),
        Just("<<: "),
        Just("!!binary "),
        Just("\t"),
        Just("#"),
        Just("name: "),
        Just("default"),
        Just("~"),
        Just("|\n  x\n"),
    ];
    let fragments = prop::collection::vec(fragment, 0..24)
        .prop_map(|parts| format!("#cloud-config\n{}", parts.concat()));
    prop_oneof![
        3 => Just(None),
        4 => valid.prop_map(Some),
        2 => fragments.prop_map(Some),
        1 => any::<String>().prop_map(Some),
    ]
}

fn seed_spec() -> impl Strategy<Value = SeedSpec> {
    let base = fixture_spec();
    let address = prop_oneof![
        3 => (1u8..255).prop_map(|host| ([192, 168, 59, host], 24u8)),
        1 => (any::<[u8; 4]>(), 0u8..40),
    ];
    (
        mostly("[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?|yes|on|0644|null|1e3", "\\PC{0,70}"),
        mostly("[a-z_][a-z0-9_-]{0,8}", "\\PC{0,40}"),
        mostly("[0-9a-f][02468ace](:[0-9a-fA-F]{2}){5}", "[0-9a-fA-F:]{0,20}"),
        address,
        prop_oneof![8 => Just(None), 1 => "\\PC{0,120}".prop_map(Some)],
        extra_user_data(),
    )
        .prop_map(move |(hostname, user, mac, (address, prefix), bad_key, extra)| {
            let mut spec = SeedSpec {
                hostname,
                user,
                hostonly_mac: mac,
                hostonly_address: address.into(),
                hostonly_prefix: prefix,
                extra_user_data: extra,
                ..base.clone()
            };
            if let Some(key) = bad_key {
                spec.host_key_private = key;
            }
            spec
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn render_and_write_never_panic_and_ok_images_read_back(spec in seed_spec()) {
        match cloudinit::render(&spec) {
            Ok(files) => {
                let dir = tempfile::tempdir().unwrap();
                let iso = dir.path().join("seed.iso");
                cloudinit::write_iso(&files, &iso).unwrap();
                for (name, text) in documents(&files) {
                    prop_assert_eq!(read_back(&iso, &format!("/{name}")), text.as_bytes());
                }
                let user_data: serde_json::Value = serde_saphyr::from_str(&files.user_data).unwrap();
                prop_assert_eq!(user_data["hostname"].as_str(), Some(spec.hostname.as_str()));
                prop_assert_eq!(user_data["users"][0]["name"].as_str(), Some(spec.user.as_str()));
                // Strings from valid extra user-data come through unchanged.
                let extra = spec.extra_user_data.as_deref().unwrap_or_default();
                let json = extra.strip_prefix("#cloud-config\n").unwrap_or_default();
                if let Ok(serde_json::Value::Object(extra)) = serde_json::from_str(json) {
                    for key in ["runcmd", "packages"] {
                        prop_assert_eq!(&user_data[key], &extra[key]);
                    }
                }
            }
            Err(CloudInitError::Template { .. } | CloudInitError::Serialize { .. }
                | CloudInitError::WriteIso { .. }) => prop_assert!(false, "internal error"),
            Err(_) => {}
        }
    }
}
