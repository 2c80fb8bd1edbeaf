//! One variable of the store: edk2's `AUTHENTICATED_VARIABLE_HEADER`, then the name in UTF-16LE
//! with its terminating NUL, then the data.

use std::fmt::{self, Write as _};

use super::Guid;

/// The attribute bits of a variable (UEFI's `EFI_VARIABLE_*`).
pub mod attributes {
    /// Kept across resets (`EFI_VARIABLE_NON_VOLATILE`).
    pub const NON_VOLATILE: u32 = 0x1;
    /// Visible before `ExitBootServices` (`EFI_VARIABLE_BOOTSERVICE_ACCESS`).
    pub const BOOTSERVICE_ACCESS: u32 = 0x2;
    /// Visible to the OS (`EFI_VARIABLE_RUNTIME_ACCESS`).
    pub const RUNTIME_ACCESS: u32 = 0x4;
    /// `EFI_VARIABLE_HARDWARE_ERROR_RECORD`.
    pub const HARDWARE_ERROR_RECORD: u32 = 0x8;
    /// `EFI_VARIABLE_AUTHENTICATED_WRITE_ACCESS` (deprecated in UEFI).
    pub const AUTHENTICATED_WRITE_ACCESS: u32 = 0x10;
    /// `EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS`.
    pub const TIME_BASED_AUTHENTICATED_WRITE_ACCESS: u32 = 0x20;
    /// `EFI_VARIABLE_APPEND_WRITE`.
    pub const APPEND_WRITE: u32 = 0x40;
    /// Every bit above, with the names upstream prints them by, in its order.
    pub const NAMED: [(&str, u32); 7] = [
        ("NON_VOLATILE", NON_VOLATILE),
        ("BOOTSERVICE_ACCESS", BOOTSERVICE_ACCESS),
        ("RUNTIME_ACCESS", RUNTIME_ACCESS),
        ("HARDWARE_ERROR_RECORD", HARDWARE_ERROR_RECORD),
        ("AUTHENTICATED_WRITE_ACCESS", AUTHENTICATED_WRITE_ACCESS),
        ("TIME_BASED_AUTHENTICATED_WRITE_ACCESS", TIME_BASED_AUTHENTICATED_WRITE_ACCESS),
        ("APPEND_WRITE", APPEND_WRITE),
    ];
}

/// A variable's state byte. Flash is erased to 1s and programming only clears bits, so edk2
/// moves a variable through its life by clearing one bit after the other: these are the bits,
/// as set in the *inverted* byte (`state ^ 0xFF`).
pub mod state {
    /// The byte of a live variable on disk: header and data written (`VAR_ADDED`).
    pub const ADDED: u8 = !(HEADER_VALID_ONLY_BIT | ADDED_BIT);
    /// Being replaced by a newer copy (`VAR_IN_DELETED_TRANSITION`).
    pub const IN_DELETED_TRANSITION_BIT: u8 = 0x01;
    /// Deleted (`VAR_DELETED`).
    pub const DELETED_BIT: u8 = 0x02;
    /// The header is written (`VAR_HEADER_VALID_ONLY`).
    pub const HEADER_VALID_ONLY_BIT: u8 = 0x80;
    /// The data is written too (`VAR_ADDED`).
    pub const ADDED_BIT: u8 = 0x40;
    /// The bits with the names upstream prints them by, in its order.
    pub const NAMED: [(&str, u8); 4] = [
        ("VAR_IN_DELETED_TRANSITION", IN_DELETED_TRANSITION_BIT),
        ("VAR_DELETED", DELETED_BIT),
        ("VAR_HEADER_VALID_ONLY", HEADER_VALID_ONLY_BIT),
        ("VAR_ADDED", ADDED_BIT),
    ];
}

/// The `StartId` every variable header begins with.
pub const MAGIC: u16 = 0x55AA;
/// What the first two bytes of erased flash read as: no more variables.
const END_MARKER: u16 = 0xFFFF;

/// `EFI_TIME`, a time-based authenticated variable's timestamp; all zero otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UefiTime {
    /// 1900–9999; 0 when unset.
    pub year: u16,
    /// 1–12.
    pub month: u8,
    /// 1–31.
    pub day: u8,
    /// 0–23.
    pub hour: u8,
    /// 0–59.
    pub minute: u8,
    /// 0–59.
    pub second: u8,
    /// Padding (upstream's `pad1`).
    pub pad1: u8,
    /// 0–999,999,999.
    pub nanosecond: u32,
    /// Minutes from UTC, or 2047 (`EFI_UNSPECIFIED_TIMEZONE`), which upstream reads as UTC.
    pub time_zone: i16,
    /// Daylight saving flags.
    pub daylight: u8,
    /// Padding (upstream's `pad2`).
    pub pad2: u8,
}

