//! The downloader: HTTP(S) with resume (`Range`), retries with backoff for connection
//! errors and 5xx, proxies from `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` (reqwest's system
//! proxy), and `file://` copies. Bytes are hashed while they stream: the network is
//! read on this thread and a worker thread writes and hashes, so both overlap.
//!
//! Every source is bounded (issue "Never touch what is not yours"): a local source must
//! be a regular file (a device or FIFO may never end), a body may not grow past the
//! caller's limit (checked against `Content-Length` first, then while streaming), and
//! a redirect may lead only to another http(s) URL.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::header::{CONTENT_RANGE, LOCATION, RANGE};
use sha2::Digest as _;
use url::Url;

use super::ImageError;
use crate::progress::Progress;

/// Bytes read per chunk: large reads keep per-chunk overhead negligible.
const CHUNK: usize = 1 << 20;
/// Chunks in flight between the reader and the hashing writer.
const CHUNKS_IN_FLIGHT: usize = 4;
/// The largest checksum file read into memory (real ones are a few KiB).
const MAX_CHECKSUMS_BYTES: u64 = 1 << 20;

/// Timeouts and retries; `from_env` lets tests shorten them.
#[derive(Debug, Clone)]
pub struct Config {
    /// Limit on establishing a connection.
    pub connect_timeout: Duration,
    /// Limit on a read making no progress (a stalled server), not on the whole body.
    pub read_timeout: Duration,
    /// Further attempts after a retryable failure.
    pub retries: u32,
    /// The first backoff delay; it doubles after each retry.
    pub backoff: Duration,
}

impl Config {
    /// Defaults, overridden by `KUBELAB_READ_TIMEOUT_SECS`, `KUBELAB_DOWNLOAD_RETRIES`
    /// and `KUBELAB_RETRY_BACKOFF_MS` when they hold numbers.
    pub fn from_env() -> Self {
        let num = |var: &str| std::env::var(var).ok().and_then(|v| v.trim().parse::<u64>().ok());
        Self {
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(num("KUBELAB_READ_TIMEOUT_SECS").unwrap_or(60)),
            retries: num("KUBELAB_DOWNLOAD_RETRIES").map_or(4, |n| n.min(100) as u32),
            backoff: Duration::from_millis(num("KUBELAB_RETRY_BACKOFF_MS").unwrap_or(500)),
        }
    }

    /// The HTTP client: a connect limit and a read-idle limit, but no limit on the
    /// whole download (big images take minutes). In reqwest's blocking client,
    /// `timeout` bounds each wait separately (the response head, then every `read`
    /// call: `blocking::wait::timeout` in reqwest 0.13), so it is the read-idle limit;
    /// the async builder's `read_timeout` cannot be used here, as it needs a Tokio
    /// context in the reading thread.
    pub fn client(&self) -> Result<Client, ImageError> {
        Client::builder()
            .connect_timeout(self.connect_timeout)
            .timeout(self.read_timeout)
            .user_agent(concat!("kubelab/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| ImageError::HttpClient { source })
    }
}

/// The user name and password of a URL's userinfo (`https://user:pass@host/...`), split
/// off the URL so that no message, output or file shows them: they go only into the
/// request's `Authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    user: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

impl Credentials {
    /// Takes the userinfo out of `url`, if it has any.
    pub fn take(url: &mut Url) -> Option<Self> {
        if url.username().is_empty() && url.password().is_none() {
            return None;
        }
        let decode =
            |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        let credentials = Self {
            user: decode(url.username()),
            password: decode(url.password().unwrap_or_default()),
        };
        // Only URLs that cannot have userinfo (`file:`, `data:`) refuse; they have none.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Some(credentials)
    }
}

/// `text` (a URL, or what the user typed as one) without its userinfo, for messages and
/// saved files; works on text that does not parse as a URL too.
pub fn redact(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else { return text.to_owned() };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    match authority.rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => text.to_owned(),
    }
}

/// The digests and size of a finished download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashes {
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// SHA-512, when it was asked for.
    pub sha512: Option<String>,
    /// Bytes written.
    pub size_bytes: u64,
}

/// The partial file and the digests of what it holds so far.
struct Sink {
    path: PathBuf,
    file: File,
    sha256: sha2::Sha256,
    sha512: Option<sha2::Sha512>,
    len: u64,
}

