//! The unified kernel image (UKI): systemd's EFI stub (`linuxx64.efi.stub` of Debian's
//! `systemd-boot-efi`) with `.osrel`, `.cmdline`, `.linux` and `.initrd` sections added
//! by `objcopy`, as `ukify` would (research/host-image.md 1c).
//!
//! The new sections are placed after the stub's own: [`stub_end`] reads the stub's PE
//! section table, [`place`] lays the sections out from there, each on a 4 KiB boundary,
//! so nothing overlaps whatever the stub's size.
//!
//! Invariants: PE parsing, placement and the objcopy arguments ([`objcopy_args`]) are
//! pure; only [`build`] runs objcopy and touches files.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::file_error;

/// Where Debian's `systemd-boot-efi` package has the stub.
pub const STUB: &str = "usr/lib/systemd/boot/efi/linuxx64.efi.stub";
/// Where it has the boot loader (`EFI/BOOT/BOOTX64.EFI` on the ESP).
pub const LOADER: &str = "usr/lib/systemd/boot/efi/systemd-bootx64.efi";
/// Alignment of the added sections (a page; the stub's own alignment is 512 bytes).
const ALIGN: u64 = 0x1000;

/// Why the UKI could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UkiError {
    #[error(
        "{path}: not an EFI stub as expected ({what}); is the systemd-boot-efi package complete?"
    )]
    BadStub { path: PathBuf, what: &'static str },
    #[error(transparent)]
    Tool(#[from] crate::tool::ToolError),
    #[error(transparent)]
    File(#[from] crate::FileError),
}

/// The end of the stub's last section in memory: `ImageBase + max(VirtualAddress +
/// VirtualSize)` from its PE32+ headers.
pub fn stub_end(pe: &[u8]) -> Result<u64, &'static str> {
    let u16_at = |at: usize| pe.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |at: usize| {
        pe.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let truncated = "truncated PE headers";
    if pe.get(..2) != Some(b"MZ") {
        return Err("no MZ header");
    }
    let pe_at = u32_at(0x3c).ok_or(truncated)? as usize;
    if pe.get(pe_at..pe_at + 4) != Some(b"PE\0\0") {
        return Err("no PE signature");
    }
    let coff = pe_at + 4;
    let sections = u16_at(coff + 2).ok_or(truncated)? as usize;
    let optional_size = u16_at(coff + 16).ok_or(truncated)? as usize;
    let optional = coff + 20;
    if u16_at(optional) != Some(0x20b) {
        return Err("not a PE32+ (64-bit) image");
    }
    let image_base = pe
        .get(optional + 24..optional + 32)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .ok_or(truncated)?;
    let table = optional + optional_size;
    let mut end = 0u64;
    for i in 0..sections {
        let h = table + i * 40;
        let size = u32_at(h + 8).ok_or(truncated)?;
        let address = u32_at(h + 12).ok_or(truncated)?;
        end = end.max(u64::from(address) + u64::from(size));
    }
    if end == 0 {
        return Err("no sections");
    }
    Ok(image_base + end)
}

/// Offsets of the COFF `TimeDateStamp` and the optional header's `CheckSum` in a PE32+
/// file.
fn stamp_and_checksum_offsets(pe: &[u8]) -> Result<(usize, usize), &'static str> {
    let pe_at = pe
        .get(0x3c..0x40)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or("truncated PE headers")?;
    if pe.get(pe_at..pe_at + 4) != Some(b"PE\0\0") {
        return Err("no PE signature");
    }
    let checksum = pe_at + 24 + 64;
    if pe.len() < checksum + 4 {
        return Err("truncated PE headers");
    }
    Ok((pe_at + 8, checksum))
}

/// The PE image checksum (as `IMAGEHLP!CheckSumMappedFile` computes it): the 16-bit
/// one's-complement-style sum of the file, the checksum field taken as zero, plus the
/// file's length.
pub fn pe_checksum(pe: &[u8]) -> Result<u32, &'static str> {
    let (_, at) = stamp_and_checksum_offsets(pe)?;
    let mut sum: u64 = 0;
    for (i, pair) in pe.chunks(2).enumerate() {
        let offset = i * 2;
        if offset == at || offset == at + 2 {
            continue;
        }
        sum += u64::from(pair[0]) | u64::from(*pair.get(1).unwrap_or(&0)) << 8;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    Ok((sum as u32).wrapping_add(pe.len() as u32))
}

/// Sets the COFF timestamp (objcopy writes the current time there) and recomputes the
/// checksum, so that the same inputs give the same UKI.
pub fn pin_timestamp(pe: &mut [u8], stamp: u32) -> Result<(), &'static str> {
    let (stamp_at, checksum_at) = stamp_and_checksum_offsets(pe)?;
    pe[stamp_at..stamp_at + 4].copy_from_slice(&stamp.to_le_bytes());
    let checksum = pe_checksum(pe)?;
    pe[checksum_at..checksum_at + 4].copy_from_slice(&checksum.to_le_bytes());
    Ok(())
}

