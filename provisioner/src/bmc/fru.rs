//! IPMI FRU inventory data (Platform Management FRU Information Storage Definition v1.0):
//! the common header, then the chassis, board and product info areas, whose fields are
//! type/length-prefixed strings. Pure: bytes in, fields out; never panics on any input
//! (proptest), and a damaged area is skipped, not fatal.

/// What the FRU areas say about the machine; absent fields are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Fru {
    /// Chassis serial number.
    pub chassis_serial: Option<String>,
    /// Board manufacturer.
    pub board_manufacturer: Option<String>,
    /// Board product name.
    pub board_product: Option<String>,
    /// Board serial number.
    pub board_serial: Option<String>,
    /// Product manufacturer.
    pub product_manufacturer: Option<String>,
    /// Product name.
    pub product_name: Option<String>,
    /// Product serial number.
    pub product_serial: Option<String>,
}

impl Fru {
    /// The machine's serial: product, else chassis, else board.
    pub(crate) fn serial(&self) -> Option<&str> {
        self.product_serial
            .as_deref()
            .or(self.chassis_serial.as_deref())
            .or(self.board_serial.as_deref())
    }
}

/// Why FRU data could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FruError {
    /// Fewer than the 8 bytes of the common header.
    #[error("FRU data too short ({0} bytes)")]
    TooShort(usize),
    /// The header's format version is not 1.
    #[error("unknown FRU header format version {0:#04x}")]
    Version(u8),
    /// The header's checksum does not sum to zero.
    #[error("FRU common header checksum is wrong")]
    Checksum,
}

/// Decodes one type/length field's data.
fn decode(kind: u8, data: &[u8]) -> Option<String> {
    let text = match kind {
        // Binary: shown as hex.
        0 => data.iter().map(|b| format!("{b:02x}")).collect(),
        // BCD plus.
        1 => data
            .iter()
            .flat_map(|b| [b >> 4, b & 0x0f])
            .map(|n| match n {
                0..=9 => char::from(b'0' + n),
                0xa => ' ',
                0xb => '-',
                0xc => '.',
                _ => '?',
            })
            .collect(),
        // 6-bit ASCII, packed four characters in three bytes, least significant first.
        2 => {
            let mut out = String::new();
            for chunk in data.chunks(3) {
                let mut v = 0u32;
                for (i, b) in chunk.iter().enumerate() {
                    v |= u32::from(*b) << (8 * i);
                }
                let chars = chunk.len() * 8 / 6;
                for i in 0..chars {
                    out.push(char::from(0x20 + ((v >> (6 * i)) & 0x3f) as u8));
                }
            }
            out
        }
        // 8-bit ASCII + Latin-1.
        _ => data.iter().map(|b| char::from(*b)).collect(),
    };
    let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!text.is_empty()).then(|| text.to_owned())
}

/// The type/length fields of an area, from `start`, until the end marker (0xC1) or the
/// area's end.
fn fields(area: &[u8], start: usize) -> Vec<Option<String>> {
    let mut out = vec![];
    let mut at = start;
    while let Some(&tl) = area.get(at) {
        if tl == 0xc1 {
            break;
        }
        let len = usize::from(tl & 0x3f);
        let Some(data) = area.get(at + 1..at + 1 + len) else {
            break;
        };
        out.push(decode(tl >> 6, data));
        at += 1 + len;
    }
    out
}

/// The area at header offset `offset` (in 8-byte units), if its length byte and
/// checksum hold.
fn area(data: &[u8], offset: u8) -> Option<&[u8]> {
    if offset == 0 {
        return None;
    }
    let start = usize::from(offset) * 8;
    let len = usize::from(*data.get(start + 1)?) * 8;
    let area = data.get(start..start + len)?;
    let sum = area.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    (len >= 2 && sum == 0).then_some(area)
}

/// Parses a FRU image.
pub(crate) fn parse(data: &[u8]) -> Result<Fru, FruError> {
    let header = data.get(..8).ok_or(FruError::TooShort(data.len()))?;
    if header[0] & 0x0f != 1 {
        return Err(FruError::Version(header[0]));
    }
    if header.iter().fold(0u8, |s, b| s.wrapping_add(*b)) != 0 {
        return Err(FruError::Checksum);
    }
    let mut fru = Fru::default();
    let nth = |v: &[Option<String>], i: usize| v.get(i).cloned().flatten();
    // Chassis: version, length, type, then part number, serial.
    if let Some(a) = area(data, header[2]) {
        fru.chassis_serial = nth(&fields(a, 3), 1);
    }
    // Board: version, length, language, 3-byte date, then manufacturer, product, serial.
    if let Some(a) = area(data, header[3]) {
        let f = fields(a, 6);
        fru.board_manufacturer = nth(&f, 0);
        fru.board_product = nth(&f, 1);
        fru.board_serial = nth(&f, 2);
    }
    // Product: version, length, language, then manufacturer, name, part, version, serial.
    if let Some(a) = area(data, header[4]) {
        let f = fields(a, 3);
        fru.product_manufacturer = nth(&f, 0);
        fru.product_name = nth(&f, 1);
        fru.product_serial = nth(&f, 4);
    }
    Ok(fru)
}

