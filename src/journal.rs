//! The profile's resource journal: every resource kubelab is about to create is recorded
//! here *before* it is created (an intent, fsynced), so an `up` killed at any point leaves a
//! record of everything that may exist; `up` resumes from it and `delete` removes exactly
//! what it lists and nothing else. One JSON object a line, append-only; a torn last line
//! (kill -9 mid-write) is ignored.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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

/// The journal file of one profile.
#[derive(Debug, Clone)]
pub struct Journal {
    path: PathBuf,
}

impl Journal {
    /// The journal in `profile_dir`.
    pub fn new(profile_dir: &Path) -> Self {
        Self { path: profile_dir.join("journal.jsonl") }
    }

    /// Records `resource` (durably) unless it is already listed. Call before creating it.
    pub fn record(&self, resource: &Resource) -> Result<(), JournalError> {
        let text = self.read()?;
        if parse(&text).contains(resource) {
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
        Ok(parse(&self.read()?))
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
}

/// The entries of a journal's text; unparsable (torn) lines are skipped.
fn parse(text: &str) -> Vec<Resource> {
    let mut out: Vec<Resource> = Vec::new();
    for entry in text.lines().filter_map(|l| serde_json::from_str(l).ok()) {
        if !out.contains(&entry) {
            out.push(entry);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_once_forgets_and_ignores_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path());
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
        let journal = Journal::new(dir.path());
        std::os::unix::fs::symlink(&target, &journal.path).unwrap();
        let err = journal.record(&Resource::Vm("lab".into())).unwrap_err();
        let JournalError::Append { source, .. } = &err else { panic!("{err:?}") };
        assert!(crate::fsutil::link_refused(source).is_some(), "{err}");
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep\n");
    }

    #[test]
    fn missing_journal_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Journal::new(dir.path()).entries().unwrap().is_empty());
    }
}
