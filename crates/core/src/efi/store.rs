//! The layout of OVMF's variable flash (edk2's 4 MiB OVMF build, `OVMF_VARS_4M.fd`; also the
//! layout upstream's driver writes):
//!
//! | offset    | what |
//! |-----------|------|
//! | `0x0`     | firmware volume header (`EFI_FIRMWARE_VOLUME_HEADER`, 72 bytes with its block map) |
//! | `0x48`    | variable store header (`VARIABLE_STORE_HEADER`, 28 bytes) |
//! | `0x64`    | the variables, each 4-byte aligned, then erased flash (`0xFF`) up to `0x40000` |
//! | `0x40000` | event log area, erased |
//! | `0x41000` | fault-tolerant write working block header (32 bytes), then erased |
//! | `0x42000` | fault-tolerant write spare area, erased, up to `0x84000` |

use super::variable::{Variable, VariableHeader};
use super::{FormatError, Guid};

/// The size of the whole variable flash.
pub const STORE_SIZE: usize = 0x84000;
/// Where the variables' region ends (the variable store header's `Size` counts from `0x48`).
pub const VARIABLES_END: usize = 0x40000;
/// Where the fault-tolerant write working block starts.
pub const FTW_WORKING_OFFSET: usize = 0x41000;

/// `EFI_FVH_SIGNATURE`.
const VOLUME_SIGNATURE: &[u8; 4] = b"_FVH";
/// The firmware volume's attributes as OVMF's build sets them (`EFI_FVB2_*` read/write
/// enabled and status, sticky write, memory mapped, erase polarity 1, alignment).
const VOLUME_ATTRIBUTES: u32 = 0x0004_FEFF;
/// `EFI_FVH_REVISION`.
const VOLUME_REVISION: u8 = 2;
/// The block map: the whole flash in 4 KiB blocks.
const BLOCK_SIZE: u32 = 0x1000;
/// `sizeof(EFI_FIRMWARE_VOLUME_HEADER)` with a block map of one entry and its terminator.
const VOLUME_HEADER_SIZE: usize = 72;
/// `sizeof(VARIABLE_STORE_HEADER)`.
const STORE_HEADER_SIZE: usize = 28;
/// `VARIABLE_STORE_FORMATTED`.
const STORE_FORMATTED: u8 = 0x5A;
/// `VARIABLE_STORE_HEALTHY`.
const STORE_HEALTHY: u8 = 0xFE;
/// Variables start at a multiple of this (`HEADER_ALIGNMENT`).
const ALIGNMENT: usize = 4;

/// The fault-tolerant write working block header of an empty store, so that OVMF takes the
/// spare area as clean: the signature `gEdkiiWorkingBlockSignatureGuid`, the header's CRC32 as
/// edk2 computes it, the state byte (working block valid), three reserved bytes, and the write
/// queue size (the rest of the 4 KiB block).
fn ftw_working_header() -> [u8; 32] {
    let mut header = [0u8; 32];
    header[..16].copy_from_slice(Guid::WORKING_BLOCK_SIGNATURE.as_bytes());
    header[16..20].copy_from_slice(&0x642c_af2c_u32.to_le_bytes());
    header[20..24].copy_from_slice(&[0xFE, 0xFF, 0xFF, 0xFF]);
    header[24..32].copy_from_slice(&(BLOCK_SIZE as u64 - 32).to_le_bytes());
    header
}

