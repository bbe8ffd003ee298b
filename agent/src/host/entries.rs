//! The boot entries on the ESP (`EFI/Linux/host-*.efi`) and what the loader
//! says about them (EFI variables): which entry was booted, whether this
//! boot is a trial, the rename that blesses it, the rollback report and
//! duplicate names. Pure: file names and variable bytes in, decisions out;
//! [`super::esp`] reads the directory and renames.
//!
//! Invariants:
//! - Nothing here ever proposes unlinking an entry: a power cut during a FAT
//!   rename can leave one UKI under two names sharing one cluster chain, and
//!   deleting either name through the VFS frees clusters the other still
//!   uses (FAT has no link count).
//! - Such twins are repaired on the raw, unmounted ESP by [`super::fat`]
//!   (the host boot does it before mounting): the older name's directory
//!   entries are marked deleted, the FAT is left alone, so the chain stays
//!   with the newer name. [`twin_names`] decides which name is older, from
//!   the rename sequence. Host mode still reports any group of names of one
//!   slot and version ([`duplicates`]) that is left.
//! - A bless never overwrites: its target name must not exist.

use model::host::{RolledBack, Slot, UKI_PREFIX, UkiName};

/// systemd-boot's vendor GUID for its `Loader*` variables.
pub const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
/// The path of the entry being tried, after the loader's counter bump
/// (`\EFI\Linux\host-b-2+2-1.efi`); set only for counting entries.
pub const BOOT_COUNT_PATH: &str = "LoaderBootCountPath";
/// The id of the entry the loader chose: in v252, the file name as it was
/// before the bump, counter included.
pub const ENTRY_SELECTED: &str = "LoaderEntrySelected";

/// Decodes an efivarfs file: 4 attribute bytes, then a UTF-16LE string
/// (NUL-terminated or not); `\` becomes `/`. `None` for anything else.
pub fn decode_efivar_string(bytes: &[u8]) -> Option<String> {
    let payload = bytes.get(4..)?;
    if !payload.len().is_multiple_of(2) {
        return None;
    }
    let units: Vec<u16> = payload
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    let text = String::from_utf16(&units).ok()?;
    Some(text.replace('\\', "/"))
}

/// The last component of a path as the loader writes it
/// (`/EFI/Linux/host-a-1+2-1.efi` -> `host-a-1+2-1.efi`).
pub fn file_name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The booted entry, as found on the ESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booted {
    /// Its current name (a file in `EFI/Linux`).
    pub name: UkiName,
    /// How it was found, for the console.
    pub how: &'static str,
}

/// Why the booted entry could not be named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootedError {
    #[error(
        "no UKI of slot {slot} version {version} in EFI/Linux (entries: {entries}); was the disk \
         written by `provisioner image build host`?"
    )]
    Missing {
        slot: Slot,
        version: String,
        entries: String,
    },
    #[error(
        "the loader booted {file} but this root is slot {slot} version {version}: the UKI name \
         does not match its contents (rewrite the ESP)"
    )]
    Mismatch {
        file: String,
        slot: Slot,
        version: String,
    },
}

/// Which entry is running: the file named by `LoaderBootCountPath` (the name
/// after the loader's bump), else by `LoaderEntrySelected` when that file
/// exists, else the one entry of the running slot and version. The slot
/// and version (from the verity root and the command line) must agree with
/// the name. `entries` are the file names in `EFI/Linux`.
pub fn booted_entry(
    boot_count_path: Option<&str>,
    entry_selected: Option<&str>,
    entries: &[String],
    slot: Slot,
    version: &str,
) -> Result<Booted, BootedError> {
    let present = |file: &str| entries.iter().any(|e| e == file);
    let candidates = [
        (boot_count_path.map(file_name_of), BOOT_COUNT_PATH),
        (entry_selected.map(file_name_of), ENTRY_SELECTED),
    ];
    for (file, how) in candidates {
        let Some(file) = file else { continue };
        if !present(file) {
            continue;
        }
        let Some(name) = UkiName::parse(file) else {
            continue;
        };
        if name.slot != slot || name.version != version {
            return Err(BootedError::Mismatch {
                file: file.to_owned(),
                slot,
                version: version.to_owned(),
            });
        }
        return Ok(Booted { name, how });
    }
    // No variable (another loader, or the ESP rewritten meanwhile): the
    // entry of this slot and version, the most tried first if duplicated.
    let mut ours: Vec<UkiName> = entries
        .iter()
        .filter_map(|e| UkiName::parse(e))
        .filter(|n| n.slot == slot && n.version == version)
        .collect();
    ours.sort_by_key(|n| n.counter.map_or(0, |(_, done)| u64::from(done) + 1));
    match ours.pop() {
        Some(name) => Ok(Booted {
            name,
            how: "the entry of the running slot and version",
        }),
        None => Err(BootedError::Missing {
            slot,
            version: version.to_owned(),
            entries: if entries.is_empty() {
                "none".to_owned()
            } else {
                entries.join(", ")
            },
        }),
    }
}

