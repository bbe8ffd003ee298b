//! Deploy and clean, in the inspection ramdisk: write the host image onto
//! the root disk ([`deploy`], [`write_image`]) and erase disks ([`clean`]).
//! Also the write path of `node-agent write-image` (no provisioner).
//!
//! The deploy, step by step (each failure names its step, as in
//! [`model::deploy::DeployedReport::step`]):
//! 1. `select disk`: [`model::deploy::select_root_disk`] over the inspected disks.
//! 2. `write`: zero the disk's first and last MiB (old primary and backup
//!    GPT: a half-written disk has no table and never boots), then stream
//!    `host.raw.zst` ([`fetch::Download`], resumed with `Range`), hashed
//!    compressed, decoded (zstd, window capped at 2^27), in 4 MiB aligned
//!    `O_DIRECT` writes ([`device`]) from the image's second MiB on; the
//!    first MiB (MBR, primary GPT) is held in memory.
//! 3. `download`: the compressed stream's size and SHA-256 match the order.
//! 4. `verify`: fsync, drop the page cache, read the body back (`O_DIRECT`);
//!    SHA-256 of head ‖ body equals the order's `raw_sha256`.
//! 5. `partition table`: the head written, the GPT moved to the disk's end
//!    with `data` grown ([`plan::relocate`]), protective MBR, fsync,
//!    `BLKRRPART` (a refusal is only said: the node reboots next, and the
//!    config below is placed by the table we computed, not by the kernel's).
//! 6. `config`: the sealed slot into the `config` partition's free slot, fsync.
//!
//! Invariants: never reports success after a short, long or altered
//! download or a read-back mismatch; the partition table is written last
//! (before the config), after the body was read back; memory is constant
//! (one 4 MiB buffer, the 1 MiB head, the zstd window) whatever the image
//! size; every device error names the step, the device and the byte offset.

pub mod blk;
pub mod device;
pub mod fetch;
pub mod plan;
#[cfg(test)]
mod tests;

use std::io::{self, Read};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use gptman::GPT;
use model::deploy::{
    DeployOrder, DeployPhase, DeployProgress, EraseMode, SLOT_BYTES, select_root_disk,
};
use model::inventory::Disk;
use sha2::{Digest as _, Sha256};

use crate::sysroot::SysRoot;
use crate::upgrade::stream::{Meter, fill, hex};
use device::{AlignedBuf, CHUNK, Device};
use fetch::{Download, Hashing, Retry};
use plan::HEAD;

/// The largest zstd window accepted (2^27 = 128 MiB; `zstd -19` uses 8 MiB).
pub const WINDOW_LOG_MAX: u32 = 27;

/// A failed step, in words with the device error.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{step}: {message}")]
pub struct Failure {
    /// `select disk`, `download`, `write`, `verify`, `partition table`,
    /// `config`, `erase`.
    pub step: &'static str,
    pub message: String,
}

fn fail(step: &'static str, message: impl std::fmt::Display) -> Failure {
    Failure {
        step,
        message: message.to_string(),
    }
}

/// Progress shared with the heartbeat loop.
#[derive(Debug, Default)]
pub struct Progress {
    /// 0: not started; else [`DeployPhase`] index + 1.
    phase: AtomicU8,
    done: AtomicU64,
    total: AtomicU64,
}

const PHASES: [DeployPhase; 4] = [
    DeployPhase::Writing,
    DeployPhase::Verifying,
    DeployPhase::Finishing,
    DeployPhase::Erasing,
];

impl Progress {
    /// Starts `phase` of `total` bytes.
    pub fn start(&self, phase: DeployPhase, total: u64) {
        let index = PHASES.iter().position(|p| *p == phase).expect("listed");
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
        self.phase.store(index as u8 + 1, Ordering::Relaxed);
    }

    pub fn set_done(&self, done: u64) {
        self.done.store(done, Ordering::Relaxed);
    }

    /// For a heartbeat: `None` before the first phase.
    pub fn snapshot(&self) -> Option<DeployProgress> {
        let phase = *PHASES.get(usize::from(self.phase.load(Ordering::Relaxed)).checked_sub(1)?)?;
        Some(DeployProgress {
            phase,
            done_bytes: self.done.load(Ordering::Relaxed),
            total_bytes: self.total.load(Ordering::Relaxed),
        })
    }
}

