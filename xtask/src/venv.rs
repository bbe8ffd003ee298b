//! A Python virtualenv under the target directory (`<target>/venv`) for peers that only
//! exist on PyPI (sushy-tools, DMTF's Redfish validators, ...).
//!
//! Creating the venv needs Debian's `python3-venv` (in `deps::DEPS`). Packages are installed
//! only when missing; nothing is ever upgraded.
//!
//! The peer tests include this very file (`#[path]`) to create the venv themselves when it
//! is missing, so `cargo test` works after `cargo xtask deps` alone; `cargo xtask test`
//! prepares it before the tests run. [`PEERS`] is the one list both use.
// Not every item is used by every crate that includes this file.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Every PyPI package the tests need, pinned.
pub const PEERS: &[&str] = &[
    // The Redfish emulator the BMC driver is tested against (provisioner/tests/bmc_sushy.rs).
    "sushy-tools==2.2.0",
    // DMTF's conformance checker, run against the lab's virtual BMC
    // (hardware-tests/tests/vbmc_qemu.rs).
    "redfish-service-validator==3.1.8",
    // OpenStack's Redfish client library (Ironic's), driving the virtual BMC.
    "sushy==5.14.0",
];

/// A virtualenv and the interpreter inside it.
#[derive(Debug, Clone)]
pub struct Venv {
    pub dir: PathBuf,
}

impl Venv {
    pub fn python(&self) -> PathBuf {
        self.dir.join("bin/python")
    }

    /// Path of a console script installed in the venv (e.g. `sushy-emulator`).
    pub fn bin(&self, name: &str) -> PathBuf {
        self.dir.join("bin").join(name)
    }
}

/// The distribution name in a pip requirement (`sushy-tools==2.2.0` -> `sushy-tools`).
pub fn requirement_name(requirement: &str) -> &str {
    let end = requirement
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .unwrap_or(requirement.len());
    requirement[..end].trim()
}

fn check(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Makes sure `<target>/venv` exists and has every requirement in `requirements` installed.
pub fn ensure(target_dir: &Path, requirements: &[&str]) -> Result<Venv> {
    let venv = Venv {
        dir: target_dir.join("venv"),
    };
    if !venv.python().exists() {
        check(
            Command::new("python3").args(["-m", "venv"]).arg(&venv.dir),
            "`python3 -m venv` (on Debian install `python3-venv`)",
        )?;
    }
    let mut missing = vec![];
    for req in requirements {
        let present = Command::new(venv.python())
            .args(["-m", "pip", "show", "--quiet", requirement_name(req)])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .context("running pip in the venv")?
            .success();
        if !present {
            missing.push(*req);
        }
    }
    if !missing.is_empty() {
        println!("venv: installing {}", missing.join(" "));
        check(
            Command::new(venv.python())
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(&missing),
            &format!("pip install {}", missing.join(" ")),
        )?;
    }
    Ok(venv)
}

#[cfg(test)]
mod tests {
    use super::requirement_name;

    #[test]
    fn requirement_names() {
        for (req, name) in [
            ("sushy-tools==2.2.0", "sushy-tools"),
            ("redfish_service_validator", "redfish_service_validator"),
            ("foo>=1,<2", "foo"),
            ("bar[extra]", "bar"),
            ("zope.interface ~= 5.0", "zope.interface"),
        ] {
            assert_eq!(requirement_name(req), name, "{req}");
        }
    }
}
