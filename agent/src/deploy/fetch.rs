//! Downloading `host.raw.zst`: a [`Read`] over the compressed bytes that
//! resumes a cut transfer with `Range: bytes=N-` (back-off, bounded total
//! time), and a [`Hashing`] reader that counts and hashes what went through.
//!
//! The pure part ([`parse_content_range`], [`judge`]) decides what an answer
//! means; [`Download`] is the edge (ureq, blocking, or a local file).
//!
//! Invariants: a resumed transfer continues at exactly the byte the reader
//! reached (a `200` to a ranged request, or a `206` starting elsewhere, is a
//! failure, never a silent restart); a transfer that ends before the order's
//! size is an interruption, resumed, and after the retry budget an error;
//! bytes are never skipped or repeated.

use std::io::{self, Read};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use crate::net::backoff::Backoff;

/// `Content-Range: bytes START-END/TOTAL` (TOTAL may be `*`): start, end
/// (inclusive) and total. `None` when it is not of that form.
pub fn parse_content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    (end >= start && total.is_none_or(|t| end < t)).then_some((start, end, total))
}

/// What to do with an answer to a request for the bytes from `from` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Read the body: it starts at `from`.
    Go,
    /// A passing trouble (5xx, 408, 429): try again after a pause.
    Retry(String),
    /// It cannot work: stop with this reason.
    Fail(String),
}

/// Judges the answer (`status`, its `Content-Range`) to a GET of the bytes
/// from `from` on (`Range: bytes=from-` when `from > 0`) of a file of `total`
/// bytes. Pure.
pub fn judge(from: u64, total: u64, status: u16, content_range: Option<&str>) -> Answer {
    match status {
        200 if from == 0 => Answer::Go,
        200 => Answer::Fail(format!(
            "the server answered 200 (the whole file) to a request for the bytes from {from} on: \
             it ignores Range, so the transfer cannot resume; serve the image from a server \
             with Range support (the provisioner has it)"
        )),
        206 => match content_range.and_then(parse_content_range) {
            Some((start, _, size)) if start == from && size.is_none_or(|s| s == total) => {
                Answer::Go
            }
            Some((start, _, Some(size))) if start == from => Answer::Fail(format!(
                "the server's file has {size} bytes (Content-Range), the order says {total}: \
                 the image changed on the server; deploy again"
            )),
            Some((start, _, _)) => Answer::Fail(format!(
                "asked for the bytes from {from} on, the server sent them from {start} \
                 (Content-Range); a resumed transfer must continue at the byte it stopped at"
            )),
            None => Answer::Fail(format!(
                "the server answered 206 with Content-Range {content_range:?}, not `bytes \
                 START-END/TOTAL`"
            )),
        },
        416 => Answer::Fail(format!(
            "the server has no bytes from {from} on (416): its file is shorter than the order's \
             {total} bytes (truncated or replaced on the server)"
        )),
        408 | 429 | 500..=599 => Answer::Retry(format!("the server answered {status}")),
        _ => Answer::Fail(format!(
            "the server answered {status}; check the URL and the provisioner's image catalog"
        )),
    }
}

/// How long and how often a cut transfer is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Give up after failing for this long without a byte getting through.
    pub budget: Duration,
    /// The first pause; it doubles up to `max_pause`.
    pub first_pause: Duration,
    pub max_pause: Duration,
    /// A read that waits this long for a byte counts as a cut connection.
    pub read_timeout: Duration,
}

impl Default for Retry {
    /// Three minutes: a switch reboot or a 20 s network cut is survived.
    fn default() -> Retry {
        Retry {
            budget: Duration::from_secs(180),
            first_pause: Duration::from_secs(1),
            max_pause: Duration::from_secs(10),
            read_timeout: Duration::from_secs(15),
        }
    }
}

/// Where the compressed image comes from.
#[derive(Debug, Clone)]
enum Origin {
    Http { url: String, http: ureq::Agent },
    File(PathBuf),
}

