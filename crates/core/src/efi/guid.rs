//! GUIDs as OVMF's variable store holds them, and the names upstream gives the known ones.

use std::fmt;

/// A GUID in the byte order it has on disk (the UEFI `EFI_GUID` layout: the first three
/// fields little-endian, the last eight bytes as they are).
///
/// Two text forms exist and both matter:
/// - the canonical one ([`Guid::parse`], [`fmt::Display`]), which the UEFI specification,
///   edk2 and Linux's efivarfs file names (`Demo-a19f72f8-b554-4bd7-a0c2-2762bd854691`) use;
/// - the 16 bytes in disk order as hyphenated hex ([`Guid::disk_order_text`]), which is what
///   upstream's Python driver shows: it keeps a vendor GUID as `uuid.UUID(bytes=<disk bytes>)`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid([u8; 16]);

/// The names upstream resolves GUIDs to (ovmfvartool's registered ones), by their canonical
/// text. `gEfiSecureBootEnableDisableGuid` is registered there with edk2's canonical text
/// taken as disk-order bytes, so its canonical form here looks swapped: that is the value
/// upstream's `EfiGuid.gEfiSecureBootEnableDisableGuid` has, kept for names to resolve alike.
const KNOWN: [(&str, Guid); 16] = [
    ("gEfiSystemNvDataFvGuid", Guid::SYSTEM_NV_DATA_FV),
    ("gEfiAuthenticatedVariableGuid", Guid::AUTHENTICATED_VARIABLE),
    ("gEdkiiVarErrorFlagGuid", Guid::parse_const("04b37fe8-f6ae-480b-bdd5-37d98c5e89aa")),
    ("gEfiMemoryTypeInformationGuid", Guid::parse_const("4c19049f-4137-4dd3-9c10-8b97a83ffdfa")),
    ("gMtcVendorGuid", Guid::parse_const("eb704011-1402-11d3-8e77-00a0c969723b")),
    ("gEfiGlobalVariableGuid", Guid::GLOBAL_VARIABLE),
    // Registered as "Iscsi" while upstream's attribute is `gEfiIScsiInitiatorNameProtocolGuid`.
    ("gEfiIscsiInitiatorNameProtocolGuid", Guid::parse_const("59324945-ec44-4c0d-b1cd-9db139df070c")),
    ("gEfiIp4Config2ProtocolGuid", Guid::parse_const("5b446ed1-e30b-4faa-871a-3654eca36080")),
    ("gEfiImageSecurityDatabaseGuid", Guid::parse_const("d719b2cb-3d3a-4596-a3bc-dad00e67656f")),
    ("gEfiSecureBootEnableDisableGuid", Guid::parse_const("c70ba3f0-08af-5645-99c4-001009c93a44")),
    ("gEfiCustomModeEnableGuid", Guid::parse_const("c076ec0c-7028-4399-a072-71ee5c448b9f")),
    ("gIScsiConfigGuid", Guid::parse_const("4b47d616-a8d6-4552-9d44-ccad2e0f4cf9")),
    ("gEfiCertDbGuid", Guid::parse_const("d9bee56e-75dc-49d9-b4d7-b534210f637a")),
    ("gMicrosoftVendorGuid", Guid::parse_const("77fa9abd-0359-4d32-bd60-28f4e78f784b")),
    ("gEfiVendorKeysNvGuid", Guid::parse_const("9073e4e0-60ec-4b6e-9903-4c223c260f3c")),
    ("mBmHardDriveBootVariableGuid", Guid::parse_const("fab7e9e1-39dd-4f2b-8408-e20e906cb6de")),
];

/// Text that is not a GUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")]
pub struct InvalidGuid(pub String);

/// Where the canonical text's hex digits go in the disk-order bytes: the first three fields
/// are stored little-endian.
const CANONICAL_TO_DISK: [usize; 16] = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];

const fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The 16 bytes of `8-4-4-4-12` hex text, in text order.
const fn text_bytes(text: &str) -> Option<[u8; 16]> {
    let text = text.as_bytes();
    if text.len() != 36 {
        return None;
    }
    let mut bytes = [0u8; 16];
    let (mut i, mut n) = (0, 0);
    while i < 36 {
        if i == 8 || i == 13 || i == 18 || i == 23 {
            if text[i] != b'-' {
                return None;
            }
            i += 1;
            continue;
        }
        let (Some(high), Some(low)) = (hex_digit(text[i]), hex_digit(text[i + 1])) else { return None };
        bytes[n] = high << 4 | low;
        n += 1;
        i += 2;
    }
    Some(bytes)
}

impl Guid {
    /// `gEfiSystemNvDataFvGuid`: the file system of a firmware volume holding non-volatile
    /// data, as the variable flash is.
    pub const SYSTEM_NV_DATA_FV: Guid = Guid::parse_const("fff12b8d-7696-4c8b-a985-2747075b4f50");
    /// `gEfiAuthenticatedVariableGuid`: a variable store of authenticated variables.
    pub const AUTHENTICATED_VARIABLE: Guid = Guid::parse_const("aaf32c78-947b-439a-a180-2e144ec37792");
    /// `gEfiGlobalVariableGuid` (`EFI_GLOBAL_VARIABLE`): the vendor of the variables the UEFI
    /// specification defines (`BootOrder`, `Boot0000`, `Timeout`, …).
    pub const GLOBAL_VARIABLE: Guid = Guid::parse_const("8be4df61-93ca-11d2-aa0d-00e098032b8c");
    /// `gEdkiiWorkingBlockSignatureGuid`: the signature of a fault-tolerant write working block.
    pub const WORKING_BLOCK_SIGNATURE: Guid = Guid::parse_const("9e58292b-7c68-497d-a0ce-6500fd9f1b95");

