//! The host image contract, shared by `provisioner image build host` (which
//! writes disks, slots and UKIs) and `node-agent` (which boots them, blesses
//! them and upgrades them). Pure: names, numbers, parsing; no I/O.
//!
//! - [`LAYOUT`]: the GPT partitions, in order, with their labels and type
//!   GUIDs (the Discoverable Partitions Specification where it has one).
//! - [`VerityParams`]: where a slot's dm-verity hash tree is and what its root
//!   hash is; carried on the UKI's `.cmdline` as `host.*` words
//!   ([`HostBoot::from_cmdline`]) and turned into a device-mapper table
//!   ([`VerityParams::dm_table`]).
//! - [`UkiName`]: `EFI/Linux/host-SLOT-VERSION[+LEFT[-DONE]].efi`, the names
//!   systemd-boot's boot counting renames.
//! - [`HostManifest`]: `manifest.json` of a built image; the agent's upgrade
//!   reads it to check what it writes.
//! - [`HostStatus`]: what the agent says about the running host
//!   (`/run/host/status.json`; the deploy issue's provisioner records it).
//!
//! Invariants: one slot's root (`root.img`) and UKI do not name their slot, so
//! the same pair can be written to either slot; the agent finds the slot whose
//! hash tree matches the root hash ([`VerityParams::top_block_matches`]).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Bytes per sector of the GPT (the image is written for 512-byte sectors).
pub const SECTOR: u64 = 512;
/// dm-verity data and hash block size, and the alignment of `root.img`.
pub const VERITY_BLOCK: u64 = 4096;
/// Size of a SHA-256 digest (the only verity hash used).
pub const DIGEST: usize = 32;

/// Partition labels (GPT partition names), as in DESIGN section 7.
pub const ESP: &str = "esp";
pub const ROOT_A: &str = "root-a";
pub const ROOT_B: &str = "root-b";
pub const CONFIG: &str = "config";
pub const DATA: &str = "data";

/// EFI System Partition.
pub const TYPE_ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// Discoverable Partitions: root partition, x86-64.
pub const TYPE_ROOT_X86_64: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
/// Discoverable Partitions: variable data partition (`/var`).
pub const TYPE_VAR: &str = "4D21B016-B534-45C2-A9FB-5C16E091FD2D";
/// Our own: the signed per-node config written at deploy (no DPS type exists).
pub const TYPE_CONFIG: &str = "A070E3B3-1D80-405E-A484-A461A870346E";

/// One partition of the host disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionSpec {
    /// The GPT partition name (`PARTNAME` in the kernel's uevent).
    pub label: &'static str,
    pub type_guid: &'static str,
    /// Size in MiB as built; the last partition (data) grows to the disk's end
    /// on first boot.
    pub size_mib: u64,
}

/// The partitions in table order (partition number = index + 1). Every
/// partition starts on a 1 MiB boundary; the first at 1 MiB.
pub const LAYOUT: [PartitionSpec; 5] = [
    PartitionSpec {
        label: ESP,
        type_guid: TYPE_ESP,
        size_mib: 256,
    },
    PartitionSpec {
        label: ROOT_A,
        type_guid: TYPE_ROOT_X86_64,
        size_mib: 512,
    },
    PartitionSpec {
        label: ROOT_B,
        type_guid: TYPE_ROOT_X86_64,
        size_mib: 512,
    },
    PartitionSpec {
        label: CONFIG,
        type_guid: TYPE_CONFIG,
        size_mib: 16,
    },
    PartitionSpec {
        label: DATA,
        type_guid: TYPE_VAR,
        size_mib: 64,
    },
];

/// The size of the built disk: 1 MiB before the first partition, the
/// partitions, and 1 MiB after the last for the backup GPT.
pub fn disk_size_bytes() -> u64 {
    (1 + LAYOUT.iter().map(|p| p.size_mib).sum::<u64>() + 1) << 20
}

