//! BMC drivers behind one async trait: power, boot override, inventory, reachability.
//!
//! [`Bmc`] is the only way the rest of the provisioner touches a BMC. Drivers:
//! [`redfish::RedfishBmc`] (our own thin typed client, see ARCHITECTURE.md for why),
//! [`self::ipmi::IpmiBmc`] (RMCP+ through the `ipmi` crate). With the `testing` feature
//! only (never in the release binary), `fake_redfish` is a small Redfish *service* used by
//! the driver's fault tests, the executor's and daemon's tests and `cargo xtask bench bmc`:
//! the real driver runs against it.
//!
//! Invariants: passwords live in [`Secret`], whose `Debug` and `Display` redact them, so no
//! log line, error or panic message can carry one; every error names the BMC and says what
//! to do; a driver never panics on what a BMC sends.

#[cfg(feature = "testing")]
pub mod fake_redfish;
pub mod fru;
pub mod ipmi;
pub mod redfish;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::site::{BmcKind, BmcUrl};

/// A password or token. `Debug` and `Display` print `[redacted]`; only `Secret::expose`
/// gives the value, and it is called where the value goes on the wire, nowhere else.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the wire only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// User name and password for a BMC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The BMC account.
    pub username: String,
    /// Its password (redacted in `Debug`).
    pub password: Secret,
}

/// How a Redfish driver checks the BMC's TLS certificate. There is no default that skips
/// verification: insecure is always asked for by name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TlsPolicy {
    /// Verify against the built-in web PKI roots (BMCs with a certificate from a public CA).
    #[default]
    WebPki,
    /// Verify against this CA certificate (PEM) only: the usual case for a site CA.
    CaFile(PathBuf),
    /// Do not verify the certificate (`--insecure`). Logged as a warning at connect.
    Insecure,
}

impl From<&crate::site::BmcTls> for TlsPolicy {
    /// The policy a node's declared (and stored) TLS setting asks for.
    fn from(tls: &crate::site::BmcTls) -> Self {
        match tls {
            crate::site::BmcTls::Verify => TlsPolicy::WebPki,
            crate::site::BmcTls::CaFile(path) => TlsPolicy::CaFile(path.clone()),
            crate::site::BmcTls::Insecure => TlsPolicy::Insecure,
        }
    }
}

/// How to reach a BMC: address, credentials, TLS, time limits.
#[derive(Debug, Clone)]
pub struct BmcConfig {
    /// The BMC's address (`redfish://`, `redfish+http://`, `ipmi://`).
    pub(crate) url: BmcUrl,
    /// `None` only for lab emulators that ask for no authentication.
    pub(crate) credentials: Option<Credentials>,
    /// Certificate checking (Redfish over HTTPS only).
    pub tls: TlsPolicy,
    /// Limit for one request (connect included).
    pub timeout: Duration,
    /// How many times a request is retried after a 5xx answer or a connection error.
    pub retries: u32,
    /// First back-off between retries; doubled each time.
    pub backoff: Duration,
}

impl BmcConfig {
    /// Defaults: verified TLS, 20 s per request, 3 retries starting at 500 ms.
    pub fn new(url: BmcUrl, credentials: Option<Credentials>) -> BmcConfig {
        BmcConfig {
            url,
            credentials,
            tls: TlsPolicy::default(),
            timeout: Duration::from_secs(20),
            retries: 3,
            backoff: Duration::from_millis(500),
        }
    }
}

