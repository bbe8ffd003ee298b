//! The initramfs stage of a host boot: `node-agent` as PID 1 of the UKI's
//! small initramfs, sent here by [`crate::init`] when the kernel command line
//! has `host.*` words. It loads the modules, arms the watchdog, finds the
//! disk's partitions, repairs a UKI left under two names on the still
//! unmounted ESP ([`super::fat`]), mounts the ESP, finds the booted slot
//! (the one whose verity top block hashes to `host.roothash`), reads the
//! whole root once through dm-verity in EIO mode (the full check), then
//! creates the real root device with `restart_on_corruption`, mounts it
//! read-only on `/newroot`, opens the node config with the root's trust key
//! ([`super::config`]) and, when the plan's kernel arguments are missing,
//! boots the same UKI's kernel again with them ([`super::kexec`]), grows
//! and mounts the data partition on `/newroot/var`, moves
//! `/proc /sys /dev /run /efi` across and switches root to
//! `/usr/bin/node-agent host`, which stays PID 1 ([`super::mode`]).
//!
//! Invariants:
//! - The root is never mounted unless the full check read every data block
//!   without a verification error; a failed check marks the booted UKI bad
//!   (its `+0` name, so the loader falls back to the other slot) and reboots.
//! - Every failure returns a message saying what to check; the caller
//!   ([`crate::init::run`]) prints it and reboots. Nothing waits forever.
//! - The decisions ([`choose_slot`], [`missing_labels`]) are pure.

use std::convert::Infallible;
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use model::host::{CONFIG, DATA, ESP, HostBoot, ROOT_A, ROOT_B, Slot, VERITY_BLOCK, VerityParams};
use nix::mount::{MsFlags, mount};
use sha2::Digest as _;

use super::config::Found;
use super::disk::{self, Partition};
use super::dm::{Control, Target};
use super::entries::{self, Booted};
use super::esp::{self, EFIVARS, ESP_MOUNT};
use super::kexec::{self, Decision};
use super::watchdog::Watchdog;
use crate::pid1::say;

/// How long to wait for the disk's partitions after the modules loaded.
const PARTITION_WAIT: Duration = Duration::from_secs(30);
/// How long to wait for `/dev/watchdog` after the modules loaded.
const WATCHDOG_WAIT: Duration = Duration::from_secs(3);
/// Read size of the full check.
const CHECK_CHUNK: usize = 1 << 20;
/// Device-mapper name of the root.
pub const ROOT_DM_NAME: &str = "host-root";
/// Where the root is mounted before the switch.
const NEWROOT: &str = "/newroot";
/// Where the kernel and initramfs to kexec are written (a tmpfs).
const KEXEC_SCRATCH: &str = "/run/kexec";

/// The labels the host boot needs.
const NEEDED: [&str; 4] = [ESP, ROOT_A, ROOT_B, DATA];

/// The needed labels not (uniquely) present among `partitions`.
pub fn missing_labels(partitions: &[Partition]) -> Vec<&'static str> {
    NEEDED
        .into_iter()
        .filter(|label| disk::by_label(partitions, label).is_err())
        .collect()
}

/// The slot to boot, from whether each slot's top block matches the root
/// hash, and the slot the loader's entry name says (`named`) to break a tie
/// (the same image in both slots).
pub fn choose_slot(a_matches: bool, b_matches: bool, named: Option<Slot>) -> Option<Slot> {
    match (a_matches, b_matches) {
        (true, false) => Some(Slot::A),
        (false, true) => Some(Slot::B),
        (true, true) => Some(named.unwrap_or(Slot::A)),
        (false, false) => None,
    }
}