impl Sink {
    /// Opens `path`, keeping what an interrupted run left there: it is hashed once to
    /// seed the digests, so the download resumes after it.
    fn open(path: &Path, want_sha512: bool) -> Result<Self, ImageError> {
        let io = |source| ImageError::WritePart { path: path.to_owned(), source };
        let mut file = crate::fsutil::open_nofollow(
            path,
            OpenOptions::new().read(true).write(true).create(true).truncate(false),
        )
        .map_err(io)?;
        let mut sink = Self {
            path: path.to_owned(),
            file: file.try_clone().map_err(io)?,
            sha256: sha2::Sha256::new(),
            sha512: want_sha512.then(sha2::Sha512::new),
            len: 0,
        };
        let mut buf = vec![0; CHUNK];
        loop {
            let n = file.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            sink.update(&buf[..n]);
        }
        Ok(sink)
    }

    fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        if let Some(h) = &mut self.sha512 {
            h.update(bytes);
        }
        self.len += bytes.len() as u64;
    }

    /// Drops what was downloaded so far (the server ignored `Range`).
    fn reset(&mut self) -> Result<(), ImageError> {
        let io = |source| ImageError::WritePart { path: self.path.clone(), source };
        self.file.set_len(0).map_err(io)?;
        self.file.seek(SeekFrom::Start(0)).map_err(io)?;
        self.sha256 = sha2::Sha256::new();
        self.sha512 = self.sha512.as_ref().map(|_| sha2::Sha512::new());
        self.len = 0;
        Ok(())
    }

    /// The digests. No fsync: after a crash the sidecar's size check catches a file
    /// the rename made visible before its data.
    fn finish(self) -> Hashes {
        Hashes {
            sha256: hex::encode(self.sha256.finalize()),
            sha512: self.sha512.map(|h| hex::encode(h.finalize())),
            size_bytes: self.len,
        }
    }
}

/// A failed attempt: worth retrying or not.
enum Failure {
    Retry(ImageError),
    Fatal(ImageError),
}

/// The size of the regular file at `path`. Anything else is refused before it is
/// opened: opening a FIFO blocks, and a device such as `/dev/zero` never ends.
pub fn regular_file_len(path: &Path) -> Result<u64, ImageError> {
    let meta = fs::metadata(path)
        .map_err(|source| ImageError::ReadLocal { path: path.to_owned(), source })?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    let kind = if meta.is_dir() { "a directory" } else { special_kind(&meta.file_type()) };
    Err(ImageError::NotRegularFile { path: path.to_owned(), kind })
}

#[cfg(unix)]
fn special_kind(file_type: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_char_device() || file_type.is_block_device() {
        "a device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn special_kind(_: &fs::FileType) -> &'static str {
    "a special file"
}

/// Downloads `url` (`http`, `https` or `file`) into `part`, resuming what is there,
/// and returns the digests of the whole file, which may hold at most `limit_bytes`.
/// `credentials` go only into the request's `Authorization` header.
pub fn fetch(
    config: &Config,
    url: &Url,
    credentials: Option<&Credentials>,
    part: &Path,
    want_sha512: bool,
    limit_bytes: u64,
    progress: &dyn Progress,
) -> Result<Hashes, ImageError> {
    let mut sink = Sink::open(part, want_sha512)?;
    let label = url.path_segments().and_then(|mut s| s.next_back()).unwrap_or("image").to_owned();
    let result = if url.scheme() == "file" {
        copy_local(url, &mut sink, &label, limit_bytes, progress)
    } else {
        let client = config.client()?;
        let get = Get { client: &client, url, credentials, limit_bytes };
        retrying(config, progress, || get.attempt(&mut sink, &label, progress))
    };
    progress.transfer_end();
    result.map(|()| sink.finish())
}

/// The text of a small file (a release's `SHA256SUMS`), over HTTP(S) or from disk.
pub fn fetch_text(config: &Config, url: &Url) -> Result<String, ImageError> {
    let read_err = |source| ImageError::ReadBody { url: url.to_string(), source };
    let mut text = String::new();
    if url.scheme() == "file" {
        let path = file_path(url)?;
        regular_file_len(&path)?;
        let file = File::open(&path).map_err(|source| ImageError::ReadLocal { path, source })?;
        file.take(MAX_CHECKSUMS_BYTES).read_to_string(&mut text).map_err(read_err)?;
        return Ok(text);
    }
    let client = config.client()?;
    retrying(config, &(), || {
        let resp = client.get(url.as_str()).send().map_err(|source| {
            Failure::Retry(ImageError::Request { url: url.to_string(), source })
        })?;
        refuse_redirect(url, &resp)?;
        check_status(url, resp.status().as_u16())?;
        text.clear();
        resp.take(MAX_CHECKSUMS_BYTES)
            .read_to_string(&mut text)
            .map_err(|source| Failure::Retry(read_err(source)))
    })?;
    Ok(text)
}

/// Runs `attempt` until it succeeds, fails fatally, or the retries are used up,
/// sleeping with exponential backoff in between.
fn retrying<T>(
    config: &Config,
    progress: &dyn Progress,
    mut attempt: impl FnMut() -> Result<T, Failure>,
) -> Result<T, ImageError> {
    let mut delay = config.backoff;
    let mut retries_left = config.retries;
    loop {
        match attempt() {
            Ok(value) => return Ok(value),
            Err(Failure::Fatal(err)) => return Err(err),
            Err(Failure::Retry(err)) if retries_left == 0 => return Err(err),
            Err(Failure::Retry(err)) => {
                progress.message(&format!(
                    "{}; retrying in {:.1} s",
                    crate::error::chain(&err),
                    delay.as_secs_f64()
                ));
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(30));
                retries_left -= 1;
            }
        }
    }
}

