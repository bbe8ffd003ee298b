//! Debian's kernel, fetched with apt and cached: `apt-get download linux-image-amd64` (the
//! metapackage), its `Depends` resolved to the versioned `linux-image-<abi>-amd64` package,
//! that package downloaded too, kept under the cache directory and unpacked there with
//! `dpkg-deb -x` (no install, no root needed beyond what apt-get download needs).
//!
//! Invariants: the parsing of package fields is pure ([`kernel_dependency`]); commands and
//! files are touched only by [`fetch`] and [`unpack`]. A cached package is reused as is (apt
//! checked its hash when it downloaded it); an unpacked tree appears under its final name
//! only once complete (unpacked beside it, then renamed), so an interrupted run never
//! leaves a half tree that a later run would trust.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::file_error;
use crate::progress::Progress;

/// The metapackage that always points at Debian's current amd64 kernel.
pub const DEFAULT_METAPACKAGE: &str = "linux-image-amd64";

/// Why the kernel could not be fetched or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A tool could not be started at all.
    #[error(
        "cannot run `{command}`: install it (Debian packages `apt` and `dpkg`), or pass --kernel-deb FILE"
    )]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// A tool ran and failed.
    #[error("`{command}` failed ({status}): {stderr}\nhint: {hint}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
        hint: &'static str,
    },
    /// The metapackage depends on no `linux-image-*` package.
    #[error(
        "package {deb} depends on no linux-image-* package (Depends: {depends:?}); pass --kernel-deb FILE with a kernel package"
    )]
    NoKernelDependency { deb: PathBuf, depends: String },
    /// apt has no candidate version of a package (`image::packages`).
    #[error(
        "apt knows no installable version of {package} (`apt-cache show --no-all-versions {package}` printed no Version:); run `apt-get update`, and check that the bookworm main archive is in the apt sources"
    )]
    NoCandidate { package: String },
    /// The unpacked package does not look like a kernel package.
    #[error("{deb} is not a kernel package as expected: {what}")]
    Layout { deb: PathBuf, what: String },
    #[error(transparent)]
    File(#[from] crate::FileError),
}

/// A kernel package, unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// The versioned package name, e.g. `linux-image-6.1.0-56-amd64`.
    pub package: String,
    /// The package's Debian version, e.g. `6.1.192-2`.
    pub package_version: String,
    /// The `.deb` it came from (in the cache, or the file given with `--kernel-deb`).
    pub deb: PathBuf,
    /// The kernel release (`uname -r`), e.g. `6.1.0-56-amd64`.
    pub release: String,
    /// The kernel image (`boot/vmlinuz-<release>` in the package).
    pub vmlinuz: PathBuf,
    /// The module tree (`lib/modules/<release>` in the package).
    pub modules_dir: PathBuf,
}

/// The default cache directory: `$XDG_CACHE_HOME/provisioner`, else `~/.cache/provisioner`,
/// else (no home, e.g. a bare service) `/var/cache/provisioner`.
pub fn default_cache_dir() -> PathBuf {
    cache_dir_from(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
}

fn cache_dir_from(xdg_cache_home: Option<OsString>, home: Option<OsString>) -> PathBuf {
    if let Some(dir) = xdg_cache_home.filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("provisioner");
    }
    if let Some(home) = home.filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".cache/provisioner");
    }
    PathBuf::from("/var/cache/provisioner")
}

/// Picks the versioned kernel package out of a metapackage's `Depends` field, e.g.
/// `linux-image-6.1.0-56-amd64 (= 6.1.192-2)` -> (`linux-image-6.1.0-56-amd64`,
/// `Some("6.1.192-2")`). Alternatives (`a | b`) are read in order; the first
/// `linux-image-*` package that is not itself a metapackage name wins.
pub fn kernel_dependency(depends: &str) -> Option<(String, Option<String>)> {
    depends
        .split([',', '|'])
        .map(str::trim)
        .filter_map(|dep| {
            let (name, rest) = match dep.find(|c: char| c.is_whitespace() || c == '(') {
                Some(i) => (&dep[..i], dep[i..].trim()),
                None => (dep, ""),
            };
            let name = name.split(':').next().unwrap_or(name);
            // A versioned kernel package has a digit right after `linux-image-`.
            let versioned = name
                .strip_prefix("linux-image-")
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()));
            if !versioned {
                return None;
            }
            let version = rest
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|r| r.trim().strip_prefix('='))
                .map(|v| v.trim().to_owned());
            Some((name.to_owned(), version))
        })
        .next()
}

/// A file name safe in the cache for a package and version (`:` of epochs becomes `%3a`,
/// as apt does).
pub(crate) fn deb_file_name(package: &str, version: &str) -> String {
    format!("{package}_{}_amd64.deb", version.replace(':', "%3a"))
}

