//! The IPMI driver: IPMI 2.0 over LAN (RMCP+, "lanplus") through the `ipmi` crate, which
//! negotiates cipher suite 3 (RAKP-HMAC-SHA1, HMAC-SHA1-96 integrity, AES-CBC-128
//! confidentiality) and retransmits on UDP loss. Its blocking client runs on tokio's
//! blocking threads (its async session setup is not `Send`). Chassis status and control use
//! its typed commands; Set/Get System Boot Options are raw messages built here
//! (`boot_flags` and `parse_boot_flags` are pure).
//!
//! Invariants: the password is a [`Secret`](super::Secret) and only handed to the session handshake; every
//! exchange is bounded (per-attempt timeout times attempts); the session is closed by
//! `close`, or in the background when the driver is dropped; a BMC's answer never makes
//! this module panic.

use std::net::SocketAddr;
use std::time::Duration;

use super::{
    Bmc, BmcConfig, BmcError, BootDevice, BootMode, BootOverride, Credentials, Inventory,
    PowerAction, PowerState,
};
use crate::site::BmcUrl;

use ::ipmi::BlockingClient as Client;

/// Application network function.
const NETFN_APP: u8 = 0x06;
/// Set Session Privilege Level.
const CMD_SET_SESSION_PRIVILEGE: u8 = 0x3b;
/// Administrator.
const PRIVILEGE_ADMIN: u8 = 0x04;
/// Storage network function (FRU).
const NETFN_STORAGE: u8 = 0x0a;
/// Get FRU Inventory Area Info.
const CMD_FRU_INFO: u8 = 0x10;
/// Read FRU Data.
const CMD_READ_FRU: u8 = 0x11;
/// FRU bytes asked for per Read FRU Data (fits every RMCP+ payload).
const FRU_CHUNK: u16 = 32;
/// FRU images larger than this are not read (the areas we use sit at the start).
const FRU_MAX: u16 = 4096;
/// Chassis network function.
const NETFN_CHASSIS: u8 = 0x00;
/// Set System Boot Options.
const CMD_SET_BOOT_OPTIONS: u8 = 0x08;
/// Get System Boot Options.
const CMD_GET_BOOT_OPTIONS: u8 = 0x09;
/// Boot option parameter 5: boot flags.
const PARAM_BOOT_FLAGS: u8 = 0x05;

/// The five data bytes of boot-flags parameter 5 (IPMI 2.0 table 28-14) for `boot`:
/// byte 1 = valid (bit 7), persistent (bit 6), EFI (bit 5); byte 2 = device selector in bits
/// 5:2 (0001b PXE, 0010b default hard disk). HTTP boot has no IPMI selector.
pub(crate) fn boot_flags(boot: BootOverride) -> Option<[u8; 5]> {
    let device = match boot.device {
        BootDevice::Pxe => 0x04,
        BootDevice::Disk => 0x08,
        BootDevice::Http => return None,
    };
    let mut flags = 0x80;
    if boot.persistent {
        flags |= 0x40;
    }
    if boot.mode == BootMode::Uefi {
        flags |= 0x20;
    }
    Some([flags, device, 0, 0, 0])
}

/// Reads the answer to Get System Boot Options parameter 5 (after the completion code:
/// version, parameter, then the five flag bytes): the device, if one is forced, and the
/// persistent and EFI bits.
pub(crate) fn parse_boot_flags(data: &[u8]) -> Option<(Option<BootDevice>, bool, bool)> {
    let [_version, param, flags, device, ..] = data else {
        return None;
    };
    if param & 0x7f != PARAM_BOOT_FLAGS {
        return None;
    }
    let device = match (device >> 2) & 0x0f {
        0x1 => Some(BootDevice::Pxe),
        0x2 => Some(BootDevice::Disk),
        _ => None,
    };
    Some((device, flags & 0x40 != 0, flags & 0x20 != 0))
}

/// An IPMI GUID as text. IPMI sends the 16 bytes least significant first; like
/// `ipmitool mc guid`, the bytes are reversed and printed as 8-4-4-4-12 hex digits.
pub(crate) fn guid_text(bytes: &[u8; 16]) -> String {
    let hex: String = bytes.iter().rev().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Manufacturer names of common IANA enterprise numbers (Get Device ID).
fn vendor_name(iana: u32) -> String {
    match iana {
        2 => "IBM".to_owned(),
        11 => "HPE".to_owned(),
        343 => "Intel".to_owned(),
        674 => "Dell".to_owned(),
        10876 => "Supermicro".to_owned(),
        19046 => "Lenovo".to_owned(),
        20974 => "ASRock Rack".to_owned(),
        other => format!("IANA enterprise {other}"),
    }
}

/// What an IPMI completion code means, for messages.
fn completion_text(code: u8) -> &'static str {
    match code {
        0xc0 => "node busy",
        0xc1 => "invalid command",
        0xc3 => "timeout while processing the command",
        0xc7 | 0xc8 => "request data length invalid",
        0xc9 => "parameter out of range",
        0xcc => "invalid data field in request",
        0xd4 => "insufficient privilege level",
        0xd5 => "command not supported in the present state",
        0xd6 => "command sub-function disabled or unavailable",
        0x80 => "parameter not supported",
        0xff => "unspecified error",
        _ => "see the IPMI completion codes",
    }
}