/// Fails on statuses other than 2xx: retryable when the server may recover.
fn check_status(url: &Url, status: u16) -> Result<(), Failure> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    let err = ImageError::HttpStatus { url: url.to_string(), status };
    if status >= 500 || status == 408 || status == 429 {
        Err(Failure::Retry(err))
    } else {
        Err(Failure::Fatal(err))
    }
}

/// A redirect reqwest did not follow because it leaves http(s) (`file://` and the like)
/// is refused as such, instead of reading as a failed status.
fn refuse_redirect(url: &Url, resp: &reqwest::blocking::Response) -> Result<(), Failure> {
    if !resp.status().is_redirection() {
        return Ok(());
    }
    let target = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|location| url.join(location).ok());
    match target {
        Some(target) if !matches!(target.scheme(), "http" | "https") => {
            Err(Failure::Fatal(ImageError::RedirectRefused {
                url: url.to_string(),
                scheme: target.scheme().to_owned(),
            }))
        }
        _ => Ok(()),
    }
}

/// One image download over HTTP(S).
struct Get<'a> {
    client: &'a Client,
    url: &'a Url,
    credentials: Option<&'a Credentials>,
    limit_bytes: u64,
}

impl Get<'_> {
    fn too_large(&self) -> Failure {
        Failure::Fatal(ImageError::TooLarge {
            url: self.url.to_string(),
            limit_bytes: self.limit_bytes,
        })
    }

    fn attempt(
        &self,
        sink: &mut Sink,
        label: &str,
        progress: &dyn Progress,
    ) -> Result<(), Failure> {
        let url = self.url;
        let offset = sink.len;
        let mut request = self.client.get(url.as_str());
        if let Some(credentials) = self.credentials {
            request = request.basic_auth(&credentials.user, Some(&credentials.password));
        }
        if offset > 0 {
            request = request.header(RANGE, format!("bytes={offset}-"));
        }
        let mut resp = request.send().map_err(|source| {
            Failure::Retry(ImageError::Request { url: url.to_string(), source })
        })?;
        refuse_redirect(url, &resp)?;
        let status = resp.status().as_u16();
        let range_start = resp
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(content_range_start);
        match status {
            206 if range_start == Some(offset) => {}
            200 | 206 | 416 if offset > 0 => {
                // The server ignored the range (200), answered another one (206), or the
                // partial file is longer than the image (416): start over.
                tracing::info!(url = %url, status, "cannot resume; downloading from the start");
                sink.reset().map_err(Failure::Fatal)?;
                if status != 200 {
                    return Err(Failure::Retry(ImageError::HttpStatus {
                        url: url.to_string(),
                        status,
                    }));
                }
            }
            _ => check_status(url, status)?,
        }
        let total = resp.content_length().map(|n| n + sink.len);
        if total.is_some_and(|total| total > self.limit_bytes) {
            return Err(self.too_large());
        }
        progress.transfer_start(label, total, sink.len);
        pump(&mut resp, sink, self.limit_bytes, progress).map_err(|err| match err {
            PumpError::Read(source) => {
                Failure::Retry(ImageError::ReadBody { url: url.to_string(), source })
            }
            PumpError::Write(source) => {
                Failure::Fatal(ImageError::WritePart { path: sink.path.clone(), source })
            }
            PumpError::TooLarge => self.too_large(),
        })?;
        match total {
            Some(total) if sink.len < total => Err(Failure::Retry(ImageError::Truncated {
                url: url.to_string(),
                got: sink.len,
                expected: total,
            })),
            _ => Ok(()),
        }
    }
}