/// The capacity of one root slot in bytes: the largest `root.img`.
pub fn slot_size_bytes() -> u64 {
    LAYOUT[1].size_mib << 20
}

/// One of the two root slots.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn label(self) -> &'static str {
        match self {
            Slot::A => ROOT_A,
            Slot::B => ROOT_B,
        }
    }

    pub fn letter(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    pub fn from_label(label: &str) -> Option<Slot> {
        match label {
            ROOT_A => Some(Slot::A),
            ROOT_B => Some(Slot::B),
            _ => None,
        }
    }

    fn from_letter(letter: &str) -> Option<Slot> {
        match letter {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.letter())
    }
}

/// Why a version string is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "version {0:?}: use 1 to 64 characters of A-Z a-z 0-9 . _ ~ (no '-' or '+': they separate \
     the UKI file name's parts, e.g. host-a-1.2.0+3.efi)"
)]
pub struct BadVersion(pub String);

/// Checks a host image version (`--version`): it becomes part of UKI file
/// names and of os-release's `VERSION_ID`, which systemd-boot sorts by.
pub fn check_version(version: &str) -> Result<(), BadVersion> {
    let ok = !version.is_empty()
        && version.len() <= 64
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~'));
    if ok {
        Ok(())
    } else {
        Err(BadVersion(version.to_owned()))
    }
}

/// Where one slot's verity tree is and what it must hash to. The slot holds
/// the filesystem (`data_blocks` blocks of [`VERITY_BLOCK`] bytes) followed by
/// the hash tree starting at block `hash_start_block` (no verity superblock;
/// the top level first, as dm-verity lays it out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerityParams {
    pub data_blocks: u64,
    pub hash_start_block: u64,
    /// Lowercase hex of the root hash (SHA-256).
    pub root_hash: String,
    /// Lowercase hex of the salt (32 bytes).
    pub salt: String,
}

impl VerityParams {
    /// The `host.*` words of the UKI's `.cmdline`.
    pub fn cmdline_words(&self) -> String {
        format!(
            "host.roothash={} host.salt={} host.datablocks={} host.hashstart={}",
            self.root_hash, self.salt, self.data_blocks, self.hash_start_block
        )
    }

    /// The device-mapper table line for the slot device `dev` (a path such as
    /// `/dev/vda2`, or `MAJOR:MINOR`): `(sectors, "verity", params)`. With
    /// `restart_on_corruption` a bad block restarts the machine; without it a
    /// read of a bad block fails with EIO (used for the full check at boot).
    pub fn dm_table(&self, dev: &str, restart_on_corruption: bool) -> (u64, &'static str, String) {
        let sectors = self.data_blocks * (VERITY_BLOCK / SECTOR);
        let mut params = format!(
            "1 {dev} {dev} {b} {b} {} {} sha256 {} {}",
            self.data_blocks,
            self.hash_start_block,
            self.root_hash,
            self.salt,
            b = VERITY_BLOCK
        );
        if restart_on_corruption {
            params.push_str(" 1 restart_on_corruption");
        }
        (sectors, "verity", params)
    }

    /// The byte offset of the hash tree's top block in the slot.
    pub fn top_block_offset(&self) -> u64 {
        self.hash_start_block * VERITY_BLOCK
    }

    /// Whether `sha256(salt || top_block) == root_hash`: `top_block` is the
    /// [`VERITY_BLOCK`] bytes read at [`Self::top_block_offset`] of a slot.
    /// `sha256` is passed in so that this crate needs no hash implementation.
    pub fn top_block_matches(&self, top_block: &[u8], sha256: impl Fn(&[u8]) -> [u8; 32]) -> bool {
        let Some(salt) = hex_decode(&self.salt) else {
            return false;
        };
        let mut input = salt;
        input.extend_from_slice(top_block);
        hex_encode(&sha256(&input)) == self.root_hash
    }
}

/// What a UKI's command line says about the host boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBoot {
    /// `host.version=`.
    pub version: String,
    pub verity: VerityParams,
}

