//! Deploy: what the provisioner tells the ramdisk agent to write, what the
//! agent reports back, the per-node configuration sealed onto the host
//! disk's `config` partition, and what the installed host reports.
//!
//! The flow (routes in [`crate::agent`]'s module doc):
//! 1. The operator deploys an `available` node; it network-boots the
//!    ramdisk, whose agent is answered [`crate::agent::Command::Deploy`]
//!    with a [`DeployOrder`].
//! 2. The agent picks the root disk from the order's hints
//!    ([`select_root_disk`]), streams `host.raw.zst` onto it (progress in
//!    heartbeats, [`DeployProgress`]), verifies it, writes
//!    [`DeployOrder::config`] ([`seal`]ed by the provisioner) to the
//!    `config` partition, and posts a [`DeployedReport`].
//! 3. The provisioner sets the boot device to disk through the BMC and
//!    resets the node. The host image boots; its agent [`open`]s the config
//!    with the public key the image carries (`/etc/provisioner/trust.pub`,
//!    [`parse_public_key`]), applies the plan and posts a [`HostReport`]
//!    with the node credential; the provisioner marks the node `active` when
//!    the report matches what it deployed.
//!
//! The `config` partition (16 MiB, no filesystem) holds two slots of
//! [`SLOT_BYTES`] at offsets 0 and [`SLOT_BYTES`]: a writer replaces the
//! slot with the lower generation (or an invalid one), a reader takes the
//! valid slot with the highest generation. A slot is:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `PROVCFG1` |
//! | 8 | 8 | generation, u64 little-endian |
//! | 16 | 4 | payload length, u32 little-endian (at most [`MAX_PAYLOAD`]) |
//! | 20 | 64 | Ed25519 signature over bytes 0..20 followed by the payload |
//! | 4096 | length | payload: the JSON of [`NodeConfig`] |
//!
//! Signed, not only hashed: whoever can write the disk could rewrite a hash.
//!
//! This module does no I/O.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::apply::ApplyReport;
use crate::host::{RolledBack, Slot};
use crate::inventory::Disk;
use crate::plan::{HostPlan, PlannedDisk};

/// [`crate::agent::Command::Deploy`]: write this host image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployOrder {
    /// The catalog image's name (site.yaml `images`).
    pub image: String,
    /// The host image version (`manifest.json` `version`).
    pub version: String,
    /// Where to GET `host.raw.zst` (plain `http://` on the provisioner;
    /// `Range` supported).
    pub url: String,
    /// Size and lowercase hex SHA-256 of the compressed bytes.
    pub compressed_size: u64,
    pub compressed_sha256: String,
    /// Size and SHA-256 of the raw disk image once decompressed.
    pub raw_size: u64,
    pub raw_sha256: String,
    /// The verity root hash of slot A (what the host must report).
    pub root_hash: String,
    /// Where to write: the plan's root disk (hints, see [`select_root_disk`]).
    pub root_disk: PlannedDisk,
    /// The sealed config slot ([`seal`]), base64 (standard alphabet, padded).
    pub config: String,
}

/// What the agent is doing in a deploy, sent in heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeployPhase {
    /// Downloading, decompressing and writing the image.
    Writing,
    /// Reading the written disk back and checking it.
    Verifying,
    /// Writing the partition table, the config partition; syncing.
    Finishing,
    /// Erasing disks (undeploy, clean).
    Erasing,
}

/// Progress of a deploy or clean, in heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployProgress {
    pub phase: DeployPhase,
    /// Bytes done in this phase (raw bytes written, verified or erased).
    pub done_bytes: u64,
    /// Bytes this phase will do in all.
    pub total_bytes: u64,
}

/// `POST /api/agent/v1/deployed`: the deploy finished, well or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Agent deploy report")]
pub struct DeployedReport {
    /// The MAC the machine booted from, lowercase colon form.
    pub mac: String,
    /// The disk written (`/dev/vda`), once chosen.
    #[serde(default)]
    pub disk: Option<String>,
    /// Raw bytes written.
    pub written_bytes: u64,
    /// Milliseconds from the order to the report.
    pub elapsed_ms: u64,
    /// Absent on success; else what failed, in words with the device error.
    #[serde(default)]
    pub error: Option<String>,
    /// The step that failed (`select disk`, `download`, `write`, `verify`,
    /// `partition table`, `config`), with `error`.
    #[serde(default)]
    pub step: Option<String>,
}

/// How much `clean` erases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EraseMode {
    /// Partition tables (both GPT copies, the MBR) and filesystem
    /// signatures of every partition: fast, the data is unreachable.
    Metadata,
    /// Every byte of every disk (discard or zero-out, else writes of zeros).
    Full,
}

