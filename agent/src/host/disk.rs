//! The host disk's partitions, found by their GPT names through sysfs (no
//! udev, so no `/dev/disk/by-partlabel`): every `/sys/class/block/*` entry
//! that is a partition, with its `PARTNAME`, device node, number and parent
//! disk. Pure parsing of one `uevent` ([`parse_uevent`]); [`scan`] reads the
//! files.

use std::path::{Path, PathBuf};

use model::host::Slot;

/// One partition of a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// GPT partition name (`PARTNAME=`), e.g. `root-a`; empty when it has none.
    pub label: String,
    /// Kernel name, e.g. `vda2`, `nvme0n1p2`.
    pub name: String,
    /// Device node, `/dev/<name>` (devtmpfs creates it).
    pub dev: PathBuf,
    /// `MAJOR:MINOR`, for device-mapper tables.
    pub dev_t: String,
    /// Partition number (`PARTN=`).
    pub number: u32,
    /// The whole disk's kernel name (`vda`), from the sysfs parent directory.
    pub disk: String,
}

/// The fields of a block device's `uevent` that matter here.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Uevent {
    pub devname: String,
    pub devtype: String,
    pub major: u32,
    pub minor: u32,
    pub partn: Option<u32>,
    pub partname: Option<String>,
}

/// Parses `KEY=value` lines; unknown keys are ignored.
pub fn parse_uevent(text: &str) -> Uevent {
    let mut u = Uevent::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key {
            "DEVNAME" => u.devname = value.to_owned(),
            "DEVTYPE" => u.devtype = value.to_owned(),
            "MAJOR" => u.major = value.parse().unwrap_or(0),
            "MINOR" => u.minor = value.parse().unwrap_or(0),
            "PARTN" => u.partn = value.parse().ok(),
            "PARTNAME" => u.partname = Some(value.to_owned()),
            _ => {}
        }
    }
    u
}

/// All partitions under `sys` (`/sys` on a machine, a fake tree in tests),
/// sorted by disk and number. Entries that cannot be read are skipped.
pub fn scan(sys: &Path) -> Vec<Partition> {
    let class = sys.join("class/block");
    let Ok(entries) = std::fs::read_dir(&class) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        let Ok(text) = std::fs::read_to_string(dir.join("uevent")) else {
            continue;
        };
        let u = parse_uevent(&text);
        if u.devtype != "partition" {
            continue;
        }
        let Some(number) = u.partn else { continue };
        // /sys/class/block/vda2 -> ../../devices/.../block/vda/vda2: the parent is the disk.
        let disk = std::fs::canonicalize(&dir)
            .ok()
            .and_then(|real| {
                real.parent()
                    .and_then(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_default();
        found.push(Partition {
            label: u.partname.unwrap_or_default(),
            dev: PathBuf::from("/dev").join(&u.devname),
            name: u.devname,
            dev_t: format!("{}:{}", u.major, u.minor),
            number,
            disk,
        });
    }
    found.sort_by(|a, b| (&a.disk, a.number).cmp(&(&b.disk, b.number)));
    found
}

/// The partition labelled `label`; `Err` names what was found instead when
/// there is none, or when two disks both have one (two host disks in one
/// machine: refuse to guess).
pub fn by_label<'a>(partitions: &'a [Partition], label: &str) -> Result<&'a Partition, String> {
    let matching: Vec<&Partition> = partitions.iter().filter(|p| p.label == label).collect();
    match matching.as_slice() {
        [one] => Ok(one),
        [] => Err(format!(
            "no partition named {label:?} (partitions seen: {}); is this disk written by \
             `provisioner image build host`?",
            describe(partitions)
        )),
        many => Err(format!(
            "{} partitions are named {label:?} ({}); remove the other host disk",
            many.len(),
            many.iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The partition of a root slot.
pub fn slot(partitions: &[Partition], slot: Slot) -> Result<&Partition, String> {
    by_label(partitions, slot.label())
}

fn describe(partitions: &[Partition]) -> String {
    if partitions.is_empty() {
        return "none; is the disk driver loaded?".to_owned();
    }
    partitions
        .iter()
        .map(|p| format!("{}={:?}", p.name, p.label))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uevent_of_a_partition() {
        let u = parse_uevent(
            "MAJOR=254\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nDISKSEQ=9\nPARTN=2\nPARTNAME=root-a\n",
        );
        assert_eq!(
            u,
            Uevent {
                devname: "vda2".into(),
                devtype: "partition".into(),
                major: 254,
                minor: 2,
                partn: Some(2),
                partname: Some("root-a".into()),
            }
        );
    }

    fn fake_partition(sys: &Path, disk: &str, number: u32, label: &str) {
        let name = format!("{disk}{number}");
        let real = sys.join(format!("devices/pci0000:00/block/{disk}/{name}"));
        std::fs::create_dir_all(&real).unwrap();
        std::fs::write(
            real.join("uevent"),
            format!(
                "MAJOR=254\nMINOR={number}\nDEVNAME={name}\nDEVTYPE=partition\nPARTN={number}\nPARTNAME={label}\n"
            ),
        )
        .unwrap();
        std::fs::create_dir_all(sys.join("class/block")).unwrap();
        std::os::unix::fs::symlink(&real, sys.join("class/block").join(&name)).unwrap();
    }

    #[test]
    fn scan_finds_partitions_by_label_and_refuses_two_disks() {
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path();
        fake_partition(sys, "vda", 2, "root-a");
        fake_partition(sys, "vda", 1, "esp");
        fake_partition(sys, "vda", 3, "root-b");
        let found = scan(sys);
        assert_eq!(
            found.iter().map(|p| p.number).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        let a = slot(&found, Slot::A).unwrap();
        assert_eq!(
            (a.dev.as_path(), a.dev_t.as_str(), a.disk.as_str()),
            (Path::new("/dev/vda2"), "254:2", "vda")
        );
        assert!(
            by_label(&found, "data")
                .unwrap_err()
                .contains("vda1=\"esp\"")
        );
        fake_partition(sys, "vdb", 2, "root-a");
        assert!(
            slot(&scan(sys), Slot::A)
                .unwrap_err()
                .contains("2 partitions")
        );
    }
}
