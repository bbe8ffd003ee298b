//! `node-agent upgrade`: writes a new host image version into the inactive
//! A/B slot of the running host and points the boot loader at it.
//!
//! The flow ([`upgrade`]): read `/run/host/status.json` (the running slot);
//! the target is the other slot, refused if device-mapper holds its
//! partition; fetch and check the manifest; fetch the UKI into memory and
//! check its SHA-256 and its `.cmdline` against the manifest; remove the
//! target slot's UKIs from the ESP; stream `root.img` into the slot (hashed
//! while writing), read it back from the disk and check the hash and the
//! verity top block; write the UKI as `host-SLOT-VERSION+3.efi`. The caller
//! then reboots.
//!
//! Invariants:
//! - The running slot is never written: the target is the other slot of
//!   `status.json`, a partition with holders (the running root's
//!   dm-verity device) is refused, and the device is opened with `O_EXCL`
//!   (the kernel refuses a mounted or held block device) before anything
//!   changes.
//! - Nothing points at the target slot while its bytes are unchecked: its
//!   UKIs are gone (and synced) before the first write, and the new UKI is
//!   written only after the read-back matched.
//! - A bad source fails before anything is changed where it can be checked
//!   first (manifest, UKI hash and command line, sizes): the UKI is fetched
//!   and checked before the slot's entries are removed.
//! - A boot still on trial (not yet blessed) is not upgraded: the other slot
//!   holds its fallback.
//! - All host paths go through [`SysRoot`], so the whole flow runs in tests
//!   on a fake root (a temp file as the partition, a temp dir as the ESP).
//! - `root.img` is streamed (one 4 MiB buffer), never held in memory.

pub mod esp;
pub mod source;
pub mod stream;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod tests;

use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;

use model::host::{HostBoot, HostManifest, HostStatus, Slot, VERITY_BLOCK, check_version};

use crate::host::disk;
use crate::sysroot::SysRoot;
use source::Source;
use stream::{Meter, StreamError};

/// Where host mode writes its status.
pub const STATUS: &str = "/run/host/status.json";
/// Where host mode mounts the ESP's UKI directory.
pub const UKI_DIR: &str = "/efi/EFI/Linux";
/// Held (flock) while an upgrade runs: one upgrade at a time.
pub const LOCK: &str = "/run/host/upgrade.lock";
/// The largest manifest read (it is a few KiB).
const MANIFEST_LIMIT: u64 = 1 << 20;