/// Why the `host.*` words of a command line are not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostCmdlineError {
    #[error(
        "kernel command line: {0} is missing; the UKI was not built by `provisioner image build host`"
    )]
    Missing(&'static str),
    #[error("kernel command line: {key}={value:?} is not valid ({what})")]
    Invalid {
        key: &'static str,
        value: String,
        what: &'static str,
    },
}

impl HostBoot {
    /// The whole `.cmdline` of a UKI: console and panic settings, then the
    /// `host.*` words.
    pub fn cmdline(&self) -> String {
        format!(
            "console=ttyS0,115200n8 panic=10 host.version={} {}",
            self.version,
            self.verity.cmdline_words()
        )
    }

    /// `Ok(None)` when the command line has no `host.roothash` (not a host
    /// boot: the inspection ramdisk); an error when it has some `host.*`
    /// words but not all, or bad ones.
    pub fn from_cmdline(cmdline: &str) -> Result<Option<HostBoot>, HostCmdlineError> {
        let mut words = std::collections::BTreeMap::new();
        for word in cmdline.split_ascii_whitespace() {
            if let Some((key, value)) = word.split_once('=')
                && key.starts_with("host.")
            {
                words.insert(key, value);
            }
        }
        if !words.contains_key("host.roothash") {
            return Ok(None);
        }
        let get = |key: &'static str| {
            words
                .get(key)
                .copied()
                .ok_or(HostCmdlineError::Missing(key))
        };
        let hex32 = |key: &'static str| -> Result<String, HostCmdlineError> {
            let value = get(key)?;
            if value.len() == 2 * DIGEST && value.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(value.to_ascii_lowercase())
            } else {
                Err(HostCmdlineError::Invalid {
                    key,
                    value: value.to_owned(),
                    what: "64 hex digits expected",
                })
            }
        };
        let number = |key: &'static str| -> Result<u64, HostCmdlineError> {
            let value = get(key)?;
            value.parse().map_err(|_| HostCmdlineError::Invalid {
                key,
                value: value.to_owned(),
                what: "a block count expected",
            })
        };
        let version = get("host.version")?;
        check_version(version).map_err(|_| HostCmdlineError::Invalid {
            key: "host.version",
            value: version.to_owned(),
            what: "letters, digits, '.', '_', '~'",
        })?;
        let verity = VerityParams {
            data_blocks: number("host.datablocks")?,
            hash_start_block: number("host.hashstart")?,
            root_hash: hex32("host.roothash")?,
            salt: hex32("host.salt")?,
        };
        if verity.data_blocks == 0 || verity.hash_start_block < verity.data_blocks {
            return Err(HostCmdlineError::Invalid {
                key: "host.hashstart",
                value: verity.hash_start_block.to_string(),
                what: "the hash tree must start after the data blocks",
            });
        }
        Ok(Some(HostBoot {
            version: version.to_owned(),
            verity,
        }))
    }
}

/// Directory of the UKIs on the ESP (Boot Loader Specification type #2).
pub const UKI_DIR: &str = "EFI/Linux";
/// File name prefix of our UKIs.
pub const UKI_PREFIX: &str = "host-";
/// Tries a freshly written UKI gets (`+3`).
pub const TRIES: u32 = 3;

/// A UKI file name: `host-SLOT-VERSION[+LEFT[-DONE]].efi`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UkiName {
    pub slot: Slot,
    pub version: String,
    /// `None`: blessed (no counting). `Some((left, done))`: boot counting on.
    pub counter: Option<(u32, u32)>,
}

impl UkiName {
    /// A new, unblessed entry with [`TRIES`] tries: `host-b-2+3.efi`.
    pub fn fresh(slot: Slot, version: &str) -> UkiName {
        UkiName {
            slot,
            version: version.to_owned(),
            counter: Some((TRIES, 0)),
        }
    }