/// The checksum field of a PE32+ file.
pub fn stored_checksum(pe: &[u8]) -> Result<u32, &'static str> {
    let (_, at) = stamp_and_checksum_offsets(pe)?;
    Ok(u32::from_le_bytes(
        pe[at..at + 4].try_into().expect("4 bytes"),
    ))
}

/// The VMA of each section (in the order given, with its size), placed one after the
/// other from `start`, each on an [`ALIGN`] boundary.
pub fn place(start: u64, sections: &[(&str, u64)]) -> Vec<(String, u64)> {
    let mut at = start.next_multiple_of(ALIGN);
    sections
        .iter()
        .map(|(name, size)| {
            let vma = at;
            at = (at + size).next_multiple_of(ALIGN);
            ((*name).to_owned(), vma)
        })
        .collect()
}

/// The objcopy arguments adding each `(section, file, vma)` to `stub`, writing `out`.
pub fn objcopy_args(stub: &Path, sections: &[(String, PathBuf, u64)], out: &Path) -> Vec<OsString> {
    let mut args = vec![];
    for (name, file, vma) in sections {
        let mut add = OsString::from(format!("{name}="));
        add.push(file);
        args.push("--add-section".into());
        args.push(add);
        args.push("--change-section-vma".into());
        args.push(format!("{name}={vma:#x}").into());
    }
    args.push(stub.into());
    args.push(out.into());
    args
}

/// The contents of a UKI.
#[derive(Debug, Clone, Copy)]
pub struct UkiParts<'a> {
    pub osrel: &'a str,
    pub cmdline: &'a str,
    pub linux: &'a Path,
    pub initrd: &'a [u8],
    /// The COFF timestamp (SOURCE_DATE_EPOCH, saturated to 32 bits).
    pub timestamp: u32,
}

