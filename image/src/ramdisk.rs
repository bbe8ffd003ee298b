//! The inspection ramdisk: Debian's kernel plus an initramfs whose `/init` is a static
//! `node-agent`, with the kernel modules of [`crate::modules::DRIVERS`] and a load order.
//!
//! Layout of the initramfs (a contract with the agent):
//! - `/init`: the static `node-agent` (the kernel runs it as PID 1);
//! - `/lib/modules/<release>/<path>.ko`: the modules, uncompressed, at their package paths;
//! - `/lib/modules/load-order`: one module path per line, relative to
//!   `/lib/modules/<release>/`, dependencies before dependents;
//! - `/dev/console` (so the kernel can give init a console), empty `/proc`, `/sys`, `/run`,
//!   `/tmp` to mount on.
//!
//! Built files: `OUT/vmlinuz`, `OUT/initramfs` (cpio newc, zstd) and `OUT/manifest.json`.
//!
//! Invariants: [`assemble`] is pure; the output depends only on the kernel package, the
//! agent and the driver lists (no clock, no host paths, no file order): building twice
//! gives the same bytes. No firmware is included: see ARCHITECTURE.md for why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cpio::{Archive, CpioError};
use crate::kernel::{self, Kernel, KernelError};
use crate::modules::{self, CollectError, ModulesError};
use crate::progress::Progress;
use crate::{file_error, sha256_hex, write_atomic};

/// zstd level of the initramfs. Measured on the 2-core machine on a 31 MiB archive: level 9
/// gives 6.9 MiB in about 1 s of CPU; 19 gives 6.1 MiB in 21 s. Decompression is as fast
/// either way, so the 12 % saved is not worth the build time.
pub const ZSTD_LEVEL: i32 = 9;

/// Where the kernel comes from.
#[derive(Debug, Clone)]
pub enum KernelSource {
    /// `apt-get download` of the metapackage, cached (see [`kernel::fetch`]).
    Apt { metapackage: String },
    /// A kernel package already on disk (`--kernel-deb`).
    Deb(PathBuf),
}

/// What to build.
#[derive(Debug, Clone)]
pub struct RamdiskOptions {
    /// The output directory (created if missing).
    pub out: PathBuf,
    /// The static `node-agent`.
    pub agent: PathBuf,
    pub kernel: KernelSource,
    /// The cache directory for kernel packages.
    pub cache: PathBuf,
    /// Required drivers (normally [`modules::DRIVERS`]) and drivers taken when present.
    pub drivers: Vec<String>,
    pub optional_drivers: Vec<String>,
}

impl RamdiskOptions {
    /// Options with the standard driver lists ([`modules::DRIVERS`],
    /// [`modules::OPTIONAL_DRIVERS`]).
    pub fn new(out: PathBuf, agent: PathBuf, kernel: KernelSource, cache: PathBuf) -> Self {
        let owned = |list: &[&str]| list.iter().map(|d| d.to_string()).collect();
        Self {
            out,
            agent,
            kernel,
            cache,
            drivers: owned(modules::DRIVERS),
            optional_drivers: owned(modules::OPTIONAL_DRIVERS),
        }
    }
}

