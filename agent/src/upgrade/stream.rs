//! Streaming `root.img` into a slot: copy exactly the manifest's size in
//! [`CHUNK`]-byte writes, SHA-256 while writing, flush to the disk, drop the
//! page cache, then read the slot back and hash it again. Generic over
//! `Read` and [`Device`] (a block device on a machine, a temp file in tests).
//!
//! Invariants: memory stays at one chunk whatever the image size; a source
//! that ends early or runs long is an error, never a short success (unlike
//! `io::copy` plus an unchecked length); the read-back hash comes from the
//! disk, not the page cache ([`Device::drop_cache`]).

use std::io::{self, Read, Seek, SeekFrom, Write};

use model::host::VERITY_BLOCK;
use sha2::{Digest, Sha256};

/// Bytes per write and per read-back read (a multiple of [`VERITY_BLOCK`]).
pub const CHUNK: usize = 4 << 20;

/// A writable slot: a block device or, in tests, a file.
pub trait Device: Read + Write + Seek {
    /// Makes the written bytes durable (`fsync`).
    fn sync(&mut self) -> io::Result<()>;
    /// Drops the cached pages, so the next reads come from the disk.
    fn drop_cache(&mut self) -> io::Result<()>;
}

impl Device for std::fs::File {
    fn sync(&mut self) -> io::Result<()> {
        self.sync_all()
    }

    fn drop_cache(&mut self) -> io::Result<()> {
        use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
        posix_fadvise(&*self, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)
            .map_err(io::Error::from)
    }
}

/// What went wrong while streaming, without names: the caller adds them.
#[derive(Debug)]
pub enum StreamError {
    Read(io::Error),
    Write(io::Error),
    /// The source ended after this many bytes.
    Short(u64),
    /// The source has more bytes than expected.
    Long,
}

/// Prints a progress line each time another tenth of the work is done.
pub struct Meter<'a> {
    label: String,
    total: u64,
    tenths: u64,
    say: &'a mut dyn FnMut(&str),
}

impl std::fmt::Debug for Meter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter")
            .field("label", &self.label)
            .field("total", &self.total)
            .field("tenths", &self.tenths)
            .finish_non_exhaustive()
    }
}

impl<'a> Meter<'a> {
    /// `label` starts each line: `writing slot b`.
    pub fn new(label: String, total: u64, say: &'a mut dyn FnMut(&str)) -> Meter<'a> {
        Meter {
            label,
            total,
            tenths: 0,
            say,
        }
    }

    /// Reports that `done` bytes of the total are done.
    pub fn update(&mut self, done: u64) {
        let tenths = (done.saturating_mul(10))
            .checked_div(self.total)
            .unwrap_or(10)
            .min(10);
        if tenths > self.tenths {
            self.tenths = tenths;
            let mib = |n: u64| n as f64 / f64::from(1 << 20);
            (self.say)(&format!(
                "{}: {} % ({:.1} of {:.1} MiB)",
                self.label,
                tenths * 10,
                mib(done),
                mib(self.total)
            ));
        }
    }
}

/// Reads until `buf` is full or the source ends; the count read.
pub fn fill(src: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match src.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Copies exactly `len` bytes of `src` to the start of `dev`, hashing them;
/// then syncs `dev`. The SHA-256 of the bytes written.
pub fn write(
    src: &mut impl Read,
    dev: &mut impl Device,
    len: u64,
    meter: &mut Meter<'_>,
) -> Result<[u8; 32], StreamError> {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    dev.seek(SeekFrom::Start(0)).map_err(StreamError::Write)?;
    let mut done = 0u64;
    while done < len {
        let want = usize::try_from((len - done).min(CHUNK as u64)).expect("at most CHUNK");
        let got = fill(src, &mut buf[..want]).map_err(StreamError::Read)?;
        hash.update(&buf[..got]);
        dev.write_all(&buf[..got]).map_err(StreamError::Write)?;
        done += got as u64;
        if got < want {
            return Err(StreamError::Short(done));
        }
        meter.update(done);
    }
    if fill(src, &mut [0u8; 1]).map_err(StreamError::Read)? != 0 {
        return Err(StreamError::Long);
    }
    dev.flush().map_err(StreamError::Write)?;
    dev.sync().map_err(StreamError::Write)?;
    Ok(hash.finalize().into())
}

/// What reading a slot back gave.
#[derive(Debug)]
pub struct ReadBack {
    pub sha256: [u8; 32],
    /// The [`VERITY_BLOCK`] bytes at `top_block_offset` (zeros when it lies
    /// past `len`).
    pub top_block: Vec<u8>,
}

/// Drops `dev`'s cache, then hashes its first `len` bytes, keeping the block
/// at `top_block_offset` (a multiple of [`VERITY_BLOCK`]).
pub fn read_back(
    dev: &mut impl Device,
    len: u64,
    top_block_offset: u64,
    meter: &mut Meter<'_>,
) -> io::Result<ReadBack> {
    dev.drop_cache()?;
    dev.seek(SeekFrom::Start(0))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut top_block = vec![0u8; VERITY_BLOCK as usize];
    let top = top_block_offset..top_block_offset + VERITY_BLOCK;
    let mut done = 0u64;
    while done < len {
        let want = usize::try_from((len - done).min(CHUNK as u64)).expect("at most CHUNK");
        let got = fill(dev, &mut buf[..want])?;
        if got < want {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the slot ended after {} bytes", done + got as u64),
            ));
        }
        hash.update(&buf[..got]);
        // The overlap of this chunk with the top block.
        let (from, to) = (done.max(top.start), (done + got as u64).min(top.end));
        if from < to {
            top_block[(from - top.start) as usize..(to - top.start) as usize]
                .copy_from_slice(&buf[(from - done) as usize..(to - done) as usize]);
        }
        done += got as u64;
        meter.update(done);
    }
    Ok(ReadBack {
        sha256: hash.finalize().into(),
        top_block,
    })
}