/// A connected IPMI BMC.
pub struct IpmiBmc {
    url: BmcUrl,
    name: String,
    target: SocketAddr,
    credentials: Credentials,
    attempt_timeout: Duration,
    retries: u32,
    /// `None` after `close`: the next call opens a new session.
    client: tokio::sync::Mutex<Option<Client>>,
}

impl std::fmt::Debug for IpmiBmc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client holds session keys: show only where it points.
        f.debug_struct("IpmiBmc")
            .field("url", &self.name)
            .field("target", &self.target)
            .field("username", &self.credentials.username)
            .finish_non_exhaustive()
    }
}

impl IpmiBmc {
    /// Opens an RMCP+ session (Administrator privilege) with the BMC `config` names.
    pub async fn connect(config: BmcConfig) -> Result<IpmiBmc, BmcError> {
        let name = config.url.to_string();
        let credentials = config.credentials.ok_or_else(|| BmcError::Auth {
            bmc: name.clone(),
            detail: "IPMI needs a user name and password".to_owned(),
        })?;
        let target = tokio::net::lookup_host((config.url.host.as_str(), config.url.port))
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| BmcError::Unreachable {
                bmc: name.clone(),
                detail: format!("cannot resolve {}", config.url.host),
            })?;
        // The configured timeout bounds the whole exchange, retransmissions included.
        let attempts = config.retries + 1;
        let attempt_timeout =
            (config.timeout / attempts).clamp(Duration::from_millis(200), Duration::from_secs(2));
        let bmc = IpmiBmc {
            url: config.url,
            name,
            target,
            credentials,
            attempt_timeout,
            retries: config.retries,
            client: tokio::sync::Mutex::new(None),
        };
        bmc.session().await?;
        Ok(bmc)
    }

    fn error(&self, err: ::ipmi::Error, what: &str) -> BmcError {
        let bmc = self.name.clone();
        match err {
            ::ipmi::Error::Timeout => BmcError::Timeout {
                bmc,
                what: what.to_owned(),
                timeout: self.attempt_timeout * (self.retries + 1),
            },
            ::ipmi::Error::Io(e) => BmcError::Unreachable {
                bmc,
                detail: format!("{what}: {e}"),
            },
            ::ipmi::Error::AuthenticationFailed(detail) => BmcError::Auth {
                bmc,
                detail: format!("RMCP+ handshake: {detail}"),
            },
            ::ipmi::Error::Unsupported(detail) => BmcError::NotSupported {
                bmc,
                what: format!("{what}: {detail} (cipher suite 3 is required)"),
            },
            ::ipmi::Error::CompletionCode { completion_code } => BmcError::Refused {
                bmc,
                what: what.to_owned(),
                code: format!("completion code {completion_code:#04x}"),
                message: completion_text(completion_code).to_owned(),
            },
            other => BmcError::Protocol {
                bmc,
                what: what.to_owned(),
                detail: other.to_string(),
            },
        }
    }

    /// Runs `f` on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce() -> Result<T, ::ipmi::Error> + Send + 'static,
    ) -> Result<T, BmcError> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| BmcError::Protocol {
                bmc: self.name.clone(),
                what: what.to_owned(),
                detail: format!("the IPMI exchange stopped: {e}"),
            })?
            .map_err(|e| self.error(e, what))
    }

    /// The open session, opened first when there is none.
    async fn session(&self) -> Result<Client, BmcError> {
        let mut guard = self.client.lock().await;
        if let Some(client) = &*guard {
            return Ok(client.clone());
        }
        let builder = Client::builder(self.target)
            .username(&self.credentials.username)
            .password(self.credentials.password.expose())
            .privilege_level(::ipmi::PrivilegeLevel::Administrator)
            .timeout(self.attempt_timeout)
            .retries(self.retries);
        // An RMCP+ session starts at User privilege on many BMCs (ipmi_sim among them):
        // raise it to Administrator as ipmitool does, or chassis control is refused.
        let client = self
            .blocking("opening an RMCP+ session", move || {
                let client = builder.build()?;
                let response =
                    client.send_raw(NETFN_APP, CMD_SET_SESSION_PRIVILEGE, &[PRIVILEGE_ADMIN])?;
                if response.completion_code != 0 {
                    return Err(::ipmi::Error::CompletionCode {
                        completion_code: response.completion_code,
                    });
                }
                Ok(client)
            })
            .await?;
        *guard = Some(client.clone());
        Ok(client)
    }

    /// Runs `f` with the session on a blocking thread.
    async fn call<T: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce(&Client) -> Result<T, ::ipmi::Error> + Send + 'static,
    ) -> Result<T, BmcError> {
        let client = self.session().await?;
        self.blocking(what, move || f(&client)).await
    }

    async fn raw(&self, netfn: u8, cmd: u8, data: &[u8], what: &str) -> Result<Vec<u8>, BmcError> {
        let data = data.to_vec();
        let response = self
            .call(what, move |c| c.send_raw(netfn, cmd, &data))
            .await?;
        if response.completion_code != 0 {
            return Err(self.error(
                ::ipmi::Error::CompletionCode {
                    completion_code: response.completion_code,
                },
                what,
            ));
        }
        Ok(response.data)
    }

    /// The FRU image of FRU device 0 (the system's), read in chunks.
    pub(crate) async fn read_fru(&self) -> Result<Vec<u8>, BmcError> {
        let what = "reading the FRU inventory";
        let info = self.raw(NETFN_STORAGE, CMD_FRU_INFO, &[0], what).await?;
        let [lo, hi, ..] = info[..] else {
            return Err(BmcError::Protocol {
                bmc: self.name.clone(),
                what: what.to_owned(),
                detail: format!("FRU area info {info:02x?} is too short"),
            });
        };
        let size = u16::from_le_bytes([lo, hi]).min(FRU_MAX);
        let mut image = Vec::with_capacity(usize::from(size));
        let mut offset = 0u16;
        while offset < size {
            let count = FRU_CHUNK.min(size - offset);
            let [off_lo, off_hi] = offset.to_le_bytes();
            let chunk = self
                .raw(
                    NETFN_STORAGE,
                    CMD_READ_FRU,
                    &[0, off_lo, off_hi, count as u8],
                    what,
                )
                .await?;
            let got = chunk.first().map_or(0, |n| usize::from(*n));
            let bytes = chunk.get(1..1 + got).unwrap_or_default();
            if bytes.is_empty() {
                break;
            }
            image.extend_from_slice(bytes);
            offset += bytes.len() as u16;
        }
        Ok(image)
    }

    /// The boot flags as the BMC reports them: forced device, persistent, EFI.
    pub async fn boot_flags(&self) -> Result<(Option<BootDevice>, bool, bool), BmcError> {
        let what = "reading the boot flags";
        let data = self
            .raw(
                NETFN_CHASSIS,
                CMD_GET_BOOT_OPTIONS,
                &[PARAM_BOOT_FLAGS, 0, 0],
                what,
            )
            .await?;
        parse_boot_flags(&data).ok_or_else(|| BmcError::Protocol {
            bmc: self.name.clone(),
            what: what.to_owned(),
            detail: format!("answer {data:02x?} is not boot-flags parameter 5"),
        })
    }
}

