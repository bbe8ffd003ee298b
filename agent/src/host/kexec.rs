//! The plan's kernel arguments on the running kernel, without touching what
//! the loader boots. The UKI's `.cmdline` is fixed (it carries the `host.*`
//! words that pin the verified root) and nothing written at deploy may
//! change it, so the host boot, once the root is verified and the node
//! config opened with its trust key ([`super::config`]), boots the same
//! UKI's kernel and initramfs again with `kexec_file_load(2)` and
//! `reboot(RB_KEXEC)`, the command line being the running one plus the
//! missing plan arguments plus [`MARKER`]. The second boot finds them present
//! and goes on; systemd-boot counted the first boot only, and host mode
//! blesses after the second kernel's health checks.
//!
//! Invariants:
//! - `host.*` words come only from the UKI's own `.cmdline`: a plan argument
//!   that is a `host.*` word, or that changes how the root is found or
//!   started (`init=`, `root=`, `dm-mod.create=`, ...), is refused and said.
//! - The kernel booted again is the UKI the loader booted, checked: its
//!   `.cmdline` must give the running [`HostBoot`].
//! - No loop: with [`MARKER`] on the command line (this boot came from a
//!   kexec) missing arguments are reported, never kexec'd for again.
//! - The decisions ([`decide`], [`refusal`], [`kernel_and_initrd`]) are pure.

use std::convert::Infallible;
use std::path::Path;

use model::host::HostBoot;

use crate::pe;

/// Added to the command line of the kexec'd boot (a parameter of no module,
/// so the kernel ignores it and passes it on to no one).
pub const MARKER: &str = "node_agent.kexec=1";

/// Parameter names (dashes and underscores alike, as the kernel reads them)
/// that change how the root is found or started.
const RESERVED: &[&str] = &[
    "init",
    "rdinit",
    "root",
    "rootfstype",
    "rootflags",
    "rootwait",
    "rootdelay",
    "ro",
    "rw",
    "noinitrd",
    "initrd",
    "dm_mod.create",
    "dm_mod.waitfor",
    "node_agent.kexec",
];

/// Why a plan argument is never added to the command line, or `None`.
pub fn refusal(arg: &str) -> Option<&'static str> {
    if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
        return Some("not one plain word (no spaces, quotes or control characters)");
    }
    if arg == "--" {
        return Some("`--` hands the rest of the command line to init");
    }
    let key = arg.split_once('=').map_or(arg, |(k, _)| k);
    if key.starts_with("host.") {
        return Some(
            "host.* words come only from the UKI's own .cmdline (they pin the verified root)",
        );
    }
    if RESERVED.contains(&key.replace('-', "_").as_str()) {
        return Some("it changes how the root is found or started");
    }
    None
}