/// The image to write: where from, its compressed and raw size and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// An `http://` URL or a local file.
    pub source: String,
    pub compressed_size: u64,
    pub compressed_sha256: String,
    pub raw_size: u64,
    pub raw_sha256: String,
}

impl From<&DeployOrder> for Image {
    fn from(order: &DeployOrder) -> Image {
        Image {
            source: order.url.clone(),
            compressed_size: order.compressed_size,
            compressed_sha256: order.compressed_sha256.clone(),
            raw_size: order.raw_size,
            raw_sha256: order.raw_sha256.clone(),
        }
    }
}

/// What writing an image did.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub raw_bytes: u64,
    pub write_time: Duration,
    pub verify_time: Duration,
    /// Times the download was resumed.
    pub resumes: u32,
    /// `O_DIRECT` was used (else the page cache and fsync).
    pub direct: bool,
    /// The `data` partition's size after growing, in bytes.
    pub data_bytes: u64,
}

/// Opens disk `path` (a host path through `sys`), with its logical block size
/// from sysfs (`queue/logical_block_size`; 512 when unreadable).
pub fn open_disk(sys: &SysRoot, path: &str, say: &dyn Fn(&str)) -> Result<Device, Failure> {
    let name = std::path::Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let block = sys
        .read_u64(&format!("/sys/class/block/{name}/queue/logical_block_size"))
        .unwrap_or(512);
    let dev = Device::open(&sys.path(path), path, block).map_err(|e| {
        fail(
            "write",
            format!("{e}; check that the disk is present and not in use"),
        )
    })?;
    if !dev.direct {
        say(&format!(
            "{path}: the file system refuses O_DIRECT (tmpfs?): writing through the page cache, \
             made durable with fsync"
        ));
    }
    Ok(dev)
}

fn rate(bytes: u64, time: Duration) -> String {
    format!(
        "{:.1} MiB in {:.1} s, {:.1} MiB/s",
        bytes as f64 / f64::from(1 << 20),
        time.as_secs_f64(),
        bytes as f64 / f64::from(1 << 20) / time.as_secs_f64().max(1e-6)
    )
}