impl Bmc for IpmiBmc {
    fn url(&self) -> &BmcUrl {
        &self.url
    }

    async fn check(&self) -> Result<(), BmcError> {
        self.call("checking the BMC (Get Device ID)", |c| c.get_device_id())
            .await
            .map(drop)
    }

    async fn power_state(&self) -> Result<PowerState, BmcError> {
        let status = self
            .call("reading the power state", |c| c.get_chassis_status())
            .await?;
        Ok(if status.system_power_on {
            PowerState::On
        } else {
            PowerState::Off
        })
    }

    async fn power(&self, action: PowerAction) -> Result<(), BmcError> {
        // On, off and force-off are idempotent here, as with Redfish.
        if matches!(
            action,
            PowerAction::On | PowerAction::GracefulOff | PowerAction::ForceOff
        ) && self.power_state().await? == action.target_state()
        {
            return Ok(());
        }
        let control = match action {
            PowerAction::On => ::ipmi::ChassisControl::PowerUp,
            PowerAction::GracefulOff => ::ipmi::ChassisControl::AcpiSoft,
            PowerAction::ForceOff => ::ipmi::ChassisControl::PowerDown,
            PowerAction::Reset => ::ipmi::ChassisControl::HardReset,
            PowerAction::Cycle => ::ipmi::ChassisControl::PowerCycle,
        };
        self.call(&format!("power {action:?} (Chassis Control)"), move |c| {
            c.chassis_control(control)
        })
        .await
    }

