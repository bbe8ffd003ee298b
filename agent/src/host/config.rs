//! The node config sealed onto the host disk's `config` partition at deploy
//! (format in [`model::deploy`]): read at every boot, by the host boot (for
//! the plan's kernel arguments, [`super::kexec`]) and by host mode (network,
//! plan, report: [`super::report`]). Both slots are read; the newest one whose
//! Ed25519 signature verifies with the key in the verified root
//! (`/etc/provisioner/trust.pub`) is used.
//!
//! Invariants:
//! - An unverified config is never used: a slot that does not verify is
//!   refused and said loudly; with no slot verifying, the host contacts no
//!   one (it runs unconfigured).
//! - No trust key in the image, no `config` partition or an empty one is
//!   not an error: the host was not deployed by a provisioner.
//! - The decision ([`open`]) is pure; [`read`] only reads two files.

use std::io::Read as _;
use std::path::Path;

use model::deploy::{self, ConfigError, NodeConfig, SLOT_BYTES};

/// The trust key's path inside a root (`/etc/provisioner/trust.pub`).
pub const TRUST_KEY: &str = "etc/provisioner/trust.pub";
/// The node config format this agent reads.
pub const FORMAT: u32 = 1;

/// What the `config` partition gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Not deployed by a provisioner (why, for the console): run as before.
    Unconfigured(String),
    /// Nothing usable verifies: never used, no one contacted.
    Refused(String),
    /// A verified config.
    Opened {
        /// Its slot (0 or 1) and generation.
        slot: usize,
        generation: u64,
        config: Box<NodeConfig>,
        /// Why the other slot was refused, when it holds something that
        /// does not verify (a torn write, or tampering).
        other_refused: Option<String>,
    },
}

/// Opens the config: `key_text` is the trust key file's text (`None`: the
/// image carries none), `slots` the partition's two slots (`None`: the disk
/// has no `config` partition, with why).
pub fn open(key_text: Option<&str>, slots: Result<[&[u8]; 2], String>) -> Found {
    let slots = match slots {
        Ok(slots) => slots,
        Err(why) => return Found::Unconfigured(why),
    };
    let written = |s: &[u8]| s.iter().take(8).any(|&b| b != 0);
    let Some(key_text) = key_text else {
        return Found::Unconfigured(if slots.iter().any(|s| written(s)) {
            format!(
                "the config partition holds data but this image carries no trust key \
                 (/{TRUST_KEY}) to verify it, so it is ignored; build the image with \
                 `--trust-key` (the provisioner's config-signing.pub)"
            )
        } else {
            format!("no trust key (/{TRUST_KEY}) in this image and an empty config partition")
        });
    };
    let key = match deploy::parse_public_key(key_text) {
        Ok(key) => key,
        Err(e) => {
            return Found::Refused(format!(
                "the image's trust key /{TRUST_KEY} is unusable ({e}); rebuild the image with \
                 `--trust-key` naming the provisioner's config-signing.pub"
            ));
        }
    };
    let results = slots.map(|s| deploy::open(s, &key));
    let best = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().ok().map(|(g, c)| (i, *g, c)))
        .max_by_key(|(i, g, _)| (*g, std::cmp::Reverse(*i)));
    let refusal = |i: usize| match &results[i] {
        Err(ConfigError::Empty) | Ok(_) => None,
        Err(e) => Some(format!("slot {i}: {e}")),
    };
    match best {
        Some((slot, generation, config)) if config.format != FORMAT => Found::Refused(format!(
            "slot {slot} (generation {generation}) has config format {}, this agent reads format \
             {FORMAT}: upgrade the host image to one that matches the provisioner",
            config.format
        )),
        Some((slot, generation, config)) => Found::Opened {
            slot,
            generation,
            config: Box::new(config.clone()),
            other_refused: refusal(1 - slot),
        },
        None => {
            let refused: Vec<String> = (0..2).filter_map(refusal).collect();
            if refused.is_empty() {
                Found::Unconfigured("the config partition is empty".to_owned())
            } else {
                Found::Refused(refused.join("; "))
            }
        }
    }
}

/// Reads the trust key at `trust_key` and both slots of `config_dev` (a
/// partition, or a file in tests; `Err`: there is none, with why), and
/// [`open`]s them.
pub fn read(trust_key: &Path, config_dev: Result<&Path, String>) -> Found {
    let key_text = match std::fs::read_to_string(trust_key) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Found::Refused(format!(
                "cannot read the trust key {}: {e}",
                trust_key.display()
            ));
        }
    };
    let dev = match config_dev {
        Ok(dev) => dev,
        Err(why) => return open(key_text.as_deref(), Err(why)),
    };
    let mut bytes = Vec::with_capacity(2 * SLOT_BYTES);
    if let Err(e) =
        std::fs::File::open(dev).and_then(|f| f.take(2 * SLOT_BYTES as u64).read_to_end(&mut bytes))
    {
        return Found::Refused(format!(
            "cannot read the config partition {}: {e}; check the disk",
            dev.display()
        ));
    }
    bytes.resize(2 * SLOT_BYTES, 0);
    open(
        key_text.as_deref(),
        Ok([&bytes[..SLOT_BYTES], &bytes[SLOT_BYTES..]]),
    )
}

