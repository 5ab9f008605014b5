//! How operations report progress without printing: `ops` functions take a
//! `&dyn Progress`, and the CLI implements it with indicatif on a terminal and plain
//! lines otherwise (cargo's `doc/contrib/src/implementation/console.md` does the same).

/// Receives progress events from an operation.
pub trait Progress: Sync {
    /// A one-line status update ("pulling debian-12", "image is cached").
    fn message(&self, text: &str);
}
