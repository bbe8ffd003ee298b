//! A small reader of PE/COFF section tables, enough to read a UKI's
//! `.cmdline` without booting it. Pure: bytes in, section contents out.
//!
//! The path is DOS header (`MZ`, `e_lfanew` at 0x3c) → `PE\0\0` signature →
//! COFF header (20 bytes: section count at +2, optional header size at +16) →
//! section table after the optional header, 40 bytes per section: name (8
//! bytes, NUL-padded), `VirtualSize`, `VirtualAddress`, `SizeOfRawData`,
//! `PointerToRawData`. A section's contents are the first
//! `min(VirtualSize, SizeOfRawData)` bytes at `PointerToRawData` (the raw
//! size is rounded up to the file alignment; `objcopy` pads with NULs).
//!
//! Invariants: never panics on any input (every offset is checked); a
//! section whose bytes lie outside the file is an error, not a short read.

/// Why bytes are not a PE image we can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeError {
    #[error("not a PE image (no `MZ` DOS header)")]
    NoDosHeader,
    #[error("not a PE image (no `PE\\0\\0` signature at offset {0:#x})")]
    NoSignature(u64),
    #[error(
        "the PE image is truncated: {what} at offset {offset:#x} lies past its end ({len} bytes)"
    )]
    Truncated {
        what: &'static str,
        offset: u64,
        len: usize,
    },
    #[error("the PE image has no {0} section")]
    NoSection(String),
    #[error("the PE section {0} is not UTF-8 text")]
    NotText(String),
}

/// One section: its name (NULs stripped) and its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section<'a> {
    pub name: String,
    pub data: &'a [u8],
}

fn bytes<'a>(
    image: &'a [u8],
    offset: u64,
    len: u64,
    what: &'static str,
) -> Result<&'a [u8], PeError> {
    let truncated = PeError::Truncated {
        what,
        offset,
        len: image.len(),
    };
    let start = usize::try_from(offset).map_err(|_| truncated.clone())?;
    let end = usize::try_from(offset.saturating_add(len)).map_err(|_| truncated.clone())?;
    image.get(start..end).ok_or(truncated)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// All sections of a PE image, in table order.
pub fn sections(image: &[u8]) -> Result<Vec<Section<'_>>, PeError> {
    if image.get(..2) != Some(b"MZ") {
        return Err(PeError::NoDosHeader);
    }
    let dos = bytes(image, 0, 0x40, "the DOS header")?;
    let pe = u64::from(u32_at(dos, 0x3c));
    if bytes(image, pe, 4, "the PE signature")? != b"PE\0\0" {
        return Err(PeError::NoSignature(pe));
    }
    let coff = bytes(image, pe + 4, 20, "the COFF header")?;
    let count = u64::from(u16_at(coff, 2));
    let optional = u64::from(u16_at(coff, 16));
    let table_at = pe + 4 + 20 + optional;
    let table = bytes(image, table_at, count * 40, "the section table")?;
    table
        .chunks_exact(40)
        .map(|h| {
            let name: Vec<u8> = h[..8].iter().copied().take_while(|&b| b != 0).collect();
            let name = String::from_utf8_lossy(&name).into_owned();
            let virtual_size = u64::from(u32_at(h, 8));
            let raw_size = u64::from(u32_at(h, 16));
            let raw_at = u64::from(u32_at(h, 20));
            let len = if virtual_size == 0 {
                raw_size
            } else {
                virtual_size.min(raw_size)
            };
            let data = bytes(image, raw_at, len, "a section's contents")?;
            Ok(Section { name, data })
        })
        .collect()
}

/// The contents of section `name` (e.g. `.cmdline`).
pub fn section<'a>(image: &'a [u8], name: &str) -> Result<&'a [u8], PeError> {
    sections(image)?
        .into_iter()
        .find(|s| s.name == name)
        .map(|s| s.data)
        .ok_or_else(|| PeError::NoSection(name.to_owned()))
}

