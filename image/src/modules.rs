//! Which kernel modules go into the inspection ramdisk, in which order the agent loads them.
//!
//! The driver list ([`DRIVERS`], [`OPTIONAL_DRIVERS`]) names what real servers and the lab
//! need; each driver's dependencies come from the module's own `.modinfo` section (the
//! `depends=` list that modpost records and `depmod` turns into `modules.dep`; Debian's
//! package ships no `modules.dep`, its postinst runs depmod). A test cross-checks the
//! result against `depmod` itself.
//!
//! Invariants: [`parse_modinfo`] and [`load_order`] are pure; only [`collect`] reads files.
//! A driver of [`DRIVERS`] missing from the kernel is an error naming it; so is a missing
//! dependency. The load order puts every dependency before its dependents and is the same
//! for the same inputs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Drivers the ramdisk must carry: NICs and storage controllers of real servers, and the
/// lab's virtual devices. Module names as the kernel spells them (`_`, not `-`).
pub const DRIVERS: &[&str] = &[
    // The lab (QEMU): virtio NIC, disk, SCSI; Intel NICs QEMU emulates (e1000, e1000e, igb).
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "virtio_scsi",
    // Intel NICs: 1G (e1000, e1000e, igb + VF), 10G (ixgbe + VF), 40G (i40e), 100G (ice), VFs (iavf).
    "e1000",
    "e1000e",
    "igb",
    "igbvf",
    "ixgbe",
    "ixgbevf",
    "i40e",
    "iavf",
    "ice",
    // Mellanox/NVIDIA ConnectX-4 and later, Broadcom NetXtreme-C/E and Tigon3.
    "mlx5_core",
    "bnxt_en",
    "tg3",
    // VFIO: `node-agent apply` binds SR-IOV VFs to vfio-pci (the plan's `device_type:
    // vfio-pci`); vfio_iommu_type1 is the IOMMU backend vfio's users open.
    "vfio_pci",
    "vfio_iommu_type1",
    // Disks: NVMe, SATA (AHCI), SCSI disks, Broadcom/LSI MegaRAID and SAS HBAs, HPE Smart Array.
    "nvme",
    "ahci",
    "sd_mod",
    "megaraid_sas",
    "mpt3sas",
    "smartpqi",
];

/// Modules taken when the kernel has them, left out otherwise (the manifest lists the ones
/// left out): 9p over virtio, for sharing a directory with a lab VM while debugging; and the
/// implementations of the checksums that `crc_t10dif` and `crc64_rocksoft` (protection
/// information of NVMe and SCSI disks) request by crypto alias at load time (their
/// `softdep=pre: crct10dif` / `crc64` names an alias, not a module: without these they fall
/// back to slower generic code).
pub const OPTIONAL_DRIVERS: &[&str] = &[
    "9pnet_virtio",
    "9p",
    "crct10dif_pclmul",
    "crct10dif_generic",
    "crc64_rocksoft_generic",
];

/// What a module's `.modinfo` says about it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModInfo {
    /// The module's name (`name=`), normalized ([`normalize`]).
    pub name: String,
    /// Modules it needs loaded first (`depends=`), normalized.
    pub depends: Vec<String>,
    /// Modules it asks to load before itself when present (`softdep=pre: ...`), normalized.
    pub softdeps: Vec<String>,
    /// Firmware files it may request (`firmware=`).
    pub firmware: Vec<String>,
}

/// A module file and its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Path relative to `/lib/modules/<release>/`, as the package has it (`kernel/...ko`,
    /// possibly with `.xz` or `.zst`).
    pub path: String,
    pub info: ModInfo,
}

/// Why the module selection failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModulesError {
    /// The file is not a 64-bit little-endian ELF object with a `.modinfo` section.
    #[error("{path}: not a kernel module ({what})")]
    NotAModule { path: String, what: &'static str },
    /// Required drivers or dependencies the kernel does not have.
    #[error(
        "the kernel has no module {}; it is needed by {}: use a kernel that has it (--kernel-deb), or remove it from image::modules::DRIVERS",
        missing.join(", "), needed_by.join(", ")
    )]
    Missing {
        missing: Vec<String>,
        needed_by: Vec<String>,
    },
    /// Modules depending on each other in a loop.
    #[error("module dependency loop: {}", cycle.join(" -> "))]
    Cycle { cycle: Vec<String> },
}

/// Module names use `_` and `-` interchangeably; the kernel reports `_`.
pub fn normalize(name: &str) -> String {
    name.trim().replace('-', "_")
}