/// Runs the host boot; returns only with the reason it cannot go on.
pub fn run(boot: &HostBoot) -> Result<Infallible, String> {
    say(&format!("host boot: version {}", boot.version));
    crate::pid1::load_modules();
    let watchdog = Watchdog::open(WATCHDOG_WAIT);
    match &watchdog {
        Some(_) => say("host boot: watchdog armed (/dev/watchdog)"),
        None => say(&format!(
            "host boot: no /dev/watchdog after {} s; a hang will not reset this machine (load \
             i6300esb, iTCO_wdt or ipmi_watchdog)",
            WATCHDOG_WAIT.as_secs()
        )),
    }
    let partitions = wait_for_partitions()?;
    let part = |label| disk::by_label(&partitions, label);

    repair_esp(part(ESP)?);
    mount_efi()?;
    let uki_dir = esp::uki_dir(Path::new(ESP_MOUNT));
    let efivars = Path::new(EFIVARS);
    let count_path = esp::loader_var(efivars, entries::BOOT_COUNT_PATH);
    let selected = esp::loader_var(efivars, entries::ENTRY_SELECTED);
    let named_slot = count_path
        .as_deref()
        .or(selected.as_deref())
        .and_then(|p| model::host::UkiName::parse(entries::file_name_of(p)))
        .map(|n| n.slot);

    let a = top_block_matches(part(ROOT_A)?, &boot.verity)?;
    let b = top_block_matches(part(ROOT_B)?, &boot.verity)?;
    let slot = choose_slot(a, b, named_slot).ok_or_else(|| {
        format!(
            "neither root-a ({}) nor root-b ({}) holds the root of version {} (root hash {}): \
             the UKI and the slots do not match; rewrite the disk or boot the other entry",
            part(ROOT_A).map(|p| p.name.clone()).unwrap_or_default(),
            part(ROOT_B).map(|p| p.name.clone()).unwrap_or_default(),
            boot.version,
            boot.verity.root_hash
        )
    })?;
    let root = part(slot.label())?;
    say(&format!(
        "host boot: slot {slot} ({}) holds root {}",
        root.dev.display(),
        boot.verity.root_hash
    ));
    let names = esp::list(&uki_dir).unwrap_or_default();
    let booted = entries::booted_entry(
        count_path.as_deref(),
        selected.as_deref(),
        &names,
        slot,
        &boot.version,
    );
    match &booted {
        Ok(b) => say(&format!(
            "host boot: booted entry {} (from {})",
            b.name.file_name(),
            b.how
        )),
        Err(e) => say(&format!("host boot: warning: {e}")),
    }

    let control = Control::open().map_err(|e| e.to_string())?;
    let [major, minor, patch] = control.version().map_err(|e| e.to_string())?;
    say(&format!(
        "host boot: device-mapper interface {major}.{minor}.{patch}"
    ));
    full_check(
        &control,
        slot,
        root,
        &boot.verity,
        booted.as_ref().ok(),
        &uki_dir,
    )?;

    let (sectors, kind, params) = boot.verity.dm_table(&root.dev_t, true);
    let root_dev = control
        .create_readonly(
            ROOT_DM_NAME,
            &Target {
                sectors,
                kind,
                params: &params,
            },
        )
        .map_err(|e| format!("slot {slot}: {e}"))?;
    mkdir(NEWROOT);
    mount(
        Some(root_dev.as_path()),
        NEWROOT,
        Some("erofs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|e| {
        format!(
            "cannot mount {} (slot {slot}, verified) as erofs on {NEWROOT}: {e}; is erofs in \
             /lib/modules/load-order?",
            root_dev.display()
        )
    })?;
    let found = super::config::read(
        &Path::new(NEWROOT).join(super::config::TRUST_KEY),
        part(CONFIG).map(|p| p.dev.as_path()),
    );
    plan_kernel_args(&found, booted.as_ref().ok(), &uki_dir, boot);
    let var = mount_data(part(DATA)?);
    move_mounts()?;
    let mut args = vec![
        "host".to_owned(),
        "--slot".to_owned(),
        slot.letter().to_owned(),
        "--root".to_owned(),
        root_dev.display().to_string(),
        "--var".to_owned(),
        var,
    ];
    if let Some(w) = &watchdog {
        args.push("--watchdog-fd".to_owned());
        args.push(w.hand_on()?.to_string());
    }
    switch_root(&args)
}

