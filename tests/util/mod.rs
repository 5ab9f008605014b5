//! Helpers shared by the CLI tests: run the built `kubelab` binary against a temporary
//! home, and a small HTTP/1.1 server on 127.0.0.1 whose replies a test scripts
//! (cut a body, stall, ignore `Range`, answer 500) and which counts what it served.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Environment variables that would make a test depend on the machine it runs on.
const SCRUBBED_ENV: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "KUBELAB_PROFILE",
    "KUBELAB_LOG",
];

/// A temporary kubelab home and a way to run the binary in it.
pub struct Kubelab {
    home: tempfile::TempDir,
}

impl Kubelab {
    /// A fresh, empty home.
    pub fn new() -> Self {
        Self { home: tempfile::tempdir().expect("temp home") }
    }

    /// The home directory (`KUBELAB_HOME`).
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// `kubelab ARGS` with `KUBELAB_HOME` set and proxy variables cleared.
    pub fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubelab"));
        for var in SCRUBBED_ENV {
            cmd.env_remove(var);
        }
        cmd.env("KUBELAB_HOME", self.home()).args(args);
        cmd
    }

    /// Runs `kubelab ARGS` to completion.
    pub fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Run::from(self.cmd(args).output().expect("run kubelab"))
    }
}

/// A finished run: exit code and captured output.
#[derive(Debug)]
pub struct Run {
    /// The exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Self {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Panics with the output unless the run succeeded.
    pub fn success(self) -> Self {
        assert_eq!(self.code, Some(0), "kubelab failed:\n{self}");
        self
    }

    /// Panics with the output unless the run exited with `code`.
    pub fn failure(self, code: u8) -> Self {
        assert_eq!(self.code, Some(i32::from(code)), "unexpected exit code:\n{self}");
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Files directly in `dir` (none if it does not exist), sorted.
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.expect("dir entry").path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// `len` bytes of deterministic, incompressible-looking data (xorshift).
pub fn test_data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// One request the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The request target as sent (a path, or an absolute URL through a proxy).
    pub target: String,
    /// The start of a `Range: bytes=START-` header, if any.
    pub range_start: Option<u64>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

/// What the server does after sending part of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Close the connection (the client sees a short body).
    Cut,
    /// Keep the connection open and send nothing more.
    Stall,
}

/// A scripted reply.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body; `Content-Length` announces all of it.
    pub body: Vec<u8>,
    /// Send only this many body bytes, then cut or stall.
    pub stop_after: Option<(usize, After)>,
    /// Sleep this long before each 16 KiB of body (a slow server).
    pub chunk_delay: Option<Duration>,
    /// Repeat the body forever, without `Content-Length`, until the client hangs up.
    pub endless: bool,
}

impl Reply {
    /// A reply with `status` and `body`.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
            stop_after: None,
            chunk_delay: None,
            endless: false,
        }
    }

    /// A 200 reply whose body never ends and announces no length.
    pub fn endless(chunk: impl Into<Vec<u8>>) -> Self {
        Self { endless: true, ..Self::new(200, chunk) }
    }

    /// `data` served as a file: 206 with `Content-Range` for a range request when
    /// `honour_range`, else 200 with all of it.
    pub fn file(data: &[u8], req: &Request, honour_range: bool) -> Self {
        match req.range_start {
            Some(start) if honour_range && (start as usize) < data.len() => {
                let mut reply = Self::new(206, &data[start as usize..]);
                let range = format!("bytes {start}-{}/{}", data.len() - 1, data.len());
                reply.headers.push(("Content-Range".into(), range));
                reply
            }
            Some(_) if honour_range => Self::new(416, Vec::new()),
            _ => Self::new(200, data),
        }
    }

    /// Sends `n` body bytes, then does `after`.
    pub fn stop_after(mut self, n: usize, after: After) -> Self {
        self.stop_after = Some((n, after));
        self
    }

    /// Sleeps `delay` before each 16 KiB of body.
    pub fn slow(mut self, delay: Duration) -> Self {
        self.chunk_delay = Some(delay);
        self
    }
}

type Handler = dyn Fn(&Request, usize) -> Reply + Send + Sync;

#[derive(Default)]
struct Log {
    requests: Vec<Request>,
    body_bytes: Vec<u64>,
}

/// An HTTP/1.1 server on 127.0.0.1 with a scripted handler, one thread per connection.
/// Stopped (and stalled connections released) when dropped.
pub struct HttpServer {
    addr: std::net::SocketAddr,
    log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Starts a server; `handler(request, index)` decides each reply (`index` counts
    /// requests from 0).
    pub fn start(handler: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        let log = Arc::new(Mutex::new(Log::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let accept = {
            let (log, stop) = (log.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (log, stop, handler) = (log.clone(), stop.clone(), handler.clone());
                    std::thread::spawn(move || serve(stream, &log, &stop, &*handler));
                }
            })
        };
        Self { addr, log, stop, accept: Some(accept) }
    }

    /// `http://127.0.0.1:PORT/PATH`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// `http://127.0.0.1:PORT` (for proxy variables).
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().expect("log").requests.clone()
    }

    /// Body bytes written for each request so far.
    pub fn body_bytes(&self) -> Vec<u64> {
        self.log.lock().expect("log").body_bytes.clone()
    }

    /// All body bytes written.
    pub fn total_body_bytes(&self) -> u64 {
        self.body_bytes().iter().sum()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn serve(stream: TcpStream, log: &Mutex<Log>, stop: &AtomicBool, handler: &Handler) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let target = line.split_whitespace().nth(1).unwrap_or("").to_owned();
    let mut range_start = None;
    let mut authorization = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.trim().eq_ignore_ascii_case("range")
        {
            let value = value.trim().trim_start_matches("bytes=");
            range_start = value.split('-').next().and_then(|s| s.parse().ok());
        }
        if let Some((name, value)) = header.split_once(':')
            && name.trim().eq_ignore_ascii_case("authorization")
        {
            authorization = Some(value.trim().to_owned());
        }
    }
    let request = Request { target, range_start, authorization };
    let index = {
        let mut log = log.lock().expect("log");
        log.requests.push(request.clone());
        log.body_bytes.push(0);
        log.requests.len() - 1
    };
    let reply = handler(&request, index);
    let mut out = stream;
    let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", reply.status);
    if !reply.endless {
        head.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
    }
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    if out.write_all(head.as_bytes()).is_err() {
        return;
    }
    // Until the client hangs up (a failed write) or the server stops.
    while reply.endless && !stop.load(Ordering::SeqCst) {
        if out.write_all(&reply.body).is_err() {
            return;
        }
        log.lock().expect("log").body_bytes[index] += reply.body.len() as u64;
    }
    let limit = reply.stop_after.map_or(reply.body.len(), |(n, _)| n.min(reply.body.len()));
    for chunk in reply.body[..limit].chunks(16 * 1024) {
        if let Some(delay) = reply.chunk_delay {
            std::thread::sleep(delay);
        }
        if out.write_all(chunk).is_err() {
            return;
        }
        log.lock().expect("log").body_bytes[index] += chunk.len() as u64;
    }
    let _ = out.flush();
    if let Some((_, After::Stall)) = reply.stop_after {
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = out.shutdown(Shutdown::Write);
}