/// What to do about the plan's kernel arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// All of them are on the command line.
    Present,
    /// Boot this UKI's kernel again with `cmdline`: `add` appended, `refused`
    /// (with why) left out.
    Kexec {
        cmdline: String,
        add: Vec<String>,
        refused: Vec<(String, &'static str)>,
    },
    /// Some are missing but none can be added: all refused, or this boot
    /// already came from a kexec (`after_kexec`).
    GiveUp {
        missing: Vec<String>,
        refused: Vec<(String, &'static str)>,
        after_kexec: bool,
    },
}

/// The decision for the running `cmdline` and the plan's `args`.
pub fn decide(cmdline: &str, args: &[String]) -> Decision {
    let words: Vec<&str> = cmdline.split_ascii_whitespace().collect();
    let mut missing: Vec<String> = Vec::new();
    for arg in args {
        if !words.contains(&arg.as_str()) && !missing.contains(arg) {
            missing.push(arg.clone());
        }
    }
    if missing.is_empty() {
        return Decision::Present;
    }
    let (refused, add): (Vec<String>, Vec<String>) =
        missing.iter().cloned().partition(|a| refusal(a).is_some());
    let refused: Vec<(String, &'static str)> = refused
        .into_iter()
        .map(|a| {
            let why = refusal(&a).unwrap_or_default();
            (a, why)
        })
        .collect();
    let after_kexec = words.contains(&MARKER);
    if add.is_empty() || after_kexec {
        return Decision::GiveUp {
            missing,
            refused,
            after_kexec,
        };
    }
    Decision::Kexec {
        cmdline: format!("{} {} {MARKER}", words.join(" "), add.join(" ")),
        add,
        refused,
    }
}

/// The kernel (`.linux`) and initramfs (`.initrd`) of the UKI `image`, after
/// checking that its `.cmdline` gives `boot` (it is the UKI of this root).
pub fn kernel_and_initrd<'a>(
    image: &'a [u8],
    boot: &HostBoot,
) -> Result<(&'a [u8], &'a [u8]), String> {
    let cmdline = pe::cmdline(image).map_err(|e| e.to_string())?;
    match HostBoot::from_cmdline(&cmdline) {
        Ok(Some(ours)) if &ours == boot => {}
        _ => {
            return Err(format!(
                "its .cmdline ({cmdline:?}) is not the running boot's (version {}, root {})",
                boot.version, boot.verity.root_hash
            ));
        }
    }
    let kernel = pe::section(image, ".linux").map_err(|e| e.to_string())?;
    let initrd = pe::section(image, ".initrd").map_err(|e| e.to_string())?;
    Ok((kernel, initrd))
}

/// Boots the UKI at `uki` again with `cmdline`: its kernel and initramfs are
/// written to `scratch` (a tmpfs), loaded with `kexec_file_load(2)`, file
/// systems synced, then `reboot(RB_KEXEC)`. Returns only with why not.
pub fn boot_again(
    uki: &Path,
    boot: &HostBoot,
    cmdline: &str,
    scratch: &Path,
) -> Result<Infallible, String> {
    let image =
        std::fs::read(uki).map_err(|e| format!("cannot read the UKI {}: {e}", uki.display()))?;
    let (kernel, initrd) =
        kernel_and_initrd(&image, boot).map_err(|e| format!("UKI {}: {e}", uki.display()))?;
    std::fs::create_dir_all(scratch)
        .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
    let file = |name: &str, bytes: &[u8]| -> Result<std::fs::File, String> {
        let path = scratch.join(name);
        std::fs::write(&path, bytes)
            .and_then(|()| std::fs::File::open(&path))
            .map_err(|e| {
                format!(
                    "cannot write {} ({} bytes): {e}",
                    path.display(),
                    bytes.len()
                )
            })
    };
    let kernel = file("linux", kernel)?;
    let initrd = file("initrd", initrd)?;
    drop(image);
    super::dm::kexec_file_load(&kernel, &initrd, cmdline).map_err(|e| {
        format!(
            "kexec_file_load refused the UKI's kernel: {e} (EPERM: kernel lockdown or no \
             CAP_SYS_BOOT; EKEYREJECTED: Secure Boot wants a signed kernel; ENOEXEC: not a \
             bzImage)"
        )
    })?;
    nix::unistd::sync();
    let Err(e) = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_KEXEC);
    Err(format!("reboot(RB_KEXEC) failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::host::VerityParams;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    const UKI: &str = "console=ttyS0,115200n8 panic=10 host.version=1 host.roothash=ab";

    #[test]
    fn missing_arguments_are_added_once_with_the_marker() {
        assert_eq!(decide(UKI, &args(&["panic=10"])), Decision::Present);
        assert_eq!(decide(UKI, &[]), Decision::Present);
        let plan = args(&["hugepagesz=2M", "hugepages=8", "panic=10", "hugepages=8"]);
        let Decision::Kexec {
            cmdline,
            add,
            refused,
        } = decide(&format!("{UKI}\n"), &plan)
        else {
            panic!("kexec expected")
        };
        assert_eq!(
            cmdline,
            format!("{UKI} hugepagesz=2M hugepages=8 node_agent.kexec=1")
        );
        assert_eq!(add, args(&["hugepagesz=2M", "hugepages=8"]));
        assert!(refused.is_empty());
        // The second boot has them.
        assert_eq!(decide(&cmdline, &plan), Decision::Present);
        // A kernel that dropped one: reported, no second kexec.
        let dropped = cmdline.replace(" hugepages=8", "");
        assert_eq!(
            decide(&dropped, &plan),
            Decision::GiveUp {
                missing: args(&["hugepages=8"]),
                refused: vec![],
                after_kexec: true
            }
        );
    }

    #[test]
    fn host_words_and_root_changers_are_refused() {
        for arg in [
            "host.roothash=00",
            "host.version",
            "init=/bin/sh",
            "rdinit=/x",
            "root=/dev/vda3",
            "dm-mod.create=x",
            "dm_mod.waitfor=1",
            "rw",
            "--",
            "a b",
            "quote\"d",
            "",
            "node_agent.kexec=1",
        ] {
            assert!(refusal(arg).is_some(), "{arg:?} must be refused");
        }
        for arg in ["hugepages=8", "iommu=pt", "isolcpus=1-3", "intel_iommu=on"] {
            assert_eq!(refusal(arg), None, "{arg}");
        }
        let plan = args(&["host.roothash=00", "iommu=pt"]);
        let Decision::Kexec { add, refused, .. } = decide(UKI, &plan) else {
            panic!("kexec expected")
        };
        assert_eq!(add, args(&["iommu=pt"]));
        assert_eq!(refused[0].0, "host.roothash=00");
        assert!(refused[0].1.contains("UKI's own .cmdline"));
        assert!(matches!(
            decide(UKI, &args(&["init=/bin/sh"])),
            Decision::GiveUp { after_kexec: false, ref refused, .. } if refused.len() == 1
        ));
    }

    fn boot() -> HostBoot {
        HostBoot {
            version: "1".into(),
            verity: VerityParams {
                data_blocks: 10,
                hash_start_block: 10,
                root_hash: "ab".repeat(32),
                salt: "01".repeat(32),
            },
        }
    }

    #[test]
    fn only_the_uki_of_the_running_root_is_booted_again() {
        let cmdline = boot().cmdline();
        let uki = pe::fake_image(&[
            (".cmdline", cmdline.as_bytes()),
            (".linux", b"KERNEL"),
            (".initrd", b"INITRD"),
        ]);
        assert_eq!(
            kernel_and_initrd(&uki, &boot()),
            Ok((&b"KERNEL"[..], &b"INITRD"[..]))
        );
        let mut other = boot();
        other.verity.root_hash = "cd".repeat(32);
        let err = kernel_and_initrd(&uki, &other).unwrap_err();
        assert!(err.contains("not the running boot's"), "{err}");
        let no_initrd = pe::fake_image(&[(".cmdline", cmdline.as_bytes()), (".linux", b"K")]);
        assert!(
            kernel_and_initrd(&no_initrd, &boot())
                .unwrap_err()
                .contains(".initrd")
        );
    }

    #[test]
    fn a_missing_uki_is_said_before_anything_is_loaded() {
        let tmp = tempfile::tempdir().unwrap();
        let err = boot_again(
            &tmp.path().join("host-a-1.efi"),
            &boot(),
            "x",
            &tmp.path().join("scratch"),
        )
        .unwrap_err();
        assert!(err.contains("cannot read the UKI"), "{err}");
        assert!(!tmp.path().join("scratch").exists());
    }
}
