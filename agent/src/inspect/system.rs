//! DMI identity (`/sys/class/dmi/id`) and boot firmware (`/sys/firmware/efi`,
//! the `SecureBoot` EFI variable).

use model::inventory::{Firmware, System};

use super::Scan;

const DMI: &str = "/sys/class/dmi/id";
/// The EFI global variable GUID (UEFI spec, `EFI_GLOBAL_VARIABLE`).
const SECURE_BOOT_VAR: &str = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// Serial numbers vendors ship as placeholders: not an identity.
const PLACEHOLDERS: &[&str] = &[
    "",
    "0",
    "none",
    "not specified",
    "not applicable",
    "to be filled by o.e.m.",
    "default string",
    "system serial number",
    "123456789",
    "0123456789",
];

pub(super) fn scan(s: &mut Scan) -> System {
    let vendor = dmi_field(s, "sys_vendor");
    let product = dmi_field(s, "product_name");
    let serial = s
        .read(&format!("{DMI}/product_serial"))
        .filter(|v| !PLACEHOLDERS.contains(&v.to_ascii_lowercase().as_str()));
    let uuid = s
        .read(&format!("{DMI}/product_uuid"))
        .filter(|v| !v.is_empty())
        .map(|v| v.to_ascii_lowercase());
    let (firmware, secure_boot) = firmware(s);
    System {
        vendor,
        product,
        serial,
        uuid,
        firmware,
        secure_boot,
    }
}

fn dmi_field(s: &mut Scan, name: &str) -> String {
    match s.read(&format!("{DMI}/{name}")) {
        Some(v) if !v.is_empty() => v,
        _ => {
            s.warn(format!(
                "{DMI}/{name} is missing or empty: the machine's DMI identity is unknown"
            ));
            String::new()
        }
    }
}

fn firmware(s: &mut Scan) -> (Firmware, Option<bool>) {
    if !s.exists("/sys/firmware/efi") {
        return (Firmware::Bios, None);
    }
    let efivars = format!("/sys/firmware/efi/efivars/{SECURE_BOOT_VAR}");
    let legacy = format!("/sys/firmware/efi/vars/{SECURE_BOOT_VAR}/data");
    let state = match s.read_bytes(&efivars) {
        // efivarfs: 4 bytes of attributes, then the value.
        Some(bytes) => bytes.get(4).copied(),
        None => s.read_bytes(&legacy).and_then(|b| b.first().copied()),
    };
    match state {
        Some(0) => (Firmware::Uefi, Some(false)),
        Some(1) => (Firmware::Uefi, Some(true)),
        Some(other) => {
            s.warn(format!(
                "{efivars}: unexpected Secure Boot value {other}: secure boot state unknown"
            ));
            (Firmware::Uefi, None)
        }
        None if s.exists("/sys/firmware/efi/efivars")
            && s.list("/sys/firmware/efi/efivars").is_empty() =>
        {
            s.warn(
                "/sys/firmware/efi/efivars is empty (efivarfs not mounted?): \
                 secure boot state unknown; mount efivarfs there",
            );
            (Firmware::Uefi, None)
        }
        None => {
            // UEFI firmware without the variable: Secure Boot not supported.
            s.warn(format!(
                "UEFI without a readable {SECURE_BOOT_VAR} variable: secure boot state unknown"
            ));
            (Firmware::Uefi, None)
        }
    }
}
