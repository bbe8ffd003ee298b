//! Network namespaces of our own, removed on drop (which also removes every
//! device inside them): the lab's, with bridge `br0` and tap devices, and
//! [`VethPair`], two namespaces joined by a veth pair, for DHCP between a
//! server and its clients (`cargo xtask bench dhcp` and the provisioner's
//! `dhcp_netns` tests build the same topology with it).
//!
//! Invariants: a [`Netns`] exists only for a namespace this process created
//! (an existing name is refused, never reused or deleted); its devices are
//! created inside it, never in the host's namespace; it is deleted on drop,
//! panics included. Nothing here starts processes: callers spawn the
//! [`Netns::command`]s and kill them by PID.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::LabError;

/// Names start with this prefix plus the process id, so parallel test
/// processes never clash and nobody else's devices are touched.
pub const PREFIX: &str = "px";

/// The longest interface name Linux accepts (`IFNAMSIZ` - 1).
const IFNAME_MAX: usize = 15;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Runs `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<(), LabError> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn {
            what: "ip (Debian package iproute2)".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            command: format!("ip {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// A network namespace created by this process.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `px<pid>n<k>` with loopback up.
    pub fn create() -> Result<Netns, LabError> {
        Netns::create_named(format!(
            "{PREFIX}{}n{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// Creates namespace `name` with loopback up, for callers with their own
    /// naming scheme (which must include the process id). A namespace of that
    /// name that already exists (say, left by a killed run whose process id
    /// is reused) is an error and stays untouched.
    pub fn create_named(name: String) -> Result<Netns, LabError> {
        if Path::new("/run/netns").join(&name).exists() {
            return Err(LabError::Invalid(format!(
                "network namespace {name} already exists (left by a killed run?); \
                 remove it with `ip netns del {name}`"
            )));
        }
        ip(&["netns", "add", &name])?;
        // From here on, Drop removes it whatever happens next.
        let netns = Netns { name };
        netns.ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<(), LabError> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// A command run inside the namespace (`ip netns exec` execs it, so the
    /// child's PID is the program's own).
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Bridge `br0` with `address` (e.g. `10.213.0.1/24`), up.
    pub fn add_bridge(&self, address: &str) -> Result<(), LabError> {
        self.ip(&["link", "add", "br0", "type", "bridge"])?;
        self.ip(&["addr", "add", address, "dev", "br0"])?;
        self.ip(&["link", "set", "br0", "up"])
    }

    /// A tap device on `br0`, up; its name (`px<pid>t<i>`, at most 15 bytes).
    pub fn add_tap(&self, index: usize) -> Result<String, LabError> {
        let tap = format!("{PREFIX}{}t{index}", std::process::id());
        self.ip(&["tuntap", "add", "dev", &tap, "mode", "tap"])?;
        self.ip(&["link", "set", &tap, "master", "br0"])?;
        self.ip(&["link", "set", &tap, "up"])?;
        Ok(tap)
    }

    /// A veth pair created in place, never in the host's namespace: `name`
    /// in this namespace, `peer_name` in `peer`. Both ends are down; deleting
    /// either namespace deletes the pair.
    pub fn add_veth(&self, name: &str, peer: &Netns, peer_name: &str) -> Result<(), LabError> {
        self.ip(&[
            "link", "add", name, "type", "veth", "peer", "name", peer_name, "netns", &peer.name,
        ])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(err) = ip(&["netns", "del", &self.name]) {
            eprintln!(
                "lab: could not remove network namespace {}: {err}",
                self.name
            );
        }
    }
}

/// Namespaces `server` and `client` joined by a veth pair, every link up
/// (loopback included). Removed on drop, panics included.
#[derive(Debug)]
pub struct VethPair {
    pub server: Netns,
    pub client: Netns,
    /// The server's end, in `server`.
    pub server_if: String,
    /// The client's end, in `client`.
    pub client_if: String,
}

impl VethPair {
    /// Names are `{prefix}{pid}{tag}` plus `s`/`c` (namespaces) and `a`/`b`
    /// (interfaces): unique per process and per `tag`, at most 15 characters
    /// for a 2-character prefix and a tag of up to 3. The server end gets
    /// `server_cidr`, the client end `client_cidr` when given (perfdhcp
    /// needs an address on its interface; udhcpc sets its own).
    pub fn create(
        prefix: &str,
        tag: &str,
        server_cidr: &str,
        client_cidr: Option<&str>,
    ) -> Result<VethPair, LabError> {
        let base = format!("{prefix}{}{tag}", std::process::id());
        let (server_if, client_if) = (format!("{base}a"), format!("{base}b"));
        if server_if.len() > IFNAME_MAX {
            return Err(LabError::Invalid(format!(
                "interface name {server_if} is longer than {IFNAME_MAX} characters: \
                 shorten the prefix or the tag"
            )));
        }
        let server = Netns::create_named(format!("{base}s"))?;
        let client = Netns::create_named(format!("{base}c"))?;
        server.add_veth(&server_if, &client, &client_if)?;
        server.ip(&["addr", "add", server_cidr, "dev", &server_if])?;
        if let Some(cidr) = client_cidr {
            client.ip(&["addr", "add", cidr, "dev", &client_if])?;
        }
        server.ip(&["link", "set", &server_if, "up"])?;
        client.ip(&["link", "set", &client_if, "up"])?;
        Ok(VethPair {
            server,
            client,
            server_if,
            client_if,
        })
    }

    /// `program` run inside the server namespace.
    pub fn in_server(&self, program: &str) -> Command {
        self.server.command(program)
    }

    /// `program` run inside the client namespace.
    pub fn in_client(&self, program: &str) -> Command {
        self.client.command(program)
    }

    /// Sets the client end's MAC address (e.g. `52:54:00:77:00:01`).
    pub fn set_client_mac(&self, mac: &str) -> Result<(), LabError> {
        self.client
            .ip(&["link", "set", &self.client_if, "address", mac])
    }
}
