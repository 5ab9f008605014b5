//! Running external tools (`qemu-img`, ...): the only module that uses
//! `std::process::Command`. Every command runs with stdin closed and `LC_ALL=C` (so error
//! text is stable English), and its command line is logged at debug level first.

use std::ffi::{OsStr, OsString};
use std::io;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Errors running an external tool.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program is not on `PATH`; its own variant so the hint can say what to install.
    #[error("`{program}` not found on PATH")]
    NotFound {
        /// The program name.
        program: String,
    },
    /// The program exists but could not be started.
    #[error("cannot run `{program}`")]
    Spawn {
        /// The program name.
        program: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The program ran and exited unsuccessfully.
    #[error("`{}` failed ({status}): {}", command_line(program, args), stderr.trim())]
    Failed {
        /// The program name.
        program: String,
        /// Its arguments.
        args: Vec<String>,
        /// How it exited.
        status: ExitStatus,
        /// What it wrote to stderr.
        stderr: String,
        /// What it wrote to stdout (some tools report there, e.g. VBoxManage that a VM
        /// has no snapshots).
        stdout: String,
    },
    /// The program did not finish in time and was killed.
    #[error("`{}` did not finish within {secs} s", command_line(program, args))]
    TimedOut {
        /// The program name.
        program: String,
        /// Its arguments.
        args: Vec<String>,
        /// The limit.
        secs: u64,
    },
}

/// What a successful run printed (lossily decoded as UTF-8).
#[derive(Debug, Clone)]
pub struct Output {
    /// Standard output.
    pub stdout: String,
    /// Standard error (warnings of a successful run).
    pub stderr: String,
}

/// One external program, run as `program ARGS...`.
#[derive(Debug, Clone)]
pub struct Tool {
    program: OsString,
}

impl Tool {
    /// A tool found on `PATH` by name, or given by path.
    pub fn new(program: impl Into<OsString>) -> Self {
        Self { program: program.into() }
    }

    /// Runs the tool to completion with `args`; a non-zero exit is [`ProcessError::Failed`].
    pub fn run<I, S>(&self, args: I) -> Result<Output, ProcessError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_within(args, None)
    }

    /// Like [`Tool::run`], but kills the tool after `timeout` ([`ProcessError::TimedOut`]):
    /// for commands that can wait forever on something the user cannot see (a hidden
    /// Windows permission prompt).
    pub fn run_within<I, S>(
        &self,
        args: I,
        timeout: Option<Duration>,
    ) -> Result<Output, ProcessError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let program = self.program.to_string_lossy().into_owned();
        let shown: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        tracing::debug!(command = %command_line(&program, &shown), "running");
        let spawn_error = |source: io::Error| match source.kind() {
            io::ErrorKind::NotFound => ProcessError::NotFound { program: program.clone() },
            _ => ProcessError::Spawn { program: program.clone(), source },
        };
        let mut child = Command::new(&self.program)
            .args(&args)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        // Read both pipes while waiting, so a chatty tool cannot block on a full pipe.
        let reader = |pipe: Option<Box<dyn io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut buf);
                }
                buf
            })
        };
        let out = reader(child.stdout.take().map(|p| Box::new(p) as Box<dyn io::Read + Send>));
        let err = reader(child.stderr.take().map(|p| Box::new(p) as Box<dyn io::Read + Send>));
        let status = match timeout {
            None => child.wait().map_err(spawn_error)?,
            Some(timeout) => {
                let deadline = Instant::now() + timeout;
                loop {
                    if let Some(status) = child.try_wait().map_err(spawn_error)? {
                        break status;
                    }
                    if Instant::now() >= deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        let secs = timeout.as_secs();
                        return Err(ProcessError::TimedOut { program, args: shown, secs });
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        };
        let output = std::process::Output {
            status,
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        };
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if !output.status.success() {
            return Err(ProcessError::Failed {
                program,
                args: shown,
                status: output.status,
                stderr,
                stdout,
            });
        }
        Ok(Output { stdout, stderr })
    }
}

/// Runs `argv` (program first) attached to this terminal (stdin, stdout and stderr
/// inherited), as `kubelab ssh` runs the user's `ssh`; returns its exit code (128+signal
/// when a signal ended it, like a shell).
pub fn run_interactive(argv: &[OsString]) -> Result<u8, ProcessError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(ProcessError::NotFound { program: String::new() });
    };
    let name = program.to_string_lossy().into_owned();
    tracing::debug!(command = %command_line(&name, &args.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>()), "running interactively");
    let status =
        Command::new(program).args(args).status().map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => ProcessError::NotFound { program: name.clone() },
            _ => ProcessError::Spawn { program: name.clone(), source },
        })?;
    #[cfg(unix)]
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        return Ok(u8::try_from(128 + signal).unwrap_or(u8::MAX));
    }
    Ok(status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1))
}

/// `arg` quoted for a POSIX shell: plain words stay as they are, anything else goes in
/// single quotes.
pub fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:@,+%".contains(&b));
    if plain { arg.to_owned() } else { format!("'{}'", arg.replace('\'', r"'\''")) }
}

/// `program arg1 arg2`, for messages and logs.
fn command_line(program: &str, args: &[String]) -> String {
    std::iter::once(program).chain(args.iter().map(String::as_str)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_a_tool_with_c_locale_and_captures_stdout() {
        let out = Tool::new("sh").run(["-c", "echo $LC_ALL; cat"]).unwrap();
        assert_eq!(out.stdout, "C\n", "stdin must be empty and LC_ALL=C");
    }

    #[test]
    fn interactive_run_passes_the_exit_code_through() {
        let argv: Vec<OsString> = ["sh", "-c", "exit 7"].map(OsString::from).to_vec();
        assert_eq!(run_interactive(&argv).unwrap(), 7);
    }

    #[test]
    fn shell_quote_keeps_words_and_quotes_the_rest() {
        assert_eq!(shell_quote("v1.31.0"), "v1.31.0");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's $HOME"), r"'it'\''s $HOME'");
    }

    #[test]
    fn missing_program_is_not_found() {
        let err = Tool::new("kubelab-no-such-tool").run(["x"]).unwrap_err();
        assert!(
            matches!(err, ProcessError::NotFound { ref program } if program == "kubelab-no-such-tool")
        );
    }

    #[test]
    fn a_tool_past_its_timeout_is_killed() {
        let started = Instant::now();
        let err =
            Tool::new("sleep").run_within(["30"], Some(Duration::from_millis(200))).unwrap_err();
        assert!(matches!(err, ProcessError::TimedOut { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn failure_keeps_status_and_stderr() {
        let err = Tool::new("sh").run(["-c", "echo boom >&2; exit 3"]).unwrap_err();
        let ProcessError::Failed { status, stderr, .. } = &err else { panic!("{err:?}") };
        assert_eq!(status.code(), Some(3));
        assert_eq!(stderr, "boom\n");
        assert_eq!(err.to_string(), "`sh -c echo boom >&2; exit 3` failed (exit status: 3): boom");
    }
}