/// Why an upgrade stopped. Each message says what was checked and what to do.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error(
        "not running an installed host image (no {path}): `node-agent upgrade` runs on a host \
         booted from the host image's disk, after the agent started host mode"
    )]
    NotAHost { path: PathBuf },
    #[error("{path} is not a host status (written by the agent in host mode)")]
    Status {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "this boot of version {version} (slot {slot}) is still on trial: slot {other} holds the \
         version to fall back to, and an upgrade would overwrite it. Wait until this boot is \
         marked good (after its health checks), then upgrade"
    )]
    OnTrial {
        version: String,
        slot: Slot,
        other: Slot,
    },
    /// A step on the ESP failed; the message names the files and what to check.
    #[error("{0}")]
    Esp(String),
    #[error("another upgrade is running (it holds {path}); wait for it to finish")]
    Busy { path: PathBuf },
    #[error("cannot find slot {slot}'s partition: {why}")]
    NoPartition { slot: Slot, why: String },
    #[error(
        "slot {slot} ({partition}) is in use: {holders} holds it (device-mapper: the running \
         root's verity device); the running slot is never written. Check \
         /run/host/status.json: it should name the slot this root runs from"
    )]
    Held {
        slot: Slot,
        partition: String,
        holders: String,
    },
    #[error(
        "slot {slot} ({device}) is in use: the kernel refused to open it exclusively (it is \
         mounted or held); the running slot is never written. Check /run/host/status.json and \
         what uses the device"
    )]
    InUse { slot: Slot, device: PathBuf },
    #[error("--image {image:?}: {why}")]
    BadSource { image: String, why: String },
    #[error("cannot fetch {url}; is the server up and the URL right?")]
    Fetch {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error(
        "{url} answered HTTP {status}; check the URL (it must name manifest.json or its directory)"
    )]
    HttpStatus { url: String, status: u16 },
    #[error("cannot read {location}")]
    Read {
        location: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the manifest {why}; use the files of one `provisioner image build host` output")]
    Manifest { why: String },
    #[error(
        "{file} ({size} bytes) does not fit slot {slot} ({partition}, {capacity} bytes); this \
         image needs a disk partitioned for it: deploy it instead of upgrading"
    )]
    TooBig {
        file: String,
        size: u64,
        slot: Slot,
        partition: String,
        capacity: u64,
    },
    #[error(
        "{location}: SHA-256 {actual}, but the manifest says {expected}; the file is corrupt or \
         from another build. Slot {slot} gets no boot entry; fix the source and run the upgrade \
         again"
    )]
    Hash {
        location: String,
        expected: String,
        actual: String,
        slot: Slot,
    },
    #[error(
        "{location} ended after {got} of the manifest's {expected} bytes (truncated download or \
         file). Slot {slot} gets no boot entry; run the upgrade again"
    )]
    Short {
        location: String,
        got: u64,
        expected: u64,
        slot: Slot,
    },
    #[error(
        "{location} is longer than the manifest's {expected} bytes: the file and the manifest are from different builds"
    )]
    Long { location: String, expected: u64 },
    #[error("cannot write slot {slot} ({device}); nothing points at it")]
    Write {
        slot: Slot,
        device: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "slot {slot} ({device}) read back {what} after writing; the disk does not keep what is \
         written (check it: dmesg, SMART). Nothing points at slot {slot}"
    )]
    ReadBack {
        slot: Slot,
        device: PathBuf,
        what: String,
    },
    #[error("{location} is not a UKI we can read: {source}")]
    Pe {
        location: String,
        #[source]
        source: crate::pe::PeError,
    },
    #[error(
        "{location}: its .cmdline is {found:?}, but the manifest's version and verity \
         parameters give {expected:?}; the UKI and root.img are from different builds"
    )]
    Cmdline {
        location: String,
        found: String,
        expected: String,
    },
    #[error(
        "{} are two names of one UKI (a FAT rename cut by a power loss can leave both on one \
         cluster chain; unlinking either frees the other's clusters), so the upgrade unlinks \
         neither. The next boot repairs it (the host boot keeps the newer name on the unmounted \
         ESP): reboot and run the upgrade again; if the names stay, check the ESP with \
         `fsck.fat -n`", names.join(" and ")
    )]
    TwoNames { names: Vec<String> },
    #[error("no {path}: the ESP is not mounted there (host mode mounts it read-write at /efi)")]
    NoEsp { path: PathBuf },
    #[error("the ESP has {free} bytes free, the UKI needs {need}; remove stray files from /efi")]
    EspFull { free: u64, need: u64 },
}

/// What to upgrade from, and the root of the host's paths.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--image`: the manifest's path or URL ([`Source::parse`]).
    pub image: String,
    /// `/` on a machine; a fake root in tests.
    pub sysroot: PathBuf,
}

/// A finished upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgraded {
    pub slot: Slot,
    pub version: String,
    /// The new UKI's file name (`host-b-2+3.efi`).
    pub entry: String,
    /// The UKIs of the slot that were removed.
    pub removed: Vec<String>,
}

/// Checks a manifest against the slot it is to be written to (`slot`, its
/// partition's kernel name and capacity in bytes). Pure.
pub fn check_manifest(
    manifest: &HostManifest,
    slot: Slot,
    partition: &str,
    capacity: u64,
) -> Result<(), UpgradeError> {
    let bad = |why: String| Err(UpgradeError::Manifest { why });
    if manifest.format != 1 {
        return bad(format!(
            "has format {}, this agent reads format 1; upgrade with a matching agent version",
            manifest.format
        ));
    }
    if let Err(e) = check_version(&manifest.version) {
        return bad(format!("has a bad version: {e}"));
    }
    let root = &manifest.root;
    if root.image.size == 0 || !root.image.size.is_multiple_of(VERITY_BLOCK) {
        return bad(format!(
            "says root.img has {} bytes, not a positive multiple of {VERITY_BLOCK}",
            root.image.size
        ));
    }
    let verity = &root.verity;
    if verity.data_blocks == 0
        || verity.hash_start_block < verity.data_blocks
        || verity.top_block_offset() + VERITY_BLOCK > root.image.size
    {
        return bad(format!(
            "has verity data_blocks {} and hash_start_block {}, which do not fit root.img's {} \
             bytes",
            verity.data_blocks, verity.hash_start_block, root.image.size
        ));
    }
    let esp = model::host::LAYOUT[0].size_mib << 20;
    if manifest.uki.size == 0 || manifest.uki.size > esp {
        return bad(format!(
            "says uki.efi has {} bytes; a UKI fits the {esp}-byte ESP",
            manifest.uki.size
        ));
    }
    if root.image.size > capacity {
        return Err(UpgradeError::TooBig {
            file: root.image.file.clone(),
            size: root.image.size,
            slot,
            partition: partition.to_owned(),
            capacity,
        });
    }
    Ok(())
}

