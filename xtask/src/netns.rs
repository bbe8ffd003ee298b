//! Two network namespaces joined by a veth pair, for DHCP between a server and
//! its clients without touching any other network. Removed on Drop (panics
//! included): deleting a namespace deletes its end of the veth pair.
//!
//! Used by `cargo xtask bench dhcp` and, through `#[path]`, by the DHCP netns
//! tests of the provisioner, so both build the same topology.

use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

/// `server` and `client` namespaces; the server side has `server_cidr`, the
/// client side `client_cidr` (perfdhcp needs an address on its interface;
/// udhcpc sets its own).
#[derive(Debug)]
pub struct VethPair {
    pub server_ns: String,
    pub client_ns: String,
    pub server_if: String,
    pub client_if: String,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running `ip` (package iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {} (network namespaces need root)",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl VethPair {
    /// Names are `{prefix}{pid}{tag}` plus `s`/`c` (namespaces) and `a`/`b`
    /// (interfaces): unique per process and per `tag`, at most 15 characters
    /// for a 2-character prefix and a tag of up to 3.
    pub fn new(
        prefix: &str,
        tag: &str,
        server_cidr: &str,
        client_cidr: Option<&str>,
    ) -> Result<VethPair> {
        let base = format!("{prefix}{}{tag}", std::process::id());
        let pair = VethPair {
            server_ns: format!("{base}s"),
            client_ns: format!("{base}c"),
            server_if: format!("{base}a"),
            client_if: format!("{base}b"),
        };
        anyhow::ensure!(
            pair.server_if.len() <= 15,
            "interface name {} is longer than 15 characters: shorten the tag",
            pair.server_if
        );
        // Leftovers of a crashed run with the same pid go first.
        for ns in [&pair.server_ns, &pair.client_ns] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        // From here on, Drop cleans up whatever was created.
        ip(&["netns", "add", &pair.server_ns])?;
        ip(&["netns", "add", &pair.client_ns])?;
        let (s, c) = (&pair.server_ns, &pair.client_ns);
        let (a, b) = (&pair.server_if, &pair.client_if);
        ip(&["link", "add", a, "type", "veth", "peer", "name", b])?;
        ip(&["link", "set", a, "netns", s])?;
        ip(&["link", "set", b, "netns", c])?;
        ip(&["-n", s, "addr", "add", server_cidr, "dev", a])?;
        if let Some(cidr) = client_cidr {
            ip(&["-n", c, "addr", "add", cidr, "dev", b])?;
        }
        for (ns, dev) in [(s, a), (c, b), (s, &"lo".to_owned()), (c, &"lo".to_owned())] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(pair)
    }

    /// `program` run inside the server namespace.
    pub fn in_server(&self, program: &str) -> Command {
        in_ns(&self.server_ns, program)
    }

    /// `program` run inside the client namespace.
    pub fn in_client(&self, program: &str) -> Command {
        in_ns(&self.client_ns, program)
    }

    /// Sets the client interface's MAC address.
    pub fn set_client_mac(&self, mac: &str) -> Result<()> {
        ip(&[
            "-n",
            &self.client_ns,
            "link",
            "set",
            &self.client_if,
            "address",
            mac,
        ])
    }
}

fn in_ns(ns: &str, program: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, program]);
    cmd
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for ns in [&self.server_ns, &self.client_ns] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}