/// Why a BMC operation failed. Every variant names the BMC; the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BmcError {
    /// The password could not be read from its reference (`env:VAR`, `file:PATH`).
    #[error("{bmc}: cannot read the BMC password: {detail}")]
    Credential {
        /// The BMC's URL.
        bmc: String,
        /// Which reference and what is wrong with it.
        detail: String,
    },
    /// The BMC refused the credentials.
    #[error("{bmc}: authentication failed ({detail}): check the user name and password")]
    Auth {
        /// The BMC's URL.
        bmc: String,
        /// What the BMC answered (status, message).
        detail: String,
    },
    /// No connection could be made.
    #[error(
        "{bmc}: unreachable ({detail}): check the address and port, that the BMC is up and \
         that this host can reach its network"
    )]
    Unreachable {
        /// The BMC's URL.
        bmc: String,
        /// What failed.
        detail: String,
    },
    /// The BMC did not answer in time.
    #[error(
        "{bmc}: no answer within {}s while {what}: the BMC may be overloaded or hung; try \
         again, or reset the BMC",
        timeout.as_secs_f64()
    )]
    Timeout {
        /// The BMC's URL.
        bmc: String,
        /// What we were doing.
        what: String,
        /// The limit that passed.
        timeout: Duration,
    },
    /// The certificate could not be checked, or the CA file is unusable.
    #[error("{bmc}: TLS: {detail}")]
    Tls {
        /// The BMC's URL.
        bmc: String,
        /// What is wrong.
        detail: String,
    },
    /// This BMC does not offer the operation.
    #[error("{bmc}: not supported by this BMC: {what}")]
    NotSupported {
        /// The BMC's URL.
        bmc: String,
        /// What is missing (and what the BMC offers instead, when known).
        what: String,
    },
    /// The BMC understood the request and refused it, with its own message.
    #[error("{bmc}: the BMC refused {what} ({code}): {message}")]
    Refused {
        /// The BMC's URL.
        bmc: String,
        /// What we asked.
        what: String,
        /// `HTTP 400` (Redfish) or `completion code 0xd4` (IPMI).
        code: String,
        /// The BMC's own words (Redfish `@Message.ExtendedInfo`, joined).
        message: String,
    },
    /// The BMC answered something we cannot use (malformed JSON, missing required field).
    #[error("{bmc}: unexpected answer to {what}: {detail}; the BMC may need a firmware update")]
    Protocol {
        /// The BMC's URL.
        bmc: String,
        /// What we asked.
        what: String,
        /// What was wrong with the answer.
        detail: String,
    },
    /// The BMC manages several systems and the URL does not say which one.
    #[error(
        "{bmc}: this BMC manages {} systems ({}); add the one you mean to the URL, e.g. {}{}",
        systems.len(),
        systems.join(", "),
        bmc,
        systems.first().map(String::as_str).unwrap_or_default()
    )]
    AmbiguousSystem {
        /// The BMC's URL.
        bmc: String,
        /// The system resources it lists.
        systems: Vec<String>,
    },
}

/// Power state as the BMC reports it (a core type: the store keeps the last reading).
pub use crate::power::PowerState;

/// A power change.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PowerAction {
    /// Power on.
    On,
    /// Ask the OS to shut down (ACPI power button).
    GracefulOff,
    /// Cut power now.
    ForceOff,
    /// Hard reset (the machine stays powered).
    Reset,
    /// Power off, then on again.
    Cycle,
}

impl PowerAction {
    /// The state this action leads to once it has landed.
    pub(crate) fn target_state(self) -> PowerState {
        match self {
            PowerAction::GracefulOff | PowerAction::ForceOff => PowerState::Off,
            PowerAction::On | PowerAction::Reset | PowerAction::Cycle => PowerState::On,
        }
    }
}

/// Reads a BMC password from its site reference: `env:VAR` (this process's environment) or
/// `file:PATH` (the first line). The secret goes straight into a [`Secret`].
pub(crate) fn password_from_reference(bmc: &str, reference: &str) -> Result<Secret, BmcError> {
    let err = |detail: String| BmcError::Credential {
        bmc: bmc.to_owned(),
        detail,
    };
    if let Some(var) = reference.strip_prefix("env:") {
        return std::env::var(var).map(Secret::new).map_err(|_| {
            err(format!(
                "{reference}: the environment variable {var} is not set for the provisioner"
            ))
        });
    }
    if let Some(path) = reference.strip_prefix("file:") {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(format!("{reference}: cannot read {path}: {e}")))?;
        return Ok(Secret::new(text.lines().next().unwrap_or_default()));
    }
    Err(err(format!(
        "{reference:?} is not a password reference (env:VAR or file:PATH)"
    )))
}