/// The target slot's partition, checked: not held by device-mapper. Its
/// kernel name, device path and capacity in bytes.
fn target_partition(sys: &SysRoot, target: Slot) -> Result<(disk::Partition, u64), UpgradeError> {
    let partitions = disk::scan(&sys.path("/sys"));
    let part = disk::slot(&partitions, target)
        .map_err(|why| UpgradeError::NoPartition { slot: target, why })?
        .clone();
    let class = format!("/sys/class/block/{}", part.name);
    let holders = sys.list(&format!("{class}/holders"));
    if !holders.is_empty() {
        return Err(UpgradeError::Held {
            slot: target,
            partition: part.name.clone(),
            holders: holders.join(", "),
        });
    }
    let sectors = sys
        .read_u64(&format!("{class}/size"))
        .map_err(|source| UpgradeError::Io {
            what: "cannot read the size of",
            path: sys.path(&format!("{class}/size")),
            source,
        })?;
    Ok((part, sectors * model::host::SECTOR))
}

/// Reads a whole (small) file of the source, at most `limit` bytes.
fn fetch_small(source: &Source, name: &str, limit: u64) -> Result<Vec<u8>, UpgradeError> {
    let location = source.location(name);
    let mut bytes = Vec::new();
    source
        .open(name)?
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| UpgradeError::Read {
            location: location.clone(),
            source,
        })?;
    if bytes.len() as u64 > limit {
        return Err(UpgradeError::Long {
            location,
            expected: limit,
        });
    }
    Ok(bytes)
}

/// Fetches the UKI and checks its size, SHA-256 and `.cmdline`.
fn fetch_uki(
    source: &Source,
    manifest: &HostManifest,
    slot: Slot,
) -> Result<Vec<u8>, UpgradeError> {
    let info = &manifest.uki;
    let location = source.location(&info.file);
    let uki = fetch_small(source, &info.file, info.size)?;
    if (uki.len() as u64) < info.size {
        return Err(UpgradeError::Short {
            location,
            got: uki.len() as u64,
            expected: info.size,
            slot,
        });
    }
    let actual = stream::hex(&stream::sha256(&uki));
    if actual != info.sha256 {
        return Err(UpgradeError::Hash {
            location,
            expected: info.sha256.clone(),
            actual,
            slot,
        });
    }
    let found = crate::pe::cmdline(&uki).map_err(|source| UpgradeError::Pe {
        location: location.clone(),
        source,
    })?;
    let expected = HostBoot {
        version: manifest.version.clone(),
        verity: manifest.root.verity.clone(),
    }
    .cmdline();
    if found != expected {
        return Err(UpgradeError::Cmdline {
            location,
            found,
            expected,
        });
    }
    Ok(uki)
}

/// Opens the slot's device for writing, before anything changes.
fn open_slot(slot: Slot, device: PathBuf) -> Result<(std::fs::File, PathBuf), UpgradeError> {
    // O_EXCL on a block device: the kernel refuses (EBUSY) a device that is
    // mounted or held, a second guard after the holders check. A regular
    // file (tests) ignores it.
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_EXCL.bits())
        .open(&device)
        .map_err(|source| {
            if source.raw_os_error() == Some(nix::errno::Errno::EBUSY as i32) {
                UpgradeError::InUse {
                    slot,
                    device: device.clone(),
                }
            } else {
                UpgradeError::Io {
                    what: "cannot open for writing the slot device",
                    path: device.clone(),
                    source,
                }
            }
        })?;
    Ok((dev, device))
}

