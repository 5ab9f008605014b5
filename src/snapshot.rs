//! A profile's whole-cluster snapshots as kubelab records them in `snapshots.json`:
//! each one's name, time, node set, whether it holds memory and its disk cost, plus the
//! save or restore in flight, so that the next command repairs one a `kill -9` cut
//! short (see `ops::snapshot`). The hypervisor holds the snapshots themselves; this
//! file is read back as input and checked like flags.

use std::io::Read;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cluster::{self, MAX_NODES};
use crate::fsutil;
use crate::profile::{InvalidField, Profile};

/// The snapshot `up` takes once the cluster is ready, and `reset` restores.
pub const CLEAN: &str = "clean";
/// Longest snapshot name.
pub const MAX_NAME_LEN: usize = 40;
/// Most snapshots one profile keeps.
pub const MAX_SNAPSHOTS: usize = 32;
const FILE: &str = "snapshots.json";
const FORMAT: u32 = 1;
/// A record file larger than this is not one kubelab wrote.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Errors about snapshots.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The name is not one kubelab accepts.
    #[error("invalid snapshot name {name:?}: {why}")]
    InvalidName {
        /// The name given.
        name: String,
        /// The rule it breaks.
        why: &'static str,
    },
    /// The profile has no snapshot of that name.
    #[error("profile {profile} has no snapshot {name:?}")]
    NotFound {
        /// The profile.
        profile: String,
        /// The snapshot.
        name: String,
    },
    /// A snapshot of that name exists already.
    #[error("profile {profile} already has a snapshot {name:?}")]
    Exists {
        /// The profile.
        profile: String,
        /// The snapshot.
        name: String,
    },
    /// The profile keeps [`MAX_SNAPSHOTS`] already.
    #[error("profile {profile} already has {MAX_SNAPSHOTS} snapshots")]
    TooMany {
        /// The profile.
        profile: String,
    },
    /// The snapshot was taken of other nodes than the cluster has now.
    #[error("snapshot {name:?} holds nodes {taken}, the cluster now has {now}")]
    NodesChanged {
        /// The snapshot.
        name: String,
        /// Its nodes.
        taken: String,
        /// The cluster's nodes.
        now: String,
    },
    /// Some nodes run and some are stopped: no consistent snapshot can be taken.
    #[error("node {running} runs while node {stopped} is stopped")]
    MixedStates {
        /// A running node.
        running: String,
        /// A stopped node.
        stopped: String,
    },
    /// A node is neither running nor stopped (missing, crashed, starting, stopping).
    #[error("node {node} is {state}")]
    Unsettled {
        /// The node.
        node: String,
        /// Its state.
        state: &'static str,
    },
    /// A node's VM has lost its part of the snapshot (deleted by hand, or the node
    /// was recreated).
    #[error("node {node} has no part of snapshot {name:?}")]
    Incomplete {
        /// The snapshot.
        name: String,
        /// The node without it.
        node: String,
    },
    /// A restored guest's clock could not be read.
    #[error("node {node}'s `date` printed {output:?}, not seconds since the epoch")]
    Clock {
        /// The node.
        node: String,
        /// What it printed.
        output: String,
    },
    /// The record file cannot be read or written.
    #[error("cannot read or write {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The record file is not what kubelab writes.
    #[error("snapshot records {} are corrupt: {why}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// One whole-cluster snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Its name.
    pub name: String,
    /// When it was taken, in seconds since the Unix epoch.
    pub created_unix: u64,
    /// The nodes it holds, in the profile's order.
    pub nodes: Vec<String>,
    /// Whether it holds the nodes' memory (taken of a running cluster).
    pub memory: bool,
    /// Disk space it took on the hypervisor's host, all nodes together.
    pub disk_bytes: u64,
}

/// A save or restore that has started and not finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", content = "name", rename_all = "lowercase", deny_unknown_fields)]
pub enum Pending {
    /// Saving this snapshot: its parts may exist on some nodes, and nodes may be paused.
    Save(String),
    /// Restoring this snapshot: nodes may be at different points in time.
    Restore(String),
}

