//! The agent's raw kernel interfaces for the host boot: device-mapper
//! ioctls on `/dev/mapper/control` (create, load a one-target table, resume,
//! remove), `BLKPG_RESIZE_PARTITION` (the kernel's view of a grown
//! partition), `EXT4_IOC_RESIZE_FS` (grow a mounted ext4), the console
//! shell's new session and controlling terminal, and `kexec_file_load(2)`
//! (the plan's kernel arguments, [`super::kexec`]).
//!
//! Invariants:
//! - This is the ONE module of the agent allowed `unsafe` (the workspace
//!   denies it); every `unsafe` block says why it is sound in `// SAFETY:`.
//! - The request buffers' byte layouts are built by pure functions
//!   ([`dm_request`], [`blkpg_resize`]) checked in unit tests against the
//!   offsets of the kernel's `include/uapi/linux/dm-ioctl.h` and
//!   `include/uapi/linux/blkpg.h` (x86-64 / LP64).
//! - Nothing here decides anything: callers pass names, tables and sizes.

#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `sizeof(struct dm_ioctl)`: 3 u32 version, data_size, data_start,
/// target_count, open_count, flags, event_nr, padding (u32 each), u64 dev,
/// name[128], uuid[129], data[7].
pub const DM_IOCTL_SIZE: usize = 312;
/// `sizeof(struct dm_target_spec)`: u64 sector_start, u64 length, s32
/// status, u32 next, char target_type[16].
pub const DM_TARGET_SPEC_SIZE: usize = 40;
/// `DM_NAME_LEN` (including the NUL).
pub const DM_NAME_LEN: usize = 128;
/// `DM_MAX_TYPE_NAME` (including the NUL).
const DM_MAX_TYPE_NAME: usize = 16;
/// Offsets in `struct dm_ioctl`.
const OFF_DATA_SIZE: usize = 12;
const OFF_DATA_START: usize = 16;
const OFF_TARGET_COUNT: usize = 20;
const OFF_FLAGS: usize = 28;
const OFF_NAME: usize = 48;
/// The interface version we speak: the kernel accepts major 4 and any
/// minor up to its own.
const DM_VERSION: [u32; 3] = [4, 0, 0];
/// `DM_READONLY_FLAG`: the table is read-only (dm-verity refuses others).
pub const DM_READONLY_FLAG: u32 = 1 << 0;

/// The device-mapper commands used (`enum` in dm-ioctl.h: `DM_VERSION_CMD`
/// = 0, `DM_DEV_CREATE_CMD` = 3, `DM_DEV_REMOVE_CMD` = 4,
/// `DM_DEV_SUSPEND_CMD` = 6, `DM_TABLE_LOAD_CMD` = 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmCommand {
    Version = 0,
    DevCreate = 3,
    DevRemove = 4,
    /// Without `DM_SUSPEND_FLAG`: resume (make the loaded table live).
    DevSuspend = 6,
    TableLoad = 9,
}

impl DmCommand {
    /// `_IOWR(0xfd, cmd, struct dm_ioctl)`: direction read|write (3) in bits
    /// 30-31, size in bits 16-29, type 0xfd in bits 8-15, number in 0-7.
    pub fn request(self) -> u64 {
        (3u64 << 30) | ((DM_IOCTL_SIZE as u64) << 16) | (0xfd << 8) | self as u64
    }
}

/// A device-mapper target line: `start`/`sectors` in 512-byte sectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    pub sectors: u64,
    pub kind: &'a str,
    pub params: &'a str,
}

/// Why a request cannot be built or failed.
#[derive(Debug, thiserror::Error)]
pub enum DmError {
    #[error("device-mapper name {0:?} is empty or longer than 127 bytes")]
    BadName(String),
    #[error("device-mapper target type {0:?} is longer than 15 bytes")]
    BadTarget(String),
    #[error(
        "cannot open /dev/mapper/control: is dm-mod loaded (it must be in /lib/modules/load-order)?"
    )]
    Control(#[source] std::io::Error),
    #[error(
        "device-mapper {command:?} of {name:?} failed; the kernel log (dmesg) says why (for \
         verity: the device, sizes or hash)"
    )]
    Ioctl {
        command: DmCommand,
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "device-mapper device {name:?}: no /dev/dm-N after {waited_s} s (looked in /sys/block/dm-*/dm/name)"
    )]
    NoNode { name: String, waited_s: u64 },
}