/// Streams root.img into the target partition, reads it back and checks it.
fn write_root(
    source: &Source,
    manifest: &HostManifest,
    slot: Slot,
    (mut dev, device): (std::fs::File, PathBuf),
    say: &mut dyn FnMut(&str),
) -> Result<(), UpgradeError> {
    let info = &manifest.root.image;
    let location = source.location(&info.file);
    let mut src = source.open(&info.file)?;
    let mut meter = Meter::new(format!("writing slot {slot}"), info.size, &mut *say);
    let written =
        stream::write(&mut src, &mut dev, info.size, &mut meter).map_err(|e| match e {
            StreamError::Read(source) => UpgradeError::Read {
                location: location.clone(),
                source,
            },
            StreamError::Write(source) => UpgradeError::Write {
                slot,
                device: device.clone(),
                source,
            },
            StreamError::Short(got) => UpgradeError::Short {
                location: location.clone(),
                got,
                expected: info.size,
                slot,
            },
            StreamError::Long => UpgradeError::Long {
                location: location.clone(),
                expected: info.size,
            },
        })?;
    let written = stream::hex(&written);
    if written != info.sha256 {
        return Err(UpgradeError::Hash {
            location,
            expected: info.sha256.clone(),
            actual: written,
            slot,
        });
    }
    let verity = &manifest.root.verity;
    let mut meter = Meter::new(format!("verifying slot {slot}"), info.size, &mut *say);
    let back = stream::read_back(&mut dev, info.size, verity.top_block_offset(), &mut meter)
        .map_err(|source| UpgradeError::Write {
            slot,
            device: device.clone(),
            source,
        })?;
    let read = stream::hex(&back.sha256);
    if read != written {
        return Err(UpgradeError::ReadBack {
            slot,
            device,
            what: format!("SHA-256 {read}, written {written}"),
        });
    }
    if !verity.top_block_matches(&back.top_block, stream::sha256) {
        return Err(UpgradeError::ReadBack {
            slot,
            device,
            what: format!(
                "a verity top block (at byte {}) that does not hash to the root hash {}; the \
                 manifest's verity parameters do not describe root.img",
                verity.top_block_offset(),
                verity.root_hash
            ),
        });
    }
    Ok(())
}

/// Runs the upgrade (see the module doc); `say` gets the progress lines
/// (without the `node-agent: upgrade: ` prefix). Does not reboot.
pub fn upgrade(options: &Options, say: &mut dyn FnMut(&str)) -> Result<Upgraded, UpgradeError> {
    let sys = SysRoot::new(&options.sysroot, false);
    let status_path = sys.path(STATUS);
    let text = match std::fs::read_to_string(&status_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(UpgradeError::NotAHost { path: status_path });
        }
        Err(source) => {
            return Err(UpgradeError::Io {
                what: "cannot read",
                path: status_path,
                source,
            });
        }
    };
    let status: HostStatus =
        serde_json::from_str(&text).map_err(|source| UpgradeError::Status {
            path: status_path,
            source,
        })?;
    let slot = status.slot.other();
    if status.trial && !status.blessed {
        return Err(UpgradeError::OnTrial {
            version: status.version,
            slot: status.slot,
            other: slot,
        });
    }
    let _lock = lock(&sys.path(LOCK))?;
    let (partition, capacity) = target_partition(&sys, slot)?;
    let device = open_slot(slot, sys.path(&partition.dev.to_string_lossy()))?;

    let source = Source::parse(&options.image)?;
    let manifest_bytes = fetch_small(&source, source.manifest(), MANIFEST_LIMIT)?;
    let manifest: HostManifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| UpgradeError::Manifest {
            why: format!(
                "{} is not a host manifest ({e})",
                source.location(source.manifest())
            ),
        })?;
    check_manifest(&manifest, slot, &partition.name, capacity)?;
    say(&format!(
        "running version {} from slot {}; installing version {} from {} into slot {slot} ({})",
        status.version,
        status.slot,
        manifest.version,
        source.location(source.manifest()),
        partition.dev.display()
    ));
    let uki = fetch_uki(&source, &manifest, slot)?;
    say(&format!(
        "{}: SHA-256 and command line match the manifest",
        manifest.uki.file
    ));

    let esp = esp::UkiDir::open(sys.path(UKI_DIR))?;
    let removed = esp.remove_slot(slot)?;
    if !removed.is_empty() {
        say(&format!(
            "removed slot {slot}'s boot entries: {}",
            removed.join(", ")
        ));
    }
    let free = esp.free_bytes()?;
    if free < manifest.uki.size {
        return Err(UpgradeError::EspFull {
            free,
            need: manifest.uki.size,
        });
    }

    write_root(&source, &manifest, slot, device, say)?;
    say(&format!(
        "slot {slot} read back from the disk: SHA-256 and verity root hash match"
    ));
    let entry = esp.install(slot, &manifest.version, &uki)?;
    say(&format!("boot entry {entry} written"));
    Ok(Upgraded {
        slot,
        version: manifest.version,
        entry,
        removed,
    })
}

/// Takes the upgrade lock (released when the file is dropped).
fn lock(path: &std::path::Path) -> Result<nix::fcntl::Flock<std::fs::File>, UpgradeError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| UpgradeError::Io {
            what: "cannot create the lock file",
            path: path.to_owned(),
            source,
        })?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
        |(_, errno)| match errno {
            nix::errno::Errno::EWOULDBLOCK => UpgradeError::Busy {
                path: path.to_owned(),
            },
            other => UpgradeError::Io {
                what: "cannot lock",
                path: path.to_owned(),
                source: other.into(),
            },
        },
    )
}
