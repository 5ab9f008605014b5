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
const HOME_ID: &str = "0123456789abcdef0123456789abcdef";

fn owner(name: &str) -> Owner {
    Owner { home_id: HOME_ID.to_owned(), profile: name.to_owned() }
}

fn entries(name: &str) -> Entries {
    entries_from_admin_conf(ADMIN_CONF, &owner(name), SERVER).unwrap()
}

/// Merges `name`'s entries, which must not clash.
fn merge_ok(doc: Kubeconfig, name: &str, set_current: bool) -> (Kubeconfig, Option<String>) {
    merge(doc, &entries(name), &owner(name), set_current).unwrap()
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
        let err = entries_from_admin_conf(&text, &owner("lab"), SERVER).unwrap_err();
        assert!(matches!(err, KubeconfigError::AdminConf { .. }), "{err}: {text}");
    }
    let err = entries_from_admin_conf("clusters: [", &owner("lab"), SERVER).unwrap_err();
    assert!(matches!(err, KubeconfigError::ParseAdminConf { .. }), "{err}");
}

#[test]
fn server_url_brackets_ipv6() {
    assert_eq!(server_url("192.168.61.10".parse().unwrap()), SERVER);
    assert_eq!(server_url("fd00::10".parse().unwrap()), "https://[fd00::10]:6443");
}

#[test]
fn merge_into_an_empty_document_makes_a_complete_kubeconfig() {
    let (doc, previous) = merge_ok(Kubeconfig::default(), "lab", true);
    assert_eq!(previous, None);
    assert_eq!(doc.api_version.as_deref(), Some("v1"));
    assert_eq!(doc.kind.as_deref(), Some("Config"));
    assert_eq!(doc.current(), Some("lab"));
    assert_eq!((doc.clusters.len(), doc.users.len(), doc.contexts.len()), (1, 1, 1));
}

#[test]
fn merge_keeps_every_other_entry_and_field_and_remove_restores_the_document() {
    let (merged, previous) = merge_ok(rich(), "lab", true);
    assert_eq!(previous.as_deref(), Some("prod"));
    assert_eq!(merged.current(), Some("lab"));
    assert_eq!(context_names(&merged), ["prod", "dev", "lab"]);
    // Through YAML and back, as the file would be written and read again.
    let reread = Kubeconfig::parse(&merged.to_yaml().unwrap()).unwrap();
    assert_eq!(reread, merged);
    assert_eq!(remove(reread, &owner("lab"), previous.as_deref()), rich());
}

#[test]
fn keep_context_leaves_current_context_alone() {
    let (merged, previous) = merge_ok(rich(), "lab", false);
    assert_eq!((merged.current(), previous), (Some("prod"), None));
}

#[test]
fn rerun_while_current_does_not_remember_itself() {
    let (merged, _) = merge_ok(rich(), "lab", true);
    let (again, previous) = merge_ok(merged.clone(), "lab", true);
    assert_eq!(previous, None);
    assert_eq!(again, merged);
}

#[test]
fn own_same_name_entries_are_replaced_in_place_and_the_old_ca_is_gone() {
    let (mut doc, _) = merge_ok(rich(), "lab", true);
    doc.clusters[2].cluster.certificate_authority_data = Some("T0xELUNB".into());
    // A duplicate an interrupted run (or a copy-paste) left behind, also marked.
    doc.clusters.push(doc.clusters[2].clone());
    doc.clusters.insert(1, doc.clusters[2].clone());
    let (again, _) = merge_ok(doc, "lab", true);
    let names: Vec<_> = again.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["prod", "lab", "dev"]);
    assert_eq!(again.clusters[1], entries("lab").cluster);
    assert!(!again.to_yaml().unwrap().contains("T0xELUNB"));
    assert_eq!(context_names(&again), ["prod", "dev", "lab"]);
}

#[test]
fn entries_carry_the_owner_marker_through_yaml() {
    let e = entries("lab");
    let marker = |ext: &Option<Vec<NamedExtension>>| {
        let ext = ext.as_ref().unwrap().iter().find(|x| x.name == OWNER_EXTENSION).unwrap();
        ext.extension.clone()
    };
    let expected = serde_json::json!({"home": HOME_ID, "profile": "lab"});
    assert_eq!(marker(&e.cluster.cluster.extensions), expected);
    assert_eq!(marker(&e.user.user.extensions), expected);
    assert_eq!(marker(&e.context.context.extensions), expected);
    let (doc, _) = merge_ok(Kubeconfig::default(), "lab", true);
    let reread = Kubeconfig::parse(&doc.to_yaml().unwrap()).unwrap();
    assert_eq!(check_owned(&reread, &owner("lab")), Ok(()));
    // Another home's profile of the same name does not own them.
    let stranger = Owner { home_id: "f".repeat(32), profile: "lab".into() };
    assert_eq!(check_owned(&reread, &stranger), Err(Clash { kind: "cluster", name: "lab".into() }));
    // An admin.conf that arrives with someone's marker gets ours instead.
    let text = standalone(&entries_from_admin_conf(ADMIN_CONF, &stranger, SERVER).unwrap());
    let again = entries_from_admin_conf(&text.to_yaml().unwrap(), &owner("lab"), SERVER).unwrap();
    assert_eq!(again, e);
}