/// `POST /api/agent/v1/cleaned`: the clean finished, well or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Agent clean report")]
pub struct CleanedReport {
    pub mac: String,
    /// Disks erased (`/dev/vda`, ...).
    pub disks: Vec<String>,
    pub mode: EraseMode,
    /// Absent on success; else what failed.
    #[serde(default)]
    pub error: Option<String>,
}

/// The per-node configuration sealed onto the `config` partition at deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Node config (config partition)")]
pub struct NodeConfig {
    /// Format of this payload; this is 1.
    pub format: u32,
    /// The node's name at the provisioner.
    pub node: String,
    /// The NIC the host reaches the provisioner through (its boot MAC),
    /// lowercase colon form.
    pub boot_mac: String,
    /// The provisioner's base URL (`http://10.213.0.1:8080`).
    pub provisioner_url: String,
    /// The node credential: `Authorization: Bearer` of the host API.
    pub credential: String,
    /// What was deployed.
    pub image: String,
    pub version: String,
    pub root_hash: String,
    /// The host plan, applied at every boot.
    pub plan: HostPlan,
}

/// `POST /api/host/v1/report` (with the node credential): what the
/// installed host booted and what applying its plan did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Host report")]
pub struct HostReport {
    /// The node's name from its config.
    pub node: String,
    pub version: String,
    pub slot: Slot,
    pub root_hash: String,
    /// `/proc/cmdline`.
    pub cmdline: String,
    /// This boot is a trial of a new UKI.
    pub trial: bool,
    /// The boot was marked good.
    pub blessed: bool,
    #[serde(default)]
    pub rolled_back_from: Option<RolledBack>,
    /// What applying the plan did; absent with `apply_error`.
    #[serde(default)]
    pub apply: Option<ApplyReport>,
    #[serde(default)]
    pub apply_error: Option<String>,
    /// Seconds since the host booted.
    pub uptime_s: u64,
}

/// The answer to a [`HostReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
#[schemars(title = "Host command")]
pub enum HostCommand {
    /// Report again after `interval_s` seconds.
    Wait { interval_s: u32 },
}

/// Bytes of one config slot; the partition holds two.
pub const SLOT_BYTES: usize = 8 << 20;
/// Where the payload starts in a slot.
pub const PAYLOAD_OFFSET: usize = 4096;
/// The largest payload.
pub const MAX_PAYLOAD: usize = SLOT_BYTES - PAYLOAD_OFFSET;
const MAGIC: &[u8; 8] = b"PROVCFG1";
const SIGNED_HEADER: usize = 20;

/// Why a config slot does not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("no config: the slot does not start with PROVCFG1 (never written, or erased)")]
    Empty,
    #[error("config slot is truncated or its payload length {0} is out of range")]
    Length(usize),
    #[error(
        "config signature does not verify with the image's trust key: the config was not sealed by this provisioner's key (or was altered); redeploy the node"
    )]
    BadSignature,
    #[error("config payload is not a valid node config: {0}")]
    Payload(String),
    #[error("trust key: {0}")]
    Key(String),
}

/// Seals `config` into one slot's bytes (header, signature, payload; no
/// padding: the slot's rest is the writer's to zero).
pub fn seal(config: &NodeConfig, generation: u64, key: &SigningKey) -> Vec<u8> {
    let payload = serde_json::to_vec(config).expect("a NodeConfig always serializes");
    assert!(
        payload.len() <= MAX_PAYLOAD,
        "node config larger than a slot"
    );
    let mut header = Vec::with_capacity(SIGNED_HEADER);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&generation.to_le_bytes());
    header.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let mut signed = header.clone();
    signed.extend_from_slice(&payload);
    let signature = key.sign(&signed);
    let mut slot = header;
    slot.extend_from_slice(&signature.to_bytes());
    slot.resize(PAYLOAD_OFFSET, 0);
    slot.extend_from_slice(&payload);
    slot
}

