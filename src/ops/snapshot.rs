//! `kubelab snapshot save|restore|list|delete` and `reset`: whole-cluster snapshots.
//!
//! Consistent across nodes: every node is paused before any node's state is captured,
//! and after a restore all resume at once, so no node sees another in the past. A
//! running cluster's snapshot holds memory, so a restore resumes it without booting; a
//! stopped cluster's holds disks only. After a restore the command returns only once
//! each guest's clock is the host's (a restored guest lives in the past: leases, tokens
//! and certificates misbehave), SSH answers with the pinned host keys and, with
//! kubeadm, every node is Ready.
//!
//! The operation in flight is recorded before it starts ([`Pending`]): the next command
//! under the profile's lock discards a save that a `kill -9` cut short (and resumes the
//! nodes it had paused), and finishes a cut-short restore.

use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::Error;
use crate::cluster::{ClusterState, NodeState};
use crate::driver::{Driver, Owner, VmState};
use crate::keys;
use crate::ops::lifecycle::{open_driver, state_name};
use crate::ops::provision::{self, Timing};
use crate::profile::Profile;
use crate::progress::Progress;
use crate::snapshot::{self, Book, CLEAN, MAX_SNAPSHOTS, Pending, Record, SnapshotError};
use crate::ssh::{self, Output};

/// How long a restore waits for each node's SSH and for the cluster to be Ready.
pub const RESTORE_WAIT: Duration = Duration::from_secs(300);

/// A snapshot as `snapshot list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// What kubelab recorded.
    #[serde(flatten)]
    pub record: Record,
    /// Whether every node still holds its part.
    pub complete: bool,
}

/// What a restore did.
#[derive(Debug, Serialize)]
pub struct Restored {
    /// The snapshot.
    pub name: String,
    /// Whether the nodes run again (a disk-only snapshot leaves them stopped).
    pub running: bool,
    /// Per node and phase (`revert`, `resume`, `ssh+clock`, `ready`), how long it took.
    pub timings: Vec<Timing>,
}

/// A profile's cluster, opened under its lock with its snapshot records repaired.
struct Lab<'a> {
    profile: &'a Profile,
    driver: &'a dyn Driver,
    state: &'a ClusterState,
    owner: Owner,
    book: Book,
}

impl<'a> Lab<'a> {
    fn open(
        profile: &'a Profile,
        driver: &'a dyn Driver,
        state: &'a ClusterState,
        progress: &dyn Progress,
    ) -> Result<Self, Error> {
        let owner = provision::owner(profile)?;
        let book = Book::load(profile)?;
        let mut lab = Self { profile, driver, state, owner, book };
        lab.repair(progress)?;
        Ok(lab)
    }