    /// Parses a file name (not a path); `None` for any other file.
    pub fn parse(file_name: &str) -> Option<UkiName> {
        let stem = file_name.strip_suffix(".efi")?;
        let rest = stem.strip_prefix(UKI_PREFIX)?;
        let (slot, rest) = rest.split_once('-')?;
        let slot = Slot::from_letter(slot)?;
        let (version, counter) = match rest.split_once('+') {
            None => (rest, None),
            Some((version, counter)) => {
                let (left, done) = match counter.split_once('-') {
                    Some((left, done)) => (left, done),
                    None => (counter, "0"),
                };
                let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
                if !digits(left) || !digits(done) {
                    return None;
                }
                (version, Some((left.parse().ok()?, done.parse().ok()?)))
            }
        };
        check_version(version).ok()?;
        Some(UkiName {
            slot,
            version: version.to_owned(),
            counter,
        })
    }

    /// The file name. A counter with `done == 0` is written `+LEFT`, as
    /// systemd-boot and `systemd-bless-boot` do.
    pub fn file_name(&self) -> String {
        let base = format!("{UKI_PREFIX}{}-{}", self.slot, self.version);
        match self.counter {
            None => format!("{base}.efi"),
            Some((left, 0)) => format!("{base}+{left}.efi"),
            Some((left, done)) => format!("{base}+{left}-{done}.efi"),
        }
    }

    /// The name after a good boot: the counter dropped.
    pub fn blessed(&self) -> UkiName {
        UkiName {
            counter: None,
            ..self.clone()
        }
    }

    /// The name `systemd-bless-boot bad` gives: no tries left.
    pub fn bad(&self) -> UkiName {
        let done = self.counter.map_or(0, |(_, done)| done);
        UkiName {
            counter: Some((0, done)),
            ..self.clone()
        }
    }

    /// Whether its tries are spent (systemd-boot sorts it last).
    pub fn is_spent(&self) -> bool {
        matches!(self.counter, Some((0, _)))
    }

    /// Whether the entry is still on trial (counting, tries left).
    pub fn is_trial(&self) -> bool {
        matches!(self.counter, Some((left, _)) if left > 0)
    }
}

/// `manifest.json` of a built host image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostManifest {
    /// Manifest format; this is 1.
    pub format: u32,
    pub version: String,
    /// `uname -r` of the kernel inside.
    pub kernel_release: String,
    /// One slot's contents: the filesystem and its hash tree (`root.img`).
    pub root: RootInfo,
    /// The UKI that boots that root (`uki.efi`).
    pub uki: FileInfo,
    /// The whole disk (`host.raw.zst`).
    pub disk: DiskInfo,
}