/// The module name a file carries in its file name (`kernel/.../nvme-core.ko.xz` ->
/// `nvme_core`), or `None` for a file that is no module.
pub fn name_from_path(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = file
        .strip_suffix(".ko")
        .or_else(|| file.strip_suffix(".ko.xz"))
        .or_else(|| file.strip_suffix(".ko.zst"))
        .or_else(|| file.strip_suffix(".ko.gz"))?;
    Some(normalize(stem))
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn le_u64(b: &[u8], at: usize) -> Option<usize> {
    usize::try_from(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?)).ok()
}

/// The `.modinfo` section of an (uncompressed) ELF64 little-endian module.
fn modinfo_section(elf: &[u8]) -> Result<&[u8], &'static str> {
    if elf.get(..4) != Some(b"\x7fELF") {
        return Err("no ELF magic");
    }
    if elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF file");
    }
    let truncated = "truncated ELF headers";
    let shoff = le_u64(elf, 0x28).ok_or(truncated)?;
    let shentsize = le_u16(elf, 0x3a).ok_or(truncated)? as usize;
    let shnum = le_u16(elf, 0x3c).ok_or(truncated)? as usize;
    let shstrndx = le_u16(elf, 0x3e).ok_or(truncated)? as usize;
    if shentsize < 0x40 {
        return Err("section headers too small");
    }
    let section = |i: usize| -> Option<(u32, &[u8])> {
        let h = shoff.checked_add(i.checked_mul(shentsize)?)?;
        let name = le_u32(elf, h)?;
        let offset = le_u64(elf, h + 0x18)?;
        let size = le_u64(elf, h + 0x20)?;
        Some((name, elf.get(offset..offset.checked_add(size)?)?))
    };
    let (_, names) = section(shstrndx).ok_or(truncated)?;
    for i in 0..shnum {
        let (name, data) = section(i).ok_or(truncated)?;
        let name = names.get(name as usize..).ok_or("bad section name")?;
        if name.split(|b| *b == 0).next() == Some(b".modinfo") {
            return Ok(data);
        }
    }
    Err("no .modinfo section")
}

/// Reads a module's name, dependencies, soft dependencies and firmware from its
/// `.modinfo` section. `path` is for error messages and for the name when the module
/// carries none.
pub fn parse_modinfo(path: &str, elf: &[u8]) -> Result<ModInfo, ModulesError> {
    let section = modinfo_section(elf).map_err(|what| ModulesError::NotAModule {
        path: path.to_owned(),
        what,
    })?;
    let mut info = ModInfo::default();
    for field in section.split(|b| *b == 0) {
        let Ok(field) = std::str::from_utf8(field) else {
            continue;
        };
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        let list = |v: &str| -> Vec<String> {
            v.split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(normalize)
                .collect()
        };
        match key {
            "name" => info.name = normalize(value),
            "depends" => info.depends.extend(list(value)),
            // "pre: a b post: c": only what must come before matters for loading.
            "softdep" => {
                let mut pre = false;
                for word in value.split_whitespace() {
                    match word {
                        "pre:" => pre = true,
                        "post:" => pre = false,
                        w if pre => info.softdeps.push(normalize(w)),
                        _ => {}
                    }
                }
            }
            "firmware" => info.firmware.push(value.to_owned()),
            _ => {}
        }
    }
    if info.name.is_empty() {
        info.name = name_from_path(path).ok_or_else(|| ModulesError::NotAModule {
            path: path.to_owned(),
            what: "no name= in .modinfo and no .ko file name",
        })?;
    }
    Ok(info)
}

/// The modules to load, dependencies first. `modules` holds at least every wanted module
/// and its dependencies that the kernel has (see [`collect`]). Soft dependencies are taken
/// when present. The order: depth-first from each wanted driver in list order, each
/// module's dependencies in the order its `.modinfo` lists them.
pub fn load_order(
    modules: &BTreeMap<String, Module>,
    wanted: &[&str],
    optional: &[&str],
) -> Result<Vec<String>, ModulesError> {
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    let mut missing = BTreeSet::new();
    let mut needed_by = BTreeSet::new();
    let roots = wanted
        .iter()
        .map(|w| (normalize(w), true))
        .chain(optional.iter().map(|w| (normalize(w), false)));
    for (root, required) in roots {
        if !modules.contains_key(&root) {
            if required {
                missing.insert(root.clone());
                needed_by.insert("image::modules::DRIVERS".to_owned());
            }
            continue;
        }
        let mut path = Vec::new();
        visit(
            modules,
            &root,
            &mut path,
            &mut done,
            &mut order,
            &mut missing,
            &mut needed_by,
        )?;
    }
    if !missing.is_empty() {
        return Err(ModulesError::Missing {
            missing: missing.into_iter().collect(),
            needed_by: needed_by.into_iter().collect(),
        });
    }
    Ok(order)
}