/// A UKI's kernel command line: its `.cmdline` section as text, without the
/// NULs the stub or the file alignment may add and without a trailing
/// newline (the file `objcopy --add-section` read may end with one).
pub fn cmdline(image: &[u8]) -> Result<String, PeError> {
    let data = section(image, ".cmdline")?;
    let text = std::str::from_utf8(data).map_err(|_| PeError::NotText(".cmdline".into()))?;
    Ok(text.trim_end_matches(['\0', '\n', '\r', ' ']).to_owned())
}

/// Test support: a minimal PE image with these sections (a real image has
/// an optional header and code; the reader needs neither).
#[cfg(any(test, feature = "testing"))]
pub fn fake_image(sections: &[(&str, &[u8])]) -> Vec<u8> {
    const OPTIONAL: usize = 0xf0;
    const ALIGN: usize = 0x200;
    let pe = 0x80;
    let table = pe + 4 + 20 + OPTIONAL;
    let mut raw_at = (table + 40 * sections.len()).next_multiple_of(ALIGN);
    let mut image = vec![0u8; raw_at];
    image[..2].copy_from_slice(b"MZ");
    image[0x3c..0x40].copy_from_slice(&(pe as u32).to_le_bytes());
    image[pe..pe + 4].copy_from_slice(b"PE\0\0");
    image[pe + 4..pe + 6].copy_from_slice(&0x8664u16.to_le_bytes());
    image[pe + 6..pe + 8].copy_from_slice(&(sections.len() as u16).to_le_bytes());
    image[pe + 20..pe + 22].copy_from_slice(&(OPTIONAL as u16).to_le_bytes());
    for (i, (name, data)) in sections.iter().enumerate() {
        let h = table + 40 * i;
        let raw_size = data.len().next_multiple_of(ALIGN);
        image[h..h + name.len()].copy_from_slice(name.as_bytes());
        image[h + 8..h + 12].copy_from_slice(&(data.len() as u32).to_le_bytes());
        image[h + 16..h + 20].copy_from_slice(&(raw_size as u32).to_le_bytes());
        image[h + 20..h + 24].copy_from_slice(&(raw_at as u32).to_le_bytes());
        image.resize(raw_at + raw_size, 0);
        image[raw_at..raw_at + data.len()].copy_from_slice(data);
        raw_at += raw_size;
    }
    image
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_cmdline_section_without_its_padding() {
        let image = fake_image(&[
            (".osrel", b"ID=host\n"),
            (".cmdline", b"console=ttyS0 panic=10\n\0\0"),
            (".linux", &[0x90; 1000]),
        ]);
        let names: Vec<String> = sections(&image)
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, [".osrel", ".cmdline", ".linux"]);
        assert_eq!(cmdline(&image).unwrap(), "console=ttyS0 panic=10");
        assert_eq!(section(&image, ".linux").unwrap().len(), 1000);
    }

    #[test]
    fn refuses_what_is_not_a_readable_pe() {
        assert_eq!(cmdline(b"not a PE"), Err(PeError::NoDosHeader));
        let image = fake_image(&[(".linux", b"kernel")]);
        assert_eq!(cmdline(&image), Err(PeError::NoSection(".cmdline".into())));
        let mut bad_sig = image.clone();
        bad_sig[0x80] = b'X';
        assert_eq!(cmdline(&bad_sig), Err(PeError::NoSignature(0x80)));
        // Cut inside the section contents: an error, not a short section.
        let cut = fake_image(&[(".cmdline", &[b'x'; 700])]);
        assert!(matches!(
            cmdline(&cut[..cut.len() - 600]),
            Err(PeError::Truncated { .. })
        ));
        let mut not_text = fake_image(&[(".cmdline", &[0xff, 0xfe])]);
        not_text.push(0);
        assert_eq!(cmdline(&not_text), Err(PeError::NotText(".cmdline".into())));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(mut bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600), pe in 0u32..700) {
            if bytes.len() >= 0x40 {
                bytes[..2].copy_from_slice(b"MZ");
                bytes[0x3c..0x40].copy_from_slice(&pe.to_le_bytes());
            }
            let _ = sections(&bytes);
        }
    }
}