/// The first byte position of a `Content-Range: bytes START-END/TOTAL` value.
fn content_range_start(value: &str) -> Option<u64> {
    value.strip_prefix("bytes ")?.split_once('-')?.0.trim().parse().ok()
}

/// The local path of a `file://` URL.
pub fn file_path(url: &Url) -> Result<PathBuf, ImageError> {
    url.to_file_path().map_err(|()| ImageError::BadSource {
        source_text: url.to_string(),
        problem: "not a local file path".to_owned(),
    })
}

/// Copies a local file into the sink (from the start: local copies are fast).
fn copy_local(
    url: &Url,
    sink: &mut Sink,
    label: &str,
    limit_bytes: u64,
    progress: &dyn Progress,
) -> Result<(), ImageError> {
    let path = file_path(url)?;
    let too_large = || ImageError::TooLarge { url: url.to_string(), limit_bytes };
    let total = regular_file_len(&path)?;
    if total > limit_bytes {
        return Err(too_large());
    }
    let read_err = |source| ImageError::ReadLocal { path: path.clone(), source };
    let mut file = File::open(&path).map_err(read_err)?;
    sink.reset()?;
    progress.transfer_start(label, Some(total), 0);
    pump(&mut file, sink, limit_bytes, progress).map_err(|err| match err {
        PumpError::Read(source) => read_err(source),
        PumpError::Write(source) => ImageError::WritePart { path: sink.path.clone(), source },
        PumpError::TooLarge => too_large(),
    })
}

enum PumpError {
    Read(io::Error),
    Write(io::Error),
    /// The sink would grow past the limit.
    TooLarge,
}

/// Reads `reader` to its end into the sink, which may hold at most `limit_bytes`. This
/// thread reads; a worker writes and hashes, so the next read overlaps with hashing the
/// previous chunk. A read error keeps every byte read before it (the next attempt
/// resumes after them).
fn pump(
    reader: &mut dyn Read,
    sink: &mut Sink,
    limit_bytes: u64,
    progress: &dyn Progress,
) -> Result<(), PumpError> {
    let mut seen = sink.len;
    let (full_tx, full_rx) = mpsc::sync_channel::<(Vec<u8>, usize)>(CHUNKS_IN_FLIGHT);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
    for _ in 0..CHUNKS_IN_FLIGHT + 1 {
        let _ = empty_tx.send(vec![0; CHUNK]);
    }
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> io::Result<()> {
            for (buf, n) in full_rx {
                sink.file.write_all(&buf[..n])?;
                sink.update(&buf[..n]);
                let _ = empty_tx.send(buf);
            }
            Ok(())
        });
        let mut read_error = None;
        let mut too_large = false;
        // `recv` fails only when the writer stopped early (a write error).
        while let Ok(mut buf) = empty_rx.recv() {
            let (n, err) = fill(reader, &mut buf);
            seen += n as u64;
            if seen > limit_bytes {
                too_large = true;
                break;
            }
            if n > 0 {
                progress.transfer_advance(n as u64);
                if full_tx.send((buf, n)).is_err() {
                    break;
                }
            }
            if err.is_some() || n < CHUNK {
                read_error = err;
                break;
            }
        }
        drop(full_tx);
        match writer.join() {
            Ok(Ok(())) if too_large => Err(PumpError::TooLarge),
            Ok(Ok(())) => read_error.map_or(Ok(()), |e| Err(PumpError::Read(e))),
            Ok(Err(e)) => Err(PumpError::Write(e)),
            Err(_) => Err(PumpError::Write(io::Error::other("writer thread panicked"))),
        }
    })
}