fn volume_header() -> [u8; VOLUME_HEADER_SIZE] {
    let mut header = [0u8; VOLUME_HEADER_SIZE];
    // 16 zero bytes (the reset vector), then the file system GUID.
    header[16..32].copy_from_slice(Guid::SYSTEM_NV_DATA_FV.as_bytes());
    header[32..40].copy_from_slice(&(STORE_SIZE as u64).to_le_bytes());
    header[40..44].copy_from_slice(VOLUME_SIGNATURE);
    header[44..48].copy_from_slice(&VOLUME_ATTRIBUTES.to_le_bytes());
    header[48..50].copy_from_slice(&(VOLUME_HEADER_SIZE as u16).to_le_bytes());
    // The checksum (50..52) comes last; the extension header offset (52..54) and the reserved
    // byte stay 0.
    header[55] = VOLUME_REVISION;
    header[56..60].copy_from_slice(&(STORE_SIZE as u32 / BLOCK_SIZE).to_le_bytes());
    header[60..64].copy_from_slice(&BLOCK_SIZE.to_le_bytes());
    // 64..72: the block map's terminating zero entry.
    // The checksum makes the header's 16-bit words sum to zero.
    let sum = header.chunks_exact(2).fold(0u16, |sum, word| sum.wrapping_add(u16::from_le_bytes([word[0], word[1]])));
    header[50..52].copy_from_slice(&sum.wrapping_neg().to_le_bytes());
    header
}

fn store_header() -> [u8; STORE_HEADER_SIZE] {
    let mut header = [0u8; STORE_HEADER_SIZE];
    header[..16].copy_from_slice(Guid::AUTHENTICATED_VARIABLE.as_bytes());
    header[16..20].copy_from_slice(&((VARIABLES_END - VOLUME_HEADER_SIZE) as u32).to_le_bytes());
    header[20] = STORE_FORMATTED;
    header[21] = STORE_HEALTHY;
    header
}

/// Where the variables start.
const VARIABLES_OFFSET: usize = VOLUME_HEADER_SIZE + STORE_HEADER_SIZE;

/// An empty store: what upstream's `create_efi_vars()` writes, byte for byte the
/// `OVMF_VARS_4M.fd` template edk2 builds.
pub fn empty() -> Vec<u8> {
    let mut store = vec![0xFF; STORE_SIZE];
    store[..VOLUME_HEADER_SIZE].copy_from_slice(&volume_header());
    store[VOLUME_HEADER_SIZE..VARIABLES_OFFSET].copy_from_slice(&store_header());
    store[FTW_WORKING_OFFSET..FTW_WORKING_OFFSET + 32].copy_from_slice(&ftw_working_header());
    store
}