/// Builds a FRU image with a chassis, board and product area (8-bit ASCII fields), for
/// tests and simulators.
pub fn build(chassis_serial: &str, board: [&str; 3], product: [&str; 5]) -> Vec<u8> {
    fn finish(mut area: Vec<u8>) -> Vec<u8> {
        area.push(0xc1);
        while !(area.len() + 1).is_multiple_of(8) {
            area.push(0);
        }
        area[1] = ((area.len() + 1) / 8) as u8;
        let sum = area.iter().fold(0u8, |s, b| s.wrapping_add(*b));
        area.push(0u8.wrapping_sub(sum));
        area
    }
    fn field(area: &mut Vec<u8>, text: &str) {
        let mut bytes = text.as_bytes()[..text.len().min(63)].to_vec();
        // 0xC1 (8-bit text, length 1) is the end marker: pad one-character text.
        if bytes.len() == 1 {
            bytes.push(b' ');
        }
        area.push(0xc0 | bytes.len() as u8);
        area.extend_from_slice(&bytes);
    }
    let mut chassis = vec![1, 0, 0x17];
    field(&mut chassis, "");
    field(&mut chassis, chassis_serial);
    let chassis = finish(chassis);
    let mut board_area = vec![1, 0, 0, 0, 0, 0];
    for f in board {
        field(&mut board_area, f);
    }
    let board_area = finish(board_area);
    let mut product_area = vec![1, 0, 0];
    for f in product {
        field(&mut product_area, f);
    }
    let product_area = finish(product_area);
    let chassis_at = 1u8;
    let board_at = chassis_at + (chassis.len() / 8) as u8;
    let product_at = board_at + (board_area.len() / 8) as u8;
    let mut header = vec![1, 0, chassis_at, board_at, product_at, 0, 0];
    let sum = header.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    header.push(0u8.wrapping_sub(sum));
    [header, chassis, board_area, product_area].concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_of_a_built_image() {
        let image = build(
            "CH-1",
            ["Board Co", "Mainboard X", "BRD-7"],
            ["Acme", "Server 9000", "PN-1", "v2", "SRV-0042"],
        );
        let fru = parse(&image).unwrap();
        assert_eq!(fru.chassis_serial.as_deref(), Some("CH-1"));
        assert_eq!(fru.board_manufacturer.as_deref(), Some("Board Co"));
        assert_eq!(fru.board_serial.as_deref(), Some("BRD-7"));
        assert_eq!(fru.product_manufacturer.as_deref(), Some("Acme"));
        assert_eq!(fru.product_name.as_deref(), Some("Server 9000"));
        assert_eq!(fru.serial(), Some("SRV-0042"));
    }

    #[test]
    fn encodings() {
        assert_eq!(decode(0, &[0xde, 0xad]).as_deref(), Some("dead"));
        assert_eq!(decode(1, &[0x12, 0xb3]).as_deref(), Some("12-3"));
        // "IPMI" in 6-bit ASCII: 0x29 0x30 0x2d 0x29.
        assert_eq!(decode(2, &[0x29, 0xdc, 0xa6]).as_deref(), Some("IPMI"));
        assert_eq!(decode(3, b"  x \0").as_deref(), Some("x"));
        assert_eq!(decode(3, b"   "), None);
    }

    #[test]
    fn damage_is_reported_or_skipped() {
        assert_eq!(parse(&[1, 0, 0]), Err(FruError::TooShort(3)));
        assert_eq!(
            parse(&[2, 0, 0, 0, 0, 0, 0, 0xfe]),
            Err(FruError::Version(2))
        );
        assert_eq!(parse(&[1, 0, 0, 0, 0, 0, 0, 0]), Err(FruError::Checksum));
        // A product area with a wrong checksum is skipped; the rest still reads.
        let mut image = build("CH-1", ["B", "P", "S"], ["M", "N", "P", "V", "SRV"]);
        let last = image.len() - 1;
        image[last] ^= 0xff;
        let fru = parse(&image).unwrap();
        assert_eq!(fru.product_serial, None);
        assert_eq!(fru.serial(), Some("CH-1"));
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&data);
        }

        #[test]
        fn fields_round_trip(serial in "[ -~]{1,40}", name in "[ -~]{1,40}") {
            let image = build("", ["", "", ""], ["", &name, "", "", &serial]);
            let fru = parse(&image).unwrap();
            prop_assert_eq!(fru.product_serial.as_deref(), Some(serial.trim()).filter(|s| !s.is_empty()));
            prop_assert_eq!(fru.product_name.as_deref(), Some(name.trim()).filter(|s| !s.is_empty()));
        }
    }
}
