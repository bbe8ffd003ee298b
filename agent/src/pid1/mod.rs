//! What every PID 1 mode of the agent shares (the inspection ramdisk's
//! [`crate::init`], the host boot and host mode of [`crate::host`]): console
//! lines, loading `/lib/modules/load-order`, reboot and power-off. Below both,
//! so neither imports the other for these.

pub mod modules;

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

/// Prints one line on the console (`/dev/console`, else stderr).
pub fn say(line: &str) {
    let line = format!("node-agent: {line}\n");
    match std::fs::OpenOptions::new().write(true).open("/dev/console") {
        Ok(mut console) => {
            let _ = console.write_all(line.as_bytes());
        }
        Err(_) => eprint!("{line}"),
    }
}

/// Loads `/lib/modules/load-order` in order; a failing module is reported
/// and the rest still load. Also used by the host boot ([`crate::host::boot`]).
pub fn load_modules() {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = Path::new("/lib/modules").join(&release);
    let text = match std::fs::read_to_string("/lib/modules/load-order") {
        Ok(text) => text,
        Err(err) => {
            say(&format!(
                "no module list (/lib/modules/load-order: {err}); continuing with the drivers built into the kernel"
            ));
            return;
        }
    };
    let (load, refused) = modules::parse_load_order(&text);
    for path in refused {
        say(&format!(
            "module {path} not loaded: load-order paths must stay inside /lib/modules/{release}"
        ));
    }
    let (mut loaded, mut failed) = (0, 0);
    for path in &load {
        let name = modules::module_name(path);
        let result = std::fs::File::open(dir.join(path))
            .map_err(|e| e.to_string())
            .and_then(|file| {
                nix::kmod::finit_module(&file, c"", nix::kmod::ModuleInitFlags::empty())
                    .map_err(|e| e.to_string())
            });
        match result {
            Ok(()) => loaded += 1,
            Err(err) if err.contains("EEXIST") => loaded += 1,
            Err(err) => {
                failed += 1;
                say(&format!(
                    "module {name} ({}) failed: {err}; what it drives will not work here (fine when this machine lacks that hardware)",
                    dir.join(path).display()
                ));
            }
        }
    }
    say(&format!(
        "modules: {loaded} loaded, {failed} failed (kernel {release})"
    ));
}

/// The message of a caught panic (`catch_unwind`'s payload).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("no message")
}

/// Reboots; if the kernel refuses, says so and keeps trying.
pub fn reboot() -> ! {
    power(nix::sys::reboot::RebootMode::RB_AUTOBOOT)
}

/// Powers off; if the kernel refuses, says so and keeps trying.
pub fn power_off() -> ! {
    power(nix::sys::reboot::RebootMode::RB_POWER_OFF)
}

fn power(mode: nix::sys::reboot::RebootMode) -> ! {
    loop {
        nix::unistd::sync();
        let Err(err) = nix::sys::reboot::reboot(mode);
        say(&format!(
            "{mode:?} refused by the kernel: {err}; is node-agent running as PID 1? retrying in 10 s"
        ));
        std::thread::sleep(Duration::from_secs(10));
    }
}
