//! `cargo xtask deps`: the Debian packages the tests need, checked and (as root) installed.
//!
//! [`DEPS`] is the single list. Deciding what to do ([`plan`]) is pure and unit-tested;
//! running dpkg-query and apt-get happens at the edge ([`run`]). This module never removes
//! or upgrades packages, and never touches apt sources other than the backports file.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// A Debian package the tests need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dep {
    pub package: &'static str,
    /// Why the tests need it (printed when it is missing).
    pub why: &'static str,
    /// Install with `-t bookworm-backports` (see LAB-NOTES: QEMU 10 lives there).
    pub from_backports: bool,
}

/// Every Debian package the tests need. Later lab work adds QEMU, OVMF, iPXE, busybox-static,
/// socat, openipmi, ... from bookworm-backports (`from_backports: true`), and the peers
/// (dnsmasq, kea, nginx, ...) used by `cargo xtask bench`.
pub const DEPS: &[Dep] = &[
    Dep {
        package: "sqlite3",
        why: "a test runs `PRAGMA integrity_check` on the daemon's database after kill -9",
        from_backports: false,
    },
    Dep {
        package: "atftp",
        why: "a TFTP client we did not write (blksize, windowsize, tsize) against our TFTP server",
        from_backports: false,
    },
    Dep {
        package: "curl",
        why: "curl's TFTP client (blksize, no options) against our TFTP server",
        from_backports: false,
    },
    Dep {
        package: "zstd",
        why: "`cargo xtask bench deploy` compresses its image and pipes `curl | zstd -d | dd` as the agent's peer",
        from_backports: false,
    },
    Dep {
        package: "qemu-system-x86",
        why: "the virtual BMC drives a QEMU VM through QMP (hardware-tests/tests/vbmc_qemu.rs)",
        from_backports: true,
    },
    Dep {
        package: "openipmi",
        why: "the IPMI driver is tested against `ipmi_sim` (provisioner/tests/bmc_ipmi.rs)",
        from_backports: false,
    },
    Dep {
        package: "ipmitool",
        why: "the IPMI tests cross-check every result with `ipmitool -I lanplus -C 3`",
        from_backports: false,
    },
    Dep {
        package: "openssl",
        why: "the Redfish TLS test makes a certificate and serves it with `openssl s_server`",
        from_backports: false,
    },
    Dep {
        package: "busybox-static",
        why: "busybox `udhcpc` is the DHCP client the DHCP server is tested with (provisioner/tests/dhcp_netns.rs); /init of the lab's test initramfs and of `cargo xtask record-sysfs` VMs; `insmod` of every ramdisk module under QEMU (image/tests/ramdisk.rs)",
        from_backports: false,
    },
    Dep {
        package: "kea-admin",
        why: "Kea's `perfdhcp` loads the DHCP server while it is killed and restarted (dhcp_netns.rs)",
        from_backports: false,
    },
    Dep {
        package: "tcpdump",
        why: "the DHCP restart test captures every ACK on the client side (dhcp_netns.rs)",
        from_backports: false,
    },
    Dep {
        package: "iproute2",
        why: "network namespaces, veth pairs, bridges and taps for the DHCP tests and the lab (`ip netns`, `ip link`)",
        from_backports: false,
    },
    Dep {
        package: "python3",
        why: "a tiny UDP client sends hand-built PXE and malformed DHCP packets (dhcp_netns.rs)",
        from_backports: false,
    },
    Dep {
        package: "cpio",
        why: "GNU cpio reads back the initramfs archives of image::cpio (image/tests/cpio_readback.rs)",
        from_backports: false,
    },
    Dep {
        package: "ovmf",
        why: "the UEFI lab VM boots OVMF (native PXE -> TFTP snponly.efi -> iPXE) (hardware-tests/tests/lab_pxe.rs); UEFI fixture VMs of `cargo xtask record-sysfs`",
        from_backports: false,
    },
    Dep {
        package: "seabios",
        why: "the BIOS lab VM boots SeaBIOS (hardware-tests/tests/lab_pxe.rs)",
        from_backports: true,
    },
    Dep {
        package: "ipxe-qemu",
        why: "the BIOS lab VM's virtio NIC boots its iPXE option ROM (hardware-tests/tests/lab_pxe.rs)",
        from_backports: false,
    },
    Dep {
        package: "ipxe",
        why: "the lab site serves Debian's iPXE binaries (/usr/lib/ipxe/snponly.efi) over TFTP",
        from_backports: false,
    },
    Dep {
        package: "radvd",
        why: "router advertisements on the lab bridge only, so iPXE skips its ~13 s IPv6 wait",
        from_backports: false,
    },
    Dep {
        package: "procps",
        why: "sysctl: IPv6 forwarding inside the lab namespace (radvd needs it)",
        from_backports: false,
    },
    Dep {
        package: "hwloc",
        why: "agent/tests/fixtures.rs cross-checks NUMA nodes, CPUs and memory of the recorded \
              sysfs fixtures with `HWLOC_FSROOT=DIR lstopo-no-graphics --of xml`",
        from_backports: false,
    },
    Dep {
        package: "kmod",
        why: "`depmod` cross-checks the ramdisk's module dependencies (image/tests/ramdisk.rs)",
        from_backports: false,
    },
    Dep {
        package: "erofs-utils",
        why: "`provisioner image build host` makes the root with mkfs.erofs; image/tests/host_image.rs checks it with fsck.erofs",
        from_backports: false,
    },
    Dep {
        package: "cryptsetup-bin",
        why: "`veritysetup format` checks our dm-verity hash trees byte for byte (image/tests/host_image.rs)",
        from_backports: false,
    },
    Dep {
        package: "gdisk",
        why: "`sgdisk -v` checks the GPT of host.raw (image/tests/host_image.rs)",
        from_backports: false,
    },
    Dep {
        package: "binutils",
        why: "`provisioner image build host` builds the UKI with objcopy and the test reads its .cmdline back",
        from_backports: false,
    },
    Dep {
        package: "dosfstools",
        why: "`mkfs.fat` makes the host image's ESP (image::esp); `fsck.fat -n` checks it and the \
              agent's repair of a UKI under two FAT names (agent/tests/fat_fsck.rs)",
        from_backports: false,
    },
    Dep {
        package: "mtools",
        why: "`mmd` and `mcopy` fill the host image's ESP without a mount (image::esp)",
        from_backports: false,
    },
    Dep {
        package: "e2fsprogs",
        why: "`provisioner image build host` makes the data partition's ext4 with mkfs.ext4",
        from_backports: false,
    },
    Dep {
        package: "python3-venv",
        why: "the BMC tests run sushy-tools' Redfish emulator from a venv (target/venv)",
        from_backports: false,
    },
];

