//! Merge and remove on many kubeconfig shapes, and the install/uninstall round trip.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use super::*;

/// kubeadm's admin.conf shape (placeholder base64 data).
const ADMIN_CONF: &str = include_str!("../../tests/fixtures/kubeconfig/admin.conf");
/// A user's kubeconfig with extensions and unknown fields everywhere; current is `prod`.
const RICH: &str = include_str!("../../tests/fixtures/kubeconfig/rich.yaml");
const SERVER: &str = "https://192.168.61.10:6443";

fn entries(name: &str) -> Entries {
    entries_from_admin_conf(ADMIN_CONF, name, SERVER).unwrap()
}

fn rich() -> Kubeconfig {
    Kubeconfig::parse(RICH).unwrap()
}

fn context_names(doc: &Kubeconfig) -> Vec<&str> {
    doc.contexts.iter().map(|c| c.name.as_str()).collect()
}

#[test]
fn admin_conf_becomes_profile_entries_pointing_at_the_host_only_address() {
    let e = entries("lab");
    assert_eq!(e.name(), "lab");
    assert_eq!(e.cluster.name, "lab");
    assert_eq!(e.cluster.cluster.server.as_deref(), Some(SERVER));
    assert_eq!(
        e.cluster.cluster.certificate_authority_data.as_deref(),
        Some("TkVXLUNMVVNURVItQ0E=")
    );
    assert_eq!(e.user.name, "lab");
    assert_eq!(e.user.user.client_key_data.as_deref(), Some("QURNSU4tS0VZ"));
    assert_eq!(e.context.context.cluster.as_deref(), Some("lab"));
    assert_eq!(e.context.context.user.as_deref(), Some("lab"));
}

#[test]
fn admin_conf_with_file_references_or_wrong_shape_is_refused() {
    let cases = [
        ADMIN_CONF.replace(
            "certificate-authority-data: TkVXLUNMVVNURVItQ0E=",
            "certificate-authority: /etc/kubernetes/pki/ca.crt",
        ),
        ADMIN_CONF
            .replace("client-key-data: QURNSU4tS0VZ", "client-key: /etc/kubernetes/pki/admin.key"),
        ADMIN_CONF.replace("users:", "users: []\nx:"),
        ADMIN_CONF.replace("clusters:", "clusters:\n- name: other\n  cluster: {server: https://x}"),
    ];
    for text in cases {
        let err = entries_from_admin_conf(&text, "lab", SERVER).unwrap_err();
        assert!(matches!(err, KubeconfigError::AdminConf { .. }), "{err}: {text}");
    }
    let err = entries_from_admin_conf("clusters: [", "lab", SERVER).unwrap_err();
    assert!(matches!(err, KubeconfigError::ParseAdminConf { .. }), "{err}");
}

#[test]
fn server_url_brackets_ipv6() {
    assert_eq!(server_url("192.168.61.10".parse().unwrap()), SERVER);
    assert_eq!(server_url("fd00::10".parse().unwrap()), "https://[fd00::10]:6443");
}

#[test]
fn merge_into_an_empty_document_makes_a_complete_kubeconfig() {
    let (doc, previous) = merge(Kubeconfig::default(), &entries("lab"), true);
    assert_eq!(previous, None);
    assert_eq!(doc.api_version.as_deref(), Some("v1"));
    assert_eq!(doc.kind.as_deref(), Some("Config"));
    assert_eq!(doc.current(), Some("lab"));
    assert_eq!((doc.clusters.len(), doc.users.len(), doc.contexts.len()), (1, 1, 1));
}

#[test]
fn merge_keeps_every_other_entry_and_field_and_remove_restores_the_document() {
    let (merged, previous) = merge(rich(), &entries("lab"), true);
    assert_eq!(previous.as_deref(), Some("prod"));
    assert_eq!(merged.current(), Some("lab"));
    assert_eq!(context_names(&merged), ["prod", "dev", "lab"]);
    // Through YAML and back, as the file would be written and read again.
    let reread = Kubeconfig::parse(&merged.to_yaml().unwrap()).unwrap();
    assert_eq!(reread, merged);
    assert_eq!(remove(reread, "lab", previous.as_deref()), rich());
}

#[test]
fn keep_context_leaves_current_context_alone() {
    let (merged, previous) = merge(rich(), &entries("lab"), false);
    assert_eq!((merged.current(), previous), (Some("prod"), None));
}

#[test]
fn rerun_while_current_does_not_remember_itself() {
    let (merged, _) = merge(rich(), &entries("lab"), true);
    let (again, previous) = merge(merged.clone(), &entries("lab"), true);
    assert_eq!(previous, None);
    assert_eq!(again, merged);
}

#[test]
fn same_name_entries_are_replaced_in_place_and_the_old_ca_is_gone() {
    let old = RICH
        .replace("name: dev\n", "name: lab\n")
        .replace("{cluster: dev, user: alice}", "{cluster: lab, user: lab}");
    let mut doc = Kubeconfig::parse(&old).unwrap();
    // A duplicate the user (or another tool) left behind.
    doc.clusters.push(NamedCluster { name: "lab".into(), ..NamedCluster::default() });
    doc.clusters[1].cluster.certificate_authority_data = Some("T0xELUNB".into());
    let (merged, _) = merge(doc, &entries("lab"), true);
    let names: Vec<_> = merged.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["prod", "lab"]);
    assert_eq!(merged.clusters[1], entries("lab").cluster);
    assert_eq!(merged.clusters[1].cluster.certificate_authority, None, "the old file CA is gone");
    assert!(!merged.to_yaml().unwrap().contains("T0xELUNB"));
    assert_eq!(context_names(&merged), ["prod", "lab"]);
}