/// Why the ramdisk could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RamdiskError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Modules(#[from] ModulesError),
    #[error(transparent)]
    Collect(#[from] CollectError),
    #[error(transparent)]
    Cpio(#[from] CpioError),
    /// The agent is not a static x86-64 executable.
    #[error(
        "{path}: {what}; build a static agent with `cargo xtask ramdisk`, or \
         RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release -p agent --target x86_64-unknown-linux-gnu"
    )]
    Agent { path: PathBuf, what: &'static str },
    #[error(transparent)]
    File(#[from] crate::FileError),
}

/// What was built, written as `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Manifest {
    pub kernel: KernelInfo,
    pub agent: FileInfo,
    pub vmlinuz: FileInfo,
    pub initramfs: InitramfsInfo,
    /// The modules in load order.
    pub modules: Vec<ModuleInfo>,
    /// Optional drivers the kernel does not have.
    pub optional_drivers_absent: Vec<String>,
    /// Firmware files the included modules may request; none is included.
    pub firmware_not_included: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelInfo {
    pub package: String,
    pub package_version: String,
    pub release: String,
    pub deb_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileInfo {
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InitramfsInfo {
    pub size: u64,
    pub sha256: String,
    pub compression: String,
    pub uncompressed_size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleInfo {
    pub name: String,
    /// Relative to `/lib/modules/<release>/` in the initramfs.
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

fn file_info(bytes: &[u8]) -> FileInfo {
    FileInfo {
        size: bytes.len() as u64,
        sha256: sha256_hex(bytes),
    }
}

/// Checks that `elf` is an x86-64 executable the kernel can run as init without a dynamic
/// loader: ELF64 little-endian, `e_machine` x86-64, no `PT_INTERP` program header.
pub fn check_static_agent(elf: &[u8]) -> Result<(), &'static str> {
    if elf.get(..4) != Some(b"\x7fELF") {
        return Err("not an ELF executable");
    }
    if elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF executable");
    }
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .and_then(|b| usize::try_from(u64::from_le_bytes(b.try_into().ok()?)).ok())
    };
    if u16_at(0x12) != Some(62) {
        return Err("not an x86-64 executable");
    }
    let truncated = "truncated ELF headers";
    let phoff = u64_at(0x20).ok_or(truncated)?;
    let phentsize = u16_at(0x36).ok_or(truncated)? as usize;
    let phnum = u16_at(0x38).ok_or(truncated)? as usize;
    for i in 0..phnum {
        let at = i
            .checked_mul(phentsize)
            .and_then(|o| o.checked_add(phoff))
            .ok_or(truncated)?;
        let p_type = elf
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or(truncated)?;
        // PT_INTERP: the file asks for a dynamic loader, which the initramfs does not have.
        if p_type == 3 {
            return Err("dynamically linked (it has a PT_INTERP program header)");
        }
    }
    Ok(())
}

/// A module as it goes into the initramfs.
#[derive(Debug, Clone)]
pub struct RamdiskModule {
    pub name: String,
    /// Relative to `/lib/modules/<release>/`, uncompressed.
    pub path: String,
    pub contents: Vec<u8>,
}

/// The initramfs archive: the agent as `/init`, the modules (in load order) and
/// `/lib/modules/load-order`.
pub fn assemble(
    agent: &[u8],
    release: &str,
    modules: &[RamdiskModule],
) -> Result<Archive, CpioError> {
    let mut a = Archive::new();
    a.add_file("init", 0o755, agent.to_vec())?;
    a.add_char_device("dev/console", 0o600, 5, 1)?;
    a.add_dir("dev", 0o755)?;
    a.add_dir("proc", 0o555)?;
    a.add_dir("sys", 0o555)?;
    a.add_dir("run", 0o755)?;
    a.add_dir("tmp", 0o1777)?;
    for m in modules {
        a.add_file(
            &format!("lib/modules/{release}/{}", m.path),
            0o644,
            m.contents.clone(),
        )?;
    }
    a.add_file(
        "lib/modules/load-order",
        0o644,
        load_order_file(modules).into_bytes(),
    )?;
    Ok(a)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// The modules of a driver selection, read and ordered.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// In load order, uncompressed.
    pub modules: Vec<RamdiskModule>,
    /// Optional drivers the kernel does not have.
    pub optional_absent: Vec<String>,
    /// Firmware files the modules may request, by module.
    pub firmware: BTreeMap<String, Vec<String>>,
}

/// Reads `drivers` (required), `optional` (taken when present) and their dependencies from
/// the module tree `modules_dir` and puts them in load order.
pub fn resolve_modules(
    modules_dir: &Path,
    drivers: &[&str],
    optional: &[&str],
) -> Result<Resolved, RamdiskError> {
    let files = modules::index(modules_dir)?;
    let roots: Vec<&str> = drivers.iter().chain(optional).copied().collect();
    let mut found = modules::collect(modules_dir, &files, &roots)?;
    let infos = found
        .iter()
        .map(|(k, (m, _))| (k.clone(), m.clone()))
        .collect();
    let order = modules::load_order(&infos, drivers, optional)?;
    let mut out = Vec::with_capacity(order.len());
    let mut firmware = BTreeMap::new();
    for name in &order {
        let (module, contents) = found
            .remove(name)
            .expect("load_order returns collected modules");
        if !module.info.firmware.is_empty() {
            firmware.insert(name.clone(), module.info.firmware.clone());
        }
        out.push(RamdiskModule {
            name: name.clone(),
            path: modules::uncompressed_path(&module.path).to_owned(),
            contents,
        });
    }
    let optional_absent = optional
        .iter()
        .map(|o| modules::normalize(o))
        .filter(|o| !order.contains(o))
        .collect();
    Ok(Resolved {
        modules: out,
        optional_absent,
        firmware,
    })
}

/// `lib/modules/load-order`: one module path (relative to `lib/modules/<release>/`) a
/// line, dependencies first.
pub fn load_order_file(modules: &[RamdiskModule]) -> String {
    modules.iter().map(|m| format!("{}\n", m.path)).collect()
}

/// Builds the ramdisk into `options.out` and returns (and writes) its manifest.
pub fn build(options: &RamdiskOptions, progress: &dyn Progress) -> Result<Manifest, RamdiskError> {
    // The agent first: a wrong file fails at once, before any download.
    let step = progress.begin("checking the agent");
    let agent =
        std::fs::read(&options.agent).map_err(file_error(&options.agent, "reading the agent"))?;
    check_static_agent(&agent).map_err(|what| RamdiskError::Agent {
        path: options.agent.clone(),
        what,
    })?;
    progress.finish(step, &format!("static, {}", mib(agent.len() as u64)));

    let kernel: Kernel = match &options.kernel {
        KernelSource::Apt { metapackage } => kernel::fetch(&options.cache, metapackage, progress)?,
        KernelSource::Deb(deb) => kernel::unpack(deb, &options.cache, progress)?,
    };

    let step = progress.begin("resolving kernel modules");
    let drivers: Vec<&str> = options.drivers.iter().map(String::as_str).collect();
    let optional: Vec<&str> = options
        .optional_drivers
        .iter()
        .map(String::as_str)
        .collect();
    let Resolved {
        modules: ramdisk_modules,
        optional_absent,
        firmware,
    } = resolve_modules(&kernel.modules_dir, &drivers, &optional)?;
    let total: usize = ramdisk_modules.iter().map(|m| m.contents.len()).sum();
    progress.finish(
        step,
        &format!("{} modules, {}", ramdisk_modules.len(), mib(total as u64)),
    );

    let step = progress.begin("writing the cpio archive");
    let archive = assemble(&agent, &kernel.release, &ramdisk_modules)?;
    let cpio = archive.to_bytes();
    progress.finish(step, &mib(cpio.len() as u64));

    let step = progress.begin(&format!("compressing with zstd -{ZSTD_LEVEL}"));
    let initramfs = zstd::bulk::compress(&cpio, ZSTD_LEVEL)
        .map_err(file_error(Path::new("initramfs"), "compressing"))?;
    progress.finish(
        step,
        &format!(
            "{} ({:.0} % of {})",
            mib(initramfs.len() as u64),
            100.0 * initramfs.len() as f64 / cpio.len() as f64,
            mib(cpio.len() as u64)
        ),
    );

    let step = progress.begin(&format!("writing {}", options.out.display()));
    std::fs::create_dir_all(&options.out)
        .map_err(file_error(&options.out, "creating the output directory"))?;
    let vmlinuz = std::fs::read(&kernel.vmlinuz).map_err(file_error(&kernel.vmlinuz, "reading"))?;
    let deb = std::fs::read(&kernel.deb).map_err(file_error(&kernel.deb, "reading"))?;
    let manifest = Manifest {
        kernel: KernelInfo {
            package: kernel.package.clone(),
            package_version: kernel.package_version.clone(),
            release: kernel.release.clone(),
            deb_sha256: sha256_hex(&deb),
        },
        agent: file_info(&agent),
        vmlinuz: file_info(&vmlinuz),
        initramfs: InitramfsInfo {
            size: initramfs.len() as u64,
            sha256: sha256_hex(&initramfs),
            compression: format!("zstd -{ZSTD_LEVEL}"),
            uncompressed_size: cpio.len() as u64,
        },
        modules: ramdisk_modules
            .iter()
            .map(|m| ModuleInfo {
                name: m.name.clone(),
                path: m.path.clone(),
                size: m.contents.len() as u64,
                sha256: sha256_hex(&m.contents),
            })
            .collect(),
        optional_drivers_absent: optional_absent,
        firmware_not_included: firmware,
    };
    write_atomic(&options.out.join("vmlinuz"), &vmlinuz)?;
    write_atomic(&options.out.join("initramfs"), &initramfs)?;
    let mut json = serde_json::to_vec_pretty(&manifest).expect("the manifest serializes");
    json.push(b'\n');
    write_atomic(&options.out.join("manifest.json"), &json)?;
    progress.finish(step, "vmlinuz, initramfs, manifest.json");
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_has_init_modules_and_load_order() {
        let modules = vec![
            RamdiskModule {
                name: "virtio".into(),
                path: "kernel/drivers/virtio/virtio.ko".into(),
                contents: b"a".to_vec(),
            },
            RamdiskModule {
                name: "virtio_net".into(),
                path: "kernel/drivers/net/virtio_net.ko".into(),
                contents: b"b".to_vec(),
            },
        ];
        let a = assemble(b"agent", "6.1.0-56-amd64", &modules).unwrap();
        let entries: BTreeMap<&str, _> = a.entries().collect();
        assert_eq!(entries["init"].permissions, 0o755);
        assert_eq!(
            entries["lib/modules/load-order"].kind,
            crate::cpio::Kind::File(
                b"kernel/drivers/virtio/virtio.ko\nkernel/drivers/net/virtio_net.ko\n".to_vec()
            )
        );
        assert!(
            entries.contains_key("lib/modules/6.1.0-56-amd64/kernel/drivers/net/virtio_net.ko")
        );
        assert_eq!(
            entries["dev/console"].kind,
            crate::cpio::Kind::CharDevice { major: 5, minor: 1 }
        );
        assert_eq!(entries["tmp"].permissions, 0o1777);
    }

    #[test]
    fn the_agent_must_be_static_x86_64() {
        // This test binary is dynamically linked (the default gnu target).
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(
            check_static_agent(&me),
            Err("dynamically linked (it has a PT_INTERP program header)")
        );
        assert_eq!(
            check_static_agent(b"#!/bin/sh\n"),
            Err("not an ELF executable")
        );
        let mut fake = me[..0x40].to_vec();
        fake[0x38] = 0; // no program headers at all: nothing asks for a loader
        fake[0x39] = 0;
        assert_eq!(check_static_agent(&fake), Ok(()));
        fake[0x12] = 183; // aarch64
        assert_eq!(check_static_agent(&fake), Err("not an x86-64 executable"));
    }
}
