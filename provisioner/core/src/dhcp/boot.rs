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
                // No `PXEClient` here: UEFI firmware (EDK2/OVMF) takes an address
                // offer that carries it without option 43 for a BINL offer and
                // asks port 4011 for the boot file, which full mode does not
                // serve ("PXE-E16: No valid offer received"). A plain offer with
                // `file` and `siaddr` boots at once, BIOS and UEFI alike; proxy
                // offers add `PXEClient` themselves (`dhcp::proxy`).
                vendor_class: None,
                ipxe_no_pxedhcp: true,
            })
        }
        ClientKind::Ordinary => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::codec::{build, decode};

    fn config(uefi_loader: UefiLoader) -> BootConfig {
        BootConfig {
            tftp_server: Ipv4Addr::new(10, 213, 0, 1),
            http: SocketAddrV4::new(Ipv4Addr::new(10, 213, 0, 1), 8080),
            uefi_loader,
        }
    }

    #[test]
    fn boot_file_by_client() {
        let tftp = Some(Ipv4Addr::new(10, 213, 0, 1));
        let pxe = |file: &str| {
            Some(BootAnswer {
                file: file.into(),
                transport: Transport::Tftp,
                next_server: tftp,
                vendor_class: None,
                ipxe_no_pxedhcp: true,
            })
        };
        let efi_bc = build::Packet::new(1)
            .opt(93, &[0, 9])
            .opt(60, b"PXEClient:Arch:00009");
        let arm64 = build::Packet::new(1)
            .opt(93, &[0, 11])
            .opt(60, b"PXEClient:Arch:00011");
        let arch_in_class_only = build::Packet::new(1).opt(60, b"PXEClient:Arch:00007:UNDI:003016");
        let http_arm = build::Packet::new(1)
            .opt(93, &[0, 19])
            .opt(60, b"HTTPClient:Arch:00019");
        let cases = [
            (
                "BIOS",
                build::bios_pxe(),
                UefiLoader::SnpOnly,
                pxe("undionly.kpxe"),
            ),
            (
                "UEFI snponly",
                build::uefi_pxe(),
                UefiLoader::SnpOnly,
                pxe("snponly.efi"),
            ),
            (
                "UEFI ipxe.efi",
                build::uefi_pxe(),
                UefiLoader::Ipxe,
                pxe("ipxe.efi"),
            ),
            ("EFI BC", efi_bc, UefiLoader::SnpOnly, pxe("snponly.efi")),
            (
                "arch in vendor class",
                arch_in_class_only,
                UefiLoader::Ipxe,
                pxe("ipxe.efi"),
            ),
            ("arm64 PXE", arm64, UefiLoader::SnpOnly, None),
            (
                "HTTP boot",
                build::http_boot(),
                UefiLoader::SnpOnly,
                Some(BootAnswer {
                    file: "http://10.213.0.1:8080/boot/snponly.efi".into(),
                    transport: Transport::Http,
                    next_server: None,
                    vendor_class: Some("HTTPClient"),
                    ipxe_no_pxedhcp: false,
                }),
            ),
            ("HTTP boot arm", http_arm, UefiLoader::SnpOnly, None),
            (
                "iPXE",
                build::ipxe(),
                UefiLoader::SnpOnly,
                Some(BootAnswer {
                    file: "http://10.213.0.1:8080/boot/52:54:00:aa:00:01.ipxe".into(),
                    transport: Transport::Http,
                    next_server: None,
                    vendor_class: None,
                    ipxe_no_pxedhcp: true,
                }),
            ),
            ("ordinary", build::ordinary(), UefiLoader::SnpOnly, None),
        ];
        for (name, packet, loader, want) in cases {
            let request = decode(&packet.bytes()).unwrap();
            assert_eq!(choose(&request, &config(loader)), want, "{name}");
        }
    }

    #[test]
    fn classifies_ipxe_before_its_pxe_vendor_class() {
        let kinds = [
            (build::bios_pxe(), ClientKind::Pxe),
            (build::http_boot(), ClientKind::HttpBoot),
            (build::ipxe(), ClientKind::Ipxe),
            (
                build::Packet::new(1).opt(77, &[4, b'i', b'P', b'X', b'E']),
                ClientKind::Ipxe,
            ),
            (build::ordinary(), ClientKind::Ordinary),
        ];
        for (packet, kind) in kinds {
            assert_eq!(classify(&decode(&packet.bytes()).unwrap()), kind);
        }
    }
}
