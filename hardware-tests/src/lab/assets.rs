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

/// The lab's host image and the config-signing key pair it trusts.
#[derive(Debug, Clone)]
pub struct HostImage {
    /// The build's output directory (`manifest.json`, `host.raw.zst`, ...).
    pub dir: PathBuf,
    pub manifest: model::host::HostManifest,
    /// `config-signing.key` and `config-signing.pub`: placed in the lab
    /// provisioner's STATE before it starts, so it seals configs with the key
    /// whose public half the image carries (`/etc/provisioner/trust.pub`).
    pub signing_key: PathBuf,
    pub public_key: PathBuf,
}

/// The lab's config-signing key pair, created once in `cache` (a fresh
/// random Ed25519 seed, mode 0600): `(private, public)`.
pub fn lab_signing_key(cache: &Path) -> Result<(PathBuf, PathBuf), LabError> {
    std::fs::create_dir_all(cache).map_err(io(format!("creating {}", cache.display())))?;
    let private = cache.join("config-signing.key");
    let public = cache.join("config-signing.pub");
    let key = match std::fs::read_to_string(&private) {
        Ok(text) => model::deploy::parse_signing_key(&text)
            .map_err(|e| LabError::Missing(format!("{}: {e}: delete it", private.display())))?,
        Err(_) => {
            let key = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
            let partial = private.with_extension(format!("{}.partial", std::process::id()));
            {
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt as _;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&partial)
                    .map_err(io(format!("creating {}", partial.display())))?;
                file.write_all(model::deploy::signing_key_text(&key).as_bytes())
                    .map_err(io(format!("writing {}", partial.display())))?;
            }
            std::fs::rename(&partial, &private).map_err(io("moving the lab key in place"))?;
            key
        }
    };
    std::fs::write(
        &public,
        model::deploy::public_key_text(&key.verifying_key()),
    )
    .map_err(io(format!("writing {}", public.display())))?;
    Ok((private, public))
}

/// Builds the lab's host image (version `version`) with the static
/// `node-agent` (as [`inspection_ramdisk`] finds it) and the lab's signing
/// key ([`lab_signing_key`]) into `<target>/lab-assets/host-VERSION/`. Built
/// every time (seconds with the package cache): the agent changes between runs.
pub fn host_image(version: &str) -> Result<HostImage, LabError> {
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
    let (signing_key, public_key) = lab_signing_key(&cache)?;
    let out = cache.join(format!("host-{version}"));
    let options = image::host::HostOptions {
        out: out.clone(),
        agent,
        kernel: image::ramdisk::KernelSource::Apt {
            metapackage: image::kernel::DEFAULT_METAPACKAGE.to_owned(),
        },
        cache: image::kernel::default_cache_dir(),
        version: version.to_owned(),
        trust_key: Some(public_key.clone()),
        keep_raw: false,
        epoch: image::host::source_date_epoch(None)
            .map_err(|e| LabError::Missing(format!("the host image's epoch: {e}")))?,
    };
    let manifest = image::host::build(&options, &image::progress::Quiet)
        .map_err(|err| LabError::Missing(format!("the lab's host image: {err}")))?;
    Ok(HostImage {
        dir: out,
        manifest,
        signing_key,
        public_key,
    })
}