/// Everything in `snapshots.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Book {
    format: u32,
    /// The snapshots, oldest first.
    pub snapshots: Vec<Record>,
    /// The operation in flight, if any.
    pub pending: Option<Pending>,
}

impl Default for Book {
    fn default() -> Self {
        Self { format: FORMAT, snapshots: Vec::new(), pending: None }
    }
}

impl Book {
    /// Reads and checks the profile's records; empty if it has none. Call with the
    /// profile's lock held.
    pub fn load(profile: &Profile) -> Result<Self, SnapshotError> {
        let path = path(profile);
        let io = |source| SnapshotError::Io { path: path.clone(), source };
        let file = match fsutil::open_nofollow(&path, std::fs::OpenOptions::new().read(true)) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(io(e)),
        };
        let mut text = Vec::new();
        file.take(MAX_FILE_BYTES + 1).read_to_end(&mut text).map_err(io)?;
        let corrupt = |why: String| SnapshotError::Corrupt { path: path.clone(), why };
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(corrupt(format!("larger than {MAX_FILE_BYTES} bytes")));
        }
        let book: Self = serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
        book.check(profile.name().as_str())
            .map_err(|f| corrupt(format!("{}: {}", f.field, f.why)))?;
        Ok(book)
    }

    /// Writes the records atomically (never through a link). Call with the lock held.
    pub fn save(&self, profile: &Profile) -> Result<(), SnapshotError> {
        let path = path(profile);
        let mut json = serde_json::to_vec_pretty(self).unwrap_or_default();
        json.push(b'\n');
        fsutil::write_atomic(&path, &json).map_err(|source| SnapshotError::Io { path, source })
    }

    /// The snapshot `name`.
    pub fn find(&self, name: &str) -> Option<&Record> {
        self.snapshots.iter().find(|r| r.name == name)
    }

    /// The first field that is not what kubelab writes for profile `profile`.
    fn check(&self, profile: &str) -> Result<(), InvalidField> {
        if self.format != FORMAT {
            return Err(InvalidField::new("format", format!("{} is not {FORMAT}", self.format)));
        }
        if self.snapshots.len() > MAX_SNAPSHOTS {
            return Err(InvalidField::new("snapshots", format!("more than {MAX_SNAPSHOTS}")));
        }
        for (i, record) in self.snapshots.iter().enumerate() {
            let field = |name: &str| format!("snapshots[{i}].{name}");
            check_name(&record.name).map_err(|e| InvalidField::new(field("name"), e))?;
            if self.snapshots[..i].iter().any(|r| r.name == record.name) {
                return Err(InvalidField::new(field("name"), "appears twice"));
            }
            if record.nodes.is_empty() || record.nodes.len() > MAX_NODES as usize {
                return Err(InvalidField::new(field("nodes"), "not 1 to 99 nodes"));
            }
            for (j, node) in record.nodes.iter().enumerate() {
                let made = (0..MAX_NODES).any(|index| cluster::node_name(profile, index) == *node);
                if !made || record.nodes[..j].contains(node) {
                    let why = format!("{node:?} is not a node name of profile {profile}");
                    return Err(InvalidField::new(field("nodes"), why));
                }
            }
        }
        if let Some(Pending::Save(name) | Pending::Restore(name)) = &self.pending {
            check_name(name).map_err(|e| InvalidField::new("pending.name", e))?;
        }
        Ok(())
    }
}

/// The name `snapshot save` gives without one: `snap-YYYYMMDD-HHMMSS` (UTC).
pub fn default_name(unix_secs: u64) -> String {
    let (date, time) = utc(unix_secs);
    format!("snap-{}-{}", date.replace('-', ""), time.replace(':', ""))
}

