//! The lab's own small test ramdisk: Debian's kernel (fetched and cached by
//! `image::kernel`) and an initramfs (`image::cpio`) whose `/init`
//! (busybox-static) prints [`MARKER`] and the kernel command line on the
//! serial console, then powers the VM off. Cached under `<target>/lab-assets/`
//! (`test-vmlinuz`, `test-initramfs.cpio`).

use std::path::{Path, PathBuf};

use super::{LabError, io};

/// Printed by the test initramfs once it runs, followed by `/proc/cmdline`.
pub const MARKER: &str = "LAB-BOOT-OK";

/// Where busybox-static installs its binary.
pub const BUSYBOX: &str = "/bin/busybox";

const INIT: &str = "#!/bin/busybox sh
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox mount -t proc proc /proc
echo \"LAB-BOOT-OK $(/bin/busybox cat /proc/cmdline)\" > /dev/ttyS0
/bin/busybox poweroff -f
";

/// The test kernel and initramfs.
#[derive(Debug, Clone)]
pub struct TestRamdisk {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

/// `<target>/lab-assets`, above the running binary (`target/<profile>/deps/test`
/// for tests, `target/<profile>/xtask` for xtask).
pub fn cache_dir() -> Result<PathBuf, LabError> {
    let exe = std::env::current_exe().map_err(io("locating the running binary"))?;
    exe.ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(|target| target.join("lab-assets"))
        .ok_or_else(|| {
            LabError::Missing(format!(
                "no cargo target directory (with CACHEDIR.TAG) above {}",
                exe.display()
            ))
        })
}

/// Fetches the kernel (cached) and builds the initramfs (when missing) in `cache`.
pub fn test_ramdisk(cache: &Path) -> Result<TestRamdisk, LabError> {
    std::fs::create_dir_all(cache).map_err(io(format!("creating {}", cache.display())))?;
    // Resolving the kernel package asks apt every time; the lab only needs a
    // kernel, so the first one fetched is kept (delete it to take a newer one).
    let kernel = cache.join("test-vmlinuz");
    if !kernel.is_file() {
        let fetched = image::kernel::fetch(
            cache,
            image::kernel::DEFAULT_METAPACKAGE,
            &image::progress::Quiet,
        )
        .map_err(|err| LabError::Missing(format!("the lab's test kernel: {err}")))?;
        let partial = kernel.with_extension(format!("{}.partial", std::process::id()));
        std::fs::copy(&fetched.vmlinuz, &partial)
            .map_err(io("copying the kernel into the lab cache"))?;
        std::fs::rename(&partial, &kernel).map_err(io("moving the kernel in place"))?;
    }
    let initramfs = cache.join("test-initramfs.cpio");
    if !initramfs.is_file() {
        build_initramfs(&initramfs)?;
    }
    Ok(TestRamdisk { kernel, initramfs })
}

/// `/init`, `/bin/busybox`, `/dev/console`, empty `/dev` and `/proc`.
fn build_initramfs(out: &Path) -> Result<(), LabError> {
    let busybox = std::fs::read(BUSYBOX).map_err(|_| {
        LabError::Missing(format!(
            "{BUSYBOX} is missing: install Debian's `busybox-static` (`cargo xtask deps`)"
        ))
    })?;
    let cpio = |err: image::cpio::CpioError| LabError::Missing(format!("test initramfs: {err}"));
    let mut archive = image::cpio::Archive::new();
    archive.add_dir("dev", 0o755).map_err(cpio)?;
    archive
        .add_char_device("dev/console", 0o600, 5, 1)
        .map_err(cpio)?;
    archive.add_dir("proc", 0o755).map_err(cpio)?;
    archive
        .add_file("bin/busybox", 0o755, busybox)
        .map_err(cpio)?;
    archive
        .add_file("init", 0o755, INIT.as_bytes().to_vec())
        .map_err(cpio)?;
    // Written aside and renamed, so a parallel test never reads half an archive.
    let partial = out.with_extension(format!("{}.partial", std::process::id()));
    let mut file =
        std::fs::File::create(&partial).map_err(io(format!("creating {}", partial.display())))?;
    archive
        .write_to(&mut file)
        .map_err(io(format!("writing {}", partial.display())))?;
    std::fs::rename(&partial, out).map_err(io("moving the initramfs in place"))
}

/// The real inspection ramdisk (Debian's kernel, the static `node-agent` as `/init`),
/// built into `<target>/lab-assets/inspect/` with `image::ramdisk::build`. The static
/// agent is `<target>/x86_64-unknown-linux-gnu/release/node-agent`: `cargo xtask test`
/// builds it before the tests (or `cargo xtask ramdisk`).
pub fn inspection_ramdisk() -> Result<TestRamdisk, LabError> {
    let cache = cache_dir()?;
    let target = cache.parent().map(Path::to_path_buf).unwrap_or_default();
    let agent = target.join("x86_64-unknown-linux-gnu/release/node-agent");
    if !agent.is_file() {
        return Err(LabError::Missing(format!(
            "no static node-agent at {}: run `cargo xtask ramdisk` once (`cargo xtask test` \
             builds it before the tests)",
            agent.display()
        )));
    }
    let out = cache.join("inspect");
    let options = image::ramdisk::RamdiskOptions::new(
        out.clone(),
        agent,
        image::ramdisk::KernelSource::Apt {
            metapackage: image::kernel::DEFAULT_METAPACKAGE.to_owned(),
        },
        image::kernel::default_cache_dir(),
    );
    image::ramdisk::build(&options, &image::progress::Quiet)
        .map_err(|err| LabError::Missing(format!("the inspection ramdisk: {err}")))?;
    Ok(TestRamdisk {
        kernel: out.join("vmlinuz"),
        initramfs: out.join("initramfs"),
    })
}