/// The packages the PXE lab (tests and `cargo xtask bench pxe`) needs.
pub const LAB: &[&str] = &[
    "qemu-system-x86",
    "ovmf",
    "seabios",
    "ipxe-qemu",
    "ipxe",
    "busybox-static",
    "radvd",
    "procps",
    "iproute2",
];

pub const BACKPORTS_SOURCES: &str = "/etc/apt/sources.list.d/backports.sources";
pub const BACKPORTS_SUITE: &str = "bookworm-backports";
/// Exactly the deb822 stanza LAB-NOTES documents.
pub const BACKPORTS_STANZA: &str = "Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";

#[derive(Debug, Default, clap::Args)]
pub struct Args {
    /// Only check: report missing packages and fail if any, never install.
    #[arg(long)]
    check: bool,
}

/// One step of bringing the machine up to [`DEPS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write [`BACKPORTS_STANZA`] to [`BACKPORTS_SOURCES`].
    WriteBackportsSources,
    /// `apt-get update`.
    AptUpdate,
    /// `apt-get install -y --no-install-recommends [-t bookworm-backports] PACKAGES`.
    AptInstall {
        backports: bool,
        packages: Vec<&'static str>,
    },
}

impl Action {
    /// The shell command a human would type for this action.
    pub fn shell(&self) -> String {
        match self {
            Action::WriteBackportsSources => {
                format!("cat > {BACKPORTS_SOURCES} <<'EOF'\n{BACKPORTS_STANZA}EOF")
            }
            Action::AptUpdate => "apt-get update".to_owned(),
            Action::AptInstall { .. } => {
                format!(
                    "DEBIAN_FRONTEND=noninteractive {}",
                    self.apt_args().join(" ")
                )
            }
        }
    }

    fn apt_args(&self) -> Vec<&'static str> {
        match self {
            Action::WriteBackportsSources => vec![],
            Action::AptUpdate => vec!["apt-get", "update"],
            Action::AptInstall {
                backports,
                packages,
            } => {
                let mut args = vec!["apt-get", "install", "-y", "--no-install-recommends"];
                if *backports {
                    args.extend(["-t", BACKPORTS_SUITE]);
                }
                args.extend(packages.iter().copied());
                args
            }
        }
    }
}

/// What to do to install `missing`: nothing when nothing is missing; otherwise the backports
/// source (only when a backports package is missing and the file is absent), one
/// `apt-get update`, then one install for backports packages and one for the others.
pub fn plan(missing: &[Dep], backports_sources_present: bool) -> Vec<Action> {
    if missing.is_empty() {
        return vec![];
    }
    let mut actions = vec![];
    let (backports, regular): (Vec<&Dep>, Vec<&Dep>) =
        missing.iter().partition(|d| d.from_backports);
    if !backports.is_empty() && !backports_sources_present {
        actions.push(Action::WriteBackportsSources);
    }
    actions.push(Action::AptUpdate);
    for (is_backports, deps) in [(true, backports), (false, regular)] {
        if !deps.is_empty() {
            actions.push(Action::AptInstall {
                backports: is_backports,
                packages: deps.iter().map(|d| d.package).collect(),
            });
        }
    }
    actions
}