fn visit(
    modules: &BTreeMap<String, Module>,
    name: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
    order: &mut Vec<String>,
    missing: &mut BTreeSet<String>,
    needed_by: &mut BTreeSet<String>,
) -> Result<(), ModulesError> {
    if done.contains(name) {
        return Ok(());
    }
    if let Some(at) = path.iter().position(|p| p == name) {
        let mut cycle = path[at..].to_vec();
        cycle.push(name.to_owned());
        return Err(ModulesError::Cycle { cycle });
    }
    let module = &modules[name];
    path.push(name.to_owned());
    let hard = module.info.depends.iter().map(|d| (d, true));
    let soft = module.info.softdeps.iter().map(|d| (d, false));
    for (dep, required) in hard.chain(soft) {
        if modules.contains_key(dep) {
            visit(modules, dep, path, done, order, missing, needed_by)?;
        } else if required {
            missing.insert(dep.clone());
            needed_by.insert(name.to_owned());
        }
    }
    path.pop();
    done.insert(name.to_owned());
    order.push(name.to_owned());
    Ok(())
}

/// Reads a module file, decompressing `.ko.xz` and `.ko.zst`.
pub fn read_module(file: &Path) -> std::io::Result<Vec<u8>> {
    let raw = std::fs::read(file)?;
    let name = file.to_string_lossy();
    if name.ends_with(".ko.zst") {
        zstd::stream::decode_all(raw.as_slice())
    } else if name.ends_with(".ko.xz") {
        let mut out = Vec::new();
        lzma_rs::xz_decompress(&mut raw.as_slice(), &mut out)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        Ok(out)
    } else if name.ends_with(".ko.gz") {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "gzip-compressed modules are not supported (Debian uses none, xz or zstd)",
        ))
    } else {
        Ok(raw)
    }
}

/// Why reading the module tree failed.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("{path}: cannot read the kernel's module tree")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Modules(#[from] ModulesError),
}

/// Every module file under `modules_dir` by module name (relative paths, sorted).
pub fn index(modules_dir: &Path) -> Result<BTreeMap<String, String>, CollectError> {
    let mut found = BTreeMap::new();
    let mut stack = vec![modules_dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let io = |source| CollectError::Io {
            path: dir.clone(),
            source,
        };
        for entry in std::fs::read_dir(&dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let path = entry.path();
            if entry.file_type().map_err(io)?.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(modules_dir) {
                let rel = rel.to_string_lossy().into_owned();
                if let Some(name) = name_from_path(&rel) {
                    // Two files with one module name: keep the first in path order.
                    found
                        .entry(name)
                        .and_modify(|p: &mut String| {
                            if rel < *p {
                                *p = rel.clone();
                            }
                        })
                        .or_insert(rel);
                }
            }
        }
    }
    Ok(found)
}

/// Reads the `.modinfo` of the wanted modules and, transitively, of their dependencies
/// (only those: a kernel has thousands of modules). Returns the modules found with their
/// uncompressed contents; absent ones are left for [`load_order`] to report.
pub fn collect(
    modules_dir: &Path,
    files: &BTreeMap<String, String>,
    wanted: &[&str],
) -> Result<BTreeMap<String, (Module, Vec<u8>)>, CollectError> {
    let mut out: BTreeMap<String, (Module, Vec<u8>)> = BTreeMap::new();
    let mut queue: Vec<String> = wanted.iter().map(|w| normalize(w)).collect();
    while let Some(name) = queue.pop() {
        if out.contains_key(&name) {
            continue;
        }
        let Some(rel) = files.get(&name) else {
            continue;
        };
        let file = modules_dir.join(rel);
        let bytes = read_module(&file).map_err(|source| CollectError::Io {
            path: file.clone(),
            source,
        })?;
        let info = parse_modinfo(rel, &bytes)?;
        queue.extend(info.depends.iter().cloned());
        queue.extend(info.softdeps.iter().cloned());
        let module = Module {
            path: rel.clone(),
            info,
        };
        // Index by file name: `depends=` uses the names files carry.
        out.insert(name, (module, bytes));
    }
    Ok(out)
}