/// Writes `image` onto `dev` and verifies it, then writes the partition
/// table (steps 2 to 5 of the module doc). The table it wrote.
pub fn write_image(
    image: &Image,
    dev: &Device,
    retry: Retry,
    progress: &Progress,
    say: &dyn Fn(&str),
) -> Result<(Written, GPT), Failure> {
    let raw = image.raw_size;
    if raw < 2 * HEAD as u64 || raw + (1 << 20) > dev.size {
        return Err(fail(
            "write",
            format!(
                "the image has {raw} bytes and {} has {}: a host image needs at least 2 MiB, and \
                 the disk 1 MiB more than the image (for the backup GPT); choose a larger disk",
                dev.name, dev.size
            ),
        ));
    }
    // 1. No table at either end until the image is verified.
    progress.start(DeployPhase::Writing, raw);
    let last = (dev.size - (1 << 20)) / dev.block * dev.block;
    for (start, end) in [(0, 1 << 20), (last, dev.size)] {
        dev.zero(start, end, &mut |_| {}).map_err(|e| {
            fail(
                "write",
                format!("{e} (erasing the old partition table); check the disk (dmesg)"),
            )
        })?;
    }
    dev.sync()
        .map_err(|e| fail("write", format!("{e}; check the disk (dmesg)")))?;
    say(&format!(
        "writing {} ({} bytes raw, {} compressed) onto {} ({} bytes, {})",
        image.source,
        raw,
        image.compressed_size,
        dev.name,
        dev.size,
        if dev.direct {
            "O_DIRECT"
        } else {
            "page cache + fsync"
        }
    ));

    // 2. Stream, decode, write the body; keep the head.
    let started = Instant::now();
    let download = Download::new(&image.source, image.compressed_size, retry, say);
    let mut decoder = zstd::stream::read::Decoder::new(Hashing::new(download))
        .map_err(|e| fail("download", format!("zstd: {e}")))?;
    decoder
        .window_log_max(WINDOW_LOG_MAX)
        .map_err(|e| fail("download", format!("zstd: {e}")))?;
    let mut head = vec![0u8; HEAD];
    write_body(&mut decoder, dev, raw, &mut head, progress, say)?;
    let pos = raw;
    if fill(&mut decoder, &mut [0u8; 1]).map_err(|e| read_error(e, pos))? != 0 {
        return Err(fail(
            "download",
            format!(
                "the image decompresses to more than the order's {raw} bytes: the image on the \
                 server is not the one ordered"
            ),
        ));
    }
    let mut hashing = decoder.finish().into_inner();
    // The compressed stream after the last zstd frame, if any (counted, hashed).
    io::copy(&mut (&mut hashing).take(1 << 20), &mut io::sink()).map_err(|e| read_error(e, pos))?;
    let (count, sha) = (hashing.count(), hashing.hex());
    let resumes = hashing.inner().resumes;
    if count != image.compressed_size || sha != image.compressed_sha256 {
        return Err(fail(
            "download",
            format!(
                "the compressed image has {count} bytes with SHA-256 {sha}, the order says {} \
                 bytes with {}: the download was altered or the server's file is not the ordered \
                 image; nothing boots from this disk (no partition table); deploy again",
                image.compressed_size, image.compressed_sha256
            ),
        ));
    }
    dev.sync()
        .map_err(|e| fail("write", format!("{e}; check the disk (dmesg)")))?;
    let write_time = started.elapsed();
    say(&format!(
        "wrote {} ({}; {resumes} resumes)",
        dev.name,
        rate(raw, write_time)
    ));

    // 3. Read the body back from the disk.
    let started = Instant::now();
    progress.start(DeployPhase::Verifying, raw);
    dev.drop_cache()
        .map_err(|e| fail("verify", format!("{e}")))?;
    let mut hash = Sha256::new();
    hash.update(&head);
    let mut say_mut = |line: &str| say(line);
    let mut meter = Meter::new(format!("verifying {}", dev.name), raw, &mut say_mut);
    let mut pos = HEAD as u64;
    let hashed = &mut hash;
    two_buffers(
        |buf| {
            if pos >= raw {
                return Ok(None);
            }
            let n = (raw - pos).min(CHUNK as u64) as usize;
            dev.read_at(&mut buf.as_mut_slice()[..n], pos)
                .map_err(|e| {
                    fail(
                        "verify",
                        format!("{e}; the disk is failing (check dmesg); it does not boot"),
                    )
                })?;
            let at = pos;
            pos += n as u64;
            meter.update(pos);
            Ok(Some((n, at)))
        },
        |buf, len, at| {
            hashed.update(&buf.as_slice()[..len]);
            progress.set_done(at + len as u64);
            Ok(())
        },
    )?;
    let read = hex(&hash.finalize());
    if read != image.raw_sha256 {
        return Err(fail(
            "verify",
            format!(
                "{} read back SHA-256 {read}, the order says {}: the disk does not keep what is \
                 written (check dmesg, SMART); no partition table was written, it does not boot",
                dev.name, image.raw_sha256
            ),
        ));
    }
    let verify_time = started.elapsed();
    say(&format!(
        "read back {}: SHA-256 matches ({})",
        dev.name,
        rate(raw, verify_time)
    ));

    // 4. The partition table, last.
    progress.start(DeployPhase::Finishing, 0);
    let (gpt, data_bytes) = write_table(dev, &head, say)?;
    Ok((
        Written {
            raw_bytes: raw,
            write_time,
            verify_time,
            resumes,
            direct: dev.direct,
            data_bytes,
        },
        gpt,
    ))
}

/// A failure reading the decompressed image after `pos` of its bytes.
fn read_error(e: io::Error, pos: u64) -> Failure {
    fail(
        "download",
        format!(
            "after {pos} bytes of the decompressed image: {e}; nothing boots from this disk (no \
             partition table); deploy again"
        ),
    )
}