impl UefiTime {
    /// The encoded size.
    pub const SIZE: usize = 16;

    /// Decode the 16 bytes of an `EFI_TIME`.
    pub fn from_bytes(b: &[u8; 16]) -> UefiTime {
        UefiTime {
            year: u16::from_le_bytes([b[0], b[1]]),
            month: b[2],
            day: b[3],
            hour: b[4],
            minute: b[5],
            second: b[6],
            pad1: b[7],
            nanosecond: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            time_zone: i16::from_le_bytes([b[12], b[13]]),
            daylight: b[14],
            pad2: b[15],
        }
    }

    /// Encode as an `EFI_TIME`.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..2].copy_from_slice(&self.year.to_le_bytes());
        b[2..8].copy_from_slice(&[self.month, self.day, self.hour, self.minute, self.second, self.pad1]);
        b[8..12].copy_from_slice(&self.nanosecond.to_le_bytes());
        b[12..14].copy_from_slice(&self.time_zone.to_le_bytes());
        b[14] = self.daylight;
        b[15] = self.pad2;
        b
    }

    /// Whether a time is set (upstream: a year other than 0).
    pub fn is_set(&self) -> bool {
        self.year != 0
    }
}

impl fmt::Display for UefiTime {
    /// As Python prints the timezone-aware `datetime` upstream makes of it
    /// (`2024-05-01 12:00:00.250000+02:00`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )?;
        let micros = self.nanosecond / 1000;
        if micros != 0 {
            write!(f, ".{micros:06}")?;
        }
        let offset = if self.time_zone == 2047 { 0 } else { i32::from(self.time_zone) };
        let sign = if offset < 0 { '-' } else { '+' };
        write!(f, "{sign}{:02}:{:02}", offset.abs() / 60, offset.abs() % 60)
    }
}

/// A variable header or name that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VariableError {
    /// The header does not start with `0x55AA`.
    #[error("unexpected magic (0x{0:x}), not an AUTHENTICATED_VARIABLE_HEADER")]
    BadMagic(u16),
    /// The name is not UTF-16.
    #[error("the variable's name is not UTF-16LE")]
    BadName,
    /// The name or data was cut short.
    #[error("the variable needs {needed} bytes after its header, only {available} are there")]
    Truncated {
        /// Bytes the header announces.
        needed: usize,
        /// Bytes there are.
        available: usize,
    },
}

/// A decoded `AUTHENTICATED_VARIABLE_HEADER`: what is needed to read the rest of a variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariableHeader {
    /// The state byte as on disk (see [`state`]).
    pub state: u8,
    /// The reserved byte after it (upstream's `reserved1`).
    pub reserved: u8,
    /// The attribute bits (see [`attributes`]).
    pub attributes: u32,
    /// `MonotonicCount`.
    pub monotonic_count: u64,
    /// `TimeStamp`.
    pub timestamp: UefiTime,
    /// `PubKeyIndex`.
    pub public_key_index: u32,
    /// Bytes of the name, its NUL included.
    pub name_size: u32,
    /// Bytes of the data.
    pub data_size: u32,
    /// `VendorGuid`.
    pub vendor: Guid,
}

impl VariableHeader {
    /// The encoded size.
    pub const SIZE: usize = 60;

    /// Decode a header; `None` at the end of the store (erased flash).
    pub fn parse(b: &[u8; Self::SIZE]) -> Result<Option<VariableHeader>, VariableError> {
        let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        match u16::from_le_bytes([b[0], b[1]]) {
            MAGIC => {}
            END_MARKER => return Ok(None),
            other => return Err(VariableError::BadMagic(other)),
        }
        let mut timestamp = [0u8; 16];
        timestamp.copy_from_slice(&b[16..32]);
        let mut vendor = [0u8; 16];
        vendor.copy_from_slice(&b[44..60]);
        Ok(Some(VariableHeader {
            state: b[2],
            reserved: b[3],
            attributes: u32_at(4),
            monotonic_count: u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
            timestamp: UefiTime::from_bytes(&timestamp),
            public_key_index: u32_at(32),
            name_size: u32_at(36),
            data_size: u32_at(40),
            vendor: Guid::from_bytes(vendor),
        }))
    }

    /// Bytes of name and data that follow the header.
    pub fn body_size(&self) -> usize {
        self.name_size as usize + self.data_size as usize
    }
}