/// Opens one slot's bytes: its generation and config, if the magic, length
/// and signature (by `key`) hold.
pub fn open(slot: &[u8], key: &VerifyingKey) -> Result<(u64, NodeConfig), ConfigError> {
    if slot.len() < PAYLOAD_OFFSET || &slot[..8] != MAGIC {
        return Err(ConfigError::Empty);
    }
    let generation = u64::from_le_bytes(slot[8..16].try_into().expect("8 bytes"));
    let len = u32::from_le_bytes(slot[16..20].try_into().expect("4 bytes")) as usize;
    if len > MAX_PAYLOAD || slot.len() < PAYLOAD_OFFSET + len {
        return Err(ConfigError::Length(len));
    }
    let signature = Signature::from_bytes(slot[20..84].try_into().expect("64 bytes"));
    let payload = &slot[PAYLOAD_OFFSET..PAYLOAD_OFFSET + len];
    let mut signed = slot[..SIGNED_HEADER].to_vec();
    signed.extend_from_slice(payload);
    key.verify(&signed, &signature)
        .map_err(|_| ConfigError::BadSignature)?;
    let config: NodeConfig =
        serde_json::from_slice(payload).map_err(|e| ConfigError::Payload(e.to_string()))?;
    Ok((generation, config))
}

/// The newest valid config of the two slots, or why none opens (the
/// error of the slot that came closest: a bad signature before an empty one).
pub fn open_newest(
    slots: [&[u8]; 2],
    key: &VerifyingKey,
) -> Result<(usize, u64, NodeConfig), ConfigError> {
    let results = slots.map(|s| open(s, key));
    let mut best: Option<(usize, u64, NodeConfig)> = None;
    let mut worst_error = ConfigError::Empty;
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok((g, c)) if best.as_ref().is_none_or(|(_, bg, _)| g > *bg) => best = Some((i, g, c)),
            Ok(_) => {}
            Err(e) if e != ConfigError::Empty => worst_error = e,
            Err(_) => {}
        }
    }
    best.ok_or(worst_error)
}

/// The slot index a writer replaces: an invalid one, else the older.
/// `current`: [`open_newest`]'s result on the partition now, if any.
pub fn slot_to_write(current: Option<(usize, u64)>) -> (usize, u64) {
    match current {
        Some((i, g)) => (1 - i, g + 1),
        None => (0, 1),
    }
}

/// The public key file's text (`/etc/provisioner/trust.pub`,
/// `STATE/config-signing.pub`): 64 lowercase hex digits and a newline.
pub fn public_key_text(key: &VerifyingKey) -> String {
    format!("{}\n", hex(key.as_bytes()))
}

/// Parses a public key file ([`public_key_text`]).
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, ConfigError> {
    let bytes = unhex(text.trim())
        .ok_or_else(|| ConfigError::Key("expected 64 hex digits (an Ed25519 public key)".into()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| ConfigError::Key(e.to_string()))
}

/// The private key file's text (`STATE/config-signing.key`, mode 0600):
/// the 32-byte seed as 64 hex digits and a newline.
pub fn signing_key_text(key: &SigningKey) -> String {
    format!("{}\n", hex(key.as_bytes()))
}

/// Parses a private key file ([`signing_key_text`]).
pub fn parse_signing_key(text: &str) -> Result<SigningKey, ConfigError> {
    let bytes = unhex(text.trim()).ok_or_else(|| {
        ConfigError::Key("expected 64 hex digits (an Ed25519 private key seed)".into())
    })?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// Why no disk, or more than one, matches the root-disk hints.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiskSelectError {
    #[error("no disk matches the root-disk hints {hints}; disks here: {candidates}")]
    None { hints: String, candidates: String },
    #[error(
        "{count} disks match the root-disk hints {hints}: {candidates}; make the profile's root-device hints specific (serial or by-path)"
    )]
    Several {
        count: usize,
        hints: String,
        candidates: String,
    },
}

