//! The disk being written or erased: a block device on a machine, a file in
//! tests and benchmarks. Writes and reads of aligned buffers at aligned
//! offsets go through an `O_DIRECT` descriptor (no page cache, constant
//! memory); anything else (an odd tail) through a plain one. Every error
//! names the operation, the byte offset and the device.
//!
//! A file system refusing `O_DIRECT` (tmpfs: `EINVAL`) is detected when the
//! device is opened; then everything is written through the page cache and
//! made durable with `fsync` ([`Device::direct`] is false, the caller says so).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt as _, FileTypeExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// Bytes per write and read (a multiple of every logical block size).
pub const CHUNK: usize = 4 << 20;
/// The buffers' alignment: the largest logical block size in use.
pub const ALIGN: usize = 4096;

/// A device error with where it happened.
#[derive(Debug, thiserror::Error)]
#[error("{op} at byte {offset} of {device}: {source}")]
pub struct IoAt {
    pub op: &'static str,
    pub offset: u64,
    pub device: String,
    #[source]
    pub source: io::Error,
}

/// A heap buffer whose usable part starts at an [`ALIGN`]-byte boundary.
#[derive(Debug)]
pub struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    pub fn new(len: usize) -> AlignedBuf {
        let raw = vec![0u8; len + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN);
        AlignedBuf { raw, start, len }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// An open disk.
#[derive(Debug)]
pub struct Device {
    /// The name in messages (`/dev/vda`).
    pub name: String,
    pub path: PathBuf,
    /// Opened with `O_DIRECT` (else `plain` again).
    direct_fd: File,
    plain: File,
    pub direct: bool,
    pub is_block: bool,
    /// Bytes.
    pub size: u64,
    /// The logical block size: `O_DIRECT` I/O is aligned to it.
    pub block: u64,
}

impl Device {
    /// Opens `path` (shown as `name`) for reading and writing. `block`: the
    /// logical block size of a block device (sysfs), ignored for a file
    /// ([`ALIGN`] is used, what any file system takes).
    pub fn open(path: &Path, name: &str, block: u64) -> Result<Device, IoAt> {
        let at = |op, source| IoAt {
            op,
            offset: 0,
            device: name.to_owned(),
            source,
        };
        let plain = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| at("open", e))?;
        let meta = plain.metadata().map_err(|e| at("stat", e))?;
        let is_block = meta.file_type().is_block_device();
        let size = if is_block {
            use std::io::Seek as _;
            (&plain)
                .seek(io::SeekFrom::End(0))
                .map_err(|e| at("size", e))?
        } else {
            meta.len()
        };
        let block = if is_block {
            block.max(512)
        } else {
            ALIGN as u64
        };
        let direct_fd = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_DIRECT.bits())
            .open(path);
        let (direct_fd, direct) = match direct_fd {
            Ok(fd) => {
                // Some file systems accept the flag and refuse the I/O.
                let mut probe = AlignedBuf::new(block as usize);
                let works = size < block || fd.read_at(probe.as_mut_slice(), 0).is_ok();
                if works {
                    (fd, true)
                } else {
                    (plain.try_clone().map_err(|e| at("open", e))?, false)
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                (plain.try_clone().map_err(|e| at("open", e))?, false)
            }
            Err(e) => return Err(at("open with O_DIRECT", e)),
        };
        Ok(Device {
            name: name.to_owned(),
            path: path.to_owned(),
            direct_fd,
            plain,
            direct,
            is_block,
            size,
            block,
        })
    }

    fn aligned(&self, buf: &[u8], offset: u64) -> bool {
        self.direct
            && offset.is_multiple_of(self.block)
            && (buf.len() as u64).is_multiple_of(self.block)
            && (buf.as_ptr() as usize).is_multiple_of(ALIGN)
    }

    /// Writes all of `buf` at `offset`.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), IoAt> {
        let fd = if self.aligned(buf, offset) {
            &self.direct_fd
        } else {
            &self.plain
        };
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            match fd.write_at(&buf[done..], at) {
                Ok(0) => {
                    return Err(self.err("write", at, io::ErrorKind::WriteZero.into()));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.err("write", at, e)),
            }
        }
        Ok(())
    }

    /// Fills `buf` from `offset`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), IoAt> {
        let direct = self.aligned(buf, offset);
        let fd = if direct { &self.direct_fd } else { &self.plain };
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            match fd.read_at(&mut buf[done..], at) {
                Ok(0) => {
                    return Err(self.err("read", at, io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.err("read", at, e)),
            }
        }
        Ok(())
    }

    /// Writes zeros over `start..end`, in [`CHUNK`]s; `done` gets the bytes
    /// zeroed after each chunk.
    pub fn zero(&self, start: u64, end: u64, done: &mut dyn FnMut(u64)) -> Result<(), IoAt> {
        let zeros = AlignedBuf::new(CHUNK);
        let mut at = start;
        while at < end {
            let n = (end - at).min(CHUNK as u64) as usize;
            self.write_at(&zeros.as_slice()[..n], at)?;
            at += n as u64;
            done(at - start);
        }
        Ok(())
    }

    /// Makes everything written durable (`fsync`).
    pub fn sync(&self) -> Result<(), IoAt> {
        self.plain.sync_all().map_err(|e| self.err("fsync", 0, e))
    }

    /// Drops the device's cached pages, so the next reads come from the disk.
    pub fn drop_cache(&self) -> Result<(), IoAt> {
        use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
        posix_fadvise(&self.plain, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)
            .map_err(|e| self.err("drop the page cache", 0, e.into()))
    }

    /// The plain (page-cached) descriptor, for `gptman` and ioctls.
    pub fn file(&self) -> &File {
        &self.plain
    }

    pub fn err(&self, op: &'static str, offset: u64, source: io::Error) -> IoAt {
        IoAt {
            op,
            offset,
            device: self.name.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffers_and_errors_with_offsets() {
        let buf = AlignedBuf::new(8192);
        assert!((buf.as_slice().as_ptr() as usize).is_multiple_of(ALIGN));
        assert_eq!(buf.as_slice().len(), 8192);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::write(&path, vec![1u8; 3 << 20]).unwrap();
        let dev = Device::open(&path, "/dev/test", 512).unwrap();
        assert_eq!((dev.size, dev.block, dev.is_block), (3 << 20, 4096, false));
        dev.write_at(buf.as_slice(), 4096).unwrap();
        dev.write_at(b"odd", 5).unwrap();
        let mut seen = Vec::new();
        dev.zero(1 << 20, 3 << 20, &mut |n| seen.push(n)).unwrap();
        assert_eq!(seen, [2 << 20]);
        dev.sync().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], &[1, 1, 1, 1, 1, b'o', b'd', b'd']);
        assert!(bytes[4096..12288].iter().all(|&b| b == 0));
        assert!(bytes[12288..1 << 20].iter().all(|&b| b == 1));
        assert!(bytes[1 << 20..].iter().all(|&b| b == 0));
        // Reading past the end names the device and the offset.
        let mut big = AlignedBuf::new(8192);
        let err = dev
            .read_at(big.as_mut_slice(), (3 << 20) - 4096)
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("read at byte 3145728 of /dev/test:"),
            "{err}"
        );
    }
}
