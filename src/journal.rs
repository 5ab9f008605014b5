//! The profile's resource journal: every resource kubelab is about to create is recorded
//! here *before* it is created (an intent, fsynced), so an `up` killed at any point leaves a
//! record of everything that may exist; `up` resumes from it and `delete` removes exactly
//! what it lists and nothing else. One JSON object a line, append-only; a torn line
//! (kill -9 mid-write: never valid JSON, as its closing brace is missing) is ignored.
//!
//! The journal is input like profile.json: `delete` passes its names to the hypervisor,
//! so every entry read back must name something the profile could have made (its nodes
//! `<profile>` and `<profile>-mNN`, its two networks); any other is
//! [`JournalError::Corrupt`], and nothing is done with the journal.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cluster::{MAX_NODES, node_name};
use crate::driver::network_names;
use crate::profile::{Profile, ProfileName};

/// Errors reading or writing the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Appending an entry failed.
    #[error("cannot record {entry:?} in the journal {}", path.display())]
    Append {
        /// The journal file.
        path: PathBuf,
        /// The entry being recorded.
        entry: Resource,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Reading or rewriting the journal failed.
    #[error("cannot read the journal {}", path.display())]
    Read {
        /// The journal file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line is valid JSON but not an entry this profile could have recorded: changed by
    /// hand or tampered with.
    #[error("the journal {} is corrupt: line {line}: {why}", path.display())]
    Corrupt {
        /// The journal file.
        path: PathBuf,
        /// The line at fault, from 1.
        line: usize,
        /// What is wrong with it.
        why: String,
    },
}

/// One resource kubelab creates outside the profile directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Resource {
    /// A virtual network (libvirt network, VirtualBox host-only network).
    Network(String),
    /// A VM with its own disks.
    Vm(String),
}

impl Resource {
    /// Why profile `profile` could not have recorded this entry, if it could not.
    fn check(&self, profile: &ProfileName) -> Result<(), String> {
        let (host_only, nat) = network_names(profile.as_str());
        match self {
            Self::Network(name) if *name == host_only || *name == nat => Ok(()),
            Self::Network(name) => {
                Err(format!("network {name:?} is not {host_only:?} nor {nat:?}"))
            }
            Self::Vm(name) if (0..MAX_NODES).any(|i| node_name(profile.as_str(), i) == *name) => {
                Ok(())
            }
            Self::Vm(name) => Err(format!(
                "VM {name:?} is not a node of profile {profile} ({profile} or {profile}-mNN)"
            )),
        }
    }
}

/// The journal file of one profile.
#[derive(Debug, Clone)]
pub struct Journal {
    path: PathBuf,
    profile: ProfileName,
}

impl Journal {
    /// The journal of `profile`, in its directory.
    pub fn new(profile: &Profile) -> Self {
        Self::at(profile.dir(), profile.name())
    }

    fn at(profile_dir: &Path, profile: &ProfileName) -> Self {
        Self { path: profile_dir.join("journal.jsonl"), profile: profile.clone() }
    }

    /// Records `resource` (durably) unless it is already listed. Call before creating it.
    pub fn record(&self, resource: &Resource) -> Result<(), JournalError> {
        let text = self.read()?;
        if self.parse(&text)?.contains(resource) {
            return Ok(());
        }
        let append = |source| JournalError::Append {
            path: self.path.clone(),
            entry: resource.clone(),
            source,
        };
        // After a torn last line, start on a fresh line so this entry parses.
        let mut line =
            if text.is_empty() || text.ends_with('\n') { String::new() } else { "\n".into() };
        line.push_str(&serde_json::to_string(resource).map_err(|e| append(e.into()))?);
        line.push('\n');
        let mut file = crate::fsutil::open_append(&self.path).map_err(append)?;
        file.write_all(line.as_bytes()).map_err(append)?;
        file.sync_all().map_err(append)
    }

    /// Every recorded resource, oldest first, without duplicates.
    pub fn entries(&self) -> Result<Vec<Resource>, JournalError> {
        self.parse(&self.read()?)
    }

