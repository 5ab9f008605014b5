//! `image bake`'s guest steps on its one node: the prerequisites (`00-prereqs.sh`),
//! kubeadm's and the CNI's images (`50-pull.sh`), what the guest then holds (package
//! versions from dpkg, image digests from the runtime through crictl), and the clean-up
//! for cloning (`55-clean.sh`). What it holds is read before the clean-up, from the
//! guest itself, so the manifest says what the image has, not what was asked for.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::cni_images;
use super::session::{Script, Session};
use crate::bootstrap::log::LogFile;
use crate::bootstrap::{BootstrapError, Cluster};

/// Pulls kubeadm's and the CNI's images.
const PULL: Script = Script::new("50-pull.sh", include_str!("../../../scripts/node/50-pull.sh"));
/// Cleans the guest for cloning.
const CLEAN: Script = Script::new("55-clean.sh", include_str!("../../../scripts/node/55-clean.sh"));
/// The packages whose versions the manifest records (those a node's Kubernetes runs on).
const PACKAGES: &[&str] =
    &["kubeadm", "kubelet", "kubectl", "kubernetes-cni", "cri-tools", "containerd", "runc"];

/// What a baked guest holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contents {
    /// Package -> version.
    pub packages: BTreeMap<String, String>,
    /// Image reference -> digest.
    pub images: BTreeMap<String, String>,
}

/// Prepares the cluster's only node to be baked: prerequisites, images (through the
/// cluster's registry mirror, if any), the record of what it holds, clean-up.
pub fn bake_node(cluster: &Cluster<'_>) -> Result<Contents, BootstrapError> {
    let node = cluster
        .nodes
        .first()
        .ok_or_else(|| BootstrapError::NoControlPlane { profile: cluster.name.to_owned() })?;
    let log = LogFile::open(cluster.dir)?;
    let session = Session::open(cluster, &log, node)?;
    super::run_prereqs(cluster, &session)?;
    let mut args = vec![cluster.kubernetes_version];
    args.extend(cni_images());
    session.script("pull", &PULL, &args)?;
    let contents = contents(&session, cluster.kubernetes_version)?;
    session.script("clean", &CLEAN, &[&node.ssh.user])?;
    Ok(contents)
}

/// Reads the packages and images the guest holds.
fn contents(session: &Session<'_>, version: &str) -> Result<Contents, BootstrapError> {
    let query =
        format!("dpkg-query -W -f='${{Package}} ${{Version}}\\n' {} || true", PACKAGES.join(" "));
    let packages = parse_packages(&session.capture("contents", &query)?);
    let listed = session.capture(
        "contents",
        &format!("kubeadm config images list --kubernetes-version {version}"),
    )?;
    let mut images = BTreeMap::new();
    for reference in listed.lines().map(str::trim).filter(|l| !l.is_empty()).chain(cni_images()) {
        let json =
            session.capture("contents", &format!("sudo crictl inspecti -o json {reference}"))?;
        images.insert(reference.to_owned(), digest_of(&json, reference, &session.node().name)?);
    }
    Ok(Contents { packages, images })
}

/// `dpkg-query -W -f='${Package} ${Version}\n'` lines: name -> version.
fn parse_packages(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(_, version)| !version.is_empty())
        .map(|(name, version)| (name.to_owned(), version.to_owned()))
        .collect()
}

#[derive(Deserialize)]
struct Inspected {
    status: ImageStatus,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImageStatus {
    #[serde(default)]
    repo_digests: Vec<String>,
}

/// The digest of `reference` in `crictl inspecti -o json`'s output: its first repo digest
/// (`repository@sha256:...`).
fn digest_of(json: &str, reference: &str, node: &str) -> Result<String, BootstrapError> {
    let missing =
        || BootstrapError::NoDigest { node: node.to_owned(), image: reference.to_owned() };
    let inspected: Inspected = serde_json::from_str(json).map_err(|_| missing())?;
    let repository = reference.rsplit_once(':').map_or(reference, |(repo, _)| repo);
    inspected
        .status
        .repo_digests
        .iter()
        .find_map(|d| d.strip_prefix(repository)?.strip_prefix('@'))
        .map(str::to_owned)
        .ok_or_else(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_strict() {
        for script in [&PULL, &CLEAN] {
            assert!(script.body.starts_with("#!/usr/bin/env bash\n"), "{}", script.name);
            assert!(script.body.contains("set -euo pipefail"), "{}", script.name);
        }
    }

    #[test]
    fn packages_and_digests_are_read_from_the_tools_output() {
        let packages =
            parse_packages("kubeadm 1.34.2-1.1\ncontainerd 1.6.20~ds1-1+deb12u3\nrunc \n");
        assert_eq!(packages.len(), 2);
        assert_eq!(packages["containerd"], "1.6.20~ds1-1+deb12u3");
        let digest = format!("sha256:{}", "a".repeat(64));
        let json = format!(
            r#"{{"status": {{"id": "x", "repoTags": ["registry.k8s.io/pause:3.10.1"],
               "repoDigests": ["registry.k8s.io/pause@{digest}"]}}, "info": {{}}}}"#
        );
        assert_eq!(digest_of(&json, "registry.k8s.io/pause:3.10.1", "n").unwrap(), digest);
        let other = r#"{"status": {"repoDigests": ["docker.io/x@sha256:00"]}}"#;
        assert!(matches!(
            digest_of(other, "registry.k8s.io/pause:3.10.1", "n"),
            Err(BootstrapError::NoDigest { .. })
        ));
        assert!(digest_of("not json", "a/b:c", "n").is_err());
    }
}