/// The request buffer of one device-mapper ioctl: the `struct dm_ioctl`
/// header (version, sizes, flags, name) followed, for a table load, by one
/// `struct dm_target_spec` and its NUL-terminated parameter string, padded to
/// 8 bytes (`next` is the offset from this spec to the end of the padding).
pub fn dm_request(name: &str, flags: u32, target: Option<&Target>) -> Result<Vec<u8>, DmError> {
    if name.is_empty() || name.len() >= DM_NAME_LEN || name.contains('\0') {
        return Err(DmError::BadName(name.to_owned()));
    }
    let mut buf = vec![0u8; DM_IOCTL_SIZE];
    if let Some(target) = target {
        if target.kind.len() >= DM_MAX_TYPE_NAME {
            return Err(DmError::BadTarget(target.kind.to_owned()));
        }
        let spec_len = (DM_TARGET_SPEC_SIZE + target.params.len() + 1).next_multiple_of(8);
        let mut spec = vec![0u8; spec_len];
        // sector_start stays 0.
        spec[8..16].copy_from_slice(&target.sectors.to_ne_bytes());
        spec[20..24].copy_from_slice(&(spec_len as u32).to_ne_bytes());
        spec[24..24 + target.kind.len()].copy_from_slice(target.kind.as_bytes());
        spec[DM_TARGET_SPEC_SIZE..DM_TARGET_SPEC_SIZE + target.params.len()]
            .copy_from_slice(target.params.as_bytes());
        buf.extend_from_slice(&spec);
        buf[OFF_TARGET_COUNT..OFF_TARGET_COUNT + 4].copy_from_slice(&1u32.to_ne_bytes());
    } else {
        // Room for what the kernel writes back (DM_VERSION, DM_DEV_CREATE
        // fill in only the header, but a little slack costs nothing).
        buf.resize(DM_IOCTL_SIZE + 64, 0);
    }
    for (i, v) in DM_VERSION.iter().enumerate() {
        buf[4 * i..4 * i + 4].copy_from_slice(&v.to_ne_bytes());
    }
    let size = buf.len() as u32;
    buf[OFF_DATA_SIZE..OFF_DATA_SIZE + 4].copy_from_slice(&size.to_ne_bytes());
    buf[OFF_DATA_START..OFF_DATA_START + 4].copy_from_slice(&(DM_IOCTL_SIZE as u32).to_ne_bytes());
    buf[OFF_FLAGS..OFF_FLAGS + 4].copy_from_slice(&flags.to_ne_bytes());
    buf[OFF_NAME..OFF_NAME + name.len()].copy_from_slice(name.as_bytes());
    Ok(buf)
}

/// The interface version the kernel answered (`version[3]` of the header).
pub fn answered_version(buf: &[u8]) -> [u32; 3] {
    let word = |i: usize| u32::from_ne_bytes(buf[4 * i..4 * i + 4].try_into().unwrap_or([0; 4]));
    [word(0), word(1), word(2)]
}

/// The control device, opened once per sequence of commands.
#[derive(Debug)]
pub struct Control(File);