/// Whether this boot is a trial: the booted entry counts (tries left), or
/// the loader set `LoaderBootCountPath`.
pub fn is_trial(booted: &UkiName, boot_count_path_set: bool) -> bool {
    booted.is_trial() || (boot_count_path_set && booted.counter.is_some())
}

/// What to do about blessing a trial boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bless {
    /// Not a trial: nothing to do.
    NotTrial,
    /// Rename `from` to `to` (no replace).
    Rename { from: String, to: String },
    /// The blessed name exists already (a power cut between the two halves
    /// of an earlier FAT rename): both names stay, the warning names them.
    AlreadyThere { from: String, to: String },
}

/// The bless decision for the booted entry.
pub fn bless(booted: &UkiName, trial: bool, entries: &[String]) -> Bless {
    if !trial {
        return Bless::NotTrial;
    }
    let from = booted.file_name();
    let to = booted.blessed().file_name();
    if entries.contains(&to) {
        Bless::AlreadyThere { from, to }
    } else {
        Bless::Rename { from, to }
    }
}

/// The rollback report: a spent entry of the OTHER slot that is not the
/// running version (the newest such if several).
pub fn rollback(entries: &[String], running: Slot, version: &str) -> Option<RolledBack> {
    entries
        .iter()
        .filter_map(|e| UkiName::parse(e).map(|n| (n, e)))
        .filter(|(n, _)| n.slot == running.other() && n.is_spent() && n.version != version)
        .max_by(|(a, _), (b, _)| a.version.cmp(&b.version))
        .map(|(n, e)| RolledBack {
            slot: n.slot,
            version: n.version,
            entry: e.clone(),
        })
}

/// Groups of names for one slot and version (the same UKI under two names,
/// or a stale copy): each group has two names or more, sorted.
pub fn duplicates(entries: &[String]) -> Vec<Vec<String>> {
    let mut groups: std::collections::BTreeMap<(Slot, String), Vec<String>> =
        std::collections::BTreeMap::new();
    for e in entries {
        if let Some(n) = UkiName::parse(e) {
            groups
                .entry((n.slot, n.version))
                .or_default()
                .push(e.clone());
        }
    }
    groups
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect()
}

/// The name a UKI is written under before its rename to `host-SLOT-VERSION+3.efi`
/// (systemd-boot ignores it): `host-SLOT-VERSION.tmp`.
pub fn temp_name(slot: Slot, version: &str) -> String {
    format!("{UKI_PREFIX}{slot}-{version}.tmp")
}

/// The slot and version of a [`temp_name`].
pub fn parse_temp(name: &str) -> Option<(Slot, String)> {
    let stem = name.strip_suffix(".tmp")?;
    // Same shape as a blessed UKI name.
    let uki = UkiName::parse(&format!("{stem}.efi"))?;
    (uki.counter.is_none()).then_some((uki.slot, uki.version))
}

/// The slot and version a name belongs to.
type Owner = (Slot, String);
/// Temp 0, counted 1, blessed 2; then fewer tries left; then more done.
type Age = (u8, std::cmp::Reverse<u32>, u32);

/// How far along the rename sequence a name is; a greater age is newer.
/// Renames only go forward: `.tmp` -> `+3` (upgrade), `+L-D` -> `+(L-1)-(D+1)`
/// (the loader's bump), counted -> blessed (the agent's bless), `+L-D` ->
/// `+0-D` (marked bad after a failed check).
fn age(name: &str) -> Option<(Owner, Age)> {
    if let Some(owner) = parse_temp(name) {
        return Some((owner, (0, std::cmp::Reverse(0), 0)));
    }
    let uki = UkiName::parse(name)?;
    let rank = match uki.counter {
        Some((left, done)) => (1, std::cmp::Reverse(left), done),
        None => (2, std::cmp::Reverse(0), 0),
    };
    Some(((uki.slot, uki.version), rank))
}

/// One UKI's names after a FAT rename cut by a power loss: the name to keep
/// and the older names to forget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Twins {
    pub kept: String,
    pub stale: Vec<String>,
}