/// Runs a command and returns its stdout; a failure carries the last lines of stderr.
pub(crate) fn run(command: &mut Command, hint: &'static str) -> Result<String, KernelError> {
    let shown = format!("{command:?}").replace('"', "");
    let out = command.output().map_err(|source| KernelError::Spawn {
        command: shown.clone(),
        source,
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<_> = stderr.lines().rev().take(5).collect();
        return Err(KernelError::Failed {
            command: shown,
            status: out.status,
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            hint,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One field of a `.deb`'s control file (`dpkg-deb -f DEB FIELD`).
pub(crate) fn deb_field(deb: &Path, field: &str) -> Result<String, KernelError> {
    let out = run(
        Command::new("dpkg-deb").arg("-f").arg(deb).arg(field),
        "is the file a complete .deb package?",
    )?;
    Ok(out.trim().to_owned())
}

/// Downloads `package[=version]` with `apt-get download` into `dir` and returns the file.
pub(crate) fn apt_download(
    dir: &Path,
    package: &str,
    version: Option<&str>,
) -> Result<PathBuf, KernelError> {
    let spec = match version {
        Some(v) => format!("{package}={v}"),
        None => package.to_owned(),
    };
    let before: Vec<_> = list_debs(dir)?;
    run(
        Command::new("apt-get")
            .arg("download")
            // Root downloads into a directory `_apt` cannot write to; stay quiet about it.
            .arg("-o")
            .arg("APT::Sandbox::User=root")
            .arg(&spec)
            .current_dir(dir),
        "run `apt-get update` (the package lists may be stale), check the network, \
         or pass --kernel-deb FILE with a kernel package you already have",
    )?;
    let new: Vec<_> = list_debs(dir)?
        .into_iter()
        .filter(|d| !before.contains(d))
        .collect();
    match new.as_slice() {
        [one] => Ok(one.clone()),
        _ => {
            // apt names the file PACKAGE_VERSION_ARCH.deb; an already present file is not new.
            let prefix = format!("{package}_");
            list_debs(dir)?
                .into_iter()
                .find(|d| {
                    d.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&prefix))
                })
                .ok_or_else(|| KernelError::Layout {
                    deb: dir.join(&prefix),
                    what: format!("`apt-get download {spec}` wrote no {prefix}*.deb"),
                })
        }
    }
}

fn list_debs(dir: &Path) -> Result<Vec<PathBuf>, KernelError> {
    let mut debs = vec![];
    for entry in
        std::fs::read_dir(dir).map_err(file_error(dir, "reading the download directory"))?
    {
        let path = entry
            .map_err(file_error(dir, "reading the download directory"))?
            .path();
        if path.extension().is_some_and(|e| e == "deb") {
            debs.push(path);
        }
    }
    debs.sort();
    Ok(debs)
}

/// Fetches Debian's current kernel through `metapackage` (normally
/// [`DEFAULT_METAPACKAGE`]) into `cache` (`cache/kernel/`), downloading only what is not
/// cached yet, and unpacks it.
pub fn fetch(
    cache: &Path,
    metapackage: &str,
    progress: &dyn Progress,
) -> Result<Kernel, KernelError> {
    let debs = cache.join("kernel");
    std::fs::create_dir_all(&debs).map_err(file_error(&debs, "creating the kernel cache"))?;
    // Each run downloads into its own scratch directory, so parallel runs do not mix files.
    let scratch = tempdir_in(&debs)?;
    let step = progress.begin(&format!("resolving {metapackage} with apt-get download"));
    let meta = apt_download(scratch.path(), metapackage, None)?;
    let depends = deb_field(&meta, "Depends")?;
    let (package, version) =
        kernel_dependency(&depends).ok_or_else(|| KernelError::NoKernelDependency {
            deb: meta.clone(),
            depends: depends.clone(),
        })?;
    let version = match version {
        Some(v) => v,
        // An unversioned dependency: take the version apt would install.
        None => deb_field(&meta, "Version")?,
    };
    progress.finish(step, &format!("{package} {version}"));
    let cached = debs.join(deb_file_name(&package, &version));
    if cached.is_file() {
        let step = progress.begin("kernel package");
        progress.finish(step, &format!("cached: {}", cached.display()));
    } else {
        let step = progress.begin(&format!("downloading {package} {version}"));
        let deb = apt_download(scratch.path(), &package, Some(&version))?;
        std::fs::rename(&deb, &cached)
            .map_err(file_error(&cached, "moving the package into the cache"))?;
        let size = std::fs::metadata(&cached).map(|m| m.len()).unwrap_or(0);
        progress.finish(step, &format!("{} MiB", size / (1 << 20)));
    }
    unpack(&cached, cache, progress)
}

pub(crate) fn tempdir_in(dir: &Path) -> Result<tempfile::TempDir, KernelError> {
    let scratch = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(dir)
        .map_err(file_error(dir, "creating a scratch directory"))?;
    Ok(scratch)
}

/// Unpacks a kernel `.deb` under `cache/kernel/` (once: an unpacked tree is reused) and
/// finds its kernel image and module tree.
pub fn unpack(deb: &Path, cache: &Path, progress: &dyn Progress) -> Result<Kernel, KernelError> {
    let package = deb_field(deb, "Package")?;
    let package_version = deb_field(deb, "Version")?;
    let base = cache.join("kernel");
    std::fs::create_dir_all(&base).map_err(file_error(&base, "creating the kernel cache"))?;
    let root = base.join(deb_file_name(&package, &package_version).trim_end_matches(".deb"));
    if !root.is_dir() {
        let step = progress.begin(&format!("unpacking {package} with dpkg-deb -x"));
        unpack_into(deb, &root)?;
        progress.finish(step, &root.display().to_string());
    }
    locate(deb, &root, package, package_version)
}

/// Unpacks `deb` with `dpkg-deb -x` beside `root` (in its parent directory), then renames
/// the complete tree to `root`.
pub(crate) fn unpack_into(deb: &Path, root: &Path) -> Result<(), KernelError> {
    let base = root.parent().unwrap_or(Path::new("."));
    let scratch = tempdir_in(base)?;
    run(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb)
            .arg(scratch.path()),
        "is the file a complete .deb package? Delete it from the cache to fetch it again",
    )?;
    let unpacked = scratch.keep();
    if let Err(e) = std::fs::rename(&unpacked, root) {
        // Another run may have won the race; its tree is as good as ours.
        let _ = std::fs::remove_dir_all(&unpacked);
        if !root.is_dir() {
            return Err(file_error(root, "moving the unpacked package into the cache")(e).into());
        }
    }
    Ok(())
}

/// Finds the release, kernel image and module tree in an unpacked kernel package.
fn locate(
    deb: &Path,
    root: &Path,
    package: String,
    package_version: String,
) -> Result<Kernel, KernelError> {
    let layout = |what: String| KernelError::Layout {
        deb: deb.to_owned(),
        what,
    };
    // Debian 12 uses /lib/modules; later releases /usr/lib/modules.
    let modules_base = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| root.join(d))
        .find(|d| d.is_dir())
        .ok_or_else(|| layout("no lib/modules or usr/lib/modules directory".into()))?;
    let mut releases = vec![];
    for entry in std::fs::read_dir(&modules_base).map_err(file_error(&modules_base, "reading"))? {
        let entry = entry.map_err(file_error(&modules_base, "reading"))?;
        if entry.path().is_dir() {
            releases.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    let release = match releases.as_slice() {
        [one] => one.clone(),
        _ => {
            return Err(layout(format!(
                "expected one kernel release under {}, found {releases:?}",
                modules_base.display()
            )));
        }
    };
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        return Err(layout(format!("no boot/vmlinuz-{release}")));
    }
    Ok(Kernel {
        package,
        package_version,
        deb: deb.to_owned(),
        modules_dir: modules_base.join(&release),
        release,
        vmlinuz,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_dependency_of_debian_metapackages() {
        let cases = [
            (
                "linux-image-6.1.0-56-amd64 (= 6.1.192-2)",
                Some(("linux-image-6.1.0-56-amd64", Some("6.1.192-2"))),
            ),
            (
                "linux-image-6.12.95+deb13-amd64 (= 6.12.95-1~bpo12+1)",
                Some(("linux-image-6.12.95+deb13-amd64", Some("6.12.95-1~bpo12+1"))),
            ),
            (
                "initramfs-tools | linux-initramfs-tool, linux-image-6.1.0-9-amd64",
                Some(("linux-image-6.1.0-9-amd64", None)),
            ),
            (
                "linux-image-amd64:amd64 (>= 1), linux-image-6.1.0-1-amd64:amd64 (= 1.2)",
                Some(("linux-image-6.1.0-1-amd64", Some("1.2"))),
            ),
            ("linux-image-amd64, kmod", None),
            ("", None),
        ];
        for (depends, want) in cases {
            let got = kernel_dependency(depends);
            let want = want.map(|(p, v)| (p.to_owned(), v.map(str::to_owned)));
            assert_eq!(got, want, "{depends}");
        }
    }

    #[test]
    fn cache_file_names_escape_epochs() {
        assert_eq!(
            deb_file_name("linux-image-6.1.0-56-amd64", "1:6.1.192-2"),
            "linux-image-6.1.0-56-amd64_1%3a6.1.192-2_amd64.deb"
        );
    }

    #[test]
    fn cache_dir_follows_xdg_then_home() {
        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(
            cache_dir_from(os("/c"), os("/h")),
            Path::new("/c/provisioner")
        );
        assert_eq!(
            cache_dir_from(os(""), os("/h")),
            Path::new("/h/.cache/provisioner")
        );
        assert_eq!(
            cache_dir_from(None, None),
            Path::new("/var/cache/provisioner")
        );
    }
}