#[test]
fn remove_touches_only_the_named_entries() {
    let (merged, _) = merge(rich(), &entries("lab"), false);
    let removed = remove(merged, "lab", Some("dev"));
    assert_eq!(removed, rich(), "current was prod, not lab: nothing to restore");
    assert_eq!(remove(rich(), "absent", None), rich());
}

#[test]
fn remove_unsets_current_context_when_the_remembered_one_is_gone() {
    let (merged, previous) = merge(rich(), &entries("lab"), true);
    let without_prod = remove(merged, "prod", None);
    let removed = remove(without_prod, "lab", previous.as_deref());
    assert_eq!(removed.current(), None);
    assert_eq!(context_names(&removed), ["dev"]);
}

#[test]
fn dangling_current_context_is_remembered_but_not_restored() {
    let doc = Kubeconfig::parse(&RICH.replace("current-context: prod", "current-context: ghost"))
        .unwrap();
    let (merged, previous) = merge(doc.clone(), &entries("lab"), true);
    assert_eq!(previous.as_deref(), Some("ghost"));
    assert_eq!(remove(merged, "lab", previous.as_deref()).current(), None);
    // Not ours: a dangling current-context is left as the user had it.
    assert_eq!(remove(doc.clone(), "lab", None), doc);
}

#[test]
fn target_path_is_the_first_non_empty_entry_of_kubeconfig_else_home() {
    let home = Path::new("/home/u");
    let default = PathBuf::from("/home/u/.kube/config");
    assert_eq!(target_path(None, home), default);
    assert_eq!(target_path(Some(OsStr::new("")), home), default);
    let sep = if cfg!(windows) { ";" } else { ":" };
    for (list, expected) in [
        (format!("/a/one{sep}/b/two"), "/a/one"),
        (format!("{sep}{sep}/b/two{sep}/c"), "/b/two"),
        ("/only".to_owned(), "/only"),
    ] {
        assert_eq!(target_path(Some(OsStr::new(&list)), home), PathBuf::from(expected), "{list}");
    }
    assert_eq!(target_path(Some(OsStr::new(sep)), home), default);
}

#[test]
fn install_then_uninstall_round_trips_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let (config, profile) = (dir.path().join("config"), dir.path().join("profile"));
    fs::create_dir(&profile).unwrap();
    fs::write(&config, RICH).unwrap();
    let installed = install(&config, &profile, ADMIN_CONF, "lab", SERVER, true).unwrap();
    assert_eq!(installed.previous_context.as_deref(), Some("prod"));
    assert_eq!(remembered_context(&profile).unwrap().as_deref(), Some("prod"));
    assert_eq!(read(&config).unwrap().current(), Some("lab"));
    let standalone = read(&installed.standalone).unwrap();
    assert_eq!(standalone, merge(Kubeconfig::default(), &entries("lab"), true).0);
    assert_eq!(installed.standalone, standalone_path(&profile));
    // A second `up` keeps the remembered context; `--update` reuses the standalone copy.
    let again = fs::read_to_string(&installed.standalone).unwrap();
    install(&config, &profile, &again, "lab", SERVER, true).unwrap();
    assert_eq!(remembered_context(&profile).unwrap().as_deref(), Some("prod"));
    uninstall(&config, &profile, "lab").unwrap();
    assert_eq!(read(&config).unwrap(), rich());
}

#[test]
fn install_into_a_missing_or_empty_file_and_uninstall_without_memory() {
    let dir = tempfile::tempdir().unwrap();
    for initial in [None, Some("")] {
        let config = dir.path().join(format!("kube-{}/config", initial.is_some()));
        if let Some(text) = initial {
            fs::create_dir_all(config.parent().unwrap()).unwrap();
            fs::write(&config, text).unwrap();
        }
        let installed = install(&config, dir.path(), ADMIN_CONF, "lab", SERVER, true).unwrap();
        assert_eq!(installed.previous_context, None);
        assert_eq!(context_names(&read(&config).unwrap()), ["lab"]);
        uninstall(&config, dir.path(), "lab").unwrap();
        let doc = read(&config).unwrap();
        assert!(doc.clusters.is_empty() && doc.users.is_empty() && doc.contexts.is_empty());
        assert_eq!(doc.current(), None);
    }
    let absent = dir.path().join("absent/config");
    uninstall(&absent, dir.path(), "lab").unwrap();
    assert!(!absent.parent().unwrap().exists());
}

#[test]
fn only_the_first_file_of_kubeconfig_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    fs::write(&second, RICH).unwrap();
    let list = std::env::join_paths([&first, &second]).unwrap();
    let target = target_path(Some(&list), dir.path());
    assert_eq!(target, first);
    install(&target, dir.path(), ADMIN_CONF, "lab", SERVER, true).unwrap();
    assert_eq!(fs::read_to_string(&second).unwrap(), RICH);
    assert_eq!(context_names(&read(&first).unwrap()), ["lab"]);
}
