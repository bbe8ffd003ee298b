//! A network namespace of our own with bridge `br0` and tap devices, removed
//! on drop (which also removes every device inside it).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::LabError;

/// Names start with this prefix plus the process id, so parallel test
/// processes never clash and nobody else's devices are touched.
pub const PREFIX: &str = "px";

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Runs `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<(), LabError> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn {
            what: "ip (Debian package iproute2)".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            command: format!("ip {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// A network namespace created by this process.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `px<pid>n<k>` with loopback up.
    pub fn create() -> Result<Netns, LabError> {
        let name = format!(
            "{PREFIX}{}n{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        // From here on, Drop removes it whatever happens next.
        let netns = Netns { name };
        netns.ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<(), LabError> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// A command run inside the namespace (`ip netns exec` execs it, so the
    /// child's PID is the program's own).
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Bridge `br0` with `address` (e.g. `10.213.0.1/24`), up.
    pub fn add_bridge(&self, address: &str) -> Result<(), LabError> {
        self.ip(&["link", "add", "br0", "type", "bridge"])?;
        self.ip(&["addr", "add", address, "dev", "br0"])?;
        self.ip(&["link", "set", "br0", "up"])
    }

    /// A tap device on `br0`, up; its name (`px<pid>t<i>`, at most 15 bytes).
    pub fn add_tap(&self, index: usize) -> Result<String, LabError> {
        let tap = format!("{PREFIX}{}t{index}", std::process::id());
        self.ip(&["tuntap", "add", "dev", &tap, "mode", "tap"])?;
        self.ip(&["link", "set", &tap, "master", "br0"])?;
        self.ip(&["link", "set", &tap, "up"])?;
        Ok(tap)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(err) = ip(&["netns", "del", &self.name]) {
            eprintln!(
                "lab: could not remove network namespace {}: {err}",
                self.name
            );
        }
    }
}