/// With a verified node config whose plan's kernel arguments are not all on
/// the command line: boots the booted UKI's kernel again with them
/// ([`super::kexec`]; does not return when that works). Says what it does
/// and why not; never fails the boot.
fn plan_kernel_args(found: &Found, booted: Option<&Booted>, uki_dir: &Path, boot: &HostBoot) {
    let Found::Opened { config, .. } = found else {
        if let Found::Refused(_) = found {
            for line in super::config::console_lines(found, "host boot") {
                say(&line);
            }
        }
        return;
    };
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let refused_lines = |refused: &[(String, &str)]| {
        for (arg, why) in refused {
            say(&format!(
                "host boot: kernel argument {arg:?} of the plan REFUSED: {why}; fix the profile"
            ));
        }
    };
    match kexec::decide(&cmdline, &config.plan.kernel_args) {
        Decision::Present => {
            if !config.plan.kernel_args.is_empty() {
                say(&format!(
                    "host boot: the plan's kernel arguments are on the command line: {}",
                    config.plan.kernel_args.join(" ")
                ));
            }
        }
        Decision::GiveUp {
            missing,
            refused,
            after_kexec,
        } => {
            refused_lines(&refused);
            if after_kexec {
                say(&format!(
                    "host boot: WARNING: kernel arguments {} are still missing after booting \
                     again with them (the kernel dropped them?); going on without them",
                    missing.join(" ")
                ));
            }
        }
        Decision::Kexec {
            cmdline,
            add,
            refused,
        } => {
            refused_lines(&refused);
            let Some(booted) = booted else {
                say(&format!(
                    "host boot: kernel arguments {} of the plan are missing, but the booted UKI \
                     is unknown (see above), so it cannot be booted again with them; going on \
                     without them",
                    add.join(" ")
                ));
                return;
            };
            let uki = uki_dir.join(booted.name.file_name());
            say(&format!(
                "host boot: kernel arguments {} of the plan are missing: booting {} again with \
                 them (kexec)",
                add.join(" "),
                uki.display()
            ));
            let Err(e) = kexec::boot_again(&uki, boot, &cmdline, Path::new(KEXEC_SCRATCH));
            say(&format!(
                "host boot: WARNING: cannot boot again with the plan's kernel arguments: {e}; \
                 going on without them (the host report shows them pending)"
            ));
        }
    }
}

