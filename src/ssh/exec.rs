//! Running commands and scripts on a node. Output goes, line by line as it arrives, to
//! the log and to a callback. stdout and stderr are pumped together without blocking:
//! a blocking read on one stream can wait forever while the other fills the channel's
//! window. While a command is silent the connection is watched with keepalives, so a
//! node that disappears is an error after the connection's timeout, not a hang.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::time::Instant;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use ssh2::{BlockDirections, Channel};

use super::{Connection, SshError};

/// Lines of stderr kept for the error of a failed command.
const STDERR_TAIL_LINES: usize = 20;
/// A line longer than this is passed on in pieces.
const MAX_LINE_BYTES: usize = 64 * 1024;
/// Longest wait for the socket before checking the silence limit and keepalives again.
const POLL_INTERVAL: Timespec = Timespec { tv_sec: 1, tv_nsec: 0 };

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How a command on a node ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this status.
    Code(i32),
    /// A signal (named without `SIG`) killed it.
    Signal(String),
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(code) => write!(f, "exit status {code}"),
            Self::Signal(signal) => write!(f, "signal {signal}"),
        }
    }
}

/// Where a command's output goes: every line to `log` (prefixed with the node and the
/// stream) and to `on_line`.
pub struct Output<'a> {
    /// The profile's log file, or any writer.
    pub log: &'a mut dyn Write,
    /// Called with each line, without its newline.
    pub on_line: &'a mut dyn FnMut(Stream, &str),
}

impl Connection {
    /// Runs `command` (a shell command line); Ok only if it exits with status 0.
    pub fn run(&self, command: &str, output: &mut Output<'_>) -> Result<(), SshError> {
        self.exec(command, command, b"", output)
    }

    /// Runs `script` with `bash -s` (as root through `sudo` if `sudo`), feeding it on
    /// stdin with `args` as its positional parameters; `name` labels it in the log and in
    /// errors. Ok only if it exits with status 0.
    pub fn run_script(
        &self,
        name: &str,
        script: &str,
        args: &[&str],
        sudo: bool,
        output: &mut Output<'_>,
    ) -> Result<(), SshError> {
        let mut command = String::from(if sudo { "sudo bash -s --" } else { "bash -s --" });
        for arg in args {
            command.push(' ');
            command.push_str(&crate::process::shell_quote(arg));
        }
        self.exec(name, &command, script.as_bytes(), output)
    }

    fn exec(
        &self,
        label: &str,
        command: &str,
        stdin: &[u8],
        output: &mut Output<'_>,
    ) -> Result<(), SshError> {
        let mut pump = Pump {
            connection: self,
            label,
            output,
            partial: [vec![], vec![]],
            tail: VecDeque::new(),
        };
        pump.log(&format!("$ {label}"))?;
        let mut channel = self
            .session
            .channel_session()
            .and_then(|mut channel| channel.exec(command).map(|()| channel))
            .map_err(|e| pump.exec_error(e.into()))?;
        self.session.set_blocking(false);
        let result = pump.pump(&mut channel, stdin);
        if let Err(SshError::ConnectionLost { .. }) = result {
            // Dead for good: make every later use (closing the channel, dropping the
            // session) fail at once instead of waiting out the timeout for an answer.
            let _ = self.socket.shutdown(std::net::Shutdown::Both);
        }
        self.session.set_blocking(true);
        let status = result?;
        pump.log(&format!("exit: {status}"))?;
        if status == ExitStatus::Code(0) {
            return Ok(());
        }
        Err(SshError::CommandFailed {
            node: self.node.clone(),
            command: label.to_owned(),
            status,
            stderr_tail: Vec::from(pump.tail).join("\n"),
        })
    }

    /// Waits up to [`POLL_INTERVAL`] for the socket to be ready in the direction libssh2
    /// is blocked on; true if the node sent something (or closed the connection).
    fn wait_socket(&self) -> io::Result<bool> {
        let mut flags = PollFlags::IN;
        if matches!(
            self.session.block_directions(),
            BlockDirections::Outbound | BlockDirections::Both
        ) {
            flags |= PollFlags::OUT;
        }
        let mut fds = [PollFd::new(&self.socket, flags)];
        match poll(&mut fds, Some(&POLL_INTERVAL)) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(false),
            Err(errno) => return Err(errno.into()),
        }
        Ok(fds[0].revents().intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR))
    }
}

/// One running command: splits its output into lines and remembers stderr's tail.
struct Pump<'c, 'o, 'w> {
    connection: &'c Connection,
    label: &'c str,
    output: &'o mut Output<'w>,
    /// The unfinished last line of stdout and of stderr.
    partial: [Vec<u8>; 2],
    tail: VecDeque<String>,
}