/// Where the next boot goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BootDevice {
    /// Network boot (PXE).
    Pxe,
    /// The local disk.
    Disk,
    /// UEFI HTTP boot.
    Http,
}

/// Firmware boot mode for the override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BootMode {
    /// UEFI (the default).
    Uefi,
    /// Legacy BIOS.
    Legacy,
}

/// A boot override: device, once or persistent, firmware mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BootOverride {
    /// Where to boot.
    pub device: BootDevice,
    /// Every boot (true) or the next one only (false).
    pub persistent: bool,
    /// UEFI or legacy.
    pub mode: BootMode,
}

/// What a BMC says about its system. Fields the BMC does not offer are `None` or empty;
/// anything odd while reading (a member that failed, a field of the wrong type) is recorded
/// in `warnings` and the rest is still returned.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Inventory {
    /// The system resource this inventory describes (e.g. `/redfish/v1/Systems/1`).
    pub(crate) system: String,
    /// Manufacturer.
    pub vendor: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Serial number.
    pub serial: Option<String>,
    /// SMBIOS UUID.
    pub uuid: Option<String>,
    /// BIOS/firmware version.
    pub(crate) bios_version: Option<String>,
    /// Power state when read.
    pub power_state: Option<PowerState>,
    /// Total memory from the system summary, GiB.
    pub memory_gib: Option<f64>,
    /// CPU sockets from the system summary.
    pub processor_count: Option<u32>,
    /// Processors (sockets), when the BMC lists them.
    pub(crate) processors: Vec<Processor>,
    /// Memory modules, when the BMC lists them.
    pub(crate) memory: Vec<MemoryModule>,
    /// Network interfaces with their MACs.
    pub nics: Vec<Nic>,
    /// Drives.
    pub(crate) drives: Vec<Drive>,
    /// PCIe devices and network adapters, where the BMC offers them.
    pub(crate) pcie_devices: Vec<PcieDevice>,
    /// What could not be read, and why.
    pub warnings: Vec<String>,
}

/// One processor.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Processor {
    /// Resource id.
    pub(crate) id: String,
    /// Socket name.
    pub(crate) socket: Option<String>,
    /// Manufacturer.
    pub(crate) vendor: Option<String>,
    /// Model string.
    pub(crate) model: Option<String>,
    /// Cores.
    pub(crate) cores: Option<u32>,
    /// Threads.
    pub(crate) threads: Option<u32>,
}

/// One memory module.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MemoryModule {
    /// Resource id.
    pub(crate) id: String,
    /// Capacity, MiB.
    pub(crate) capacity_mib: Option<u64>,
    /// DDR4, DDR5, ...
    pub(crate) memory_type: Option<String>,
    /// Speed, MHz.
    pub(crate) speed_mhz: Option<u32>,
}

/// One network interface.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Nic {
    /// Resource id.
    pub(crate) id: String,
    /// MAC address, lower case.
    pub mac: Option<String>,
    /// Link speed, Mbit/s.
    pub(crate) speed_mbps: Option<u64>,
    /// Link status as the BMC says it.
    pub(crate) link: Option<String>,
}

/// One drive.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Drive {
    /// Resource id.
    pub(crate) id: String,
    /// Model.
    pub(crate) model: Option<String>,
    /// Serial number.
    pub(crate) serial: Option<String>,
    /// Capacity, bytes.
    pub(crate) capacity_bytes: Option<u64>,
    /// HDD, SSD.
    pub(crate) media_type: Option<String>,
    /// SATA, SAS, NVMe.
    pub(crate) protocol: Option<String>,
}

