//! Child processes a benchmark starts, stopped on every exit path (errors and panics
//! included) by [`ChildGuard`]'s Drop: SIGTERM, then SIGKILL after [`GRACE`].
//!
//! (A Ctrl-C in the terminal reaches the children directly: they share our process group.)

use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How long a child gets to exit after SIGTERM before it is killed.
pub const GRACE: Duration = Duration::from_secs(5);

/// How a stopped child ended.
#[derive(Debug, Clone, Copy)]
pub enum Stopped {
    /// It had already exited before we asked.
    AlreadyExited(ExitStatus),
    /// It exited after SIGTERM, this long after the signal.
    Terminated(Duration),
    /// It ignored SIGTERM for [`GRACE`] and was killed.
    Killed,
}

/// Owns a spawned child; dropping it stops the child.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
}

impl ChildGuard {
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<ChildGuard> {
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        Ok(ChildGuard {
            name: name.to_owned(),
            child: Some(child),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The child's stdout, when it was spawned with `Stdio::piped()` (once).
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.as_mut()?.stdout.take()
    }

    /// `Some(status)` when the child has exited.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        match &mut self.child {
            Some(child) => child
                .try_wait()
                .with_context(|| format!("polling {}", self.name)),
            None => Ok(None),
        }
    }

    /// Stops the child now (SIGTERM, then SIGKILL after [`GRACE`]) and says how it ended.
    pub fn stop(mut self) -> Result<Stopped> {
        let child = self.child.take().context("child already stopped")?;
        stop(&self.name, child)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = self.child.take()
            && let Err(e) = stop(&self.name, child)
        {
            eprintln!("warning: stopping {}: {e:#}", self.name);
        }
    }
}

fn stop(name: &str, mut child: Child) -> Result<Stopped> {
    if let Some(status) = child.try_wait()? {
        return Ok(Stopped::AlreadyExited(status));
    }
    let sent = Instant::now();
    crate::sys::terminate(child.id()).with_context(|| format!("sending SIGTERM to {name}"))?;
    while sent.elapsed() < GRACE {
        if child.try_wait()?.is_some() {
            return Ok(Stopped::Terminated(sent.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "warning: {name} (pid {}) ignored SIGTERM for {}s; killing it",
        child.id(),
        GRACE.as_secs()
    );
    child.kill().with_context(|| format!("killing {name}"))?;
    child.wait()?;
    Ok(Stopped::Killed)
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The first program named `name` on PATH.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_stops_a_child_with_sigterm() {
        let guard = ChildGuard::spawn("sleep", Command::new("sleep").arg("60")).unwrap();
        match guard.stop().unwrap() {
            Stopped::Terminated(d) => assert!(d < GRACE),
            other => panic!("expected Terminated, got {other:?}"),
        }
    }

    #[test]
    fn guard_reports_a_child_that_already_exited() {
        let mut guard = ChildGuard::spawn("true", &mut Command::new("true")).unwrap();
        while guard.exited().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(matches!(guard.stop().unwrap(), Stopped::AlreadyExited(s) if s.success()));
    }
}