/// Which of `names` (known to share one cluster chain) is the newest, by
/// the rename sequence: a blessed name (no counter) is newer than a counted
/// one; among counted names the one with fewer tries left is newer (then
/// the one with more tries done); a `.tmp` is older than any `.efi`. `None`
/// unless all are `host-*` names (UKI or temp) of one slot and version.
///
/// One sequence goes against this order: a blessed entry whose full check
/// fails is marked bad (`host-b-2.efi` -> `host-b-2+0-0.efi`); cut there,
/// the blessed name is kept. The next boot checks the root again, fails
/// again and marks it bad again, so nothing is lost but one boot.
pub fn twin_names(names: &[String]) -> Option<Twins> {
    let mut aged = names
        .iter()
        .map(|n| age(n).map(|(owner, rank)| (owner, rank, n.clone())))
        .collect::<Option<Vec<_>>>()?;
    if aged.len() < 2 || aged.iter().any(|(owner, _, _)| *owner != aged[0].0) {
        return None;
    }
    aged.sort_by_key(|a| a.1);
    let (_, _, kept) = aged.pop()?;
    Some(Twins {
        kept,
        stale: aged.into_iter().map(|(_, _, n)| n).collect(),
    })
}

/// What host mode does after its health checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterHealth {
    /// Healthy: bless if on trial.
    Bless,
    /// A trial that failed its checks: reboot so the loader counts down and
    /// falls back when the tries are spent.
    Reboot,
    /// A blessed (or uncounted) boot that failed its checks: rebooting would
    /// loop on the same entry, so stay up and say so.
    StayUnhealthy,
}