/// The compressed image as a stream of exactly `total` bytes, resumed
/// across network errors (see the module doc).
pub struct Download<'a> {
    origin: Origin,
    total: u64,
    pos: u64,
    body: Option<Box<dyn Read + Send>>,
    retry: Retry,
    backoff: Backoff,
    /// When the current run of failures began.
    failing_since: Option<Instant>,
    /// How many times the transfer was resumed.
    pub resumes: u32,
    say: &'a dyn Fn(&str),
}

impl std::fmt::Debug for Download<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("origin", &self.origin)
            .field("total", &self.total)
            .field("pos", &self.pos)
            .field("resumes", &self.resumes)
            .finish_non_exhaustive()
    }
}

impl<'a> Download<'a> {
    /// `source`: an `http://` URL or a local file's path; `total`: the
    /// compressed size the order gives.
    pub fn new(source: &str, total: u64, retry: Retry, say: &'a dyn Fn(&str)) -> Download<'a> {
        let origin = if source.starts_with("http://") {
            Origin::Http {
                url: source.to_owned(),
                http: ureq::Agent::new_with_config(
                    ureq::Agent::config_builder()
                        .timeout_connect(Some(Duration::from_secs(10)))
                        .timeout_recv_response(Some(Duration::from_secs(30)))
                        .timeout_per_read(Some(retry.read_timeout))
                        .http_status_as_error(false)
                        .build(),
                ),
            }
        } else {
            Origin::File(PathBuf::from(source))
        };
        Download {
            origin,
            total,
            pos: 0,
            body: None,
            retry,
            backoff: Backoff::new(retry.first_pause, retry.max_pause),
            failing_since: None,
            resumes: 0,
            say,
        }
    }

    /// Bytes received so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// One attempt to open the stream at `self.pos`.
    fn open(&self) -> Result<Box<dyn Read + Send>, Answer> {
        match &self.origin {
            Origin::File(path) => {
                use std::io::Seek as _;
                let mut file = std::fs::File::open(path)
                    .map_err(|e| Answer::Fail(format!("cannot open {}: {e}", path.display())))?;
                file.seek(io::SeekFrom::Start(self.pos))
                    .map_err(|e| Answer::Fail(format!("cannot seek {}: {e}", path.display())))?;
                Ok(Box::new(file))
            }
            Origin::Http { url, http } => {
                let mut request = http.get(url);
                if self.pos > 0 {
                    request = request.header("Range", &format!("bytes={}-", self.pos));
                }
                let response = request
                    .call()
                    .map_err(|e| Answer::Retry(format!("GET {url}: {e}")))?;
                let range = response
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                match judge(
                    self.pos,
                    self.total,
                    response.status().as_u16(),
                    range.as_deref(),
                ) {
                    Answer::Go => {
                        if self.pos > 0 {
                            (self.say)(&format!(
                                "download resumed at byte {} of {} (Range: bytes={}-, 206 Partial Content)",
                                self.pos, self.total, self.pos
                            ));
                        }
                        Ok(Box::new(response.into_body().into_reader()))
                    }
                    Answer::Retry(why) => Err(Answer::Retry(format!("GET {url}: {why}"))),
                    Answer::Fail(why) => Err(Answer::Fail(format!("GET {url}: {why}"))),
                }
            }
        }
    }

    /// A failure of the transfer at `self.pos`: `Ok` to go on after a pause,
    /// or the error once the retry budget is spent.
    fn failed(&mut self, why: &str) -> io::Result<()> {
        self.body = None;
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.retry.budget {
            return Err(io::Error::other(format!(
                "download stopped at byte {} of {} and did not resume within {} s: {why}; check \
                 the network and that the provisioner serves the image",
                self.pos,
                self.total,
                self.retry.budget.as_secs()
            )));
        }
        let pause = self.backoff.fail();
        (self.say)(&format!(
            "download interrupted at byte {} of {}: {why}; resuming in {} s",
            self.pos,
            self.total,
            pause.as_secs_f32()
        ));
        std::thread::sleep(pause);
        Ok(())
    }
}

impl Read for Download<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.body.is_none() {
                match self.open() {
                    Ok(body) => {
                        if self.pos > 0 {
                            self.resumes += 1;
                            (self.say)(&format!("download resumed at byte {}", self.pos));
                        }
                        self.body = Some(body);
                    }
                    Err(Answer::Fail(why)) => return Err(io::Error::other(why)),
                    Err(Answer::Retry(why)) => {
                        self.failed(&why)?;
                        continue;
                    }
                    Err(Answer::Go) => unreachable!("open() maps Go to Ok"),
                }
            }
            let body = self.body.as_mut().expect("opened above");
            match body.read(buf) {
                Ok(0) if self.pos >= self.total => return Ok(0),
                Ok(0) => {
                    if matches!(self.origin, Origin::File(_)) {
                        // A local file does not grow by waiting.
                        return Ok(0);
                    }
                    let why = format!("the connection closed after byte {}", self.pos);
                    self.failed(&why)?;
                }
                Ok(n) => {
                    self.pos += n as u64;
                    self.failing_since = None;
                    self.backoff.reset();
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.failed(&e.to_string())?,
            }
        }
    }
}