    async fn set_boot(&self, boot: BootOverride) -> Result<(), BmcError> {
        let flags = boot_flags(boot).ok_or_else(|| BmcError::NotSupported {
            bmc: self.name.clone(),
            what: "HTTP boot over IPMI (IPMI has no HTTP boot device); use the BMC's Redfish \
                   address or PXE"
                .to_owned(),
        })?;
        let mut data = vec![PARAM_BOOT_FLAGS];
        data.extend_from_slice(&flags);
        self.raw(
            NETFN_CHASSIS,
            CMD_SET_BOOT_OPTIONS,
            &data,
            "setting the boot flags",
        )
        .await
        .map(drop)
    }

    async fn inventory(&self) -> Result<Inventory, BmcError> {
        let device = self
            .call("reading the inventory (Get Device ID)", |c| {
                c.get_device_id()
            })
            .await?;
        let mut warnings = vec![];
        let uuid = match self
            .call("reading the system GUID", |c| c.get_system_guid())
            .await
        {
            Ok(guid) => Some(guid_text(&guid.bytes)),
            Err(e) => {
                warnings.push(e.to_string());
                None
            }
        };
        let power_state = match self.power_state().await {
            Ok(p) => Some(p),
            Err(e) => {
                warnings.push(e.to_string());
                None
            }
        };
        let fru = match self.read_fru().await {
            Ok(image) => match super::fru::parse(&image) {
                Ok(fru) => fru,
                Err(e) => {
                    warnings.push(format!("{}: FRU 0: {e}", self.name));
                    super::fru::Fru::default()
                }
            },
            Err(e) => {
                warnings.push(e.to_string());
                super::fru::Fru::default()
            }
        };
        warnings.push(format!(
            "{}: IPMI gives no processors, memory, NICs or drives here (SDR reading is not \
             implemented); use Redfish or the agent's inspection",
            self.name
        ));
        Ok(Inventory {
            system: format!("product {:#06x}", device.product_id),
            vendor: fru
                .product_manufacturer
                .clone()
                .or(fru.board_manufacturer.clone())
                .or_else(|| Some(vendor_name(device.manufacturer_id))),
            model: fru.product_name.clone().or(fru.board_product.clone()),
            serial: fru.serial().map(str::to_owned),
            uuid,
            power_state,
            warnings,
            ..Inventory::default()
        })
    }

    async fn close(&self) -> Result<(), BmcError> {
        let client = self.client.lock().await.take();
        match client {
            Some(client) => {
                self.blocking("closing the session", move || client.close_session())
                    .await
            }
            None => Ok(()),
        }
    }
}

impl Drop for IpmiBmc {
    /// BMCs have few session slots: close a session left open, in the background.
    fn drop(&mut self) {
        if let Some(client) = self.client.get_mut().take() {
            std::thread::spawn(move || {
                let _ = client.close_session();
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_flag_bytes() {
        let pxe_once_efi = BootOverride {
            device: BootDevice::Pxe,
            persistent: false,
            mode: BootMode::Uefi,
        };
        assert_eq!(boot_flags(pxe_once_efi), Some([0xa0, 0x04, 0, 0, 0]));
        let disk_always_legacy = BootOverride {
            device: BootDevice::Disk,
            persistent: true,
            mode: BootMode::Legacy,
        };
        assert_eq!(boot_flags(disk_always_legacy), Some([0xc0, 0x08, 0, 0, 0]));
        let http = BootOverride {
            device: BootDevice::Http,
            ..pxe_once_efi
        };
        assert_eq!(boot_flags(http), None);
    }

    #[test]
    fn boot_flag_answers() {
        // What ipmi_sim answers after `ipmitool chassis bootdev pxe`.
        assert_eq!(
            parse_boot_flags(&[0x01, 0x05, 0x00, 0x04, 0, 0, 0]),
            Some((Some(BootDevice::Pxe), false, false))
        );
        assert_eq!(
            parse_boot_flags(&[0x01, 0x85, 0xe0, 0x08, 0, 0, 0]),
            Some((Some(BootDevice::Disk), true, true))
        );
        assert_eq!(
            parse_boot_flags(&[0x01, 0x05, 0x80, 0x00, 0, 0, 0]),
            Some((None, false, false))
        );
        assert_eq!(parse_boot_flags(&[0x01, 0x04, 0, 0]), None);
        assert_eq!(parse_boot_flags(&[0x01]), None);
    }

    #[test]
    fn guids_print_like_ipmitool() {
        // ipmi_sim `guid a123456789abcdefa123456789abcdef`; ipmitool prints
        // efcdab89-6745-23a1-efcd-ab89674523a1.
        let mut bytes = [0u8; 16];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&"a123456789abcdefa123456789abcdef"[2 * i..2 * i + 2], 16)
                .unwrap();
        }
        assert_eq!(guid_text(&bytes), "efcdab89-6745-23a1-efcd-ab89674523a1");
    }
}