/// One PCIe device or network adapter.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PcieDevice {
    /// Resource id.
    pub(crate) id: String,
    /// Name.
    pub(crate) name: Option<String>,
    /// Manufacturer.
    pub(crate) vendor: Option<String>,
    /// Model.
    pub(crate) model: Option<String>,
    /// `pcie_device` or `network_adapter`.
    pub(crate) kind: String,
}

/// One BMC. Every call is a network round trip (or several); none caches power state.
///
/// Other modules hold an `AnyBmc` (chosen by URL scheme) or are generic over `B: Bmc`;
/// their tests point a real driver at `fake_redfish` (`testing` feature).
pub trait Bmc: Send + Sync + fmt::Debug {
    /// The BMC's URL, for messages.
    fn url(&self) -> &BmcUrl;

    /// Checks that the BMC answers and accepts the credentials.
    fn check(&self) -> impl Future<Output = Result<(), BmcError>> + Send;

    /// The current power state.
    fn power_state(&self) -> impl Future<Output = Result<PowerState, BmcError>> + Send;

    /// Asks for a power change; returns when the BMC accepted it, not when it landed
    /// (see [`wait_for_power`]).
    fn power(&self, action: PowerAction) -> impl Future<Output = Result<(), BmcError>> + Send;

    /// Sets the boot device for the next boot (or every boot).
    fn set_boot(&self, boot: BootOverride) -> impl Future<Output = Result<(), BmcError>> + Send;

    /// Reads the system's inventory.
    fn inventory(&self) -> impl Future<Output = Result<Inventory, BmcError>> + Send;

    /// Ends the session (Redfish: deletes it on the BMC). Calls after this re-authenticate.
    fn close(&self) -> impl Future<Output = Result<(), BmcError>> + Send;
}

/// Any driver, chosen from the URL scheme at run time.
#[derive(Debug)]
pub(crate) enum AnyBmc {
    /// `redfish://`, `redfish+http://`.
    Redfish(redfish::RedfishBmc),
    /// `ipmi://`.
    Ipmi(self::ipmi::IpmiBmc),
}

/// Connects to the BMC `config` names with the driver its scheme asks for.
pub(crate) async fn connect(config: BmcConfig) -> Result<AnyBmc, BmcError> {
    match config.url.kind {
        BmcKind::Redfish { .. } => Ok(AnyBmc::Redfish(redfish::RedfishBmc::connect(config).await?)),
        BmcKind::Ipmi => Ok(AnyBmc::Ipmi(self::ipmi::IpmiBmc::connect(config).await?)),
    }
}

impl Bmc for AnyBmc {
    fn url(&self) -> &BmcUrl {
        match self {
            AnyBmc::Redfish(b) => b.url(),
            AnyBmc::Ipmi(b) => b.url(),
        }
    }

    async fn check(&self) -> Result<(), BmcError> {
        match self {
            AnyBmc::Redfish(b) => b.check().await,
            AnyBmc::Ipmi(b) => b.check().await,
        }
    }

    async fn power_state(&self) -> Result<PowerState, BmcError> {
        match self {
            AnyBmc::Redfish(b) => b.power_state().await,
            AnyBmc::Ipmi(b) => b.power_state().await,
        }
    }

    async fn power(&self, action: PowerAction) -> Result<(), BmcError> {
        match self {
            AnyBmc::Redfish(b) => b.power(action).await,
            AnyBmc::Ipmi(b) => b.power(action).await,
        }
    }

    async fn set_boot(&self, boot: BootOverride) -> Result<(), BmcError> {
        match self {
            AnyBmc::Redfish(b) => b.set_boot(boot).await,
            AnyBmc::Ipmi(b) => b.set_boot(boot).await,
        }
    }

    async fn inventory(&self) -> Result<Inventory, BmcError> {
        match self {
            AnyBmc::Redfish(b) => b.inventory().await,
            AnyBmc::Ipmi(b) => b.inventory().await,
        }
    }