/// Builds the UKI `out` from the stub at `stub` (scratch files go to `scratch`).
pub fn build(stub: &Path, parts: &UkiParts, scratch: &Path, out: &Path) -> Result<(), UkiError> {
    let pe = std::fs::read(stub).map_err(file_error(stub, "reading the EFI stub"))?;
    let end = stub_end(&pe).map_err(|what| UkiError::BadStub {
        path: stub.to_owned(),
        what,
    })?;
    let write = |name: &str, bytes: &[u8]| -> Result<PathBuf, UkiError> {
        let path = scratch.join(name);
        std::fs::write(&path, bytes).map_err(file_error(&path, "writing a UKI section"))?;
        Ok(path)
    };
    let osrel = write("osrel", parts.osrel.as_bytes())?;
    let cmdline = write("cmdline", parts.cmdline.as_bytes())?;
    let initrd = write("initrd", parts.initrd)?;
    let linux_size = std::fs::metadata(parts.linux)
        .map_err(file_error(parts.linux, "reading the kernel"))?
        .len();
    let files = [
        (".osrel", osrel),
        (".cmdline", cmdline),
        (".linux", parts.linux.to_owned()),
        (".initrd", initrd),
    ];
    let sizes: Vec<(&str, u64)> = vec![
        (".osrel", parts.osrel.len() as u64),
        (".cmdline", parts.cmdline.len() as u64),
        (".linux", linux_size),
        (".initrd", parts.initrd.len() as u64),
    ];
    let placed = place(end, &sizes);
    let sections: Vec<(String, PathBuf, u64)> = files
        .into_iter()
        .zip(placed)
        .map(|((name, file), (_, vma))| (name.to_owned(), file, vma))
        .collect();
    crate::tool::run(
        Command::new("objcopy").args(objcopy_args(stub, &sections, out)),
        "objcopy",
        "binutils",
    )?;
    let mut uki = std::fs::read(out).map_err(file_error(out, "reading the UKI"))?;
    pin_timestamp(&mut uki, parts.timestamp).map_err(|what| UkiError::BadStub {
        path: out.to_owned(),
        what,
    })?;
    std::fs::write(out, &uki).map_err(file_error(out, "writing the UKI"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PE32+ header with the given (VirtualAddress, VirtualSize) sections.
    fn pe(image_base: u64, sections: &[(u32, u32)]) -> Vec<u8> {
        let mut b = vec![0u8; 0x200];
        b[..2].copy_from_slice(b"MZ");
        b[0x3c] = 0x80;
        b[0x80..0x84].copy_from_slice(b"PE\0\0");
        let coff = 0x84;
        b[coff + 2..coff + 4].copy_from_slice(&(sections.len() as u16).to_le_bytes());
        b[coff + 16..coff + 18].copy_from_slice(&0xf0u16.to_le_bytes());
        let opt = coff + 20;
        b[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        b[opt + 24..opt + 32].copy_from_slice(&image_base.to_le_bytes());
        let table = opt + 0xf0;
        for (i, (va, size)) in sections.iter().enumerate() {
            let h = table + i * 40;
            b[h + 8..h + 12].copy_from_slice(&size.to_le_bytes());
            b[h + 12..h + 16].copy_from_slice(&va.to_le_bytes());
        }
        b
    }

    #[test]
    fn sections_go_after_the_stub_page_aligned() {
        // Debian 252's stub: .sdmagic at 0x19100, 0x34 bytes, image base 0.
        let stub = pe(0, &[(0x4000, 0xbff0), (0x19100, 0x34), (0x11000, 0x34b8)]);
        assert_eq!(stub_end(&stub), Ok(0x19134));
        let placed = place(
            0x19134,
            &[
                (".osrel", 80),
                (".cmdline", 200),
                (".linux", 0x7f_0001),
                (".initrd", 10),
            ],
        );
        let vmas: Vec<u64> = placed.iter().map(|(_, v)| *v).collect();
        assert_eq!(vmas, [0x1a000, 0x1b000, 0x1c000, 0x80d000]);
        assert_eq!(
            stub_end(&pe(0x1000_0000, &[(0x1000, 0x10)])),
            Ok(0x1000_1010)
        );
    }

    #[test]
    fn pinning_sets_the_stamp_and_a_checksum_that_covers_it() {
        let mut a = pe(0, &[(0x1000, 0x10)]);
        a.extend_from_slice(&[0xff; 301]);
        let mut b = a.clone();
        b[0x88] = 0x55; // another "current time"
        pin_timestamp(&mut a, 1_735_689_600).unwrap();
        pin_timestamp(&mut b, 1_735_689_600).unwrap();
        assert_eq!(a, b);
        assert_eq!(a[0x88..0x8c], 1_735_689_600u32.to_le_bytes());
        assert_eq!(stored_checksum(&a), pe_checksum(&a));
        let before = stored_checksum(&a).unwrap();
        pin_timestamp(&mut a, 1).unwrap();
        assert_ne!(stored_checksum(&a).unwrap(), before);
    }

    #[test]
    fn bad_stubs_are_refused() {
        assert_eq!(stub_end(b"ELF"), Err("no MZ header"));
        let mut p = pe(0, &[(0x1000, 1)]);
        p[0x84 + 20] = 0x0b;
        p[0x84 + 21] = 0x01;
        assert_eq!(stub_end(&p), Err("not a PE32+ (64-bit) image"));
        assert_eq!(stub_end(&pe(0, &[])), Err("no sections"));
        assert_eq!(stub_end(&pe(0, &[])[..0x90]), Err("truncated PE headers"));
    }

    #[test]
    fn objcopy_adds_and_moves_each_section() {
        let args = objcopy_args(
            Path::new("stub"),
            &[(".cmdline".into(), PathBuf::from("/t/cmdline"), 0x1b000)],
            Path::new("out.efi"),
        );
        assert_eq!(
            args,
            [
                "--add-section",
                ".cmdline=/t/cmdline",
                "--change-section-vma",
                ".cmdline=0x1b000",
                "stub",
                "out.efi"
            ]
        );
    }
}
