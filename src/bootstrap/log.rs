//! The profile's log file, `<profile dir>/kubelab.log`: every line of every bootstrap
//! script, from every node thread, appended whole and stamped with the UTC time in
//! milliseconds (`2026-11-25T20:01:02.123Z [node] out: ...`), so the log shows which
//! steps ran at the same time.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::BootstrapError;
use super::pki::civil_from_days;

/// The log file's name in the profile directory.
pub const LOG_FILE: &str = "kubelab.log";

/// The shared log file; [`LogFile::writer`] gives each thread its own line buffer.
#[derive(Debug, Clone)]
pub struct LogFile {
    file: Arc<Mutex<File>>,
    path: PathBuf,
}

impl LogFile {
    /// Opens (creating, mode 0600) `<profile_dir>/kubelab.log` for appending.
    pub fn open(profile_dir: &Path) -> Result<Self, BootstrapError> {
        let path = profile_dir.join(LOG_FILE);
        let file = crate::fsutil::open_append(&path)
            .map_err(|source| BootstrapError::OpenLog { path: path.clone(), source })?;
        Ok(Self { file: Arc::new(Mutex::new(file)), path })
    }

    /// The file's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A writer that stamps each complete line and appends it in one write.
    pub fn writer(&self) -> LineWriter {
        LineWriter { file: Arc::clone(&self.file), pending: Vec::new() }
    }

    /// Appends one stamped line `[node] text`.
    pub fn line(&self, node: &str, text: &str) -> Result<(), BootstrapError> {
        writeln!(self.writer(), "[{node}] {text}")
            .map_err(|source| BootstrapError::WriteLog { path: self.path.clone(), source })
    }
}

/// One thread's view of the log: buffers a partial line until its newline.
pub struct LineWriter {
    file: Arc<Mutex<File>>,
    pending: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let mut stamped = timestamp(SystemTime::now()).into_bytes();
            stamped.push(b' ');
            stamped.extend_from_slice(&line);
            let mut file = self.file.lock().map_err(|_| io::Error::other("log lock poisoned"))?;
            file.write_all(&stamped)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `time` as RFC 3339 UTC with milliseconds: `2026-11-25T20:01:02.123Z`.
pub fn timestamp(time: SystemTime) -> String {
    let since = time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_millis() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_636_862_123);
        assert_eq!(timestamp(t), "2026-11-25T20:01:02.123Z");
    }

    #[test]
    fn lines_are_stamped_whole_from_many_writers() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFile::open(dir.path()).unwrap();
        let (mut a, mut b) = (log.writer(), log.writer());
        a.write_all(b"[a] out: hel").unwrap();
        b.write_all(b"[b] out: one\n[b] out: two\n").unwrap();
        a.write_all(b"lo\n").unwrap();
        log.line("c", "done").unwrap();
        let text = std::fs::read_to_string(log.path()).unwrap();
        let lines: Vec<_> = text.lines().map(|l| l.split_once(' ').unwrap()).collect();
        assert_eq!(
            lines.iter().map(|(_, rest)| *rest).collect::<Vec<_>>(),
            ["[b] out: one", "[b] out: two", "[a] out: hello", "[c] done"]
        );
        assert!(lines.iter().all(|(ts, _)| ts.len() == 24 && ts.ends_with('Z')));
    }
}