impl Pump<'_, '_, '_> {
    /// Feeds `stdin`, forwards output until both streams end, and returns how the
    /// command ended. The session must be non-blocking.
    fn pump(&mut self, channel: &mut Channel, stdin: &[u8]) -> Result<ExitStatus, SshError> {
        let mut stdin = Some(stdin);
        let mut heard = Instant::now();
        let mut buf = vec![0; 32 * 1024];
        loop {
            let mut busy = write_stdin(channel, &mut stdin);
            let mut ended = 0;
            for stream in [Stream::Stdout, Stream::Stderr] {
                let read = match stream {
                    Stream::Stdout => channel.read(&mut buf),
                    Stream::Stderr => channel.stderr().read(&mut buf),
                };
                match read {
                    Ok(0) => ended += 1,
                    Ok(n) => {
                        self.feed(stream, &buf[..n])?;
                        busy = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(self.lost_error(e)),
                }
            }
            if ended == 2 {
                break;
            }
            if busy {
                heard = Instant::now();
            } else {
                self.idle(&mut heard)?;
            }
        }
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(&mut self.partial[stream as usize]);
            if !rest.is_empty() {
                self.emit(stream, &rest)?;
            }
        }
        loop {
            match channel.wait_close().map_err(io::Error::from) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.idle(&mut heard)?,
                Err(e) => return Err(self.lost_error(e)),
            }
        }
        let signal = channel.exit_signal().map_err(|e| self.exec_error(e.into()))?;
        match signal.exit_signal {
            Some(signal) => Ok(ExitStatus::Signal(signal)),
            None => {
                channel.exit_status().map(ExitStatus::Code).map_err(|e| self.exec_error(e.into()))
            }
        }
    }

    /// Nothing to do: sends a keepalive when one is due, waits for the socket, and fails
    /// once the node has been silent for longer than the connection's timeout. The
    /// keepalive goes first so that its reply arrives while we wait and is noticed here;
    /// libssh2 swallows it silently when it reads the socket for channel data.
    fn idle(&self, heard: &mut Instant) -> Result<(), SshError> {
        let connection = self.connection;
        match connection.session.keepalive_send().map_err(io::Error::from) {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(self.lost_error(e)),
            _ => {}
        }
        if connection.wait_socket().map_err(|e| self.lost_error(e))? {
            *heard = Instant::now();
        } else if heard.elapsed() > connection.timeout {
            let why = format!("the node sent nothing for {:?}", connection.timeout);
            return Err(self.lost_error(io::Error::new(io::ErrorKind::TimedOut, why)));
        }
        Ok(())
    }

    fn feed(&mut self, stream: Stream, data: &[u8]) -> Result<(), SshError> {
        let mut partial = std::mem::take(&mut self.partial[stream as usize]);
        partial.extend_from_slice(data);
        let mut start = 0;
        while let Some(len) = partial[start..].iter().position(|&b| b == b'\n') {
            self.emit(stream, &partial[start..start + len])?;
            start += len + 1;
        }
        partial.drain(..start);
        if partial.len() > MAX_LINE_BYTES {
            self.emit(stream, &partial)?;
            partial.clear();
        }
        self.partial[stream as usize] = partial;
        Ok(())
    }

    fn emit(&mut self, stream: Stream, line: &[u8]) -> Result<(), SshError> {
        let line = String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line));
        let tag = match stream {
            Stream::Stdout => "out",
            Stream::Stderr => "err",
        };
        self.log(&format!("{tag}: {line}"))?;
        (self.output.on_line)(stream, &line);
        if stream == Stream::Stderr {
            if self.tail.len() == STDERR_TAIL_LINES {
                self.tail.pop_front();
            }
            self.tail.push_back(line.into_owned());
        }
        Ok(())
    }

    /// Writes `text` to the log as one line, prefixed with the node.
    fn log(&mut self, text: &str) -> Result<(), SshError> {
        writeln!(self.output.log, "[{}] {text}", self.connection.node).map_err(|source| {
            SshError::WriteLog {
                node: self.connection.node.clone(),
                command: self.label.to_owned(),
                source,
            }
        })
    }

    fn exec_error(&self, source: io::Error) -> SshError {
        SshError::Exec {
            node: self.connection.node.clone(),
            command: self.label.to_owned(),
            source,
        }
    }

    fn lost_error(&self, source: io::Error) -> SshError {
        let node = self.connection.node.clone();
        SshError::ConnectionLost { node, command: self.label.to_owned(), source }
    }
}

/// Writes what the channel takes of the pending input, then sends EOF, after which
/// `stdin` is `None`; true if anything was written. A write error means the command
/// stopped reading (it exited early): how it ended is told by its exit status, and a
/// broken connection by the reads, so the input is just dropped.
fn write_stdin(channel: &mut Channel, stdin: &mut Option<&[u8]>) -> bool {
    let Some(pending) = stdin else { return false };
    let mut wrote = false;
    if !pending.is_empty() {
        match channel.write(pending) {
            Ok(n) => {
                *pending = &pending[n..];
                wrote = n > 0;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(_) => {
                *stdin = None;
                return false;
            }
        }
    }
    if pending.is_empty() {
        match channel.send_eof().map_err(io::Error::from) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            _ => *stdin = None,
        }
    }
    wrote
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_reads_well() {
        assert_eq!(ExitStatus::Code(3).to_string(), "exit status 3");
        assert_eq!(ExitStatus::Signal("KILL".into()).to_string(), "signal KILL");
    }
}
