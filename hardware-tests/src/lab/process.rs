//! A child process killed (by its PID, through its `Child`) and reaped on drop.

use std::process::Child;

#[derive(Debug)]
pub struct Owned {
    pub what: String,
    pub child: Child,
}

impl Owned {
    pub fn new(what: impl Into<String>, child: Child) -> Owned {
        Owned {
            what: what.into(),
            child,
        }
    }

    /// Still running?
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits up to `grace` before SIGKILL.
    pub fn stop(&mut self, grace: std::time::Duration) {
        if !self.running() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // kill(1) rather than libc::kill: this crate has no unsafe code.
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if !self.running() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