/// The console lines (without `node-agent: `) of what was found; `who` is
/// `host` or `host boot`.
pub fn console_lines(found: &Found, who: &str) -> Vec<String> {
    match found {
        Found::Unconfigured(why) => vec![format!(
            "{who}: no node config: this host is not deployed by a provisioner ({why}); running \
             unconfigured"
        )],
        Found::Refused(why) => vec![format!(
            "{who}: config REFUSED: {why}; this config is NOT used and no one is contacted (if \
             the provisioner's signing key changed, rebuild the image with its --trust-key)"
        )],
        Found::Opened {
            generation,
            config,
            other_refused,
            ..
        } => {
            let mut lines = vec![format!(
                "{who}: config of node {} (generation {generation}) from {}",
                config.node, config.provisioner_url
            )];
            if let Some(why) = other_refused {
                lines.push(format!(
                    "{who}: config REFUSED: {why}; that slot is not used (a write cut short, or \
                     tampering: redeploy if this stays)"
                ));
            }
            lines
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use model::deploy::{parse_signing_key, public_key_text, seal};

    pub(crate) fn key_text(seed: u8) -> String {
        format!("{}\n", format!("{seed:02x}").repeat(32))
    }

    pub(crate) fn config() -> NodeConfig {
        serde_json::from_value(serde_json::json!({
            "format": 1, "node": "lab-host-0", "boot_mac": "52:54:00:0c:00:01",
            "provisioner_url": "http://10.0.2.2:9", "credential": "c".repeat(64),
            "image": "host", "version": "1", "root_hash": "ab".repeat(32),
            "plan": {
                "profile": "p", "roles": [], "kernel_args": ["hugepagesz=2M", "hugepages=8"],
                "hugepages": [], "reserved_cpus": [0], "isolated_cpus": [], "sriov": [],
                "root_disk": {"name": "vda", "by_path": null, "serial": null, "size_bytes": 1},
                "data_disks": [], "warnings": []
            }
        }))
        .unwrap()
    }

    /// A slot sealed with the key of `seed`, padded to a whole slot.
    pub(crate) fn slot(config: &NodeConfig, generation: u64, seed: u8) -> Vec<u8> {
        let key = parse_signing_key(&key_text(seed)).unwrap();
        let mut bytes = seal(config, generation, &key);
        bytes.resize(SLOT_BYTES, 0);
        bytes
    }

    pub(crate) fn public(seed: u8) -> String {
        public_key_text(&parse_signing_key(&key_text(seed)).unwrap().verifying_key())
    }

    #[test]
    fn the_newest_verified_slot_is_used_and_a_bad_one_is_said() {
        let empty = vec![0u8; SLOT_BYTES];
        let old = slot(&config(), 1, 1);
        let mut newer = config();
        newer.node = "renamed".into();
        let new = slot(&newer, 2, 1);
        let key = public(1);
        match open(Some(&key), Ok([&old, &new])) {
            Found::Opened {
                slot,
                generation,
                config,
                other_refused,
            } => {
                assert_eq!((slot, generation, config.node.as_str()), (1, 2, "renamed"));
                assert_eq!(other_refused, None);
            }
            other => panic!("{other:?}"),
        }
        // A foreign newer slot next to a good one: the good one, and the other is said.
        let foreign = slot(&newer, 3, 2);
        let found = open(Some(&key), Ok([&old, &foreign]));
        let lines = console_lines(&found, "host");
        assert_eq!(
            lines[0],
            "host: config of node lab-host-0 (generation 1) from http://10.0.2.2:9"
        );
        assert!(
            lines[1].starts_with("host: config REFUSED: slot 1: config signature does not verify"),
            "{lines:?}"
        );
        // Only foreign: refused, loudly, and nothing opened.
        let found = open(Some(&key), Ok([&foreign, &empty]));
        assert!(
            matches!(&found, Found::Refused(why) if why.starts_with("slot 0: config signature"))
        );
        let line = &console_lines(&found, "host")[0];
        assert!(
            line.starts_with("host: config REFUSED: ") && line.contains("no one is contacted"),
            "{line}"
        );
    }

    #[test]
    fn no_key_no_partition_or_empty_slots_run_unconfigured() {
        let empty = vec![0u8; SLOT_BYTES];
        let sealed = slot(&config(), 1, 1);
        for found in [
            open(None, Ok([&empty, &empty])),
            open(None, Ok([&sealed, &empty])),
            open(Some(&public(1)), Ok([&empty, &empty])),
            open(
                Some(&public(1)),
                Err("no partition named \"config\"".into()),
            ),
        ] {
            let line = &console_lines(&found, "host")[0];
            assert!(
                line.starts_with(
                    "host: no node config: this host is not deployed by a provisioner ("
                ),
                "{line}"
            );
        }
        assert!(
            matches!(open(None, Ok([&sealed, &empty])), Found::Unconfigured(why) if why.contains("--trust-key"))
        );
        assert!(matches!(
            open(Some("not a key"), Ok([&sealed, &empty])),
            Found::Refused(why) if why.contains("unusable")
        ));
        let mut future = config();
        future.format = 2;
        assert!(matches!(
            open(Some(&public(1)), Ok([&slot(&future, 1, 1), &empty])),
            Found::Refused(why) if why.contains("format 2")
        ));
    }

    #[test]
    fn read_takes_the_key_file_and_the_partition() {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("trust.pub");
        let dev = tmp.path().join("config");
        // A partition shorter than two slots reads as zeros past its end.
        std::fs::write(&dev, slot(&config(), 4, 1)).unwrap();
        assert_eq!(
            read(&key, Ok(&dev)),
            Found::Unconfigured(
                "the config partition holds data but this image carries no trust key \
                 (/etc/provisioner/trust.pub) to verify it, so it is ignored; build the image \
                 with `--trust-key` (the provisioner's config-signing.pub)"
                    .into()
            )
        );
        std::fs::write(&key, public(1)).unwrap();
        assert!(matches!(
            read(&key, Ok(&dev)),
            Found::Opened {
                slot: 0,
                generation: 4,
                ..
            }
        ));
        let missing = tmp.path().join("nothing");
        assert!(matches!(
            read(&key, Ok(&missing)),
            Found::Refused(why) if why.contains("cannot read the config partition")
        ));
    }
}