/// Decodes the image's `raw` bytes from `decoder` into [`CHUNK`] buffers
/// and writes them from a second thread, so the next chunk is decoded while
/// the last one is written (two buffers in all: memory stays constant). The
/// first [`HEAD`] bytes go to `head`, not to the disk. A write error wins
/// over the read error it causes.
fn write_body(
    decoder: &mut impl Read,
    dev: &Device,
    raw: u64,
    head: &mut [u8],
    progress: &Progress,
    say: &dyn Fn(&str),
) -> Result<(), Failure> {
    let mut say_mut = |line: &str| say(line);
    let mut meter = Meter::new(format!("writing {}", dev.name), raw, &mut say_mut);
    let mut pos = 0u64;
    two_buffers(
        |buf| {
            if pos >= raw {
                return Ok(None);
            }
            let want = (raw - pos).min(CHUNK as u64) as usize;
            let got =
                fill(decoder, &mut buf.as_mut_slice()[..want]).map_err(|e| read_error(e, pos))?;
            if got < want {
                return Err(fail(
                    "download",
                    format!(
                        "the image decompressed to {} bytes, the order says {raw}: the image on \
                         the server is not the one ordered; deploy again",
                        pos + got as u64
                    ),
                ));
            }
            if pos == 0 {
                head.copy_from_slice(&buf.as_slice()[..HEAD]);
            }
            let at = pos;
            pos += got as u64;
            meter.update(pos);
            Ok(Some((got, at)))
        },
        |buf, len, at| {
            let skip = if at == 0 { HEAD } else { 0 };
            dev.write_at(&buf.as_slice()[skip..len], at + skip as u64)
                .map_err(|e| {
                    fail(
                        "write",
                        format!(
                            "{e}; the disk is failing or was removed (check dmesg); it does not \
                             boot"
                        ),
                    )
                })?;
            progress.set_done(at + len as u64);
            Ok(())
        },
    )
}

/// Runs `produce` (on this thread) and `consume` (on a second one) over two
/// [`CHUNK`] buffers, so the next buffer is filled while the last one is
/// used: memory stays at two buffers. `produce` fills one and says its
/// length and offset, or `None` at the end. The consumer's error wins over
/// the producer's (which it causes by stopping).
fn two_buffers(
    mut produce: impl FnMut(&mut AlignedBuf) -> Result<Option<(usize, u64)>, Failure>,
    mut consume: impl FnMut(&AlignedBuf, usize, u64) -> Result<(), Failure> + Send,
) -> Result<(), Failure> {
    use std::sync::mpsc::sync_channel;
    std::thread::scope(|scope| {
        let (full_tx, full_rx) = sync_channel::<(AlignedBuf, usize, u64)>(1);
        let (empty_tx, empty_rx) = sync_channel::<AlignedBuf>(2);
        for _ in 0..2 {
            empty_tx.send(AlignedBuf::new(CHUNK)).expect("room for two");
        }
        let consumer = scope.spawn(move || {
            for (buf, len, at) in full_rx {
                consume(&buf, len, at)?;
                if empty_tx.send(buf).is_err() {
                    break;
                }
            }
            Ok(())
        });
        let produced = (|| {
            // No buffer back: the consumer stopped, its error is the one to report.
            while let Ok(mut buf) = empty_rx.recv() {
                let Some((len, at)) = produce(&mut buf)? else {
                    break;
                };
                if full_tx.send((buf, len, at)).is_err() {
                    break;
                }
            }
            Ok(())
        })();
        drop(full_tx);
        let consumed = consumer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        consumed.and(produced)
    })
}