/// A user's file with a foreign `lab` cluster, user or context (unmarked, or another
/// home's).
fn with_foreign_lab(kind: &str, marked_by_other_home: bool) -> Kubeconfig {
    let mut doc = rich();
    let other = Owner { home_id: "e".repeat(32), profile: "lab".into() };
    let (theirs, _) = merge(
        Kubeconfig::default(),
        &entries_from_admin_conf(ADMIN_CONF, &other, SERVER).unwrap(),
        &other,
        false,
    )
    .unwrap();
    match kind {
        "cluster" => {
            doc.clusters.push(NamedCluster { name: "lab".into(), ..rich().clusters[0].clone() })
        }
        "user" => doc.users.push(NamedUser { name: "lab".into(), ..rich().users[0].clone() }),
        _ => doc.contexts.push(NamedContext { name: "lab".into(), ..rich().contexts[0].clone() }),
    }
    if marked_by_other_home {
        match kind {
            "cluster" => *doc.clusters.last_mut().unwrap() = theirs.clusters[0].clone(),
            "user" => *doc.users.last_mut().unwrap() = theirs.users[0].clone(),
            _ => *doc.contexts.last_mut().unwrap() = theirs.contexts[0].clone(),
        }
    }
    doc
}

#[test]
fn foreign_same_name_entries_are_refused_and_never_removed() {
    for kind in ["cluster", "user", "context"] {
        for other_home in [false, true] {
            let doc = with_foreign_lab(kind, other_home);
            let err = merge(doc.clone(), &entries("lab"), &owner("lab"), true).unwrap_err();
            assert_eq!(
                err,
                Clash {
                    kind: match kind {
                        "cluster" => "cluster",
                        "user" => "user",
                        _ => "context",
                    },
                    name: "lab".into()
                }
            );
            assert_eq!(remove(doc.clone(), &owner("lab"), Some("dev")), doc, "{kind}");
        }
    }
    // Theirs is current: delete leaves current-context alone.
    let mut doc = with_foreign_lab("context", false);
    doc.current_context = Some("lab".into());
    assert_eq!(remove(doc.clone(), &owner("lab"), Some("dev")), doc);
}

#[test]
fn install_over_a_foreign_entry_leaves_the_file_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let text =
        format!("{RICH}# mine\n").replace("- name: dev\n  cluster:", "- name: lab\n  cluster:");
    fs::write(&config, &text).unwrap();
    let err = install(&config, dir.path(), ADMIN_CONF, &owner("lab"), SERVER, true).unwrap_err();
    assert!(matches!(&err, KubeconfigError::NameTaken { kind: "cluster", .. }), "{err}");
    assert_eq!(crate::reason::reason(&crate::Error::from(err)).id, "K8S_KUBECONFIG_NAME_TAKEN");
    assert_eq!(fs::read_to_string(&config).unwrap(), text);
    assert!(matches!(check_free(&config, &owner("lab")), Err(KubeconfigError::NameTaken { .. })));
    assert!(check_free(&dir.path().join("absent"), &owner("lab")).is_ok());
    uninstall(&config, dir.path(), &owner("lab")).unwrap();
    assert_eq!(fs::read_to_string(&config).unwrap(), text, "delete does not touch it either");
}

