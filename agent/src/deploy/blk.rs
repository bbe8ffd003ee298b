//! Block-device ioctls the deploy and the clean need: `BLKRRPART` (the
//! kernel re-reads the partition table just written) and `BLKZEROOUT`
//! (zero a range: the device's write-zeroes offload, or the kernel writing
//! zero pages). `nix` has no safe wrapper for them (`ioctl_none!` and
//! friends generate `unsafe fn`s), so this small module is the deploy's one
//! place with `unsafe`; each block says why it is sound in `// SAFETY:`.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd as _;

/// `BLKRRPART`: `_IO(0x12, 95)`.
const BLKRRPART: u64 = 0x125f;
/// `BLKZEROOUT`: `_IO(0x12, 127)` (historically declared without a size,
/// it takes a pointer to `uint64_t range[2]`: start and length in bytes).
const BLKZEROOUT: u64 = 0x127f;

/// Asks the kernel to re-read `disk`'s partition table.
pub fn reread_partitions(disk: &File) -> io::Result<()> {
    // SAFETY: BLKRRPART takes no argument; the descriptor is open for the
    // whole call (borrowed `File`), and the kernel reads nothing from us.
    let rc = unsafe { libc::ioctl(disk.as_raw_fd(), BLKRRPART as libc::c_ulong, 0) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Zeroes `len` bytes of `disk` from `start` (both multiples of the logical
/// block size).
pub fn zero_out(disk: &File, start: u64, len: u64) -> io::Result<()> {
    let range: [u64; 2] = [start, len];
    // SAFETY: `range` is a live, properly aligned `uint64_t[2]` for the whole
    // call; the kernel only copies it in (block/ioctl.c `blk_ioctl_zeroout`
    // does `copy_from_user(range, argp, sizeof(range))`).
    let rc = unsafe {
        libc::ioctl(
            disk.as_raw_fd(),
            BLKZEROOUT as libc::c_ulong,
            range.as_ptr(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctls_on_a_regular_file_are_refused_not_obeyed() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(1 << 20).unwrap();
        assert!(reread_partitions(&file).is_err());
        assert!(zero_out(&file, 0, 4096).is_err());
        assert_eq!(file.metadata().unwrap().len(), 1 << 20);
    }
}