/// Writes the verified head with the GPT moved to the disk's end and `data`
/// grown, and the protective MBR; fsync; asks the kernel to re-read it.
fn write_table(dev: &Device, head: &[u8], say: &dyn Fn(&str)) -> Result<(GPT, u64), Failure> {
    let step = "partition table";
    let (mut gpt, data_bytes) = plan::relocate(head, dev.size).map_err(|e| fail(step, e))?;
    let device_error = |e: &dyn std::fmt::Display| {
        fail(
            step,
            format!(
                "{e} on {}; the disk has no valid table and does not boot; deploy again",
                dev.name
            ),
        )
    };
    dev.write_at(head, 0).map_err(|e| device_error(&e))?;
    let mut file = dev.file();
    gpt.write_into(&mut file).map_err(|e| device_error(&e))?;
    GPT::write_protective_mbr_into(&mut file, gpt.sector_size).map_err(|e| device_error(&e))?;
    dev.sync().map_err(|e| device_error(&e))?;
    say(&format!(
        "partition table written on {}: backup GPT at the disk's end, data grown to {} MiB",
        dev.name,
        data_bytes >> 20
    ));
    if dev.is_block
        && let Err(e) = blk::reread_partitions(dev.file())
    {
        say(&format!(
            "{}: the kernel did not re-read the partition table ({e}); harmless, the node \
             reboots from the disk next",
            dev.name
        ));
    }
    Ok((gpt, data_bytes))
}

/// Writes the sealed config (base64 of the order) into the `config`
/// partition's slot [`plan::config_slot`] picks, zero-padded to 4 KiB;
/// fsync. The slot index.
pub fn write_config(dev: &Device, gpt: &GPT, config_b64: &str) -> Result<usize, Failure> {
    let step = "config";
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(config_b64.trim())
        .map_err(|e| fail(step, format!("the order's config is not base64 ({e})")))?;
    plan::check_sealed(&sealed).map_err(|e| fail(step, e))?;
    let (start, end) = plan::partition(gpt, plan::CONFIG).ok_or_else(|| {
        fail(
            step,
            "the image's GPT has no partition named config: not a host image of this provisioner",
        )
    })?;
    if end - start < 2 * SLOT_BYTES as u64 {
        return Err(fail(
            step,
            format!(
                "the config partition has {} bytes, two slots need {}",
                end - start,
                2 * SLOT_BYTES
            ),
        ));
    }
    let io_error = |e: device::IoAt| fail(step, format!("{e}; check the disk (dmesg)"));
    let mut headers = [AlignedBuf::new(4096), AlignedBuf::new(4096)];
    for (i, h) in headers.iter_mut().enumerate() {
        dev.read_at(h.as_mut_slice(), start + (i * SLOT_BYTES) as u64)
            .map_err(io_error)?;
    }
    let slot = plan::config_slot([headers[0].as_slice(), headers[1].as_slice()]);
    let mut buf = AlignedBuf::new(sealed.len().div_ceil(4096) * 4096);
    buf.as_mut_slice()[..sealed.len()].copy_from_slice(&sealed);
    dev.write_at(buf.as_slice(), start + (slot * SLOT_BYTES) as u64)
        .map_err(io_error)?;
    dev.sync().map_err(io_error)?;
    Ok(slot)
}

/// A deploy's outcome: the disk written and what it took, or the failure
/// with the disk once chosen.
pub type Deployed = Result<(String, Written), (Option<String>, Failure)>;

/// The whole deploy of `order` on this machine (module doc); `disks`: the
/// inspected disks. The disk written, or the failure (with the disk once chosen).
pub fn deploy(
    order: &DeployOrder,
    disks: &[Disk],
    sys: &SysRoot,
    retry: Retry,
    progress: &Progress,
    say: &dyn Fn(&str),
) -> Deployed {
    let disk =
        select_root_disk(&order.root_disk, disks).map_err(|e| (None, fail("select disk", e)))?;
    let name = disk.path.clone();
    let with_disk = |f: Failure| (Some(name.clone()), f);
    say(&format!(
        "deploying image {} version {} onto {} (serial {})",
        order.image,
        order.version,
        name,
        disk.serial.as_deref().unwrap_or("-")
    ));
    let dev = open_disk(sys, &disk.path, say).map_err(with_disk)?;
    let (written, gpt) =
        write_image(&Image::from(order), &dev, retry, progress, say).map_err(with_disk)?;
    let slot = write_config(&dev, &gpt, &order.config).map_err(with_disk)?;
    say(&format!(
        "config written to slot {slot} of {name}'s config partition"
    ));
    Ok((name, written))
}

/// How a full erase zeroed a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zeroed {
    /// `BLKZEROOUT`: the device's write-zeroes (or the kernel's writes).
    ZeroOut,
    /// Our own writes of zeros.
    Writes,
}