/// The decision after the health checks.
pub fn after_health(trial: bool, healthy: bool) -> AfterHealth {
    match (healthy, trial) {
        (true, _) => AfterHealth::Bless,
        (false, true) => AfterHealth::Reboot,
        (false, false) => AfterHealth::StayUnhealthy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn efivar(text: &str, nul: bool) -> Vec<u8> {
        let mut bytes = vec![6, 0, 0, 0];
        for u in text.encode_utf16().chain(nul.then_some(0)) {
            bytes.extend_from_slice(&u.to_le_bytes());
        }
        bytes
    }

    #[test]
    fn efivars_decode_with_or_without_nul() {
        let path = r"\EFI\Linux\host-b-2+1-2.efi";
        for nul in [true, false] {
            let text = decode_efivar_string(&efivar(path, nul)).unwrap();
            assert_eq!(text, "/EFI/Linux/host-b-2+1-2.efi");
            assert_eq!(file_name_of(&text), "host-b-2+1-2.efi");
        }
        assert_eq!(decode_efivar_string(&[6, 0, 0]), None);
        assert_eq!(decode_efivar_string(&[6, 0, 0, 0, 0x41]), None);
        // An unpaired surrogate is not text.
        assert_eq!(decode_efivar_string(&[6, 0, 0, 0, 0x00, 0xd8]), None);
    }

    #[test]
    fn booted_entry_prefers_the_bumped_path_then_the_selection_then_the_slot() {
        let entries = names(&["host-a-1.efi", "host-b-2+1-2.efi"]);
        let by_path = booted_entry(
            Some("/EFI/Linux/host-b-2+1-2.efi"),
            Some("host-b-2+2-1.efi"),
            &entries,
            Slot::B,
            "2",
        )
        .unwrap();
        assert_eq!(by_path.name.file_name(), "host-b-2+1-2.efi");
        assert_eq!(by_path.how, BOOT_COUNT_PATH);
        let by_selection =
            booted_entry(None, Some("host-a-1.efi"), &entries, Slot::A, "1").unwrap();
        assert_eq!(by_selection.how, ENTRY_SELECTED);
        // The selection names the pre-bump file, gone now: fall back to the slot.
        let by_slot = booted_entry(None, Some("host-b-2+2-1.efi"), &entries, Slot::B, "2").unwrap();
        assert_eq!(by_slot.name.file_name(), "host-b-2+1-2.efi");
        assert!(matches!(
            booted_entry(None, Some("host-a-1.efi"), &entries, Slot::B, "2"),
            Err(BootedError::Mismatch { .. })
        ));
        let missing = booted_entry(None, None, &entries, Slot::A, "7").unwrap_err();
        assert!(
            missing.to_string().contains("host-b-2+1-2.efi"),
            "{missing}"
        );
    }

    #[test]
    fn trials_and_blessing() {
        let tried = UkiName::parse("host-b-2+1-2.efi").unwrap();
        let blessed = UkiName::parse("host-b-2.efi").unwrap();
        assert!(is_trial(&tried, false));
        assert!(!is_trial(&blessed, true), "no counter: nothing to bless");
        // Counting with no tries left but booted anyway (all entries spent).
        let spent = UkiName::parse("host-b-2+0-3.efi").unwrap();
        assert!(is_trial(&spent, true));
        assert!(!is_trial(&spent, false));
        assert_eq!(
            bless(&tried, true, &names(&["host-b-2+1-2.efi", "host-a-1.efi"])),
            Bless::Rename {
                from: "host-b-2+1-2.efi".into(),
                to: "host-b-2.efi".into()
            }
        );
        assert_eq!(
            bless(&tried, true, &names(&["host-b-2+1-2.efi", "host-b-2.efi"])),
            Bless::AlreadyThere {
                from: "host-b-2+1-2.efi".into(),
                to: "host-b-2.efi".into()
            }
        );
        assert_eq!(bless(&blessed, false, &[]), Bless::NotTrial);
    }

    #[test]
    fn rollback_names_a_spent_entry_of_the_other_slot() {
        let entries = names(&["host-a-1.efi", "host-b-2+0-3.efi"]);
        assert_eq!(
            rollback(&entries, Slot::A, "1"),
            Some(RolledBack {
                slot: Slot::B,
                version: "2".into(),
                entry: "host-b-2+0-3.efi".into()
            })
        );
        // Running B: a spent B entry is not a rollback from the other slot.
        assert_eq!(rollback(&entries, Slot::B, "2"), None);
        // The same version in the other slot (a re-written copy) is not one either.
        assert_eq!(
            rollback(&names(&["host-a-1.efi", "host-b-1+0-3.efi"]), Slot::A, "1"),
            None
        );
        assert_eq!(
            rollback(&names(&["host-a-1.efi", "host-b-2+1-2.efi"]), Slot::A, "1"),
            None,
            "tries left: not spent yet"
        );
    }

    #[test]
    fn duplicates_group_one_slot_and_version() {
        let entries = names(&[
            "host-b-2+2-1.efi",
            "host-a-1.efi",
            "host-b-2+1-2.efi",
            "loader.efi",
            "host-a-3+3.efi",
        ]);
        assert_eq!(
            duplicates(&entries),
            vec![names(&["host-b-2+1-2.efi", "host-b-2+2-1.efi"])]
        );
        assert!(duplicates(&names(&["host-a-1.efi", "host-b-1.efi"])).is_empty());
    }

    #[test]
    fn the_newer_name_of_twins_is_kept() {
        let twins = |list: &[&str]| twin_names(&names(list)).map(|t| (t.kept, t.stale));
        let kept = |k: &str, s: &[&str]| Some((k.to_owned(), names(s)));
        // The loader's counter bump, the agent's bless, an upgrade's rename.
        assert_eq!(
            twins(&["host-b-2+2-1.efi", "host-b-2+1-2.efi"]),
            kept("host-b-2+1-2.efi", &["host-b-2+2-1.efi"])
        );
        assert_eq!(
            twins(&["host-b-2.efi", "host-b-2+1-2.efi"]),
            kept("host-b-2.efi", &["host-b-2+1-2.efi"])
        );
        assert_eq!(
            twins(&["host-b-2+3.efi", "host-b-2.tmp"]),
            kept("host-b-2+3.efi", &["host-b-2.tmp"])
        );
        // Marked bad after a trial: fewer tries left is newer.
        assert_eq!(
            twins(&["host-a-7+0-2.efi", "host-a-7+1-2.efi"]),
            kept("host-a-7+0-2.efi", &["host-a-7+1-2.efi"])
        );
        // A counter without "done" (`+3`) is older than one bump later.
        assert_eq!(
            twins(&["host-a-7+2-1.efi", "host-a-7+3.efi", "host-a-7.tmp"]),
            kept("host-a-7+2-1.efi", &["host-a-7.tmp", "host-a-7+3.efi"])
        );
        // Not names of one UKI: nothing to decide.
        assert_eq!(twins(&["host-a-7.efi", "host-b-7+1-2.efi"]), None);
        assert_eq!(twins(&["host-a-7.efi", "host-a-8.efi"]), None);
        assert_eq!(twins(&["host-a-7.efi", "loader.efi"]), None);
        assert_eq!(twins(&["host-a-7.efi"]), None);
        assert_eq!(twins(&["host-a-7+1.tmp", "host-a-7.efi"]), None);
    }

    #[test]
    fn temp_names_round_trip() {
        assert_eq!(temp_name(Slot::B, "2.1"), "host-b-2.1.tmp");
        assert_eq!(parse_temp("host-b-2.1.tmp"), Some((Slot::B, "2.1".into())));
        assert_eq!(parse_temp("host-b-2+3.tmp"), None);
        assert_eq!(parse_temp("host-b-2.efi"), None);
    }

    #[test]
    fn health_decides_bless_reboot_or_stay() {
        assert_eq!(after_health(true, true), AfterHealth::Bless);
        assert_eq!(after_health(false, true), AfterHealth::Bless);
        assert_eq!(after_health(true, false), AfterHealth::Reboot);
        assert_eq!(after_health(false, false), AfterHealth::StayUnhealthy);
    }
}