mod properties {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    /// Scalars as YAML writers leave them, including strings that look like numbers,
    /// booleans or null.
    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1.0e9..1.0e9f64).prop_map(Value::from),
            prop::sample::select(vec![
                "0123",
                "1_000",
                "yes",
                "no",
                "on",
                "null",
                "~",
                "1.10",
                "0x1F",
                "1e3",
                "",
                " lead",
                "a: b",
                "- x",
                "#c",
                "'q'",
                "\"dq\"",
                "tab\there",
                "line\nbreak",
                ".inf",
            ])
            .prop_map(Value::from),
            "[a-zA-Z0-9 .:/_-]{0,12}".prop_map(Value::from),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        scalar().prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("[a-z][a-z0-9-]{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn extra() -> impl Strategy<Value = Extra> {
        prop::collection::btree_map("x-[a-z0-9]{1,6}", value(), 0..3)
    }

    /// Foreign clusters, users and contexts with arbitrary unknown fields and names that
    /// may be the profile's (a clash) or not.
    fn foreign() -> impl Strategy<Value = Kubeconfig> {
        let name = prop_oneof!["[a-z]{1,5}", Just("lab".to_owned())];
        let cluster =
            (name.clone(), extra(), extra()).prop_map(|(name, outer, inner)| NamedCluster {
                name,
                cluster: Cluster {
                    server: Some("https://h".into()),
                    extra: inner,
                    ..Cluster::default()
                },
                extra: outer,
            });
        let user = (name.clone(), extra()).prop_map(|(name, inner)| NamedUser {
            name,
            user: AuthInfo { extra: inner, ..AuthInfo::default() },
            extra: Extra::new(),
        });
        let context = (name, extra()).prop_map(|(name, inner)| NamedContext {
            name,
            context: Context { extra: inner, ..Context::default() },
            extra: Extra::new(),
        });
        (
            prop::collection::vec(cluster, 0..3),
            prop::collection::vec(user, 0..3),
            prop::collection::vec(context, 0..3),
            extra(),
        )
            .prop_map(|(clusters, users, contexts, extra)| Kubeconfig {
                api_version: Some("v1".into()),
                kind: Some("Config".into()),
                clusters,
                users,
                contexts,
                extra,
                ..Kubeconfig::default()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn foreign_entries_survive_merge_and_remove_through_yaml(doc in foreign()) {
            // The user's file as kubelab reads it.
            let doc = Kubeconfig::parse(&doc.to_yaml().unwrap()).unwrap();
            match merge(doc.clone(), &entries("lab"), &owner("lab"), false) {
                Err(_) => prop_assert!(check_owned(&doc, &owner("lab")).is_err()),
                Ok((merged, _)) => {
                    let reread = Kubeconfig::parse(&merged.to_yaml().unwrap()).unwrap();
                    prop_assert_eq!(&reread, &merged);
                    prop_assert_eq!(remove(reread, &owner("lab"), None), doc.clone());
                }
            }
            // Whatever happened, delete leaves every foreign entry.
            prop_assert_eq!(remove(doc.clone(), &owner("lab"), None), doc);
        }

        #[test]
        fn foreign_values_keep_type_through_yaml(doc in foreign()) {
            let yaml = doc.to_yaml().unwrap();
            prop_assert_eq!(Kubeconfig::parse(&yaml).unwrap(), doc, "{}", yaml);
        }
    }
}

#[test]
fn remove_touches_only_the_named_entries() {
    let (merged, _) = merge_ok(rich(), "lab", false);
    let removed = remove(merged, &owner("lab"), Some("dev"));
    assert_eq!(removed, rich(), "current was prod, not lab: nothing to restore");
    assert_eq!(remove(rich(), &owner("absent"), None), rich());
}

#[test]
fn remove_unsets_current_context_when_the_remembered_one_is_gone() {
    let (merged, previous) = merge_ok(rich(), "lab", true);
    let mut without_prod = merged;
    without_prod.contexts.retain(|c| c.name != "prod");
    let removed = remove(without_prod, &owner("lab"), previous.as_deref());
    assert_eq!(removed.current(), None);
    assert_eq!(context_names(&removed), ["dev"]);
}

#[test]
fn dangling_current_context_is_remembered_but_not_restored() {
    let doc = Kubeconfig::parse(&RICH.replace("current-context: prod", "current-context: ghost"))
        .unwrap();
    let (merged, previous) = merge_ok(doc.clone(), "lab", true);
    assert_eq!(previous.as_deref(), Some("ghost"));
    assert_eq!(remove(merged, &owner("lab"), previous.as_deref()).current(), None);
    // Not ours: a dangling current-context is left as the user had it.
    assert_eq!(remove(doc.clone(), &owner("lab"), None), doc);
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
    let installed = install(&config, &profile, ADMIN_CONF, &owner("lab"), SERVER, true).unwrap();
    assert_eq!(installed.previous_context.as_deref(), Some("prod"));
    assert_eq!(remembered_context(&profile).unwrap().as_deref(), Some("prod"));
    assert_eq!(read(&config).unwrap().current(), Some("lab"));
    let standalone = read(&installed.standalone).unwrap();
    assert_eq!(standalone, merge_ok(Kubeconfig::default(), "lab", true).0);
    assert_eq!(installed.standalone, standalone_path(&profile));
    // A second `up` keeps the remembered context; `--update` reuses the standalone copy.
    let again = fs::read_to_string(&installed.standalone).unwrap();
    install(&config, &profile, &again, &owner("lab"), SERVER, true).unwrap();
    assert_eq!(remembered_context(&profile).unwrap().as_deref(), Some("prod"));
    uninstall(&config, &profile, &owner("lab")).unwrap();
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
        let installed =
            install(&config, dir.path(), ADMIN_CONF, &owner("lab"), SERVER, true).unwrap();
        assert_eq!(installed.previous_context, None);
        assert_eq!(context_names(&read(&config).unwrap()), ["lab"]);
        uninstall(&config, dir.path(), &owner("lab")).unwrap();
        let doc = read(&config).unwrap();
        assert!(doc.clusters.is_empty() && doc.users.is_empty() && doc.contexts.is_empty());
        assert_eq!(doc.current(), None);
    }
    let absent = dir.path().join("absent/config");
    uninstall(&absent, dir.path(), &owner("lab")).unwrap();
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
    install(&target, dir.path(), ADMIN_CONF, &owner("lab"), SERVER, true).unwrap();
    assert_eq!(fs::read_to_string(&second).unwrap(), RICH);
    assert_eq!(context_names(&read(&first).unwrap()), ["lab"]);
}