/// `(YYYY-MM-DD, HH:MM:SS)` in UTC for seconds since the Unix epoch.
pub fn utc(unix_secs: u64) -> (String, String) {
    let days = i64::try_from(unix_secs / 86_400).unwrap_or(i64::MAX);
    let (year, month, day) = crate::bootstrap::pki::civil_from_days(days);
    let secs = unix_secs % 86_400;
    (
        format!("{year:04}-{month:02}-{day:02}"),
        format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60),
    )
}

fn path(profile: &Profile) -> PathBuf {
    profile.dir().join(FILE)
}

/// A snapshot name: 1 to [`MAX_NAME_LEN`] lowercase letters, digits, `-`, `_` and `.`,
/// starting with a letter or digit (it becomes part of the hypervisor's snapshot name).
pub fn check_name(name: &str) -> Result<(), SnapshotError> {
    let invalid = |why| Err(SnapshotError::InvalidName { name: name.to_owned(), why });
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return invalid("use 1 to 40 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return invalid("start with a lowercase letter or a digit");
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b)) {
        return invalid("use only lowercase letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::home::Home;
    use crate::profile::ProfileName;

    fn profile(dir: &Path) -> Profile {
        let home = Home::new(dir.to_path_buf());
        let profile = Profile::new(&home, "lab".parse::<ProfileName>().unwrap());
        profile.create_dir().unwrap();
        profile
    }

    fn record(name: &str, nodes: &[&str]) -> Record {
        Record {
            name: name.into(),
            created_unix: 1,
            nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
            memory: true,
            disk_bytes: 2,
        }
    }

    #[test]
    fn names() {
        for good in ["clean", "a", "before-upgrade_2.1", &"x".repeat(40)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "A", "a/b", "a b", "../x", &"x".repeat(41), "é"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates() {
        assert_eq!(utc(0), ("1970-01-01".to_owned(), "00:00:00".to_owned()));
        assert_eq!(utc(951_782_400), ("2000-02-29".to_owned(), "00:00:00".to_owned()));
        assert_eq!(utc(1_796_179_804), ("2026-12-02".to_owned(), "02:50:04".to_owned()));
        assert_eq!(default_name(1_796_179_804), "snap-20261202-025004");
        assert!(check_name(&default_name(u64::from(u32::MAX))).is_ok());
    }

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let profile = profile(dir.path());
        assert_eq!(Book::load(&profile).unwrap(), Book::default());
        let book = Book {
            snapshots: vec![record("clean", &["lab", "lab-m02"])],
            pending: Some(Pending::Save("next".into())),
            ..Book::default()
        };
        book.save(&profile).unwrap();
        assert_eq!(Book::load(&profile).unwrap(), book);
    }

    #[test]
    fn tampered_records_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let profile = profile(dir.path());
        let cases = [
            vec![record("../x", &["lab"])],
            vec![record("a", &["other"])],
            vec![record("a", &["lab", "lab"])],
            vec![record("a", &[])],
            vec![record("a", &["lab"]), record("a", &["lab"])],
        ];
        for snapshots in cases {
            Book { snapshots: snapshots.clone(), ..Book::default() }.save(&profile).unwrap();
            let err = Book::load(&profile).unwrap_err();
            assert!(matches!(err, SnapshotError::Corrupt { .. }), "{snapshots:?}: {err}");
        }
        std::fs::write(path(&profile), b"{\"format\":1,\"snapshots\":[],\"pending\":null,\"x\":1}")
            .unwrap();
        assert!(matches!(Book::load(&profile), Err(SnapshotError::Corrupt { .. })));
        std::fs::write(path(&profile), vec![b' '; MAX_FILE_BYTES as usize + 1]).unwrap();
        assert!(matches!(Book::load(&profile), Err(SnapshotError::Corrupt { .. })));
    }

    #[test]
    fn a_linked_record_file_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let profile = profile(dir.path());
        std::os::unix::fs::symlink("/etc/hostname", path(&profile)).unwrap();
        assert!(matches!(Book::load(&profile), Err(SnapshotError::Io { .. })));
    }
}