/// True when dpkg reports `package` as installed.
fn is_installed(package: &str) -> Result<bool> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .context("running `dpkg-query` (is this a Debian machine?)")?;
    // dpkg-query exits 1 for unknown packages; that simply means "not installed".
    Ok(out.status.success()
        && String::from_utf8_lossy(&out.stdout).trim() == "install ok installed")
}

fn missing_deps(deps: &[Dep]) -> Result<Vec<Dep>> {
    let mut missing = vec![];
    for dep in deps {
        if !is_installed(dep.package)? {
            missing.push(*dep);
        }
    }
    Ok(missing)
}

fn execute(action: &Action) -> Result<()> {
    println!(
        "deps: {}",
        action.shell().lines().next().unwrap_or_default()
    );
    if let Action::WriteBackportsSources = action {
        return std::fs::write(BACKPORTS_SOURCES, BACKPORTS_STANZA)
            .with_context(|| format!("writing {BACKPORTS_SOURCES}"));
    }
    let args = action.apt_args();
    let status = Command::new(args[0])
        .args(&args[1..])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .with_context(|| format!("running `{}`", args.join(" ")))?;
    if !status.success() {
        bail!("`{}` failed ({status})", args.join(" "));
    }
    Ok(())
}

pub fn run(args: &Args) -> Result<()> {
    ensure(DEPS, args.check)
}

/// Installs what is missing of `deps` (as root), or fails saying how.
/// `check_only` never installs.
pub fn ensure(deps: &[Dep], check_only: bool) -> Result<()> {
    let missing = missing_deps(deps)?;
    if missing.is_empty() {
        let names: Vec<_> = deps.iter().map(|d| d.package).collect();
        println!("deps: all {} installed ({})", deps.len(), names.join(", "));
        return Ok(());
    }
    for dep in &missing {
        let origin = if dep.from_backports {
            " (from bookworm-backports)"
        } else {
            ""
        };
        println!("deps: missing {}{origin}: {}", dep.package, dep.why);
    }
    let actions = plan(&missing, Path::new(BACKPORTS_SOURCES).exists());
    let names: Vec<_> = missing.iter().map(|d| d.package).collect();
    if check_only {
        bail!(
            "missing Debian packages: {}; run `cargo xtask deps` as root to install them",
            names.join(", ")
        );
    }
    if !crate::sys::is_root() {
        let script: Vec<_> = actions.iter().map(Action::shell).collect();
        bail!(
            "missing Debian packages: {}. Installing needs root; run these commands as root \
             (or run `sudo cargo xtask deps`):\n\n{}\n",
            names.join(", "),
            script.join("\n")
        );
    }
    for action in &actions {
        execute(action)?;
    }
    let still_missing = missing_deps(deps)?;
    if !still_missing.is_empty() {
        let names: Vec<_> = still_missing.iter().map(|d| d.package).collect();
        bail!(
            "apt-get succeeded but these are still not installed: {}",
            names.join(", ")
        );
    }
    println!("deps: installed {}", names.join(", "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU: Dep = Dep {
        package: "qemu-system-x86",
        why: "lab VMs",
        from_backports: true,
    };
    const SQLITE: Dep = Dep {
        package: "sqlite3",
        why: "integrity check",
        from_backports: false,
    };

    #[test]
    fn nothing_missing_means_nothing_to_do() {
        assert_eq!(plan(&[], false), vec![]);
    }

    #[test]
    fn regular_packages_do_not_touch_backports() {
        assert_eq!(
            plan(&[SQLITE], false),
            vec![
                Action::AptUpdate,
                Action::AptInstall {
                    backports: false,
                    packages: vec!["sqlite3"]
                }
            ]
        );
    }

    #[test]
    fn backports_packages_add_the_source_only_when_absent() {
        let install = [
            Action::AptInstall {
                backports: true,
                packages: vec!["qemu-system-x86"],
            },
            Action::AptInstall {
                backports: false,
                packages: vec!["sqlite3"],
            },
        ];
        let mut expected = vec![Action::WriteBackportsSources, Action::AptUpdate];
        expected.extend(install.clone());
        assert_eq!(plan(&[SQLITE, QEMU], false), expected);
        let mut expected = vec![Action::AptUpdate];
        expected.extend(install);
        assert_eq!(plan(&[SQLITE, QEMU], true), expected);
    }

    #[test]
    fn install_command_is_the_documented_one() {
        let action = Action::AptInstall {
            backports: true,
            packages: vec!["qemu-system-x86", "ovmf"],
        };
        assert_eq!(
            action.shell(),
            "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
             -t bookworm-backports qemu-system-x86 ovmf"
        );
    }

    #[test]
    fn dep_list_has_unique_packages_and_reasons() {
        let mut names: Vec<_> = DEPS.iter().map(|d| d.package).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DEPS.len());
        assert!(DEPS.iter().all(|d| !d.why.is_empty()));
    }
}