/// The disk of `disks` the planned root disk is, by the most stable hint
/// the plan has: `serial` when set, else `by_path`, else kernel name and
/// size. None or several matching is an error listing the candidates.
pub fn select_root_disk<'a>(
    planned: &PlannedDisk,
    disks: &'a [Disk],
) -> Result<&'a Disk, DiskSelectError> {
    let matches: Vec<&Disk> = disks
        .iter()
        .filter(|d| match (&planned.serial, &planned.by_path) {
            (Some(serial), _) => d.serial.as_deref() == Some(serial.as_str()),
            (None, Some(path)) => d.by_path.as_deref() == Some(path.as_str()),
            (None, None) => d.name == planned.name && d.size_bytes == planned.size_bytes,
        })
        .collect();
    let hints = match (&planned.serial, &planned.by_path) {
        (Some(s), _) => format!("serial {s:?}"),
        (None, Some(p)) => format!("by-path {p:?}"),
        (None, None) => format!("name {:?} size {}", planned.name, planned.size_bytes),
    };
    let describe = |list: &[&Disk]| -> String {
        if list.is_empty() {
            return "none".into();
        }
        list.iter()
            .map(|d| {
                format!(
                    "{} (serial {}, by-path {}, {} bytes)",
                    d.name,
                    d.serial.as_deref().unwrap_or("-"),
                    d.by_path.as_deref().unwrap_or("-"),
                    d.size_bytes
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(DiskSelectError::None {
            hints,
            candidates: describe(&disks.iter().collect::<Vec<_>>()),
        }),
        several => Err(DiskSelectError::Several {
            count: several.len(),
            hints,
            candidates: describe(several),
        }),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NodeConfig {
        NodeConfig {
            format: 1,
            node: "lab-compute-0".into(),
            boot_mac: "52:54:00:0d:00:01".into(),
            provisioner_url: "http://10.213.0.1:8080".into(),
            credential: "c".repeat(64),
            image: "host".into(),
            version: "1".into(),
            root_hash: "ab".repeat(32),
            plan: serde_json::from_value(serde_json::json!({
                "profile": "p", "roles": [], "kernel_args": ["iommu=pt"], "hugepages": [],
                "reserved_cpus": [0], "isolated_cpus": [], "sriov": [],
                "root_disk": {"name": "vda", "by_path": null, "serial": "S1", "size_bytes": 1},
                "data_disks": [], "warnings": []
            }))
            .unwrap(),
        }
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn a_sealed_slot_opens_with_its_key_and_only_with_it() {
        let slot = seal(&config(), 7, &key(1));
        assert_eq!(open(&slot, &key(1).verifying_key()), Ok((7, config())));
        assert_eq!(
            open(&slot, &key(2).verifying_key()),
            Err(ConfigError::BadSignature)
        );
        for i in [9, 17, 30, PAYLOAD_OFFSET + 3] {
            let mut bad = slot.clone();
            bad[i] ^= 1;
            assert!(open(&bad, &key(1).verifying_key()).is_err(), "byte {i}");
        }
        assert_eq!(
            open(&vec![0; SLOT_BYTES], &key(1).verifying_key()),
            Err(ConfigError::Empty)
        );
    }

    #[test]
    fn the_newest_valid_slot_wins_and_writers_take_the_other() {
        let k = key(3);
        let old = seal(&config(), 1, &k);
        let mut newer_config = config();
        newer_config.version = "2".into();
        let new = seal(&newer_config, 2, &k);
        let (i, g, c) = open_newest([&old, &new], &k.verifying_key()).unwrap();
        assert_eq!((i, g, c.version.as_str()), (1, 2, "2"));
        let mut torn = new.clone();
        torn[PAYLOAD_OFFSET] ^= 0xff;
        let (i, g, _) = open_newest([&old, &torn], &k.verifying_key()).unwrap();
        assert_eq!((i, g), (0, 1));
        assert_eq!(slot_to_write(Some((0, 1))), (1, 2));
        assert_eq!(slot_to_write(None), (0, 1));
        assert_eq!(
            open_newest([&torn, &vec![0; 4096]], &k.verifying_key()).unwrap_err(),
            ConfigError::BadSignature
        );
    }

    #[test]
    fn key_files_round_trip() {
        let k = key(5);
        assert_eq!(
            parse_public_key(&public_key_text(&k.verifying_key())).unwrap(),
            k.verifying_key()
        );
        assert_eq!(
            parse_signing_key(&signing_key_text(&k)).unwrap().as_bytes(),
            k.as_bytes()
        );
        assert!(parse_public_key("zz").is_err());
    }

    fn disk(name: &str, serial: Option<&str>, size: u64) -> Disk {
        serde_json::from_value(serde_json::json!({
            "name": name, "path": format!("/dev/{name}"), "size_bytes": size,
            "rotational": false, "model": null, "serial": serial, "wwn": null,
            "by_path": null, "kind": "virtio"
        }))
        .unwrap()
    }

    #[test]
    fn the_root_disk_is_chosen_by_serial_and_ambiguity_lists_candidates() {
        let planned: PlannedDisk = serde_json::from_value(serde_json::json!(
            {"name": "vdb", "by_path": null, "serial": "S1", "size_bytes": 1}
        ))
        .unwrap();
        let disks = [disk("vda", Some("S1"), 5), disk("nvme0n1", Some("S2"), 5)];
        assert_eq!(select_root_disk(&planned, &disks).unwrap().name, "vda");
        let err = select_root_disk(&planned, &disks[1..]).unwrap_err();
        assert!(err.to_string().contains("nvme0n1 (serial S2"), "{err}");
        let twins = [disk("vda", Some("S1"), 5), disk("vdb", Some("S1"), 5)];
        let err = select_root_disk(&planned, &twins).unwrap_err();
        assert!(
            matches!(err, DiskSelectError::Several { count: 2, .. }),
            "{err}"
        );
    }
}