    fn read(&self) -> Result<String, JournalError> {
        match fs::read_to_string(&self.path) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(source) => Err(JournalError::Read { path: self.path.clone(), source }),
        }
    }

    /// Drops `resource` from the journal after it was deleted.
    pub fn forget(&self, resource: &Resource) -> Result<(), JournalError> {
        let keep: Vec<Resource> = self.entries()?.into_iter().filter(|r| r != resource).collect();
        let mut text = String::new();
        for entry in &keep {
            // Serialising a two-field enum of strings cannot fail.
            text.push_str(&serde_json::to_string(entry).unwrap_or_default());
            text.push('\n');
        }
        crate::fsutil::write_atomic(&self.path, text.as_bytes())
            .map_err(|source| JournalError::Read { path: self.path.clone(), source })
    }

    /// The entries of the journal's `text`, each checked; lines that are not JSON (torn)
    /// are skipped.
    fn parse(&self, text: &str) -> Result<Vec<Resource>, JournalError> {
        let mut out: Vec<Resource> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            let corrupt =
                |why: String| JournalError::Corrupt { path: self.path.clone(), line: i + 1, why };
            let entry: Resource =
                serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
            entry.check(&self.profile).map_err(corrupt)?;
            if !out.contains(&entry) {
                out.push(entry);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn lab() -> ProfileName {
        "lab".parse().unwrap()
    }

    #[test]
    fn entries_the_profile_could_not_have_made_are_refused_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::at(dir.path(), &lab());
        journal.record(&Resource::Network("kubelab-lab".into())).unwrap();
        for (line, why) in [
            (r#"{"kind":"vm","name":"../../victim"}"#, "is not a node of profile lab"),
            (r#"{"kind":"vm","name":"other"}"#, "is not a node of profile lab"),
            (r#"{"kind":"vm","name":"lab-m01"}"#, "is not a node of profile lab"),
            (r#"{"kind":"vm","name":"lab-m100"}"#, "is not a node of profile lab"),
            (r#"{"kind":"network","name":"default"}"#, "is not \"kubelab-lab\""),
            (r#"{"kind":"network","name":"kubelab-lab2"}"#, "is not \"kubelab-lab\""),
            (r#"{"kind":"disk","name":"lab"}"#, "unknown variant"),
            (r#"{"kind":"vm"}"#, "line 2: "),
            ("[]", "line 2: "),
        ] {
            fs::write(
                &journal.path,
                format!("{{\"kind\":\"network\",\"name\":\"kubelab-lab\"}}\n{line}\n"),
            )
            .unwrap();
            let err = journal.entries().unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, JournalError::Corrupt { line: 2, .. }), "{line}: {text}");
            assert!(text.contains("journal.jsonl is corrupt: line 2: "), "{line}: {text}");
            assert!(text.contains(why), "{line}: {text}");
            let err = journal.record(&Resource::Vm("lab".into())).unwrap_err();
            assert!(matches!(err, JournalError::Corrupt { .. }), "nothing appended: {err}");
        }
        for good in ["lab", "lab-m02", "lab-m99"] {
            fs::write(&journal.path, "").unwrap();
            journal.record(&Resource::Vm(good.into())).unwrap();
            assert_eq!(journal.entries().unwrap(), vec![Resource::Vm(good.into())]);
        }
        journal.record(&Resource::Network("kubelab-lab.nat".into())).unwrap();
    }

    proptest! {
        /// Whatever lines the file holds, reading it returns entries or an error.
        #[test]
        fn loading_never_panics(lines in prop::collection::vec(any::<String>(), 0..8)) {
            let dir = tempfile::tempdir().unwrap();
            let journal = Journal::at(dir.path(), &lab());
            fs::write(&journal.path, lines.join("\n")).unwrap();
            if let Ok(entries) = journal.entries() {
                for entry in entries {
                    prop_assert!(entry.check(&lab()).is_ok());
                }
            }
        }

        /// Lines shaped like entries, with arbitrary kinds and names.
        #[test]
        fn entry_shaped_lines_never_panic(kind in "vm|network|[a-z]{0,6}", name in "lab|lab-m[0-9]{2,3}|kubelab-lab(\\.nat)?|.*") {
            let dir = tempfile::tempdir().unwrap();
            let journal = Journal::at(dir.path(), &lab());
            let line = serde_json::json!({"kind": kind, "name": name}).to_string();
            fs::write(&journal.path, line).unwrap();
            let entry = match kind.as_str() {
                "vm" => Some(Resource::Vm(name)),
                "network" => Some(Resource::Network(name)),
                _ => None,
            };
            let valid = entry.is_some_and(|e| e.check(&lab()).is_ok());
            prop_assert_eq!(journal.entries().is_ok(), valid);
        }
    }

    #[test]
    fn records_once_forgets_and_ignores_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::at(dir.path(), &lab());
        let net = Resource::Network("kubelab-lab".into());
        let vm = Resource::Vm("lab".into());
        journal.record(&net).unwrap();
        journal.record(&vm).unwrap();
        journal.record(&net).unwrap();
        // A kill -9 in the middle of a write leaves half a line.
        let mut file = fs::OpenOptions::new().append(true).open(&journal.path).unwrap();
        file.write_all(b"{\"kind\":\"vm\",\"na").unwrap();
        assert_eq!(journal.entries().unwrap(), vec![net.clone(), vm.clone()]);
        let vm2 = Resource::Vm("lab-m02".into());
        journal.record(&vm2).unwrap();
        assert_eq!(journal.entries().unwrap(), vec![net.clone(), vm.clone(), vm2.clone()]);
        journal.forget(&net).unwrap();
        assert_eq!(journal.entries().unwrap(), vec![vm, vm2]);
    }

    #[cfg(unix)]
    #[test]
    fn a_linked_journal_is_never_appended_through() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("victim");
        fs::write(&target, "keep\n").unwrap();
        let journal = Journal::at(dir.path(), &lab());
        std::os::unix::fs::symlink(&target, &journal.path).unwrap();
        let err = journal.record(&Resource::Vm("lab".into())).unwrap_err();
        let JournalError::Append { source, .. } = &err else { panic!("{err:?}") };
        assert!(crate::fsutil::link_refused(source).is_some(), "{err}");
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep\n");
    }

    #[test]
    fn missing_journal_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Journal::at(dir.path(), &lab()).entries().unwrap().is_empty());
    }
}