/// The path a module gets inside the ramdisk, relative to `/lib/modules/<release>/`:
/// the package's path without a compression suffix (the ramdisk holds them uncompressed).
pub fn uncompressed_path(path: &str) -> &str {
    path.strip_suffix(".xz")
        .or_else(|| path.strip_suffix(".zst"))
        .unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(name: &str, depends: &[&str], softdeps: &[&str]) -> (String, Module) {
        (
            name.to_owned(),
            Module {
                path: format!("kernel/{name}.ko"),
                info: ModInfo {
                    name: name.to_owned(),
                    depends: depends.iter().map(|d| d.to_string()).collect(),
                    softdeps: softdeps.iter().map(|d| d.to_string()).collect(),
                    firmware: vec![],
                },
            },
        )
    }

    #[test]
    fn dependencies_come_first_each_once() {
        let modules: BTreeMap<_, _> = [
            module(
                "virtio_net",
                &["virtio_ring", "virtio", "net_failover"],
                &[],
            ),
            module("net_failover", &["failover"], &[]),
            module("failover", &[], &[]),
            module("virtio_ring", &[], &[]),
            module("virtio", &[], &[]),
            module("virtio_blk", &["virtio", "virtio_ring"], &["crc32c"]),
        ]
        .into();
        let order = load_order(&modules, &["virtio_net", "virtio_blk"], &["absent"]).unwrap();
        assert_eq!(
            order,
            [
                "virtio_ring",
                "virtio",
                "failover",
                "net_failover",
                "virtio_net",
                "virtio_blk"
            ]
        );
    }

    #[test]
    fn missing_drivers_and_dependencies_are_named() {
        let modules: BTreeMap<_, _> = [module("igb", &["dca", "i2c_algo_bit"], &[])].into();
        let err = load_order(&modules, &["igb", "ice"], &["9p"]).unwrap_err();
        assert_eq!(
            err,
            ModulesError::Missing {
                missing: vec!["dca".into(), "i2c_algo_bit".into(), "ice".into()],
                needed_by: vec!["igb".into(), "image::modules::DRIVERS".into()],
            }
        );
        assert!(err.to_string().contains("no module dca, i2c_algo_bit, ice"));
    }

    #[test]
    fn loops_are_refused() {
        let modules: BTreeMap<_, _> = [module("a", &["b"], &[]), module("b", &["a"], &[])].into();
        assert_eq!(
            load_order(&modules, &["a"], &[]),
            Err(ModulesError::Cycle {
                cycle: vec!["a".into(), "b".into(), "a".into()]
            })
        );
    }

    #[test]
    fn names_from_paths() {
        assert_eq!(
            name_from_path("kernel/drivers/nvme/host/nvme-core.ko.xz").as_deref(),
            Some("nvme_core")
        );
        assert_eq!(
            name_from_path("kernel/a/virtio_net.ko").as_deref(),
            Some("virtio_net")
        );
        assert_eq!(name_from_path("modules.order"), None);
        assert_eq!(uncompressed_path("kernel/x.ko.zst"), "kernel/x.ko");
        assert_eq!(uncompressed_path("kernel/x.ko"), "kernel/x.ko");
    }

    /// A minimal ELF64 LE object: a section-name table and a .modinfo section.
    fn elf_with_modinfo(modinfo: &[u8]) -> Vec<u8> {
        let shstrtab = b"\0.shstrtab\0.modinfo\0";
        let mut elf = vec![0u8; 0x40];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        let strtab_at = elf.len();
        elf.extend_from_slice(shstrtab);
        let modinfo_at = elf.len();
        elf.extend_from_slice(modinfo);
        let shoff = elf.len();
        let mut header = |name: u32, offset: usize, size: usize| {
            let mut h = vec![0u8; 0x40];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(offset as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&h);
        };
        header(0, 0, 0);
        header(1, strtab_at, shstrtab.len());
        header(11, modinfo_at, modinfo.len());
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&0x40u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        elf
    }

    #[test]
    fn modinfo_fields_are_read() {
        let elf = elf_with_modinfo(
            b"license=GPL\0firmware=intel/ice/ddp/ice.pkg\0softdep=pre: crc32c post: foo\0\
              depends=nvme-core,t10-pi\0name=nvme\0vermagic=6.1.0 SMP\0",
        );
        let info = parse_modinfo("kernel/nvme.ko", &elf).unwrap();
        assert_eq!(
            info,
            ModInfo {
                name: "nvme".into(),
                depends: vec!["nvme_core".into(), "t10_pi".into()],
                softdeps: vec!["crc32c".into()],
                firmware: vec!["intel/ice/ddp/ice.pkg".into()],
            }
        );
        // No name= field: the file name gives it; empty depends= gives none.
        let info = parse_modinfo("kernel/e1000.ko", &elf_with_modinfo(b"depends=\0")).unwrap();
        assert_eq!(info.name, "e1000");
        assert!(info.depends.is_empty());
    }

    #[test]
    fn non_modules_are_errors_not_panics() {
        for bytes in [
            &b""[..],
            b"\x7fELF",
            b"MZ\x90\0",
            &[0x7f, b'E', b'L', b'F', 2, 1, 0, 0],
        ] {
            assert!(matches!(
                parse_modinfo("x.ko", bytes),
                Err(ModulesError::NotAModule { .. })
            ));
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut elf = elf_with_modinfo(b"name=x\0");
            let n = bytes.len().min(elf.len());
            elf[..n].copy_from_slice(&bytes[..n]);
            let _ = parse_modinfo("x.ko", &elf);
            let _ = parse_modinfo("x.ko", &bytes);
        }
    }
}
