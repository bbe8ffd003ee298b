//! A read-only TFTP server for PXE boot files (RFC 1350, 2347, 2348, 2349,
//! 7440). `codec` and `transfer` are pure; this module is the tokio edge:
//! sockets, timers, file reads and the path policy.
//!
//! Invariants:
//! - Read-only: write requests are refused.
//! - Only regular files inside the boot-files directory (after resolving
//!   symlinks) or registered in-memory files are served: no `..`, no absolute
//!   escape, no symlink escape.
//! - At most `max_transfers` transfers run at once; beyond that a request gets
//!   an ERROR ("busy") instead of a transfer.
//! - Every transfer ends: on the last ACK, on a client ERROR, or after the
//!   bounded retries of [`transfer::ReadTransfer`].

pub use provisioner_core::tftp::{codec, transfer};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt as _;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use codec::{ErrorCode, Packet};
use transfer::{Limits, ReadTransfer, Step};

/// What the TFTP server serves and how.
#[derive(Debug, Clone)]
pub struct TftpConfig {
    /// Directory of boot files (e.g. Debian's `/usr/lib/ipxe`); `None` serves
    /// only in-memory files.
    pub root: Option<PathBuf>,
    /// Files served from memory, by name (checked before `root`).
    pub files: HashMap<String, Arc<[u8]>>,
    pub limits: Limits,
    /// Concurrent transfers at most.
    pub max_transfers: usize,
}

impl Default for TftpConfig {
    fn default() -> Self {
        TftpConfig {
            root: Some(PathBuf::from("/usr/lib/ipxe")),
            files: HashMap::new(),
            limits: Limits {
                max_blksize: 1468,
                ..Limits::default()
            },
            max_transfers: 256,
        }
    }
}

/// Counters the server keeps (exported as metrics by the daemon).
#[derive(Debug, Default)]
pub struct TftpStats {
    pub(crate) started: AtomicU64,
    pub completed: AtomicU64,
    pub aborted_by_client: AtomicU64,
    pub failed: AtomicU64,
    pub refused: AtomicU64,
    pub malformed: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
}

/// A request the policy refused, with the ERROR to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

/// The bytes of a file being served.
#[derive(Debug, Clone)]
enum Source {
    Memory(Arc<[u8]>),
    Disk(Arc<std::fs::File>),
}

/// Maps a requested name to a relative path inside the root, or refuses it.
/// PXE clients send `undionly.kpxe`, `/undionly.kpxe` or `\\boot\\file`.
pub(crate) fn sanitize(requested: &str) -> Result<PathBuf, Refusal> {
    let deny = |why: &str| Refusal {
        code: ErrorCode::AccessViolation,
        message: why.to_owned(),
    };
    if requested.contains('\0') {
        return Err(deny("invalid file name"));
    }
    let unified = requested.replace('\\', "/");
    let mut path = PathBuf::new();
    for component in Path::new(unified.trim_start_matches('/')).components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(deny("path escapes the boot-files directory"));
            }
        }
    }
    if path.as_os_str().is_empty() {
        return Err(deny("empty file name"));
    }
    Ok(path)
}

impl TftpConfig {
    fn open(&self, requested: &str) -> Result<(Source, u64), Refusal> {
        let relative = sanitize(requested)?;
        let key = relative.to_string_lossy();
        if let Some(bytes) = self.files.get(key.as_ref()) {
            return Ok((Source::Memory(Arc::clone(bytes)), bytes.len() as u64));
        }
        let not_found = || Refusal {
            code: ErrorCode::FileNotFound,
            message: format!("{requested}: not found"),
        };
        let root = self.root.as_ref().ok_or_else(not_found)?;
        let root = root.canonicalize().map_err(|_| not_found())?;
        let path = root
            .join(&relative)
            .canonicalize()
            .map_err(|_| not_found())?;
        if !path.starts_with(&root) {
            return Err(Refusal {
                code: ErrorCode::AccessViolation,
                message: "path escapes the boot-files directory".into(),
            });
        }
        let file = std::fs::File::open(&path).map_err(|_| not_found())?;
        let meta = file.metadata().map_err(|_| not_found())?;
        if !meta.is_file() {
            return Err(not_found());
        }
        Ok((Source::Disk(Arc::new(file)), meta.len()))
    }
}