    fn nodes(&self) -> Vec<String> {
        self.state.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// Runs `step` on every node at once; the first error, once all have finished.
    fn each(
        &self,
        step: impl Fn(&dyn Driver, &str) -> Result<(), Error> + Sync,
    ) -> Result<(), Error> {
        let driver = self.driver;
        super::in_parallel(&self.state.nodes, |n| step(driver, &n.name))
            .into_iter()
            .collect::<Result<Vec<()>, _>>()
            .map(drop)
    }

    fn set_pending(&mut self, pending: Option<Pending>) -> Result<(), Error> {
        self.book.pending = pending;
        Ok(self.book.save(self.profile)?)
    }

    /// Repairs what a save or restore cut short left behind.
    fn repair(&mut self, progress: &dyn Progress) -> Result<(), Error> {
        match self.book.pending.clone() {
            None => Ok(()),
            Some(Pending::Save(name)) => {
                progress.message(&format!(
                    "an interrupted save of snapshot {name:?} is discarded and the nodes resumed"
                ));
                let owner = &self.owner;
                self.each(|d, node| Ok(d.snapshot_delete(node, owner, &name)?))?;
                self.each(|d, node| {
                    if d.state(node)? == VmState::Paused {
                        d.resume(node, owner)?;
                    }
                    Ok(())
                })?;
                self.set_pending(None)
            }
            Some(Pending::Restore(name)) => {
                progress.message(&format!("finishing an interrupted restore of snapshot {name:?}"));
                if self.book.find(&name).is_some() {
                    self.restore(&name, RESTORE_WAIT, progress)?;
                }
                self.set_pending(None)
            }
        }
    }

    /// Takes snapshot `name` of every node; see the module doc.
    fn save(&mut self, name: &str, progress: &dyn Progress) -> Result<Record, Error> {
        snapshot::check_name(name)?;
        let profile = self.profile.name().to_string();
        if self.book.find(name).is_some() {
            return Err(SnapshotError::Exists { profile, name: name.to_owned() }.into());
        }
        if self.book.snapshots.len() >= MAX_SNAPSHOTS {
            return Err(SnapshotError::TooMany { profile }.into());
        }
        let memory = self.running()?;
        self.set_pending(Some(Pending::Save(name.to_owned())))?;
        let before = self.disk_usage()?;
        let owner = &self.owner;
        progress.message(&format!(
            "saving snapshot {name:?} ({})",
            if memory { "paused, memory included" } else { "stopped, disks only" }
        ));
        let taken = (|| {
            if memory {
                self.each(|d, node| Ok(d.pause(node, owner)?))?;
            }
            self.each(|d, node| Ok(d.snapshot_save(node, owner, name)?))
        })();
        let resumed = if memory { self.each(|d, node| Ok(d.resume(node, owner)?)) } else { Ok(()) };
        if let Err(e) = taken.and(resumed) {
            // Nothing half-made stays: the parts some nodes took are removed.
            let _ = self.each(|d, node| Ok(d.snapshot_delete(node, owner, name)?));
            self.set_pending(None)?;
            return Err(e);
        }
        let record = Record {
            name: name.to_owned(),
            created_unix: unix_now().as_secs(),
            nodes: self.nodes(),
            memory,
            disk_bytes: self.disk_usage()?.saturating_sub(before),
        };
        self.book.snapshots.push(record.clone());
        self.set_pending(None)?;
        Ok(record)
    }

    /// Whether every node runs (true) or every node is stopped (false); else the
    /// cluster cannot be captured consistently.
    fn running(&self) -> Result<bool, Error> {
        let mut running = None;
        let mut stopped = None;
        for node in &self.state.nodes {
            match self.driver.state(&node.name)? {
                VmState::Running | VmState::Paused => running = Some(node.name.clone()),
                VmState::Stopped => stopped = Some(node.name.clone()),
                state => {
                    let node = node.name.clone();
                    return Err(SnapshotError::Unsettled { node, state: state_name(state) }.into());
                }
            }
        }
        match (running, stopped) {
            (Some(running), Some(stopped)) => {
                Err(SnapshotError::MixedStates { running, stopped }.into())
            }
            (running, _) => Ok(running.is_some()),
        }
    }

    fn disk_usage(&self) -> Result<u64, Error> {
        let mut total = 0;
        for node in &self.state.nodes {
            total += self.driver.disk_usage(&node.name, &self.owner)?;
        }
        Ok(total)
    }

    /// Restores snapshot `name` on every node; see the module doc.
    fn restore(
        &mut self,
        name: &str,
        wait: Duration,
        progress: &dyn Progress,
    ) -> Result<Restored, Error> {
        let profile = self.profile.name().to_string();
        let record = self
            .book
            .find(name)
            .cloned()
            .ok_or_else(|| SnapshotError::NotFound { profile, name: name.to_owned() })?;
        if record.nodes != self.nodes() {
            return Err(SnapshotError::NodesChanged {
                name: name.to_owned(),
                taken: record.nodes.join(", "),
                now: self.nodes().join(", "),
            }
            .into());
        }
        // Every node must hold its part before any node is touched.
        for node in &record.nodes {
            if !self.driver.snapshots(node, &self.owner)?.iter().any(|s| s == name) {
                let node = node.clone();
                return Err(SnapshotError::Incomplete { name: name.to_owned(), node }.into());
            }
        }
        self.set_pending(Some(Pending::Restore(name.to_owned())))?;
        let mut timings = Vec::new();
        let owner = &self.owner;
        progress.message(&format!("restoring snapshot {name:?}"));
        let start = Instant::now();
        self.each(|d, node| Ok(d.snapshot_restore(node, owner, name)?))?;
        timings.push(total("revert", start));
        if record.memory {
            let start = Instant::now();
            self.each(|d, node| Ok(d.resume(node, owner)?))?;
            timings.push(total("resume", start));
            let start = Instant::now();
            let user_key = keys::user_key(self.profile.dir())?;
            super::in_parallel(&self.state.nodes, |n| self.settle(n, &user_key, wait, progress))
                .into_iter()
                .collect::<Result<Vec<()>, _>>()?;
            timings.push(total("ssh+clock", start));
            let start = Instant::now();
            provision::with_bootstrapper(
                self.driver,
                self.profile,
                self.state,
                progress,
                |b, c| b.wait_ready(c, wait),
            )?;
            timings.push(total("ready", start));
        }
        self.set_pending(None)?;
        Ok(Restored { name: name.to_owned(), running: record.memory, timings })
    }

    /// Sets the resumed `node`'s clock to the host's (through its guest agent, else
    /// over SSH) and waits until it answers SSH with its pinned host key.
    fn settle(
        &self,
        node: &NodeState,
        user_key: &keys::KeyPair,
        wait: Duration,
        progress: &dyn Progress,
    ) -> Result<(), Error> {
        let by_agent = self.driver.set_guest_time(&node.name, &self.owner, SystemTime::now())?;
        let start = Instant::now();
        let report = |text: &str| progress.node_phase(&node.name, text);
        loop {
            let remaining = wait.saturating_sub(start.elapsed());
            let connection = provision::wait_for_ssh(
                self.driver,
                self.profile,
                node,
                user_key,
                remaining,
                &report,
            )?;
            if by_agent {
                break;
            }
            match set_clock(&connection, &node.name) {
                Ok(()) => break,
                // The first packets after a resume can be lost while the host's bridge
                // learns the new port again: a session that stalls is tried afresh.
                Err(Error::Ssh(e))
                    if start.elapsed() < wait
                        && !matches!(e, ssh::SshError::CommandFailed { .. }) =>
                {
                    progress.node_phase(&node.name, &format!("setting the clock again: {e}"));
                }
                Err(e) => return Err(e),
            }
        }
        progress.node_phase(&node.name, "restored");
        Ok(())
    }
}

/// Sets the guest's clock to the host's over SSH: reads the guest's clock, then moves
/// it by the difference relative to its own "now" when `date -s` runs, so however long
/// `sudo` takes to start does not count.
fn set_clock(connection: &ssh::Connection, node: &str) -> Result<(), Error> {
    let mut log = std::io::sink();
    let mut guest = String::new();
    let before = unix_now().as_secs_f64();
    let mut on_line = |_, line: &str| guest.push_str(line);
    connection.run("date -u +%s.%N", &mut Output { log: &mut log, on_line: &mut on_line })?;
    let after = unix_now().as_secs_f64();
    let Ok(guest) = guest.trim().parse::<f64>() else {
        return Err(SnapshotError::Clock { node: node.to_owned(), output: guest }.into());
    };
    let offset = (before + after) / 2.0 - guest;
    let sign = if offset < 0.0 { '-' } else { '+' };
    let command = format!("sudo date -u -s 'now {sign} {:.3} seconds' >/dev/null", offset.abs());
    Ok(connection.run(&command, &mut Output { log: &mut log, on_line: &mut |_, _| {} })?)
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()
}

fn total(phase: &'static str, start: Instant) -> Timing {
    Timing { node: "all".into(), phase, secs: start.elapsed().as_secs_f64() }
}

/// Runs `work` on `profile`'s cluster under its lock, its records repaired first.
fn with_lab<T>(
    profile: &Profile,
    wait_lock: bool,
    progress: &dyn Progress,
    work: impl FnOnce(&mut Lab<'_>) -> Result<T, Error>,
) -> Result<T, Error> {
    let _lock = profile.lock_existing(wait_lock)?;
    let state: ClusterState = profile.load_state()?;
    let driver = open_driver(&state)?;
    work(&mut Lab::open(profile, &*driver, &state, progress)?)
}

/// `kubelab snapshot save NAME`.
pub fn save(
    profile: &Profile,
    name: &str,
    wait_lock: bool,
    progress: &dyn Progress,
) -> Result<Record, Error> {
    snapshot::check_name(name)?;
    with_lab(profile, wait_lock, progress, |lab| lab.save(name, progress))
}

/// `kubelab snapshot restore NAME`, and `kubelab reset` (the `clean` snapshot).
pub fn restore(
    profile: &Profile,
    name: &str,
    wait_lock: bool,
    progress: &dyn Progress,
) -> Result<Restored, Error> {
    snapshot::check_name(name)?;
    with_lab(profile, wait_lock, progress, |lab| lab.restore(name, RESTORE_WAIT, progress))
}

/// `kubelab snapshot list`: the records, each checked against the hypervisor.
pub fn list(
    profile: &Profile,
    wait_lock: bool,
    progress: &dyn Progress,
) -> Result<Vec<Listed>, Error> {
    with_lab(profile, wait_lock, progress, |lab| {
        let mut held = Vec::new();
        for node in &lab.state.nodes {
            held.push((node.name.clone(), lab.driver.snapshots(&node.name, &lab.owner)?));
        }
        Ok(lab
            .book
            .snapshots
            .iter()
            .map(|record| Listed {
                complete: record.nodes.iter().all(|node| {
                    held.iter().any(|(n, names)| n == node && names.contains(&record.name))
                }),
                record: record.clone(),
            })
            .collect())
    })
}

/// `kubelab snapshot delete NAME`: removes every node's part, then the record.
pub fn delete(
    profile: &Profile,
    name: &str,
    wait_lock: bool,
    progress: &dyn Progress,
) -> Result<(), Error> {
    snapshot::check_name(name)?;
    with_lab(profile, wait_lock, progress, |lab| {
        if lab.book.find(name).is_none() {
            let profile = profile.name().to_string();
            return Err(SnapshotError::NotFound { profile, name: name.to_owned() }.into());
        }
        let owner = &lab.owner;
        lab.each(|d, node| Ok(d.snapshot_delete(node, owner, name)?))?;
        lab.book.snapshots.retain(|r| r.name != name);
        lab.set_pending(None)
    })
}

/// Repairs a save or restore that was cut short; `up` calls it (with the lock held)
/// before it touches a node.
pub fn repair(
    profile: &Profile,
    driver: &dyn Driver,
    state: &ClusterState,
    progress: &dyn Progress,
) -> Result<(), Error> {
    Lab::open(profile, driver, state, progress).map(drop)
}

/// Takes the `clean` snapshot of a cluster `up` just made ready, unless it has one;
/// called with the lock held.
pub fn take_clean(
    profile: &Profile,
    driver: &dyn Driver,
    state: &ClusterState,
    progress: &dyn Progress,
) -> Result<Option<Record>, Error> {
    let mut lab = Lab::open(profile, driver, state, progress)?;
    if lab.book.find(CLEAN).is_some() {
        return Ok(None);
    }
    lab.save(CLEAN, progress).map(Some)
}

/// The snapshots that no longer hold `state`'s nodes after `node add` or `node delete`
/// (a restore refuses them), for the command to say so. Called with the lock held; an
/// unreadable record file lists none.
pub fn stale(profile: &Profile, state: &ClusterState) -> Vec<String> {
    let nodes: Vec<&str> = state.nodes.iter().map(|n| n.name.as_str()).collect();
    let Ok(book) = Book::load(profile) else { return Vec::new() };
    book.snapshots
        .into_iter()
        .filter(|r| r.nodes.iter().map(String::as_str).ne(nodes.iter().copied()))
        .map(|r| r.name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::mem::{MemDriver, When};
    use crate::ops::fixture;

    /// A save that fails on one node leaves no part of the snapshot on the other; the
    /// next save takes every node's.
    #[test]
    fn failed_save_leaves_no_part_behind() {
        let (lab, hv) = (fixture::Lab::new(), MemDriver::new());
        lab.created(&hv, "lab", 2);
        let profile = lab.profile("lab");
        let _installed = hv.install();
        hv.fail("snapshot_save", When::Nth(2)); // the second node's, whichever it is
        let err = save(&profile, "half", false, &()).unwrap_err();
        assert!(crate::error::chain(&err).contains("injected failure"), "{err}");
        assert!(hv.vms().values().all(|vm| vm.snapshots.is_empty()), "{:?}", hv.vms());
        assert!(list(&profile, false, &()).unwrap().is_empty());

        let record = save(&profile, "whole", false, &()).unwrap();
        assert_eq!((record.nodes.len(), record.memory), (2, false), "{record:?}");
        assert!(hv.vms().values().all(|vm| vm.snapshots.contains_key("whole")));
        assert!(list(&profile, false, &()).unwrap()[0].complete);
    }

    fn running(lab: &fixture::Lab, hv: &MemDriver, nodes: u32) -> Profile {
        lab.created(hv, "lab", nodes);
        for index in 0..nodes {
            hv.set_state(&crate::cluster::node_name("lab", index), VmState::Running);
        }
        lab.profile("lab")
    }

    /// Every node is paused before any node's state is captured, and all run again after.
    #[test]
    fn save_pauses_every_node_before_capturing_any() {
        let (lab, hv) = (fixture::Lab::new(), MemDriver::new());
        let profile = running(&lab, &hv, 3);
        let _installed = hv.install();
        let record = save(&profile, "s1", false, &()).unwrap();
        assert!(record.memory && record.disk_bytes > 0, "{record:?}");
        let calls: Vec<_> = hv.calls().into_iter().map(|(m, _)| m).collect();
        let last_pause = calls.iter().rposition(|m| *m == "pause").unwrap();
        let first_save = calls.iter().position(|m| *m == "snapshot_save").unwrap();
        let last_save = calls.iter().rposition(|m| *m == "snapshot_save").unwrap();
        let first_resume = calls.iter().position(|m| *m == "resume").unwrap();
        assert!(last_pause < first_save && last_save < first_resume, "{calls:?}");
        assert_eq!(calls.iter().filter(|m| **m == "pause").count(), 3);
        assert!(hv.vms().values().all(|vm| vm.state == VmState::Running));
        let err = save(&profile, "s1", false, &()).unwrap_err();
        assert_eq!(crate::reason::reason(&err).id, "SNAP_EXISTS");
    }

    /// A save cut short (kill -9 while the nodes were paused, one part taken) is
    /// discarded by the next command, which resumes the nodes.
    #[test]
    fn an_interrupted_save_is_repaired_by_the_next_command() {
        let (lab, hv) = (fixture::Lab::new(), MemDriver::new());
        let profile = running(&lab, &hv, 2);
        let owner = provision::owner(&profile).unwrap();
        let _installed = hv.install();
        let driver =
            crate::driver::open(crate::driver::DriverKind::default_kind().unwrap(), None).unwrap();
        let mut book = Book::default();
        book.pending = Some(Pending::Save("cut".into()));
        book.save(&profile).unwrap();
        for node in ["lab", "lab-m02"] {
            driver.pause(node, &owner).unwrap();
        }
        driver.snapshot_save("lab", &owner, "cut").unwrap();

        assert!(list(&profile, false, &()).unwrap().is_empty());
        assert!(
            hv.vms().values().all(|vm| vm.snapshots.is_empty() && vm.state == VmState::Running)
        );
        assert_eq!(Book::load(&profile).unwrap().pending, None);
    }

    /// A restore checks the whole cluster before it touches any node: a snapshot of
    /// another node set, or one a node lost, is refused and nothing is reverted.
    #[test]
    fn restore_refuses_before_touching_any_node() {
        let (lab, hv) = (fixture::Lab::new(), MemDriver::new());
        lab.created(&hv, "lab", 2);
        let profile = lab.profile("lab");
        let owner = provision::owner(&profile).unwrap();
        let _installed = hv.install();
        assert!(
            !save(&profile, "cold", false, &()).unwrap().memory,
            "a stopped cluster: disks only"
        );

        let driver =
            crate::driver::open(crate::driver::DriverKind::default_kind().unwrap(), None).unwrap();
        driver.snapshot_delete("lab-m02", &owner, "cold").unwrap();
        let err = restore(&profile, "cold", false, &()).unwrap_err();
        assert_eq!(crate::reason::reason(&err).id, "SNAP_INCOMPLETE");
        assert!(!list(&profile, false, &()).unwrap()[0].complete);

        let mut book = Book::load(&profile).unwrap();
        book.snapshots[0].nodes = vec!["lab".into()];
        book.save(&profile).unwrap();
        let err = restore(&profile, "cold", false, &()).unwrap_err();
        assert_eq!(crate::reason::reason(&err).id, "SNAP_NODES_CHANGED");
        let err = restore(&profile, "nope", false, &()).unwrap_err();
        assert_eq!(crate::reason::reason(&err).id, "SNAP_NOT_FOUND");
        assert!(!hv.calls().iter().any(|(m, _)| *m == "snapshot_restore"), "{:?}", hv.calls());

        hv.set_state("lab", VmState::Running);
        let err = save(&profile, "mixed", false, &()).unwrap_err();
        assert_eq!(crate::reason::reason(&err).id, "SNAP_MIXED_STATES");
        assert!(!hv.calls().iter().any(|(m, _)| *m == "pause"), "nothing paused");
    }

    /// A restore cut short (some nodes reverted, some not) is finished by the next
    /// command before it does its own work.
    #[test]
    fn an_interrupted_restore_is_finished_by_the_next_command() {
        let (lab, hv) = (fixture::Lab::new(), MemDriver::new());
        lab.created(&hv, "lab", 2);
        let profile = lab.profile("lab");
        let _installed = hv.install();
        save(&profile, "cold", false, &()).unwrap();
        let mut book = Book::load(&profile).unwrap();
        book.pending = Some(Pending::Restore("cold".into()));
        book.save(&profile).unwrap();

        let listed = list(&profile, false, &()).unwrap();
        assert_eq!(listed.len(), 1);
        let mut reverted: Vec<_> = hv
            .calls()
            .into_iter()
            .filter(|(m, _)| *m == "snapshot_restore")
            .map(|(_, o)| o)
            .collect();
        reverted.sort();
        assert_eq!(reverted, ["lab", "lab-m02"], "every node reverted again");
        assert_eq!(Book::load(&profile).unwrap().pending, None);
    }

    /// A disk-only snapshot brings a stopped cluster back stopped; delete removes every
    /// node's part and the record.
    #[test]
    fn disk_only_restore_and_delete() {
        let (lab, hv) = (fixture::Lab::new(), MemDriver::new());
        lab.created(&hv, "lab", 2);
        let profile = lab.profile("lab");
        let _installed = hv.install();
        save(&profile, "cold", false, &()).unwrap();
        let restored = restore(&profile, "cold", false, &()).unwrap();
        assert!(!restored.running);
        assert_eq!(hv.calls().iter().filter(|(m, _)| *m == "snapshot_restore").count(), 2);
        assert!(hv.vms().values().all(|vm| vm.state == VmState::Stopped));
        delete(&profile, "cold", false, &()).unwrap();
        assert!(hv.vms().values().all(|vm| vm.snapshots.is_empty()));
        assert!(list(&profile, false, &()).unwrap().is_empty());
        let err = delete(&profile, "cold", false, &()).unwrap_err();
        assert_eq!(crate::reason::reason(&err).id, "SNAP_NOT_FOUND");
    }
}