/// Lowercase hex of a digest.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a buffer (for `VerityParams::top_block_matches` and the UKI).
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A slot in memory; `corrupt_after_sync` flips a byte when the cache is
    /// dropped (a disk that does not keep what it was given).
    struct MemDevice {
        bytes: Cursor<Vec<u8>>,
        synced: bool,
        corrupt_after_sync: bool,
    }

    impl Read for MemDevice {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.bytes.read(buf)
        }
    }
    impl Write for MemDevice {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.bytes.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Seek for MemDevice {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            self.bytes.seek(pos)
        }
    }
    impl Device for MemDevice {
        fn sync(&mut self) -> io::Result<()> {
            self.synced = true;
            Ok(())
        }
        fn drop_cache(&mut self) -> io::Result<()> {
            if self.corrupt_after_sync {
                self.bytes.get_mut()[5] ^= 1;
            }
            Ok(())
        }
    }

    fn device(size: usize) -> MemDevice {
        MemDevice {
            bytes: Cursor::new(vec![0xee; size]),
            synced: false,
            corrupt_after_sync: false,
        }
    }

    fn image(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn writes_hashes_and_reads_back_with_progress_by_tenths() {
        let img = image(CHUNK * 2 + 3 * VERITY_BLOCK as usize);
        let mut dev = device(img.len() + 4096);
        let mut lines = Vec::new();
        let mut say = |l: &str| lines.push(l.to_owned());
        let mut meter = Meter::new("writing slot b".into(), img.len() as u64, &mut say);
        let digest = write(&mut img.as_slice(), &mut dev, img.len() as u64, &mut meter).unwrap();
        assert_eq!(digest, sha256(&img));
        assert!(dev.synced);
        assert_eq!(&dev.bytes.get_ref()[..img.len()], img.as_slice());
        let top = 2 * CHUNK as u64 - VERITY_BLOCK / 2; // not aligned to a chunk: spans two
        let mut quiet = |_: &str| {};
        let mut meter = Meter::new("verifying".into(), img.len() as u64, &mut quiet);
        let back = read_back(&mut dev, img.len() as u64, top, &mut meter).unwrap();
        assert_eq!(back.sha256, digest);
        assert_eq!(back.top_block, &img[top as usize..top as usize + 4096]);
        // Three chunks: the tenths reached after each one, 100 % last.
        assert_eq!(
            lines,
            [
                "writing slot b: 40 % (4.0 of 8.0 MiB)",
                "writing slot b: 90 % (8.0 of 8.0 MiB)",
                "writing slot b: 100 % (8.0 of 8.0 MiB)"
            ]
        );
    }

    #[test]
    fn a_short_or_long_source_is_an_error() {
        let img = image(10_000);
        let mut quiet = |_: &str| {};
        let mut meter = Meter::new("w".into(), 12_000, &mut quiet);
        let err = write(&mut img.as_slice(), &mut device(20_000), 12_000, &mut meter);
        assert!(matches!(err, Err(StreamError::Short(10_000))), "{err:?}");
        let mut meter = Meter::new("w".into(), 8_000, &mut quiet);
        let err = write(&mut img.as_slice(), &mut device(20_000), 8_000, &mut meter);
        assert!(matches!(err, Err(StreamError::Long)), "{err:?}");
    }

    #[test]
    fn the_read_back_sees_what_the_disk_kept() {
        let img = image(10_000);
        let mut dev = device(10_000);
        dev.corrupt_after_sync = true;
        let mut quiet = |_: &str| {};
        let mut meter = Meter::new("w".into(), 10_000, &mut quiet);
        let written = write(&mut img.as_slice(), &mut dev, 10_000, &mut meter).unwrap();
        let back = read_back(&mut dev, 10_000, 0, &mut meter).unwrap();
        assert_ne!(back.sha256, written);
        // A slot smaller than the image cannot be read back.
        let mut small = device(100);
        assert!(read_back(&mut small, 10_000, 0, &mut meter).is_err());
    }
}
