//! The only place in xtask that calls libc directly (and so the only `unsafe` code).
#![allow(unsafe_code)]

/// True when the process runs with effective uid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Sends SIGTERM to `pid`. Errors (e.g. the process is already gone) are returned, not fatal.
pub fn terminate(pid: u32) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| std::io::Error::other(format!("pid {pid} out of range")))?;
    // SAFETY: kill has no memory-safety preconditions; `pid` is positive (a child we spawned).
    if unsafe { libc::kill(pid, libc::SIGTERM) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