impl Control {
    /// Opens `/dev/mapper/control`, waiting up to 3 s for devtmpfs to create
    /// it after dm-mod loaded.
    pub fn open() -> Result<Control, DmError> {
        let path = Path::new("/dev/mapper/control");
        let started = Instant::now();
        loop {
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
            {
                Ok(file) => return Ok(Control(file)),
                Err(err) if started.elapsed() > Duration::from_secs(3) => {
                    return Err(DmError::Control(err));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn call(&self, command: DmCommand, name: &str, buf: &mut [u8]) -> Result<(), DmError> {
        // SAFETY: `buf` is a live, exclusively borrowed buffer of
        // `data_size` bytes (written into the header by `dm_request`), at
        // least `sizeof(struct dm_ioctl)`; the kernel reads and writes only
        // within `data_size` (dm-ioctl.c `copy_params` / `copy_params_back`).
        let rc = unsafe {
            libc::ioctl(
                self.0.as_raw_fd(),
                command.request() as libc::c_ulong,
                buf.as_mut_ptr(),
            )
        };
        if rc < 0 {
            return Err(DmError::Ioctl {
                command,
                name: name.to_owned(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// The kernel's device-mapper interface version.
    pub fn version(&self) -> Result<[u32; 3], DmError> {
        let mut buf = dm_request("version", 0, None)?;
        self.call(DmCommand::Version, "version", &mut buf)?;
        Ok(answered_version(&buf))
    }

    /// Creates device `name`, loads one read-only `target` and resumes it;
    /// returns its node `/dev/dm-N`, waiting up to 5 s for devtmpfs. On a
    /// failure after the create the half-made device is removed.
    pub fn create_readonly(&self, name: &str, target: &Target) -> Result<PathBuf, DmError> {
        let mut buf = dm_request(name, 0, None)?;
        self.call(DmCommand::DevCreate, name, &mut buf)?;
        let loaded = dm_request(name, DM_READONLY_FLAG, Some(target)).and_then(|mut buf| {
            self.call(DmCommand::TableLoad, name, &mut buf)?;
            let mut buf = dm_request(name, 0, None)?;
            self.call(DmCommand::DevSuspend, name, &mut buf)
        });
        if let Err(err) = loaded {
            let _ = self.remove(name);
            return Err(err);
        }
        wait_for_node(Path::new("/sys"), name, Duration::from_secs(5))
    }

    /// Removes device `name` (it must be closed and unmounted).
    pub fn remove(&self, name: &str) -> Result<(), DmError> {
        let mut buf = dm_request(name, 0, None)?;
        self.call(DmCommand::DevRemove, name, &mut buf)
    }
}

/// `/dev/dm-N` of the device-mapper device `name`: the `dm-N` under
/// `sys/block` whose `dm/name` is `name`.
pub fn node_of(sys: &Path, name: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(sys.join("block")).ok()?;
    for entry in entries.flatten() {
        let kernel_name = entry.file_name().to_string_lossy().into_owned();
        if !kernel_name.starts_with("dm-") {
            continue;
        }
        let found = std::fs::read_to_string(entry.path().join("dm/name")).unwrap_or_default();
        if found.trim_end() == name {
            return Some(PathBuf::from("/dev").join(kernel_name));
        }
    }
    None
}

fn wait_for_node(sys: &Path, name: &str, wait: Duration) -> Result<PathBuf, DmError> {
    let started = Instant::now();
    loop {
        if let Some(node) = node_of(sys, name)
            && node.exists()
        {
            return Ok(node);
        }
        if started.elapsed() > wait {
            return Err(DmError::NoNode {
                name: name.to_owned(),
                waited_s: wait.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `BLKPG`: `_IO(0x12, 105)`.
const BLKPG: u64 = 0x1269;
/// `BLKPG_RESIZE_PARTITION`.
const BLKPG_RESIZE_PARTITION: i32 = 3;
/// `sizeof(struct blkpg_partition)`: long long start, long long length, int
/// pno, char devname[64], char volname[64], padded to 8.
pub const BLKPG_PARTITION_SIZE: usize = 152;

/// `struct blkpg_partition` for resizing partition `number` that starts at
/// byte `start` to `length` bytes (the kernel refuses a changed start).
pub fn blkpg_resize(number: u32, start: u64, length: u64) -> [u8; BLKPG_PARTITION_SIZE] {
    let mut part = [0u8; BLKPG_PARTITION_SIZE];
    part[0..8].copy_from_slice(&start.to_ne_bytes());
    part[8..16].copy_from_slice(&length.to_ne_bytes());
    part[16..20].copy_from_slice(&(number as i32).to_ne_bytes());
    part
}

/// `struct blkpg_ioctl_arg` on LP64: int op, int flags, int datalen, (4
/// bytes padding), void *data.
#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

/// Tells the kernel that partition `number` of the whole-disk device `disk`
/// now spans `length` bytes from `start` (after the GPT was rewritten).
pub fn resize_partition(disk: &File, number: u32, start: u64, length: u64) -> std::io::Result<()> {
    let mut part = blkpg_resize(number, start, length);
    let mut arg = BlkpgIoctlArg {
        op: BLKPG_RESIZE_PARTITION,
        flags: 0,
        datalen: BLKPG_PARTITION_SIZE as libc::c_int,
        data: part.as_mut_ptr().cast(),
    };
    // SAFETY: `arg` is a correctly laid out `struct blkpg_ioctl_arg` whose
    // `data` points at `datalen` live bytes laid out as `struct
    // blkpg_partition`; both outlive the call, and the kernel only reads them
    // (block/ioctl.c `blkpg_do_ioctl` copies them in).
    let rc = unsafe {
        libc::ioctl(
            disk.as_raw_fd(),
            BLKPG as libc::c_ulong,
            &mut arg as *mut BlkpgIoctlArg,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `EXT4_IOC_RESIZE_FS`: `_IOW('f', 16, __u64)`.
const EXT4_IOC_RESIZE_FS: u64 = 0x4008_6610;

/// Grows the mounted ext4 file system holding `file` (any file or directory
/// of it) to `blocks` file-system blocks, online. Asking for its current
/// size is a no-op; a smaller size is refused by the kernel.
pub fn ext4_resize(file: &File, blocks: u64) -> std::io::Result<()> {
    let count: u64 = blocks;
    // SAFETY: EXT4_IOC_RESIZE_FS reads one `__u64` through the pointer
    // (fs/ext4/ioctl.c `get_user(n_blocks_count, (__u64 __user *)arg)`);
    // `count` lives for the call.
    let rc = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            EXT4_IOC_RESIZE_FS as libc::c_ulong,
            &count as *const u64,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Takes ownership of descriptor `fd` inherited across `exec` (the
/// watchdog's, see [`super::watchdog`]); an error when it is not open.
pub fn adopt_inherited_fd(fd: std::os::fd::RawFd) -> std::io::Result<File> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: F_GETFD only queries the descriptor table; it fails with EBADF
    // on a number that is not open.
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(std::io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: `fd` is open (checked above), it is not stdin/stdout/stderr,
    // and nothing else in this process owns it: it was inherited from the
    // program that exec'd this one, and is adopted once at start-up.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// `kexec_file_load(2)`: loads `kernel` (a bzImage) and `initrd` with the
/// command line `cmdline` for the next `reboot(RB_KEXEC)`.
pub fn kexec_file_load(kernel: &File, initrd: &File, cmdline: &str) -> std::io::Result<()> {
    let text = std::ffi::CString::new(cmdline)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let len = text.as_bytes_with_nul().len();
    // SAFETY: the syscall reads the two open descriptors (owned by the
    // callers for the call's duration) and `len` bytes of `text`, a live,
    // NUL-terminated buffer (the kernel wants the length to include the NUL,
    // kernel/kexec_file.c `kimage_file_prepare_segments`); flags 0. It
    // writes no memory of this process.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            libc::c_long::from(kernel.as_raw_fd()),
            libc::c_long::from(initrd.as_raw_fd()),
            len as libc::c_ulong,
            text.as_ptr(),
            0 as libc::c_ulong,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Makes a spawned console shell a session leader with the console (its
/// stdin) as controlling terminal, so Ctrl-C reaches it.
pub fn new_session_on_stdin(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs in the child between fork and exec and calls
    // only async-signal-safe functions (setsid, ioctl) with no allocation or
    // locks. A failure of TIOCSCTTY is ignored: the shell then still runs,
    // without job control.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(buf: &[u8], off: usize) -> u32 {
        u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap())
    }

    fn u64_at(buf: &[u8], off: usize) -> u64 {
        u64::from_ne_bytes(buf[off..off + 8].try_into().unwrap())
    }

    #[test]
    fn ioctl_numbers_match_the_kernel_header() {
        // _IOWR(0xfd, n, struct dm_ioctl) with sizeof == 312 (0x138).
        assert_eq!(DmCommand::Version.request(), 0xc138_fd00);
        assert_eq!(DmCommand::DevCreate.request(), 0xc138_fd03);
        assert_eq!(DmCommand::DevRemove.request(), 0xc138_fd04);
        assert_eq!(DmCommand::DevSuspend.request(), 0xc138_fd06);
        assert_eq!(DmCommand::TableLoad.request(), 0xc138_fd09);
    }

    #[test]
    fn table_load_request_has_header_spec_and_params() {
        let params = "1 254:2 254:2 4096 4096 100 100 sha256 ab cd";
        let target = Target {
            sectors: 800,
            kind: "verity",
            params,
        };
        let buf = dm_request("host-root", DM_READONLY_FLAG, Some(&target)).unwrap();
        // Header.
        assert_eq!(
            [u32_at(&buf, 0), u32_at(&buf, 4), u32_at(&buf, 8)],
            [4, 0, 0]
        );
        assert_eq!(u32_at(&buf, 12) as usize, buf.len(), "data_size");
        assert_eq!(u32_at(&buf, 16), 312, "data_start");
        assert_eq!(u32_at(&buf, 20), 1, "target_count");
        assert_eq!(u32_at(&buf, 28), DM_READONLY_FLAG, "flags");
        assert_eq!(&buf[48..57], b"host-root");
        assert!(buf[57..176].iter().all(|&b| b == 0), "name NUL-padded");
        assert!(buf[176..312].iter().all(|&b| b == 0), "uuid and data empty");
        // Target spec right after the header.
        let spec = &buf[312..];
        assert_eq!(u64_at(spec, 0), 0, "sector_start");
        assert_eq!(u64_at(spec, 8), 800, "length");
        let next = u32_at(spec, 20) as usize;
        assert_eq!(next, spec.len(), "next = this spec's padded size");
        assert!(next.is_multiple_of(8));
        assert_eq!(&spec[24..30], b"verity");
        assert_eq!(spec[30], 0);
        assert_eq!(&spec[40..40 + params.len()], params.as_bytes());
        assert_eq!(spec[40 + params.len()], 0, "params NUL-terminated");
    }

    #[test]
    fn plain_requests_and_bad_names() {
        let buf = dm_request("x", 0, None).unwrap();
        assert!(buf.len() >= DM_IOCTL_SIZE);
        assert_eq!(u32_at(&buf, 12) as usize, buf.len());
        assert_eq!(u32_at(&buf, 20), 0);
        assert!(matches!(dm_request("", 0, None), Err(DmError::BadName(_))));
        assert!(matches!(
            dm_request(&"n".repeat(128), 0, None),
            Err(DmError::BadName(_))
        ));
        assert!(dm_request(&"n".repeat(127), 0, None).is_ok());
        let long = Target {
            sectors: 1,
            kind: "a-very-long-target",
            params: "",
        };
        assert!(matches!(
            dm_request("x", 0, Some(&long)),
            Err(DmError::BadTarget(_))
        ));
    }

    #[test]
    fn blkpg_layout() {
        assert_eq!(std::mem::size_of::<BlkpgIoctlArg>(), 24);
        let part = blkpg_resize(5, 1 << 20, 3 << 30);
        assert_eq!(u64_at(&part, 0), 1 << 20);
        assert_eq!(u64_at(&part, 8), 3 << 30);
        assert_eq!(u32_at(&part, 16), 5);
        assert!(
            part[20..].iter().all(|&b| b == 0),
            "no device or volume name"
        );
    }

    #[test]
    fn node_of_finds_dm_n_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        for (n, name) in [(0, "host-check-a"), (1, "host-root")] {
            let dir = tmp.path().join(format!("block/dm-{n}/dm"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("name"), format!("{name}\n")).unwrap();
        }
        std::fs::create_dir_all(tmp.path().join("block/vda")).unwrap();
        assert_eq!(
            node_of(tmp.path(), "host-root"),
            Some(PathBuf::from("/dev/dm-1"))
        );
        assert_eq!(node_of(tmp.path(), "other"), None);
    }
}
