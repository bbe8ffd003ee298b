//! Serving boot files and images over HTTP: `Range` (one range; 206, 416),
//! a strong `ETag`, `If-None-Match` (304), `If-Range`, streamed from disk.
//!
//! [`plan`] is the pure part (headers in, what to send out); [`respond`] is
//! the edge that opens the file and streams it in 64 KiB chunks, so memory
//! stays flat whatever the file size. [`resolve`] confines names to a
//! directory (no `..`, no symlink escape).

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

/// Bytes read from disk per chunk of a response body.
const CHUNK: usize = 64 * 1024;

/// What to answer for a file of `len` bytes with entity tag `etag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// 304: the client's copy (`If-None-Match`) is current.
    NotModified,
    /// 200 with the whole file.
    Full,
    /// 206 with bytes `first..=last`.
    Partial { first: u64, last: u64 },
    /// 416: the range starts past the end.
    Unsatisfiable,
}

/// The request headers [`plan`] looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Conditions<'a> {
    pub range: Option<&'a str>,
    pub if_range: Option<&'a str>,
    pub if_none_match: Option<&'a str>,
}

impl<'a> Conditions<'a> {
    pub(crate) fn from_headers(headers: &'a HeaderMap) -> Self {
        let get = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        Conditions {
            range: get(header::RANGE),
            if_range: get(header::IF_RANGE),
            if_none_match: get(header::IF_NONE_MATCH),
        }
    }
}

/// Whether an `If-None-Match` list matches `etag` (weak comparison, RFC 9110 13.1.2).
fn none_match_hits(list: &str, etag: &str) -> bool {
    let opaque = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    list.trim() == "*" || list.split(',').any(|t| opaque(t) == opaque(etag))
}

/// Parses a single `bytes=` range against a length; `None` means "ignore
/// the header and send everything" (several ranges, other units, bad syntax:
/// RFC 9110 14.2 lets a server do that), `Some(None)` unsatisfiable.
fn parse_range(text: &str, len: u64) -> Option<Option<(u64, u64)>> {
    let spec = text.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let (start, end) = (start.trim(), end.trim());
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    if start.is_empty() {
        // Suffix range: the last N bytes.
        let n = number(end)?;
        return Some((n > 0 && len > 0).then(|| (len - n.min(len), len - 1)));
    }
    let first = number(start)?;
    let last = if end.is_empty() {
        u64::MAX
    } else {
        number(end)?
    };
    if last < first {
        return None;
    }
    Some((first < len).then(|| (first, last.min(len - 1))))
}

/// Decides the answer (RFC 9110 section 13 order: If-None-Match, then Range with If-Range).
pub(crate) fn plan(len: u64, etag: &str, conditions: &Conditions<'_>) -> Plan {
    if conditions
        .if_none_match
        .is_some_and(|list| none_match_hits(list, etag))
    {
        return Plan::NotModified;
    }
    let Some(range) = conditions.range else {
        return Plan::Full;
    };
    // If-Range uses the strong comparison; a date (we send no Last-Modified) never matches.
    if conditions
        .if_range
        .is_some_and(|tag| tag.trim() != etag || tag.trim().starts_with("W/"))
    {
        return Plan::Full;
    }
    match parse_range(range, len) {
        None => Plan::Full,
        Some(None) => Plan::Unsatisfiable,
        Some(Some((first, last))) => Plan::Partial { first, last },
    }
}

/// A strong entity tag from the file's identity and content version: size,
/// modification time (ns) and inode. Rewriting a file changes it.
pub(crate) fn etag(meta: &std::fs::Metadata) -> String {
    format!(
        "\"{:x}-{:x}{:08x}-{:x}\"",
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ino()
    )
}

/// Why a file name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ResolveError {
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{0}: outside the served directory")]
    Escape(String),
}

/// The regular file `name` inside `root`, after resolving symlinks; refuses
/// `..`, absolute names and links that lead out of `root`.
pub(crate) fn resolve(root: &Path, name: &str) -> Result<PathBuf, ResolveError> {
    let relative =
        crate::tftp::sanitize(name).map_err(|_| ResolveError::Escape(name.to_owned()))?;
    let not_found = || ResolveError::NotFound(name.to_owned());
    let root = root.canonicalize().map_err(|_| not_found())?;
    let path = root
        .join(relative)
        .canonicalize()
        .map_err(|_| not_found())?;
    if !path.starts_with(&root) {
        return Err(ResolveError::Escape(name.to_owned()));
    }
    if !path.is_file() {
        return Err(not_found());
    }
    Ok(path)
}

fn status(code: StatusCode, text: &str) -> Response {
    (code, format!("{text}\n")).into_response()
}