/// Reads until `buf` is full, the end, or an error; returns the bytes read and the error.
fn fill(reader: &mut dyn Read, buf: &mut [u8]) -> (usize, Option<io::Error>) {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (n, Some(e)),
        }
    }
    (n, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url_and_never_print() {
        let mut url = Url::parse("https://al%40ice:s3cr%3At@h.test:8443/x.img?q=1").unwrap();
        let credentials = Credentials::take(&mut url).unwrap();
        assert_eq!(url.as_str(), "https://h.test:8443/x.img?q=1");
        assert_eq!(
            (credentials.user.as_str(), credentials.password.as_str()),
            ("al@ice", "s3cr:t")
        );
        assert!(!format!("{credentials:?}").contains("s3cr"));
        assert_eq!(Credentials::take(&mut url), None);
        for (text, shown) in [
            ("https://u:p@h/x", "https://h/x"),
            ("http://u:p@h", "http://h"),
            ("http://u:p@[::1/x", "http://[::1/x"),
            ("http://h/a@b", "http://h/a@b"),
            ("./disk@2.img", "./disk@2.img"),
        ] {
            assert_eq!(redact(text), shown, "{text}");
        }
    }

    #[test]
    fn pump_stops_past_the_limit_and_accepts_exactly_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let body = vec![1u8; 2 * CHUNK + 5];
        for (limit, fits) in [(body.len() as u64, true), (body.len() as u64 - 1, false)] {
            let mut sink = Sink::open(&dir.path().join(format!("{limit}.part")), false).unwrap();
            let result = pump(&mut body.as_slice(), &mut sink, limit, &());
            assert_eq!(result.is_ok(), fits, "{limit}");
            assert_eq!(matches!(result, Err(PumpError::TooLarge)), !fits, "{limit}");
            assert!(sink.len <= limit);
        }
    }

    #[cfg(unix)]
    #[test]
    fn only_regular_files_are_local_sources() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("disk.img");
        fs::write(&file, b"abc").unwrap();
        assert_eq!(regular_file_len(&file).unwrap(), 3);
        for (path, kind) in [(dir.path(), "a directory"), (Path::new("/dev/zero"), "a device")] {
            let err = regular_file_len(path).unwrap_err();
            assert!(
                matches!(err, ImageError::NotRegularFile { kind: k, .. } if k == kind),
                "{err}"
            );
        }
    }

    #[test]
    fn content_range_start_parses_the_first_position() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes */200"), None);
        assert_eq!(content_range_start("items 1-2/3"), None);
    }

    #[test]
    fn statuses_split_into_retryable_and_fatal() {
        let url = Url::parse("http://127.0.0.1/x").unwrap();
        assert!(check_status(&url, 200).is_ok());
        assert!(matches!(check_status(&url, 503), Err(Failure::Retry(_))));
        assert!(matches!(check_status(&url, 429), Err(Failure::Retry(_))));
        assert!(matches!(check_status(&url, 404), Err(Failure::Fatal(_))));
        assert!(matches!(check_status(&url, 403), Err(Failure::Fatal(_))));
    }

    #[test]
    fn local_copy_hashes_while_streaming_and_resume_seeds_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let src = dir.path().join("src.img");
        std::fs::write(&src, &data).unwrap();
        let part = dir.path().join("x.part");
        std::fs::write(&part, &data[..1000]).unwrap();
        let mut sink = Sink::open(&part, true).unwrap();
        assert_eq!(sink.len, 1000);
        let url = Url::from_file_path(&src).unwrap();
        let exact = data.len() as u64;
        let err = copy_local(&url, &mut sink, "src.img", exact - 1, &()).unwrap_err();
        assert!(
            matches!(err, ImageError::TooLarge { limit_bytes, .. } if limit_bytes == exact - 1)
        );
        copy_local(&url, &mut sink, "src.img", exact, &()).unwrap();
        let hashes = sink.finish();
        assert_eq!(hashes.size_bytes, data.len() as u64);
        assert_eq!(hashes.sha256, hex::encode(sha2::Sha256::digest(&data)));
        assert_eq!(hashes.sha512, Some(hex::encode(sha2::Sha512::digest(&data))));
        assert_eq!(std::fs::read(&part).unwrap(), data);
    }
}