    /// The GUID whose bytes on disk are `bytes`.
    pub const fn from_bytes(bytes: [u8; 16]) -> Guid {
        Guid(bytes)
    }

    /// The bytes on disk.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parse the canonical text form (`8be4df61-93ca-11d2-aa0d-00e098032b8c`).
    pub fn parse(text: &str) -> Result<Guid, InvalidGuid> {
        let bytes = text_bytes(text).ok_or_else(|| InvalidGuid(text.to_owned()))?;
        Ok(Guid::from_canonical_bytes(bytes))
    }

    /// The table above, checked at compile time.
    const fn parse_const(text: &str) -> Guid {
        match text_bytes(text) {
            Some(bytes) => Guid::from_canonical_bytes(bytes),
            None => panic!("not a GUID"),
        }
    }

    const fn from_canonical_bytes(text: [u8; 16]) -> Guid {
        let mut disk = [0u8; 16];
        let mut i = 0;
        while i < 16 {
            disk[CANONICAL_TO_DISK[i]] = text[i];
            i += 1;
        }
        Guid(disk)
    }

    /// The 16 bytes in disk order as hyphenated hex: what upstream prints for a GUID it has
    /// no name for (Python's `str(uuid.UUID(bytes=<disk bytes>))`).
    pub fn disk_order_text(&self) -> String {
        hyphenated(&self.0)
    }

    /// The name upstream gives a well-known GUID (ovmfvartool's), if it is one.
    pub fn name(&self) -> Option<&'static str> {
        KNOWN.iter().find(|(_, guid)| guid == self).map(|(name, _)| *name)
    }

    /// The GUID upstream names `name`.
    pub fn from_name(name: &str) -> Option<Guid> {
        KNOWN.iter().find(|(known, _)| *known == name).map(|(_, guid)| *guid)
    }

    /// Upstream's `resolveUUID`: the GUID's name if it has one, else its disk-order text. The
    /// keys of upstream's `EfiVars.read_content()` and the `Vendor UUID:` of a printed variable.
    pub fn resolve(&self) -> String {
        self.name().map_or_else(|| self.disk_order_text(), str::to_owned)
    }

    /// Every name upstream knows, with its GUID.
    pub fn known() -> impl Iterator<Item = (&'static str, Guid)> {
        KNOWN.iter().copied()
    }
}

fn hyphenated(bytes: &[u8; 16]) -> String {
    let mut text = String::with_capacity(36);
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

impl fmt::Display for Guid {
    /// The canonical text form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = [0u8; 16];
        for (i, &at) in CANONICAL_TO_DISK.iter().enumerate() {
            text[i] = self.0[at];
        }
        f.write_str(&hyphenated(&text))
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

impl std::str::FromStr for Guid {
    type Err = InvalidGuid;

    fn from_str(text: &str) -> Result<Guid, InvalidGuid> {
        Guid::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_text_is_stored_with_its_first_fields_little_endian() {
        let global = Guid::parse("8be4df61-93ca-11d2-aa0d-00e098032b8c").expect("guid");
        assert_eq!(
            global.as_bytes(),
            &[0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c]
        );
        assert_eq!(global.to_string(), "8be4df61-93ca-11d2-aa0d-00e098032b8c");
        // Upstream's text of the same GUID: the disk bytes read as a big-endian UUID.
        assert_eq!(global.disk_order_text(), "61dfe48b-ca93-d211-aa0d-00e098032b8c");
        assert_eq!(Guid::parse("8BE4DF61-93CA-11D2-AA0D-00E098032B8C"), Ok(global));
    }

    #[test]
    fn names_resolve_as_upstreams_resolve_uuid() {
        let global = Guid::parse("8be4df61-93ca-11d2-aa0d-00e098032b8c").expect("guid");
        assert_eq!(global.resolve(), "gEfiGlobalVariableGuid");
        assert_eq!(Guid::from_name("gEfiGlobalVariableGuid"), Some(global));
        let unknown = Guid::parse("a19f72f8-b554-4bd7-a0c2-2762bd854691").expect("guid");
        assert_eq!(unknown.resolve(), "f8729fa1-54b5-d74b-a0c2-2762bd854691");
        // Upstream's disk-order values of a few registered GUIDs.
        for (name, text) in [
            ("gEfiSystemNvDataFvGuid", "8d2bf1ff-9676-8b4c-a985-2747075b4f50"),
            ("gEfiSecureBootEnableDisableGuid", "f0a30bc7-af08-4556-99c4-001009c93a44"),
            ("gEfiIscsiInitiatorNameProtocolGuid", "45493259-44ec-0d4c-b1cd-9db139df070c"),
        ] {
            assert_eq!(Guid::from_name(name).map(|g| g.disk_order_text()).as_deref(), Some(text));
        }
        assert_eq!(Guid::known().count(), 16);
    }

    #[test]
    fn malformed_text_is_refused() {
        for text in
            ["", "8be4df61-93ca-11d2-aa0d-00e098032b8", "8be4df61x93ca-11d2-aa0d-00e098032b8c", "g".repeat(36).as_str()]
        {
            assert_eq!(Guid::parse(text), Err(InvalidGuid(text.to_owned())));
        }
    }
}
