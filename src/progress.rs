//! How operations report progress without printing: `ops` functions take a
//! `&dyn Progress`, and the CLI implements it with indicatif on a terminal and plain
//! lines otherwise (cargo's `doc/contrib/src/implementation/console.md` does the same).

/// Receives progress events from an operation. The transfer events default to doing
/// nothing, so a receiver that only wants messages implements `message` alone.
pub trait Progress: Sync {
    /// A one-line status update ("pulling debian-12", "image is cached").
    fn message(&self, text: &str);

    /// A transfer of `label` starts (or restarts after a retry): `total_bytes` when the
    /// size is known, `done_bytes` already present (a resumed download).
    fn transfer_start(&self, label: &str, total_bytes: Option<u64>, done_bytes: u64) {
        let _ = (label, total_bytes, done_bytes);
    }

    /// `bytes` more were transferred.
    fn transfer_advance(&self, bytes: u64) {
        let _ = bytes;
    }

    /// The transfer ended, finished or failed.
    fn transfer_end(&self) {}

    /// `node` entered a new phase of `up` ("creating VM", "waiting for SSH: port closed").
    /// Called from the node's own thread.
    fn node_phase(&self, node: &str, phase: &str) {
        let _ = (node, phase);
    }
}

/// Discards every event (for callers that show no progress).
impl Progress for () {
    fn message(&self, _text: &str) {}
}
