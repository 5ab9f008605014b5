//! The CLI's `Progress`: an indicatif bar (bytes, rate, ETA) when stderr is a terminal,
//! plain periodic lines otherwise (logs and CI keep a readable record).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::progress::Progress;

/// How often plain mode prints a transfer line.
const PLAIN_INTERVAL: Duration = Duration::from_secs(5);
const BAR_TEMPLATE: &str =
    "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}";
const NODE_TEMPLATE: &str = "{spinner} {prefix:<24} {elapsed:>4} {msg}";
const SPINNER_TEMPLATE: &str = "{spinner} {msg} {bytes} {binary_bytes_per_sec}";

/// Progress on stderr.
pub struct CliProgress {
    terminal: bool,
    transfer: Mutex<Option<Transfer>>,
    /// One spinner line per node on a terminal; the last phase printed per node otherwise.
    nodes: Mutex<Nodes>,
}

#[derive(Default)]
struct Nodes {
    multi: Option<MultiProgress>,
    spinners: HashMap<String, ProgressBar>,
    last: HashMap<String, String>,
}

enum Transfer {
    Bar(ProgressBar),
    Plain(Plain),
}

struct Plain {
    label: String,
    total: Option<u64>,
    done: u64,
    started_at_bytes: u64,
    started: Instant,
    last_line: Instant,
}

impl Plain {
    fn line(&self, out: &mut impl Write) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = ((self.done - self.started_at_bytes) as f64 / secs) as u64;
        let of = self.total.map(|t| format!(" of {}", HumanBytes(t))).unwrap_or_default();
        let _ =
            writeln!(out, "{}: {}{of} ({}/s)", self.label, HumanBytes(self.done), HumanBytes(rate));
    }
}

impl CliProgress {
    /// A bar on a terminal, plain lines otherwise.
    pub fn new() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
            transfer: Mutex::new(None),
            nodes: Mutex::new(Nodes::default()),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Option<Transfer>) -> R) -> R {
        let mut guard = self.transfer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }
}

impl Progress for CliProgress {
    fn message(&self, text: &str) {
        self.with(|t| match t {
            Some(Transfer::Bar(bar)) => bar.println(text),
            _ => {
                let _ = writeln!(std::io::stderr(), "{text}");
            }
        });
    }

    fn transfer_start(&self, label: &str, total_bytes: Option<u64>, done_bytes: u64) {
        self.with(|t| {
            if let Some(Transfer::Bar(bar)) = t.take() {
                bar.finish_and_clear();
            }
            *t = Some(if self.terminal {
                let template = if total_bytes.is_some() { BAR_TEMPLATE } else { SPINNER_TEMPLATE };
                let bar = ProgressBar::with_draw_target(total_bytes, ProgressDrawTarget::stderr());
                if let Ok(style) = ProgressStyle::with_template(template) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_message(label.to_owned());
                bar.set_position(done_bytes);
                bar.reset_eta();
                Transfer::Bar(bar)
            } else {
                let now = Instant::now();
                let plain = Plain {
                    label: label.to_owned(),
                    total: total_bytes,
                    done: done_bytes,
                    started_at_bytes: done_bytes,
                    started: now,
                    last_line: now,
                };
                plain.line(&mut std::io::stderr());
                Transfer::Plain(plain)
            });
        });
    }

    fn transfer_advance(&self, bytes: u64) {
        self.with(|t| match t {
            Some(Transfer::Bar(bar)) => bar.inc(bytes),
            Some(Transfer::Plain(plain)) => {
                plain.done += bytes;
                if plain.last_line.elapsed() >= PLAIN_INTERVAL {
                    plain.last_line = Instant::now();
                    plain.line(&mut std::io::stderr());
                }
            }
            None => {}
        });
    }

    fn transfer_end(&self) {
        self.with(|t| match t.take() {
            Some(Transfer::Bar(bar)) => bar.finish_and_clear(),
            Some(Transfer::Plain(plain)) => plain.line(&mut std::io::stderr()),
            None => {}
        });
    }

    fn node_phase(&self, node: &str, phase: &str) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !self.terminal {
            // Plain lines: only changes, so a long wait is one line, not one per retry.
            if nodes.last.get(node).is_none_or(|last| last != phase) {
                nodes.last.insert(node.to_owned(), phase.to_owned());
                let _ = writeln!(std::io::stderr(), "{node}: {phase}");
            }
            return;
        }
        let multi = nodes.multi.get_or_insert_with(MultiProgress::new).clone();
        let spinner = nodes.spinners.entry(node.to_owned()).or_insert_with(|| {
            let spinner = multi.add(ProgressBar::new_spinner());
            if let Ok(style) = ProgressStyle::with_template(NODE_TEMPLATE) {
                spinner.set_style(style);
            }
            spinner.enable_steady_tick(Duration::from_millis(120));
            spinner.set_prefix(node.to_owned());
            spinner
        });
        if phase == "ready" {
            spinner.finish_with_message(phase.to_owned());
        } else {
            spinner.set_message(phase.to_owned());
        }
    }
}