/// A UEFI variable as OVMF stores it (upstream's `EfiVariable`, ovmfvartool's
/// `AuthenticatedVariable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// The state byte as on disk: [`state::ADDED`] for a live variable.
    pub state: u8,
    /// The reserved byte after it (upstream's `reserved1`).
    pub reserved: u8,
    /// The attribute bits (see [`attributes`]); upstream's `flags`.
    pub attributes: u32,
    /// `MonotonicCount`.
    pub monotonic_count: u64,
    /// `TimeStamp`.
    pub timestamp: UefiTime,
    /// `PubKeyIndex`.
    pub public_key_index: u32,
    /// The vendor GUID, which with the name identifies the variable.
    pub vendor: Guid,
    /// The name, without its NUL.
    pub name: String,
    /// The value.
    pub data: Vec<u8>,
}

impl Variable {
    /// A live variable with nothing authenticated about it.
    pub fn new(vendor: Guid, name: impl Into<String>, data: impl Into<Vec<u8>>, attributes: u32) -> Variable {
        Variable {
            state: state::ADDED,
            reserved: 0,
            attributes,
            monotonic_count: 0,
            timestamp: UefiTime::default(),
            public_key_index: 0,
            vendor,
            name: name.into(),
            data: data.into(),
        }
    }

    /// The variable of `header`, from the bytes after it (its name, then its data).
    pub fn from_parts(header: VariableHeader, body: &[u8]) -> Result<Variable, VariableError> {
        let needed = header.body_size();
        if body.len() < needed {
            return Err(VariableError::Truncated { needed, available: body.len() });
        }
        let (name, data) = body[..needed].split_at(header.name_size as usize);
        if name.len() % 2 != 0 {
            return Err(VariableError::BadName);
        }
        let units: Vec<u16> = name.chunks_exact(2).map(|pair| u16::from_le_bytes([pair[0], pair[1]])).collect();
        let name = String::from_utf16(&units).map_err(|_| VariableError::BadName)?;
        Ok(Variable {
            state: header.state,
            reserved: header.reserved,
            attributes: header.attributes,
            monotonic_count: header.monotonic_count,
            timestamp: header.timestamp,
            public_key_index: header.public_key_index,
            vendor: header.vendor,
            // As upstream: every trailing NUL goes, not only the terminator.
            name: name.trim_end_matches('\0').to_owned(),
            data: data.to_vec(),
        })
    }

    /// Decode the variable at the start of `bytes`; `None` at the end of the store. Also
    /// returns how many bytes it took, alignment padding not included.
    pub fn decode(bytes: &[u8]) -> Result<Option<(Variable, usize)>, VariableError> {
        let Some(header) = bytes.first_chunk::<{ VariableHeader::SIZE }>() else {
            return Err(VariableError::Truncated { needed: VariableHeader::SIZE, available: bytes.len() });
        };
        let Some(header) = VariableHeader::parse(header)? else { return Ok(None) };
        let size = VariableHeader::SIZE + header.body_size();
        let variable = Variable::from_parts(header, &bytes[VariableHeader::SIZE..])?;
        Ok(Some((variable, size)))
    }

    /// The name in UTF-16LE with its NUL, as stored.
    fn encoded_name(&self) -> Vec<u8> {
        self.name.encode_utf16().chain([0]).flat_map(u16::to_le_bytes).collect()
    }

    /// Encode header, name and data (no alignment padding).
    pub fn encode(&self) -> Vec<u8> {
        let name = self.encoded_name();
        let mut out = Vec::with_capacity(VariableHeader::SIZE + name.len() + self.data.len());
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[self.state, self.reserved]);
        out.extend_from_slice(&self.attributes.to_le_bytes());
        out.extend_from_slice(&self.monotonic_count.to_le_bytes());
        out.extend_from_slice(&self.timestamp.to_bytes());
        out.extend_from_slice(&self.public_key_index.to_le_bytes());
        // A store is far below 4 GiB (see `store::VARIABLES_END`), so the sizes fit; a
        // variable too big for it is refused when the store is built.
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.data.len() as u32).to_le_bytes());
        out.extend_from_slice(self.vendor.as_bytes());
        out.extend_from_slice(&name);
        out.extend_from_slice(&self.data);
        out
    }

    /// Upstream's `isDeleted`: the `VAR_DELETED` bit is cleared.
    pub fn is_deleted(&self) -> bool {
        (self.state ^ 0xFF) & state::DELETED_BIT != 0
    }

    /// The variable as upstream's `print()` shows it (ovmfvartool's format), ending with an
    /// empty line.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_description(&mut out);
        out
    }

    fn write_description(&self, out: &mut String) -> fmt::Result {
        writeln!(out, "Authenticated Variable")?;
        writeln!(out, "======================")?;
        // Python's `repr()`, as upstream prints the name.
        writeln!(out, "Name:                {}", crate::log::repr::str_repr(&self.name))?;
        writeln!(out, "Vendor UUID:         {}", self.vendor.resolve())?;
        writeln!(out, "Monotonic Count:     {}", self.monotonic_count)?;
        writeln!(out, "Public Key Index:    {}", self.public_key_index)?;
        writeln!(out, "State:               {}", state_text(self.state))?;
        writeln!(out, "Flags:               {}", attributes_text(self.attributes))?;
        if self.timestamp.is_set() {
            writeln!(out, "Timestamp:           {}", self.timestamp)?;
        }
        writeln!(out, "Data Length:         {} bytes", self.data.len())?;
        hexdump(out, &self.data)?;
        writeln!(out)
    }
}