/// Waits for the host disk's partitions, saying what is missing every 5 s.
fn wait_for_partitions() -> Result<Vec<Partition>, String> {
    let started = Instant::now();
    let mut said = Instant::now();
    loop {
        let found = disk::scan(Path::new("/sys"));
        let missing = missing_labels(&found);
        if missing.is_empty() {
            return Ok(found);
        }
        if started.elapsed() > PARTITION_WAIT {
            return Err(partitions_missing(&found, &missing));
        }
        if said.elapsed() > Duration::from_secs(5) {
            say(&format!(
                "host boot: waiting for partitions {} (is the disk driver in /lib/modules/load-order?)",
                missing.join(", ")
            ));
            said = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The message when the partitions did not all appear in time.
fn partitions_missing(found: &[Partition], missing: &[&str]) -> String {
    let waited = PARTITION_WAIT.as_secs();
    if found.is_empty() {
        return format!(
            "no disk partition at all after {waited} s: is the disk's driver (virtio_blk, nvme, \
             ahci, ...) in /lib/modules/load-order?"
        );
    }
    let why: Vec<String> = missing
        .iter()
        .filter_map(|l| disk::by_label(found, l).err())
        .collect();
    format!(
        "the host disk's partitions did not all appear in {waited} s: {}",
        why.join("; ")
    )
}

fn mkdir(path: &str) {
    let _ = std::fs::create_dir_all(path);
}

/// Before the ESP is mounted: forgets the older name of each UKI left
/// under two names by a power cut ([`esp::repair_twins`]). A failure is a
/// warning (host mode reports the names that are left).
fn repair_esp(esp: &Partition) {
    match esp::repair_twins(&esp.dev) {
        Ok(report) => {
            for r in &report.repaired {
                say(&repaired_line(&r.removed, &r.kept));
            }
            for group in &report.not_ours {
                say(&format!(
                    "host boot: ESP: warning: {} share one cluster chain but are not names of \
                     one UKI: left alone; check the ESP with `fsck.fat -n {}`",
                    group.join(" and "),
                    esp.dev.display()
                ));
            }
        }
        Err(e) => say(&format!(
            "host boot: ESP: warning: cannot check for a UKI under two names: {e}"
        )),
    }
}

/// The console line of one repaired UKI.
fn repaired_line(removed: &str, kept: &str) -> String {
    format!(
        "host boot: ESP: one UKI under two names ({removed}, {kept}) after a power cut: kept \
         {kept}, removed the name {removed} (the file's clusters stay with {kept})"
    )
}

/// Mounts efivarfs (when booted by UEFI) and the ESP on /efi (read-write:
/// the bless rename and upgrades write there).
fn mount_efi() -> Result<(), String> {
    if Path::new("/sys/firmware/efi").exists() {
        match mount(
            Some("efivarfs"),
            EFIVARS,
            Some("efivarfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        ) {
            Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
            Err(e) => say(&format!(
                "host boot: warning: cannot mount efivarfs on {EFIVARS}: {e}; boot counting \
                 variables unreadable (is efivarfs in /lib/modules/load-order?)"
            )),
        }
    } else {
        say("host boot: warning: not booted by UEFI (no /sys/firmware/efi): no boot counting");
    }
    let partitions = disk::scan(Path::new("/sys"));
    let esp = disk::by_label(&partitions, ESP)?;
    mkdir(ESP_MOUNT);
    mount(
        Some(esp.dev.as_path()),
        ESP_MOUNT,
        Some("vfat"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| {
        format!(
            "cannot mount the ESP {} (vfat) on {ESP_MOUNT}: {e}; are vfat, fat, nls_cp437 and \
             nls_ascii in /lib/modules/load-order?",
            esp.dev.display()
        )
    })
}

/// Whether the slot's verity top block hashes (with the salt) to the root hash.
fn top_block_matches(slot: &Partition, verity: &VerityParams) -> Result<bool, String> {
    use std::io::{Seek as _, SeekFrom};
    let mut file = std::fs::File::open(&slot.dev)
        .map_err(|e| format!("cannot open {} ({}): {e}", slot.dev.display(), slot.label))?;
    let mut block = vec![0u8; VERITY_BLOCK as usize];
    let read = file
        .seek(SeekFrom::Start(verity.top_block_offset()))
        .and_then(|_| file.read_exact(&mut block));
    if read.is_err() {
        // A slot smaller than this root (or empty): not this slot.
        return Ok(false);
    }
    Ok(verity.top_block_matches(&block, |input| sha2::Sha256::digest(input).into()))
}

/// Reads the slot's whole filesystem through a dm-verity device in EIO mode.
/// On a verification error: names the block, marks the booted entry bad
/// and reboots (never returns). The check device is removed afterwards.
fn full_check(
    control: &Control,
    slot: Slot,
    root: &Partition,
    verity: &VerityParams,
    booted: Option<&Booted>,
    uki_dir: &Path,
) -> Result<(), String> {
    let name = format!("host-check-{slot}");
    let (sectors, kind, params) = verity.dm_table(&root.dev_t, false);
    let dev = control
        .create_readonly(
            &name,
            &Target {
                sectors,
                kind,
                params: &params,
            },
        )
        .map_err(|e| format!("slot {slot}: {e}"))?;
    let started = Instant::now();
    let bytes = verity.data_blocks * VERITY_BLOCK;
    let result = read_all(&dev, bytes);
    if let Err(e) = control.remove(&name) {
        say(&format!("host boot: warning: {e}"));
    }
    match result {
        Ok(()) => {
            let secs = started.elapsed().as_secs_f64();
            say(&format!(
                "host boot: slot {slot} verified: {} MiB read in {secs:.1} s",
                bytes >> 20
            ));
            Ok(())
        }
        Err(failure) => {
            say(&format!(
                "host boot: slot {slot} ({}) FAILED verification: {failure}",
                root.dev.display()
            ));
            match booted {
                Some(b) => {
                    let bad = b.name.bad().file_name();
                    match esp::rename_durably(uki_dir, &b.name.file_name(), &bad) {
                        Ok(()) => say(&format!(
                            "host boot: entry {} marked bad ({bad}); rebooting into the other slot",
                            b.name.file_name()
                        )),
                        Err(e) => say(&format!("host boot: cannot mark the entry bad: {e}")),
                    }
                }
                None => say(
                    "host boot: the booted entry is unknown, so it cannot be marked bad; \
                     rebooting (the loader's counting must fall back)",
                ),
            }
            crate::pid1::reboot()
        }
    }
}

/// Reads `bytes` bytes of `dev` in 1 MiB chunks; on a read error, finds the
/// first failing 4 KiB block of that chunk and names it.
fn read_all(dev: &Path, bytes: u64) -> Result<(), String> {
    use std::os::unix::fs::FileExt as _;
    let file =
        std::fs::File::open(dev).map_err(|e| format!("cannot open {}: {e}", dev.display()))?;
    let mut buf = vec![0u8; CHECK_CHUNK];
    let mut offset = 0u64;
    while offset < bytes {
        let len = (bytes - offset).min(CHECK_CHUNK as u64) as usize;
        if file.read_exact_at(&mut buf[..len], offset).is_ok() {
            offset += len as u64;
            continue;
        }
        let block_len = VERITY_BLOCK as usize;
        for block_start in (offset..offset + len as u64).step_by(block_len) {
            if let Err(e) = file.read_exact_at(&mut buf[..block_len], block_start) {
                return Err(format!(
                    "data block {} (byte {block_start}) of {}: {e}",
                    block_start / VERITY_BLOCK,
                    dev.display()
                ));
            }
        }
        return Err(format!(
            "a read of {len} bytes at byte {offset} of {} failed, each block alone did not",
            dev.display()
        ));
    }
    Ok(())
}

/// Grows the data partition if needed and mounts it (ext4) on
/// `/newroot/var`; on failure mounts a tmpfs there and says so loudly.
/// Returns what `/var` is: the device path, or `tmpfs`.
fn mount_data(data: &Partition) -> String {
    let target = format!("{NEWROOT}/var");
    match super::data::grow_partition(&PathBuf::from("/dev").join(&data.disk), data.number) {
        Ok(super::data::Grown::Already) => {}
        Ok(super::data::Grown::To {
            old_bytes,
            new_bytes,
        }) => say(&format!(
            "host boot: data partition {} grown from {} MiB to {} MiB",
            data.name,
            old_bytes >> 20,
            new_bytes >> 20
        )),
        Err(e) => say(&format!(
            "host boot: warning: data partition not grown: {e}"
        )),
    }
    let mounted = mount(
        Some(data.dev.as_path()),
        target.as_str(),
        Some("ext4"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    );
    match mounted {
        Ok(()) => {
            let bytes = std::fs::read_to_string(format!("/sys/class/block/{}/size", data.name))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(|sectors| sectors * 512);
            match bytes.map(|bytes| super::data::grow_ext4(Path::new(&target), bytes)) {
                Some(Ok(Some((before, after)))) => say(&format!(
                    "host boot: /var (ext4 on {}) grown from {} MiB to {} MiB",
                    data.name,
                    before >> 20,
                    after >> 20
                )),
                Some(Err(e)) => say(&format!("host boot: warning: {e}")),
                Some(Ok(None)) | None => {}
            }
            data.dev.display().to_string()
        }
        Err(e) => {
            for _ in 0..3 {
                say(&format!(
                    "host boot: WARNING: cannot mount the data partition {} (ext4) on /var: {e}; \
                     /var is a TMPFS, nothing written there survives a reboot (check the \
                     partition with e2fsck, and that ext4 is in /lib/modules/load-order)",
                    data.dev.display()
                ));
            }
            if let Err(e) = mount(
                Some("tmpfs"),
                target.as_str(),
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some("mode=0755"),
            ) {
                say(&format!(
                    "host boot: cannot even mount a tmpfs on /var: {e}"
                ));
            }
            "tmpfs".to_owned()
        }
    }
}

/// Moves the kernel file systems, /run and the ESP under the new root
/// (efivarfs moves with /sys).
fn move_mounts() -> Result<(), String> {
    for dir in ["/proc", "/sys", "/dev", "/run", ESP_MOUNT] {
        let target = format!("{NEWROOT}{dir}");
        mount(
            Some(dir),
            target.as_str(),
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .map_err(|e| {
            format!("cannot move {dir} to {target}: {e}; does the root image have an empty {dir}?")
        })?;
    }
    Ok(())
}

/// `switch_root`: the new root becomes `/` (chdir, mount --move . /,
/// chroot .), then this process (PID 1) becomes `/usr/bin/node-agent` with
/// `args`. The initramfs's files stay in memory (a few MiB).
fn switch_root(args: &[String]) -> Result<Infallible, String> {
    std::env::set_current_dir(NEWROOT).map_err(|e| format!("cannot chdir {NEWROOT}: {e}"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| format!("cannot move {NEWROOT} to /: {e}"))?;
    nix::unistd::chroot(".").map_err(|e| format!("cannot chroot into {NEWROOT}: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("cannot chdir / in the new root: {e}"))?;
    say("host boot: switching to the root file system");
    let err = std::process::Command::new("/usr/bin/node-agent")
        .args(args)
        .exec();
    Err(format!(
        "cannot run /usr/bin/node-agent in the new root: {err}; is the root image complete?"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(label: &str, disk: &str, number: u32) -> Partition {
        Partition {
            label: label.to_owned(),
            name: format!("{disk}{number}"),
            dev: PathBuf::from(format!("/dev/{disk}{number}")),
            dev_t: format!("254:{number}"),
            number,
            disk: disk.to_owned(),
        }
    }

    #[test]
    fn the_repair_line_names_both_names() {
        assert_eq!(
            repaired_line("host-b-2+2-1.efi", "host-b-2+1-2.efi"),
            "host boot: ESP: one UKI under two names (host-b-2+2-1.efi, host-b-2+1-2.efi) after \
             a power cut: kept host-b-2+1-2.efi, removed the name host-b-2+2-1.efi (the file's \
             clusters stay with host-b-2+1-2.efi)"
        );
    }

    #[test]
    fn slot_choice_follows_the_top_blocks() {
        assert_eq!(choose_slot(true, false, Some(Slot::B)), Some(Slot::A));
        assert_eq!(choose_slot(false, true, None), Some(Slot::B));
        assert_eq!(choose_slot(true, true, Some(Slot::B)), Some(Slot::B));
        assert_eq!(choose_slot(true, true, None), Some(Slot::A));
        assert_eq!(choose_slot(false, false, Some(Slot::A)), None);
    }

    #[test]
    fn missing_labels_lists_what_the_boot_waits_for() {
        let all = vec![
            p("esp", "vda", 1),
            p("root-a", "vda", 2),
            p("root-b", "vda", 3),
            p("config", "vda", 4),
            p("data", "vda", 5),
        ];
        assert!(missing_labels(&all).is_empty());
        assert_eq!(missing_labels(&all[..3]), ["data"]);
        let mut two_disks = all.clone();
        two_disks.push(p("esp", "vdb", 1));
        assert_eq!(missing_labels(&two_disks), ["esp"]);
        assert!(partitions_missing(&[], &NEEDED).contains("no disk partition at all"));
        let message = partitions_missing(&all[..3], &["data"]);
        assert!(
            message.contains(r#"no partition named "data""#),
            "{message}"
        );
    }

    #[test]
    fn the_top_block_of_a_slot_file_is_checked_at_its_offset() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("slot");
        let salt = [1u8; 32];
        let top = [9u8; 4096];
        let mut image = vec![0u8; 3 * 4096];
        image[2 * 4096..].copy_from_slice(&top);
        std::fs::write(&path, &image).unwrap();
        let mut input = salt.to_vec();
        input.extend_from_slice(&top);
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let verity = VerityParams {
            data_blocks: 2,
            hash_start_block: 2,
            root_hash: hex(&sha2::Sha256::digest(&input)),
            salt: hex(&salt),
        };
        let mut slot = p("root-a", "vda", 2);
        slot.dev = path;
        assert_eq!(top_block_matches(&slot, &verity), Ok(true));
        let beyond = VerityParams {
            hash_start_block: 3,
            ..verity.clone()
        };
        assert_eq!(top_block_matches(&slot, &beyond), Ok(false));
        assert!(read_all(&slot.dev, 3 * 4096).is_ok());
        assert!(
            read_all(&slot.dev, 4 * 4096)
                .unwrap_err()
                .contains("byte 12288")
        );
    }
}