/// The running server.
#[derive(Debug)]
pub struct TftpServer {
    socket: Arc<UdpSocket>,
    config: Arc<TftpConfig>,
    permits: Arc<Semaphore>,
    pub stats: Arc<TftpStats>,
}

impl TftpServer {
    /// Binds the request socket (port 69 in production, 0 in tests).
    pub async fn bind(addr: SocketAddr, config: TftpConfig) -> std::io::Result<TftpServer> {
        let socket = UdpSocket::bind(addr).await?;
        let permits = Arc::new(Semaphore::new(config.max_transfers));
        Ok(TftpServer {
            socket: Arc::new(socket),
            config: Arc::new(config),
            permits,
            stats: Arc::default(),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Serves requests until the task is dropped.
    pub async fn run(self) -> std::io::Result<()> {
        let mut buf = vec![0u8; 65536];
        let mut out = Vec::with_capacity(1024);
        loop {
            let (len, peer) = self.socket.recv_from(&mut buf).await?;
            let refuse = |code: ErrorCode, message: String| Packet::Error { code, message };
            let reply = match codec::decode(&buf[..len]) {
                Ok(Packet::Read {
                    filename, options, ..
                }) => match self.config.open(&filename) {
                    Ok((source, size)) => match Arc::clone(&self.permits).try_acquire_owned() {
                        Ok(permit) => {
                            self.stats.started.fetch_add(1, Ordering::Relaxed);
                            let (config, stats) =
                                (Arc::clone(&self.config), Arc::clone(&self.stats));
                            let local = self.socket.local_addr()?;
                            tokio::spawn(async move {
                                let _permit = permit;
                                if let Err(err) = serve_read(
                                    local, peer, &filename, &options, source, size, &config, &stats,
                                )
                                .await
                                {
                                    warn!(%peer, file = %filename, %err, "TFTP transfer failed");
                                    stats.failed.fetch_add(1, Ordering::Relaxed);
                                }
                            });
                            None
                        }
                        Err(_) => {
                            self.stats.refused.fetch_add(1, Ordering::Relaxed);
                            Some(refuse(
                                ErrorCode::NotDefined,
                                "server busy, retry later".into(),
                            ))
                        }
                    },
                    Err(refusal) => {
                        debug!(%peer, file = %filename, reason = %refusal.message, "TFTP request refused");
                        self.stats.refused.fetch_add(1, Ordering::Relaxed);
                        Some(refuse(refusal.code, refusal.message))
                    }
                },
                Ok(Packet::Write { .. }) => {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    Some(refuse(
                        ErrorCode::AccessViolation,
                        "read-only server".into(),
                    ))
                }
                // Stray DATA/ACK/ERROR on the request port belong to no transfer.
                Ok(_) => None,
                Err(err) => {
                    self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    debug!(%peer, %err, "malformed TFTP packet dropped");
                    None
                }
            };
            if let Some(packet) = reply {
                codec::encode_into(&packet, &mut out);
                let _ = self.socket.send_to(&out, peer).await;
            }
        }
    }
}

/// Bytes read from disk ahead of the window, so a lock-step client (window 1)
/// does not cost a blocking-pool round trip per block.
#[derive(Debug, Default)]
struct ReadAhead {
    start: u64,
    bytes: Vec<u8>,
}

impl ReadAhead {
    /// Read-ahead per refill: 256 KiB (at most 64 MiB over 256 transfers).
    const CHUNK: u64 = 256 * 1024;

    /// Makes `lo..hi` available, reading from `lo` on when it is not.
    async fn fill(
        &mut self,
        file: &Arc<std::fs::File>,
        lo: u64,
        hi: u64,
        size: u64,
    ) -> std::io::Result<()> {
        if lo >= self.start && hi <= self.start + self.bytes.len() as u64 {
            return Ok(());
        }
        let len = (hi - lo).max(Self::CHUNK).min(size - lo) as usize;
        let file = Arc::clone(file);
        let mut buffer = std::mem::take(&mut self.bytes);
        buffer.resize(len, 0);
        self.bytes = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            file.read_exact_at(&mut buffer, lo)?;
            Ok(buffer)
        })
        .await
        .map_err(std::io::Error::other)??;
        self.start = lo;
        Ok(())
    }

    fn slice(&self, lo: u64, hi: u64) -> &[u8] {
        &self.bytes[(lo - self.start) as usize..(hi - self.start) as usize]
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_read(
    local: SocketAddr,
    peer: SocketAddr,
    filename: &str,
    options: &codec::RequestOptions,
    source: Source,
    size: u64,
    config: &TftpConfig,
    stats: &TftpStats,
) -> std::io::Result<()> {
    // A fresh socket per transfer: its port is the server's transfer ID.
    let socket = UdpSocket::bind(SocketAddr::new(local.ip(), 0)).await?;
    socket.connect(peer).await?;
    let (mut transfer, mut step) = ReadTransfer::start(options, size, config.limits);
    let mut out = Vec::with_capacity(usize::from(transfer.blksize()) + 4);
    let mut datagrams: Vec<u8> = Vec::new();
    let mut read_ahead = ReadAhead::default();
    let mut incoming = vec![0u8; 2048];
    loop {
        match &step {
            Step::SendOack(acked) => {
                codec::encode_into(&Packet::Oack(acked.clone()), &mut out);
                socket.send(&out).await?;
            }
            Step::SendBlocks { first, last } => {
                let (first, last) = (*first, *last);
                let (lo, _) = transfer.block_range(first);
                let (last_offset, last_len) = transfer.block_range(last);
                let hi = last_offset + last_len as u64;
                let bytes: &[u8] = match &source {
                    Source::Memory(bytes) => &bytes[lo as usize..hi as usize],
                    Source::Disk(file) => {
                        read_ahead.fill(file, lo, hi, size).await?;
                        read_ahead.slice(lo, hi)
                    }
                };
                // One buffer holds the whole window: header + payload per block.
                datagrams.clear();
                let mut bounds = Vec::with_capacity((last - first + 1) as usize);
                for block in first..=last {
                    let (offset, len) = transfer.block_range(block);
                    let start = datagrams.len();
                    datagrams.extend_from_slice(&codec::data_header(block as u16));
                    let at = (offset - lo) as usize;
                    datagrams.extend_from_slice(&bytes[at..at + len]);
                    bounds.push((start, datagrams.len()));
                }
                for (start, end) in &bounds {
                    socket.send(&datagrams[*start..*end]).await?;
                    stats
                        .bytes_sent
                        .fetch_add((end - start - 4) as u64, Ordering::Relaxed);
                }
            }
            Step::SendError(code, message) => {
                codec::encode_into(
                    &Packet::Error {
                        code: *code,
                        message: message.clone(),
                    },
                    &mut out,
                );
                let _ = socket.send(&out).await;
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    message.clone(),
                ));
            }
            Step::Done => {
                stats.completed.fetch_add(1, Ordering::Relaxed);
                info!(%peer, file = %filename, bytes = size, "TFTP transfer complete");
                return Ok(());
            }
            Step::Aborted { code, message } => {
                stats.aborted_by_client.fetch_add(1, Ordering::Relaxed);
                debug!(%peer, file = %filename, code = code.code(), %message, "TFTP transfer ended by the client");
                return Ok(());
            }
        }
        // Wait for a packet that moves the transfer, until the timer expires.
        let deadline = tokio::time::Instant::now() + transfer.timeout();
        step = loop {
            match tokio::time::timeout_at(deadline, socket.recv(&mut incoming)).await {
                Err(_) => break transfer.on_timeout(),
                Ok(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
                    // ICMP port unreachable: the client went away.
                    break transfer.on_error(ErrorCode::NotDefined, "client unreachable".into());
                }
                Ok(Err(err)) => return Err(err),
                Ok(Ok(len)) => match codec::decode(&incoming[..len]) {
                    Ok(Packet::Ack { block }) => {
                        if let Some(next) = transfer.on_ack(block) {
                            break next;
                        }
                    }
                    Ok(Packet::Error { code, message }) => break transfer.on_error(code, message),
                    _ => {
                        stats.malformed.fetch_add(1, Ordering::Relaxed);
                    }
                },
            }
        };
    }
}