/// A file next to the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// Its name in the output directory.
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootInfo {
    /// `root.img`, its size and SHA-256 (filesystem + hash tree).
    #[serde(flatten)]
    pub image: FileInfo,
    /// `erofs` (lz4hc).
    pub filesystem: String,
    pub verity: VerityParams,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskInfo {
    /// `host.raw.zst`: size and SHA-256 of the compressed file.
    #[serde(flatten)]
    pub compressed: FileInfo,
    /// Size and SHA-256 of the raw disk once decompressed.
    pub raw_size: u64,
    pub raw_sha256: String,
    pub partitions: Vec<PartitionInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    pub number: u32,
    pub label: String,
    pub type_guid: String,
    pub unique_guid: String,
    pub first_lba: u64,
    pub last_lba: u64,
}

/// What the agent says about the running host: printed on the console and
/// written to `/run/host/status.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    pub version: String,
    pub slot: Slot,
    pub root_hash: String,
    /// This boot is a trial of a new UKI (it had a counter when booted).
    pub trial: bool,
    /// The boot was marked good (after the health checks).
    pub blessed: bool,
    /// A newer entry of the other slot spent its tries: it was rolled back
    /// from.
    pub rolled_back_from: Option<RolledBack>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RolledBack {
    pub slot: Slot,
    pub version: String,
    /// Its UKI's file name (`host-a-3+0-3.efi`).
    pub entry: String,
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> VerityParams {
        VerityParams {
            data_blocks: 100,
            hash_start_block: 100,
            root_hash: "ab".repeat(32),
            salt: "01".repeat(32),
        }
    }

    #[test]
    fn cmdline_round_trips_and_other_cmdlines_are_not_host_boots() {
        let boot = HostBoot {
            version: "1.2.0".into(),
            verity: params(),
        };
        let line = boot.cmdline();
        assert!(line.contains("panic=10"));
        assert_eq!(HostBoot::from_cmdline(&line), Ok(Some(boot)));
        assert_eq!(
            HostBoot::from_cmdline("console=ttyS0 provisioner.url=http://x"),
            Ok(None)
        );
        assert_eq!(
            HostBoot::from_cmdline(&format!("host.roothash={}", "ab".repeat(32))),
            Err(HostCmdlineError::Missing("host.version"))
        );
        let short = line.replace(&"ab".repeat(32), "abcd");
        assert!(matches!(
            HostBoot::from_cmdline(&short),
            Err(HostCmdlineError::Invalid {
                key: "host.roothash",
                ..
            })
        ));
    }

    #[test]
    fn dm_table_has_the_verity_fields_in_order() {
        let (sectors, target, table) = params().dm_table("/dev/vda2", true);
        assert_eq!((sectors, target), (800, "verity"));
        assert_eq!(
            table,
            format!(
                "1 /dev/vda2 /dev/vda2 4096 4096 100 100 sha256 {} {} 1 restart_on_corruption",
                "ab".repeat(32),
                "01".repeat(32)
            )
        );
        assert!(!params().dm_table("8:2", false).2.contains("restart"));
    }

    #[test]
    fn uki_names_follow_boot_counting() {
        let fresh = UkiName::fresh(Slot::B, "2");
        assert_eq!(fresh.file_name(), "host-b-2+3.efi");
        let tried = UkiName::parse("host-b-2+1-2.efi").unwrap();
        assert_eq!(tried.counter, Some((1, 2)));
        assert!(tried.is_trial());
        assert_eq!(tried.blessed().file_name(), "host-b-2.efi");
        assert_eq!(tried.bad().file_name(), "host-b-2+0-2.efi");
        assert!(tried.bad().is_spent());
        for name in ["host-a-1.efi", "host-a-1.2_rc~1+3.efi", "host-b-9+0-3.efi"] {
            assert_eq!(UkiName::parse(name).unwrap().file_name(), name);
        }
        for other in [
            "host-c-1.efi",
            "host-a-.efi",
            "host-a-1+x.efi",
            "linux.efi",
            "host-a-1.conf",
        ] {
            assert_eq!(UkiName::parse(other), None, "{other}");
        }
    }

    #[test]
    fn versions_exclude_the_name_separators() {
        assert!(check_version("1.2.0").is_ok());
        assert!(check_version("1.2-rc1").is_err());
        assert!(check_version("1+2").is_err());
        assert!(check_version("").is_err());
    }

    #[test]
    fn layout_matches_the_slot_size() {
        assert_eq!(LAYOUT[1].label, ROOT_A);
        assert_eq!(LAYOUT[2].size_mib, LAYOUT[1].size_mib);
        assert_eq!(disk_size_bytes(), (1 + 256 + 512 + 512 + 16 + 64 + 1) << 20);
        assert_eq!(Slot::A.other(), Slot::B);
    }

    #[test]
    fn top_block_check_uses_the_salt() {
        // A fake hash: the salt's first byte and the block's first byte.
        let fake = |input: &[u8]| {
            let mut out = [0u8; 32];
            out[0] = input[0];
            out[1] = input[32];
            out
        };
        let mut p = params();
        p.root_hash = format!("0107{}", "00".repeat(30));
        assert!(p.top_block_matches(&[7u8; 4096], fake));
        assert!(!p.top_block_matches(&[8u8; 4096], fake));
    }
}