/// Counts and hashes the bytes read through it.
#[derive(Debug)]
pub struct Hashing<R> {
    inner: R,
    hash: Sha256,
    count: u64,
}

impl<R: Read> Hashing<R> {
    pub fn new(inner: R) -> Hashing<R> {
        Hashing {
            inner,
            hash: Sha256::new(),
            count: 0,
        }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn inner(&self) -> &R {
        &self.inner
    }

    /// The lowercase hex SHA-256 of the bytes read so far.
    pub fn hex(&self) -> String {
        crate::upgrade::stream::hex(&self.hash.clone().finalize())
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_forms() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, 199, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, 0, None)));
        for bad in [
            "bytes 100-99/200",
            "bytes 1-200/200",
            "items 0-1/2",
            "bytes 1-/5",
            "bytes x-1/2",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn resume_answers_are_judged_by_status_and_start() {
        assert_eq!(judge(0, 10, 200, None), Answer::Go);
        assert_eq!(judge(4, 10, 206, Some("bytes 4-9/10")), Answer::Go);
        assert_eq!(judge(4, 10, 206, Some("bytes 4-9/*")), Answer::Go);
        let fail = |a: Answer| match a {
            Answer::Fail(why) => why,
            other => panic!("expected a failure, got {other:?}"),
        };
        assert!(fail(judge(4, 10, 200, None)).contains("ignores Range"));
        assert!(fail(judge(4, 10, 206, Some("bytes 0-9/10"))).contains("from 0"));
        assert!(fail(judge(4, 10, 206, Some("bytes 4-11/12"))).contains("12 bytes"));
        assert!(fail(judge(4, 10, 206, None)).contains("not `bytes"));
        assert!(fail(judge(10, 10, 416, None)).contains("shorter"));
        assert!(fail(judge(0, 10, 404, None)).contains("404"));
        assert!(matches!(judge(4, 10, 503, None), Answer::Retry(_)));
        assert!(matches!(judge(0, 10, 429, None), Answer::Retry(_)));
    }

    #[test]
    fn a_local_file_is_read_whole_and_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img.zst");
        std::fs::write(&path, b"hello world").unwrap();
        let quiet = |_: &str| {};
        let mut r = Hashing::new(Download::new(
            path.to_str().unwrap(),
            11,
            Retry::default(),
            &quiet,
        ));
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"hello world");
        assert_eq!(r.count(), 11);
        assert_eq!(
            r.hex(),
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        assert_eq!(r.inner().position(), 11);
    }
}