/// The inverted state's bits by name, `" | "`-separated, what is left in hex.
fn state_text(state_byte: u8) -> String {
    let mut left = state_byte ^ 0xFF;
    let mut parts: Vec<String> = Vec::new();
    for (name, bit) in state::NAMED {
        if left & bit == bit {
            parts.push(name.to_owned());
            left ^= bit;
        }
    }
    if left != 0 {
        parts.push(format!("0x{left:x}"));
    }
    parts.join(" | ")
}

/// The attribute bits by name, space-separated; unknown bits as ` 0x%08x` after them.
fn attributes_text(attributes: u32) -> String {
    let mut left = attributes;
    let mut names = Vec::new();
    for (name, bit) in attributes::NAMED {
        if left & bit != 0 {
            left ^= bit;
            names.push(name);
        }
    }
    let mut text = names.join(" ");
    if left != 0 {
        text.push_str(&format!(" 0x{left:08x}"));
    }
    text
}

/// ovmfvartool's hex dump: 16 bytes a line, the offset right-aligned to the width of the
/// data's length in hex, two groups of eight, the printable ASCII between bars; a run of
/// lines equal to the one before is shown once as `*`.
fn hexdump(out: &mut String, data: &[u8]) -> fmt::Result {
    let width = format!("{:x}", data.len()).len();
    let mut previous: Option<&[u8]> = None;
    let mut eliding = false;
    for (i, line) in data.chunks(16).enumerate() {
        if previous == Some(line) {
            if !eliding {
                eliding = true;
                writeln!(out, "*{:31}**{:45}", "", "")?;
            }
        } else {
            eliding = false;
            write!(out, "{:>width$x})  ", i * 16)?;
            for j in 0..16 {
                match line.get(j) {
                    Some(byte) => write!(out, "{byte:02x}")?,
                    None => out.push_str("  "),
                }
                out.push_str(match j {
                    7 | 15 => "  ",
                    _ => " ",
                });
            }
            let ascii: String =
                line.iter().map(|&b| if (0x20..=0x7e).contains(&b) { b as char } else { '.' }).collect();
            writeln!(out, "{:<18}", format!("|{ascii}|"))?;
        }
        previous = Some(line);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Variable {
        let vendor = Guid::parse("a19f72f8-b554-4bd7-a0c2-2762bd854691").expect("guid");
        Variable::new(
            vendor,
            "Demo",
            [0x2a],
            attributes::NON_VOLATILE | attributes::BOOTSERVICE_ACCESS | attributes::RUNTIME_ACCESS,
        )
    }

    #[test]
    fn encodes_edk2s_authenticated_variable_header() {
        let bytes = demo().encode();
        assert_eq!(bytes.len(), 60 + 10 + 1);
        assert_eq!(&bytes[0..4], &[0xaa, 0x55, 0x3f, 0x00], "magic, VAR_ADDED, reserved");
        assert_eq!(&bytes[4..8], &[7, 0, 0, 0], "attributes");
        assert_eq!(&bytes[36..44], &[10, 0, 0, 0, 1, 0, 0, 0], "name and data sizes");
        assert_eq!(&bytes[44..48], &[0xf8, 0x72, 0x9f, 0xa1], "vendor GUID, first field little-endian");
        assert_eq!(&bytes[60..], b"D\0e\0m\0o\0\0\0\x2a");
    }

    #[test]
    fn decode_reverses_encode() {
        let mut variable = demo();
        variable.name = "Nöme 💾".to_owned();
        variable.monotonic_count = 7;
        variable.public_key_index = 3;
        variable.timestamp = UefiTime { year: 2024, month: 5, day: 1, nanosecond: 250_000_000, ..UefiTime::default() };
        let bytes = variable.encode();
        let mut padded = bytes.clone();
        padded.extend_from_slice(&[0xff; 3]);
        assert_eq!(Variable::decode(&padded), Ok(Some((variable, bytes.len()))));
        assert_eq!(Variable::decode(&[0xff; 60]), Ok(None), "erased flash ends the store");
    }

    #[test]
    fn decode_refuses_what_is_not_a_variable() {
        let mut bytes = demo().encode();
        assert_eq!(
            Variable::decode(&bytes[..bytes.len() - 1]),
            Err(VariableError::Truncated { needed: 11, available: 10 })
        );
        assert_eq!(Variable::decode(&bytes[..20]), Err(VariableError::Truncated { needed: 60, available: 20 }));
        bytes[60] = 0x00;
        bytes[61] = 0xd8; // a lone surrogate
        assert_eq!(Variable::decode(&bytes), Err(VariableError::BadName));
        bytes[0] = 0x12;
        assert_eq!(Variable::decode(&bytes), Err(VariableError::BadMagic(0x5512)));
        assert_eq!(
            VariableError::BadMagic(0x5512).to_string(),
            "unexpected magic (0x5512), not an AUTHENTICATED_VARIABLE_HEADER"
        );
    }

    #[test]
    fn deleted_is_the_cleared_var_deleted_bit() {
        let mut variable = demo();
        assert!(!variable.is_deleted());
        variable.state = 0x3c; // what OVMF leaves of a replaced variable
        assert!(variable.is_deleted());
        variable.state = 0x3e; // in transition only
        assert!(!variable.is_deleted());
    }

    /// A hex dump line of fewer than 16 bytes: the missing bytes' columns stay blank.
    fn short_line(offset: &str, hex: &str, ascii: &str) -> String {
        let line = format!("{offset})  {hex}{}|{ascii}|", " ".repeat(50 - hex.len()));
        format!("{line:<width$}", width = offset.len() + 3 + 50 + 18)
    }

    #[test]
    fn describes_as_ovmfvartool_prints() {
        assert_eq!(
            demo().describe(),
            format!(
                "Authenticated Variable\n\
                 ======================\n\
                 Name:                'Demo'\n\
                 Vendor UUID:         f8729fa1-54b5-d74b-a0c2-2762bd854691\n\
                 Monotonic Count:     0\n\
                 Public Key Index:    0\n\
                 State:               VAR_HEADER_VALID_ONLY | VAR_ADDED\n\
                 Flags:               NON_VOLATILE BOOTSERVICE_ACCESS RUNTIME_ACCESS\n\
                 Data Length:         1 bytes\n\
                 {}\n\n",
                short_line("0", "2a", "*")
            )
        );
        let mut odd = demo();
        odd.state = 0x3c;
        odd.attributes = 0x100;
        odd.name = "it's".to_owned();
        odd.timestamp = UefiTime { year: 2024, month: 5, day: 1, hour: 12, time_zone: -90, ..UefiTime::default() };
        odd.data = [vec![0u8; 48], b"0123456789abcdefg".to_vec()].concat();
        let text = odd.describe();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[2], "Name:                \"it's\"");
        assert_eq!(
            lines[6],
            "State:               VAR_IN_DELETED_TRANSITION | VAR_DELETED | VAR_HEADER_VALID_ONLY | VAR_ADDED"
        );
        assert_eq!(lines[7], "Flags:                0x00000100");
        assert_eq!(lines[8], "Timestamp:           2024-05-01 12:00:00-01:30");
        assert_eq!(lines[9], "Data Length:         65 bytes");
        assert_eq!(lines[10], " 0)  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|");
        assert_eq!(lines[11], format!("*{:31}**{:45}", "", ""));
        assert_eq!(lines[12], "30)  30 31 32 33 34 35 36 37  38 39 61 62 63 64 65 66  |0123456789abcdef|");
        assert_eq!(lines[13], short_line("40", "67", "g"));
        assert_eq!(lines[14], "", "an empty line ends each variable");
        assert_eq!(lines.len(), 15);
    }

    #[test]
    fn names_are_shown_as_python_repr() {
        assert_eq!(crate::log::repr::str_repr("Boot0001"), "'Boot0001'");
        assert_eq!(crate::log::repr::str_repr("a'b\"c"), "'a\\'b\"c'");
        assert_eq!(crate::log::repr::str_repr("tab\there\\\u{1}"), "'tab\\there\\\\\\x01'");
        assert_eq!(crate::log::repr::str_repr(""), "''");
    }
}
