//! Which boot file a client gets, from its architecture (option 93), vendor
//! class (60) and user class (77).
//!
//! Invariant: pure; an architecture we have no loader for gets no boot
//! answer (never a guess that would hang its firmware).

use std::net::{Ipv4Addr, SocketAddrV4};

use super::codec::Request;

/// RFC 4578 / IANA processor architecture types used here.
pub mod arch {
    pub const BIOS: u16 = 0;
    pub const EFI_IA32: u16 = 6;
    pub const EFI_X64: u16 = 7;
    pub const EFI_BC: u16 = 9;
    pub const EFI_X64_HTTP: u16 = 16;
}

/// The iPXE build UEFI x64 PXE clients load by TFTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UefiLoader {
    /// `snponly.efi`: uses the firmware's network driver (works on any NIC).
    SnpOnly,
    /// `ipxe.efi`: iPXE's own drivers.
    Ipxe,
}

impl UefiLoader {
    pub fn file_name(self) -> &'static str {
        match self {
            UefiLoader::SnpOnly => "snponly.efi",
            UefiLoader::Ipxe => "ipxe.efi",
        }
    }
}

/// Where boot files are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    /// The TFTP server (`siaddr`, next server).
    pub tftp_server: Ipv4Addr,
    /// The HTTP server of boot files and per-node scripts.
    pub http: SocketAddrV4,
    pub uefi_loader: UefiLoader,
}

/// What kind of network-boot client sent a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// iPXE (user class `iPXE`), whatever firmware loaded it.
    Ipxe,
    /// UEFI HTTP boot (vendor class `HTTPClient`).
    HttpBoot,
    /// Firmware PXE (vendor class `PXEClient`).
    Pxe,
    /// Not a network-boot client: an ordinary DHCP client.
    Ordinary,
}

/// Classifies a request. iPXE first: it sends `PXEClient` as vendor class too.
pub fn classify(request: &Request) -> ClientKind {
    if request.is_ipxe() {
        ClientKind::Ipxe
    } else if request.vendor_class_is("HTTPClient") {
        ClientKind::HttpBoot
    } else if request.vendor_class_is("PXEClient") {
        ClientKind::Pxe
    } else {
        ClientKind::Ordinary
    }
}

/// The client's architecture: option 93, else the `Arch:NNNNN` field of a
/// `PXEClient:Arch:00007:UNDI:003016` vendor class.
pub fn client_arch(request: &Request) -> Option<u16> {
    request.client_arch.or_else(|| {
        let v = std::str::from_utf8(request.vendor_class.as_deref()?).ok()?;
        let mut parts = v.split(':');
        while let Some(p) = parts.next() {
            if p == "Arch" {
                return parts.next()?.parse().ok();
            }
        }
        None
    })
}

/// How the boot file is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tftp,
    Http,
}

/// The boot part of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootAnswer {
    /// File name (TFTP) or URL (HTTP), for `file` and option 67.
    pub file: String,
    pub transport: Transport,
    /// `siaddr`: set for TFTP.
    pub next_server: Option<Ipv4Addr>,
    /// Option 60 to send back: `PXEClient` or `HTTPClient`.
    pub vendor_class: Option<&'static str>,
    /// Option 175.176 (`no-pxedhcp`) = 1.
    pub ipxe_no_pxedhcp: bool,
}

/// The per-node iPXE script URL: `http://ADDR:PORT/boot/{mac}.ipxe`.
pub fn ipxe_script_url(config: &BootConfig, request: &Request) -> String {
    format!("http://{}/boot/{}.ipxe", config.http, request.mac)
}

/// The boot answer for a request, or `None` when we have nothing to boot it
/// with (ordinary client, unknown architecture).
pub fn choose(request: &Request, config: &BootConfig) -> Option<BootAnswer> {
    match classify(request) {
        ClientKind::Ipxe => Some(BootAnswer {
            file: ipxe_script_url(config, request),
            transport: Transport::Http,
            next_server: None,
            vendor_class: None,
            ipxe_no_pxedhcp: true,
        }),
        ClientKind::HttpBoot => match client_arch(request)? {
            arch::EFI_X64_HTTP => Some(BootAnswer {
                // An EFI binary: the firmware runs it, then iPXE asks again.
                file: format!(
                    "http://{}/boot/{}",
                    config.http,
                    config.uefi_loader.file_name()
                ),
                transport: Transport::Http,
                next_server: None,
                vendor_class: Some("HTTPClient"),
                ipxe_no_pxedhcp: false,
            }),
            _ => None,
        },
        ClientKind::Pxe => {
            let file = match client_arch(request)? {
                arch::BIOS => "undionly.kpxe",
                arch::EFI_X64 | arch::EFI_BC => config.uefi_loader.file_name(),
                _ => return None,
            };
            Some(BootAnswer {
                file: file.to_owned(),
                transport: Transport::Tftp,
                next_server: Some(config.tftp_server),
                vendor_class: Some("PXEClient"),
                ipxe_no_pxedhcp: true,
            })
        }
        ClientKind::Ordinary => None,
    }
}