/// A store holding `variables`, in this order, each 4-byte aligned. Fails if they do not fit
/// in the variables' region (upstream does not check, and would write past it).
pub fn build<'a>(variables: impl IntoIterator<Item = &'a Variable>) -> Result<Vec<u8>, FormatError> {
    let mut store = empty();
    let mut at = VARIABLES_OFFSET;
    for variable in variables {
        let bytes = variable.encode();
        let end = at + bytes.len();
        if end > VARIABLES_END {
            return Err(FormatError::Full { capacity: VARIABLES_END - VARIABLES_OFFSET });
        }
        store[at..end].copy_from_slice(&bytes);
        at = end.next_multiple_of(ALIGNMENT);
    }
    Ok(store)
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn guid_at(bytes: &[u8], at: usize) -> Guid {
    let mut guid = [0u8; 16];
    guid.copy_from_slice(&bytes[at..at + 16]);
    Guid::from_bytes(guid)
}

/// Every variable in a store, deleted ones included, in the order they are stored. Checks the
/// headers as upstream does (signature, GUIDs, formatted and healthy); the store's size may
/// be any (the 2 MiB build's too), the region is the one its headers give.
pub fn parse(store: &[u8]) -> Result<Vec<Variable>, FormatError> {
    if store.len() < VOLUME_HEADER_SIZE || &store[40..44] != VOLUME_SIGNATURE {
        return Err(FormatError::NotFirmwareVolume);
    }
    let volume = guid_at(store, 16);
    if volume != Guid::SYSTEM_NV_DATA_FV {
        return Err(FormatError::UnexpectedVolume(volume));
    }
    let store_at = u16_at(store, 48) as usize;
    if store.len() < store_at + STORE_HEADER_SIZE {
        return Err(FormatError::Truncated { offset: store_at });
    }
    let kind = guid_at(store, store_at);
    if kind != Guid::AUTHENTICATED_VARIABLE {
        return Err(FormatError::UnexpectedStore(kind));
    }
    match (store[store_at + 20], store[store_at + 21]) {
        (STORE_FORMATTED, STORE_HEALTHY) => {}
        (STORE_FORMATTED, state) => return Err(FormatError::NotHealthy(state)),
        (format, _) => return Err(FormatError::NotFormatted(format)),
    }
    let end = (store_at + u32_at(store, store_at + 16) as usize).min(store.len());
    let mut variables = Vec::new();
    let mut at = store_at + STORE_HEADER_SIZE;
    // A header that would not fit before the end is erased flash: a full store ends there.
    while at + VariableHeader::SIZE <= end {
        let decoded =
            Variable::decode(&store[at..end]).map_err(|source| FormatError::Variable { offset: at, source })?;
        let Some((variable, size)) = decoded else { break };
        variables.push(variable);
        at = (at + size).next_multiple_of(ALIGNMENT);
    }
    Ok(variables)
}

/// The variables a store holds, as upstream's `read_content()` sees them: deleted ones
/// skipped; a variable stored again (same vendor, same name) replaces the earlier copy in its
/// place; grouped by vendor in the order vendors first appear.
pub fn live(variables: impl IntoIterator<Item = Variable>) -> Vec<Variable> {
    let mut merged = Vec::new();
    merge(&mut merged, variables.into_iter().filter(|v| !v.is_deleted()));
    merged
}

/// Add `add` to `variables` (grouped by vendor, as [`live`] returns them) as upstream's
/// `write()` does: a variable with the vendor and name of one already there replaces it in its
/// place, a new one goes last of its vendor's group, a new vendor's group goes last.
pub fn merge(variables: &mut Vec<Variable>, add: impl IntoIterator<Item = Variable>) {
    for variable in add {
        if let Some(same) = variables.iter_mut().find(|v| v.vendor == variable.vendor && v.name == variable.name) {
            *same = variable;
        } else if let Some(last) = variables.iter().rposition(|v| v.vendor == variable.vendor) {
            variables.insert(last + 1, variable);
        } else {
            variables.push(variable);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::efi::variable::{VariableError, attributes, state};

    fn var(vendor: &str, name: &str, data: &[u8]) -> Variable {
        Variable::new(Guid::parse(vendor).expect("guid"), name, data, attributes::NON_VOLATILE)
    }

    const A: &str = "a19f72f8-b554-4bd7-a0c2-2762bd854691";
    const B: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

    #[test]
    fn the_empty_store_has_ovmfs_headers() {
        let store = empty();
        assert_eq!(store.len(), 540_672);
        assert_eq!(&store[48..52], &[72, 0, 0xaf, 0xb8], "header length 72, checksum 0xB8AF as OVMF's build");
        assert_eq!(&store[0x58..0x5e], &[0xb8, 0xff, 0x03, 0x00, 0x5a, 0xfe], "store size, formatted, healthy");
        assert_eq!(
            &store[FTW_WORKING_OFFSET..FTW_WORKING_OFFSET + 32],
            &[
                0x2b, 0x29, 0x58, 0x9e, 0x68, 0x7c, 0x7d, 0x49, 0xa0, 0xce, 0x65, 0x00, 0xfd, 0x9f, 0x1b, 0x95, 0x2c,
                0xaf, 0x2c, 0x64, 0xfe, 0xff, 0xff, 0xff, 0xe0, 0x0f, 0, 0, 0, 0, 0, 0
            ]
        );
        assert!(store[VARIABLES_OFFSET..FTW_WORKING_OFFSET].iter().all(|&b| b == 0xff));
        assert_eq!(parse(&store), Ok(Vec::new()));
    }

    #[test]
    fn the_empty_store_is_edk2s_template() {
        // Debian's ovmf package (scripts/install-host-deps); skipped where it is missing.
        let Ok(template) = std::fs::read("/usr/share/OVMF/OVMF_VARS_4M.fd") else {
            eprintln!("no /usr/share/OVMF/OVMF_VARS_4M.fd: not compared");
            return;
        };
        assert!(template == empty(), "the empty store differs from OVMF's template");
    }

    #[test]
    fn build_and_parse_round_trip() {
        let variables = vec![var(A, "Demo", &[0x2a]), var(B, "Odd", b"12345"), var(A, "Second", &[])];
        let store = build(&variables).expect("build");
        assert_eq!(store.len(), STORE_SIZE);
        assert_eq!(parse(&store), Ok(variables.clone()));
        // Each variable starts 4-byte aligned, the padding erased.
        assert_eq!(&store[VARIABLES_OFFSET + 71..VARIABLES_OFFSET + 72], &[0xff]);
        assert_eq!(u16_at(&store, VARIABLES_OFFSET + 72), 0x55AA);
        assert_eq!(build(&parse(&store).expect("parse")).expect("build"), store, "byte for byte");
    }

    #[test]
    fn a_store_that_is_full_is_refused() {
        let big = var(A, "Big", &vec![0u8; VARIABLES_END]);
        assert_eq!(build([&big]), Err(FormatError::Full { capacity: VARIABLES_END - VARIABLES_OFFSET }));
        // Exactly full: fits, and the parser stops at the region's end.
        let size = VARIABLES_END - VARIABLES_OFFSET - 60 - 8;
        let exact = var(A, "Big", &vec![1u8; size]);
        let store = build([&exact]).expect("fits");
        assert_eq!(parse(&store), Ok(vec![exact]));
    }

    #[test]
    fn foreign_files_are_not_stores() {
        assert_eq!(parse(b"short"), Err(FormatError::NotFirmwareVolume));
        let mut store = empty();
        store[16] ^= 1;
        assert!(matches!(parse(&store), Err(FormatError::UnexpectedVolume(_))));
        let mut store = empty();
        store[72] ^= 1;
        assert!(matches!(parse(&store), Err(FormatError::UnexpectedStore(_))));
        let mut store = empty();
        store[92] = 0;
        assert_eq!(parse(&store), Err(FormatError::NotFormatted(0)));
        let mut store = empty();
        store[93] = 0;
        assert_eq!(parse(&store), Err(FormatError::NotHealthy(0)));
        let mut store = empty();
        store[VARIABLES_OFFSET] = 0;
        assert_eq!(
            parse(&store),
            Err(FormatError::Variable { offset: VARIABLES_OFFSET, source: VariableError::BadMagic(0xff00) })
        );
    }

    #[test]
    fn live_variables_are_upstreams_read_content() {
        let mut deleted = var(A, "Demo", &[1]);
        deleted.state = 0x3c;
        let stored =
            vec![var(A, "Demo", &[0]), var(B, "Other", &[0]), var(A, "Demo", &[2]), deleted, var(A, "Later", &[3])];
        let live = live(stored);
        let seen: Vec<(&str, &[u8])> = live.iter().map(|v| (v.name.as_str(), v.data.as_slice())).collect();
        assert_eq!(seen, [("Demo", &[2][..]), ("Later", &[3]), ("Other", &[0])]);
    }

    #[test]
    fn merge_replaces_in_place_and_appends_to_the_vendors_group() {
        let mut variables = vec![var(A, "One", &[1]), var(B, "Two", &[2])];
        merge(&mut variables, [var(A, "Three", &[3]), var(B, "Two", &[22]), var(B, "Four", &[4])]);
        let seen: Vec<(&str, u8)> = variables.iter().map(|v| (v.name.as_str(), v.data[0])).collect();
        assert_eq!(seen, [("One", 1), ("Three", 3), ("Two", 22), ("Four", 4)]);
        assert!(variables.iter().all(|v| v.state == state::ADDED));
    }
}