/// Erases every non-removable disk of `disks` (`mode`, see
/// [`EraseMode`]); the disks erased, or those erased before the failure.
pub fn clean(
    mode: EraseMode,
    disks: &[Disk],
    sys: &SysRoot,
    progress: &Progress,
    say: &dyn Fn(&str),
) -> Result<Vec<String>, (Vec<String>, Failure)> {
    let mut erased = Vec::new();
    let mut plans = Vec::new();
    for disk in disks.iter().filter(|d| !d.removable) {
        let dev = match open_disk(sys, &disk.path, say) {
            Ok(dev) => dev,
            Err(f) => return Err((erased, fail("erase", f.message))),
        };
        let ranges = match mode {
            EraseMode::Full => vec![(0, dev.size)],
            EraseMode::Metadata => plan::erase_ranges(dev.size, &partitions_of(&dev), dev.block),
        };
        plans.push((dev, ranges));
    }
    let total: u64 = plans
        .iter()
        .flat_map(|(_, r)| r.iter().map(|(s, e)| e - s))
        .sum();
    progress.start(DeployPhase::Erasing, total);
    let mut done = 0u64;
    for (dev, ranges) in plans {
        let started = Instant::now();
        let bytes: u64 = ranges.iter().map(|(s, e)| e - s).sum();
        let how = erase(&dev, &ranges, mode, progress, &mut done).map_err(|e| {
            (
                erased.clone(),
                fail("erase", format!("{e}; check the disk (dmesg)")),
            )
        })?;
        if dev.is_block
            && let Err(e) = blk::reread_partitions(dev.file())
        {
            say(&format!(
                "{}: the kernel did not re-read the partition table ({e})",
                dev.name
            ));
        }
        say(&format!(
            "erased {} ({mode:?}{}: {})",
            dev.name,
            match how {
                Some(Zeroed::ZeroOut) => ", BLKZEROOUT",
                Some(Zeroed::Writes) => ", writes of zeros",
                None => "",
            },
            rate(bytes, started.elapsed())
        ));
        erased.push(dev.name.clone());
    }
    Ok(erased)
}

/// The partitions of `dev`'s GPT as byte ranges (none without a GPT).
fn partitions_of(dev: &Device) -> Vec<(u64, u64)> {
    let mut file = dev.file();
    match GPT::find_from(&mut file) {
        Ok(gpt) => {
            let ss = gpt.sector_size;
            gpt.iter()
                .filter(|(_, p)| p.is_used())
                .map(|(_, p)| (p.starting_lba * ss, (p.ending_lba + 1) * ss))
                .collect()
        }
        Err(_) => Vec::new(),
    }
}

/// Zeroes `ranges` of `dev`, then fsyncs. A full erase of a block device
/// tries `BLKZEROOUT` first (1 GiB at a time, for progress).
fn erase(
    dev: &Device,
    ranges: &[(u64, u64)],
    mode: EraseMode,
    progress: &Progress,
    done: &mut u64,
) -> Result<Option<Zeroed>, device::IoAt> {
    let mut how = None;
    for &(start, end) in ranges {
        let base = *done;
        if mode == EraseMode::Full && dev.is_block && how != Some(Zeroed::Writes) {
            let mut at = start;
            while at < end {
                let n = (end - at).min(1 << 30);
                match blk::zero_out(dev.file(), at, n) {
                    Ok(()) => {
                        at += n;
                        how = Some(Zeroed::ZeroOut);
                        progress.set_done(base + (at - start));
                    }
                    Err(_) if at == start && how.is_none() => {
                        // Not supported here: our own writes below.
                        how = Some(Zeroed::Writes);
                        break;
                    }
                    Err(e) => return Err(dev.err("BLKZEROOUT", at, e)),
                }
            }
            if at >= end {
                *done = base + (end - start);
                continue;
            }
        } else if mode == EraseMode::Full {
            how = Some(Zeroed::Writes);
        }
        dev.zero(start, end, &mut |n| progress.set_done(base + n))?;
        *done = base + (end - start);
    }
    dev.sync()?;
    Ok(how)
}