/// Streams `path` as [`plan`] decides. `HEAD` requests get the same headers
/// (axum drops the body).
pub(crate) async fn respond(path: &Path, headers: &HeaderMap) -> Response {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(_) => return status(StatusCode::NOT_FOUND, "not found"),
    };
    let meta = match file.metadata().await {
        Ok(meta) if meta.is_file() => meta,
        _ => return status(StatusCode::NOT_FOUND, "not found"),
    };
    let len = meta.len();
    let tag = etag(&meta);
    let decision = plan(len, &tag, &Conditions::from_headers(headers));
    let mut builder = Response::builder()
        .header(header::ETAG, &tag)
        .header(header::ACCEPT_RANGES, "bytes");
    let (first, count) = match decision {
        Plan::NotModified => {
            return builder
                .status(StatusCode::NOT_MODIFIED)
                .body(Body::empty())
                .unwrap_or_else(|_| status(StatusCode::INTERNAL_SERVER_ERROR, "response"));
        }
        Plan::Unsatisfiable => {
            return builder
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                .body(Body::empty())
                .unwrap_or_else(|_| status(StatusCode::INTERNAL_SERVER_ERROR, "response"));
        }
        Plan::Full => {
            builder = builder.status(StatusCode::OK);
            (0, len)
        }
        Plan::Partial { first, last } => {
            builder = builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {first}-{last}/{len}"));
            (first, last - first + 1)
        }
    };
    if first > 0 && file.seek(std::io::SeekFrom::Start(first)).await.is_err() {
        return status(StatusCode::INTERNAL_SERVER_ERROR, "cannot seek in the file");
    }
    let stream = futures_util::stream::unfold((file, count), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0u8; CHUNK.min(usize::try_from(left).unwrap_or(CHUNK))];
        match file.read(&mut buf).await {
            // The file shrank under us: end the body early (the length header
            // makes the client see a short read rather than wrong bytes).
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((
                    Ok::<_, std::io::Error>(Bytes::from(buf)),
                    (file, left - n as u64),
                ))
            }
            Err(err) => Some((Err(err), (file, 0))),
        }
    });
    builder
        .header(header::CONTENT_LENGTH, count)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| status(StatusCode::INTERNAL_SERVER_ERROR, "response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &str = "\"a-1-2\"";

    fn p(range: Option<&str>, if_range: Option<&str>, inm: Option<&str>) -> Plan {
        plan(
            100,
            TAG,
            &Conditions {
                range,
                if_range,
                if_none_match: inm,
            },
        )
    }

    #[test]
    fn ranges() {
        use Plan::*;
        let cases: &[(&str, Plan)] = &[
            ("bytes=0-9", Partial { first: 0, last: 9 }),
            (
                "bytes=10-",
                Partial {
                    first: 10,
                    last: 99,
                },
            ),
            (
                "bytes=90-500",
                Partial {
                    first: 90,
                    last: 99,
                },
            ),
            (
                "bytes=-10",
                Partial {
                    first: 90,
                    last: 99,
                },
            ),
            ("bytes=-500", Partial { first: 0, last: 99 }),
            (
                "bytes=99-99",
                Partial {
                    first: 99,
                    last: 99,
                },
            ),
            ("bytes=100-", Unsatisfiable),
            ("bytes=100-200", Unsatisfiable),
            ("bytes=-0", Unsatisfiable),
            // Ignored: the whole file is sent.
            ("bytes=5-1", Full),
            ("bytes=0-1,5-6", Full),
            ("items=0-1", Full),
            ("bytes=a-b", Full),
            ("bytes=-", Full),
            ("bytes=+1-2", Full),
        ];
        for (range, expected) in cases {
            assert_eq!(&p(Some(range), None, None), expected, "{range}");
        }
        assert_eq!(p(None, None, None), Full);
        assert_eq!(
            plan(
                0,
                TAG,
                &Conditions {
                    range: Some("bytes=0-"),
                    ..Default::default()
                }
            ),
            Unsatisfiable
        );
    }

    #[test]
    fn conditions() {
        use Plan::*;
        assert_eq!(p(None, None, Some(TAG)), NotModified);
        assert_eq!(p(None, None, Some("\"x\", W/\"a-1-2\"")), NotModified);
        assert_eq!(p(None, None, Some("*")), NotModified);
        assert_eq!(p(None, None, Some("\"other\"")), Full);
        assert_eq!(
            p(Some("bytes=0-1"), Some(TAG), None),
            Partial { first: 0, last: 1 }
        );
        assert_eq!(p(Some("bytes=0-1"), Some("\"old\""), None), Full);
        assert_eq!(p(Some("bytes=0-1"), Some("W/\"a-1-2\""), None), Full);
        assert_eq!(
            p(
                Some("bytes=0-1"),
                Some("Sat, 21 Nov 2026 10:00:00 GMT"),
                None
            ),
            Full
        );
    }

    proptest::proptest! {
        /// Any Range header on any length: a partial answer stays inside the file.
        #[test]
        fn partial_answers_stay_inside_the_file(
            len in 0u64..1_000_000,
            range in "(bytes=)?[-0-9, ]{0,24}",
            a in 0u64..2_000_000,
            b in 0u64..2_000_000,
        ) {
            for header in [range, format!("bytes={a}-{b}"), format!("bytes={a}-"), format!("bytes=-{a}")] {
                let conditions = Conditions { range: Some(&header), ..Default::default() };
                if let Plan::Partial { first, last } = plan(len, TAG, &conditions) {
                    proptest::prop_assert!(first <= last && last < len, "{header} on {len}: {first}-{last}");
                }
            }
        }
    }

    #[test]
    fn names_stay_inside_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("snponly.efi"), b"x").unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).unwrap();
        std::os::unix::fs::symlink(root.join("snponly.efi"), root.join("inside")).unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        assert!(resolve(&root, "snponly.efi").is_ok());
        assert!(resolve(&root, "inside").is_ok());
        assert_eq!(
            resolve(&root, "link"),
            Err(ResolveError::Escape("link".into()))
        );
        assert_eq!(
            resolve(&root, "../secret"),
            Err(ResolveError::Escape("../secret".into()))
        );
        assert_eq!(
            resolve(&root, "/etc/passwd"),
            Err(ResolveError::NotFound("/etc/passwd".into()))
        );
        assert_eq!(
            resolve(&root, "sub"),
            Err(ResolveError::NotFound("sub".into()))
        );
        assert_eq!(
            resolve(&root, "nope"),
            Err(ResolveError::NotFound("nope".into()))
        );
    }
}
