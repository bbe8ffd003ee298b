//! The hardware watchdog (`/dev/watchdog`: QEMU's i6300esb, iTCO_wdt,
//! ipmi_watchdog): opening it arms it, a thread pets it every
//! [`PET_EVERY`] by writing one byte. If the agent hangs or dies the machine
//! resets, which the loader's boot counting sees as a failed boot.
//!
//! Across the switch to the real root the open descriptor is handed on
//! rather than closed: the initramfs stage clears its close-on-exec flag and
//! passes its number (`node-agent host --watchdog-fd N`), so the machine
//! stays covered while the host-mode agent starts (a magic close followed by
//! a re-open would leave a window where a hang is not caught). Host mode
//! adopts the descriptor and starts its own petting thread.

use std::fs::File;
use std::io::Write as _;
use std::os::fd::{AsRawFd as _, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the watchdog is petted (drivers default to 30 s or more).
pub const PET_EVERY: Duration = Duration::from_secs(5);

/// An armed watchdog being petted by a thread.
#[derive(Debug)]
pub struct Watchdog {
    file: Arc<File>,
}

impl Watchdog {
    /// Opens `/dev/watchdog` if it appears within `wait` (its driver is a
    /// module loaded just before); `None` when there is none.
    pub fn open(wait: Duration) -> Option<Watchdog> {
        let path = Path::new("/dev/watchdog");
        let started = Instant::now();
        loop {
            if let Ok(file) = std::fs::OpenOptions::new().write(true).open(path) {
                return Some(Watchdog::pet_forever(file));
            }
            if started.elapsed() > wait {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Adopts the descriptor handed on by the initramfs stage.
    pub fn adopt(fd: RawFd) -> Result<Watchdog, String> {
        let file = super::dm::adopt_inherited_fd(fd)
            .map_err(|e| format!("--watchdog-fd {fd}: {e}; was it handed on by the host boot?"))?;
        Ok(Watchdog::pet_forever(file))
    }

    fn pet_forever(file: File) -> Watchdog {
        let file = Arc::new(file);
        let petted = Arc::clone(&file);
        std::thread::spawn(move || {
            loop {
                let _ = (&*petted).write_all(b"\0");
                std::thread::sleep(PET_EVERY);
            }
        });
        Watchdog { file }
    }

    /// Lets the descriptor survive `exec` and returns its number, for
    /// `--watchdog-fd`. The petting thread dies with the exec; the next
    /// program must pet within the driver's timeout.
    pub fn hand_on(&self) -> Result<RawFd, String> {
        use nix::fcntl::{FcntlArg, FdFlag, fcntl};
        fcntl(&*self.file, FcntlArg::F_SETFD(FdFlag::empty()))
            .map_err(|e| format!("cannot keep /dev/watchdog open across exec: {e}"))?;
        Ok(self.file.as_raw_fd())
    }
}