    async fn close(&self) -> Result<(), BmcError> {
        match self {
            AnyBmc::Redfish(b) => b.close().await,
            AnyBmc::Ipmi(b) => b.close().await,
        }
    }
}

/// Polls the power state every `interval` until it is `want` or `timeout` passes. BMCs
/// accept a power action long before it lands (sushy-tools: 1-11 s; real servers: tens of
/// seconds for a graceful shutdown).
pub async fn wait_for_power<B: Bmc>(
    bmc: &B,
    want: PowerState,
    timeout: Duration,
    interval: Duration,
) -> Result<(), BmcError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let state = bmc.power_state().await?;
        if state == want {
            return Ok(());
        }
        if tokio::time::Instant::now() + interval > deadline {
            return Err(BmcError::Timeout {
                bmc: bmc.url().to_string(),
                what: format!("waiting for power {want} (still {state})"),
                timeout,
            });
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show() {
        let creds = Credentials {
            username: "admin".into(),
            password: Secret::new("hunter2"),
        };
        let shown = format!("{creds:?} {} {:?}", creds.password, creds.password);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
        assert_eq!(creds.password.expose(), "hunter2");
    }

    #[test]
    fn errors_name_the_bmc_and_say_what_to_do() {
        let err = BmcError::AmbiguousSystem {
            bmc: "redfish://10.0.0.1:443".into(),
            systems: vec![
                "/redfish/v1/Systems/a".into(),
                "/redfish/v1/Systems/b".into(),
            ],
        };
        assert_eq!(
            err.to_string(),
            "redfish://10.0.0.1:443: this BMC manages 2 systems (/redfish/v1/Systems/a, \
             /redfish/v1/Systems/b); add the one you mean to the URL, e.g. \
             redfish://10.0.0.1:443/redfish/v1/Systems/a"
        );
        let err = BmcError::Timeout {
            bmc: "redfish://h:443".into(),
            what: "reading the power state".into(),
            timeout: Duration::from_millis(1500),
        };
        assert!(
            err.to_string().starts_with(
                "redfish://h:443: no answer within 1.5s while reading the power state"
            )
        );
    }

    #[test]
    fn passwords_come_from_references() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\nignored\n").unwrap();
        let from_file = password_from_reference("b", &format!("file:{}", file.display())).unwrap();
        assert_eq!(from_file.expose(), "s3cret");
        // PATH is always set; its value is not a secret worth hiding in this test.
        let path = std::env::var("PATH").unwrap();
        assert_eq!(
            password_from_reference("b", "env:PATH").unwrap().expose(),
            path
        );
        for (reference, expected) in [
            ("env:PROVISIONER_TEST_UNSET_VARIABLE", "is not set"),
            ("file:/nonexistent/pw", "cannot read /nonexistent/pw"),
            ("plain", "not a password reference"),
        ] {
            let err = password_from_reference("redfish://b:443", reference).unwrap_err();
            assert!(matches!(err, BmcError::Credential { .. }), "{err}");
            let text = err.to_string();
            assert!(
                text.starts_with("redfish://b:443: cannot read the BMC password"),
                "{text}"
            );
            assert!(text.contains(expected), "{text}");
        }
    }

    #[test]
    fn actions_lead_to_states() {
        assert_eq!(PowerAction::ForceOff.target_state(), PowerState::Off);
        assert_eq!(PowerAction::GracefulOff.target_state(), PowerState::Off);
        assert_eq!(PowerAction::Cycle.target_state(), PowerState::On);
        assert_eq!(PowerAction::Reset.target_state(), PowerState::On);
    }

    #[tokio::test]
    async fn ipmi_needs_credentials() {
        let url: BmcUrl = "ipmi://127.0.0.1:6230".parse().unwrap();
        let err = connect(BmcConfig::new(url, None)).await.unwrap_err();
        assert!(matches!(err, BmcError::Auth { .. }), "{err}");
        assert!(err.to_string().contains("ipmi://127.0.0.1:6230"), "{err}");
    }
}
