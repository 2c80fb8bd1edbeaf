"""UEFI variables in OVMF's variable store (upstream's `test_driver/efi.py`): `EfiVariable`,
`EfiGuid` and `EfiVars`, for a test to put variables in a VM's store before it boots and read
what the firmware and the OS wrote after it stopped::

    from test_driver.efi import EfiVariable

    machine.create_efi_vars()
    machine.write_efi_vars([EfiVariable(vendor_uuid=uuid.UUID("…"), name="Demo", data=b"\\x2a",
                                        flags=EfiVariable.Flags.NON_VOLATILE | …)])
    machine.start()
    …
    machine.shutdown()
    demo = next(v for v in machine.read_efi_vars() if v.name == "Demo")

Upstream builds these on the `ovmfvartool` library; ntd has its own, split in two:

- the variable objects are plain Python, here: test scripts create them, read and assign
  ovmfvartool's camelCase attributes (`vendorUUID`, `monotonicCount`, `dataLen`), use its
  nested `Flags` and `State` constants, and may subclass them, as with upstream's;
- everything about bytes is native (`ntd_core::efi`, through `ntd._native`): a variable's
  encoding (`serialize`, `deserialize`), the store's layout, the rules of reading and
  writing it while the machine is off (`EfiVars`, `machine.read_efi_vars()`, …) and the
  printed form (`print`), so Rust programs and test scripts share one implementation.

Upstream's quirks are kept, as scripts written against it rely on them:

- `EfiVariable(vendor_uuid=u)` stores `uuid.UUID(bytes=u.bytes_le)`: `vendorUUID` holds the
  GUID in its on-disk byte order, so compare it with `uuid.UUID(bytes=u.bytes_le)`; the
  `EfiGuid` constants are in that order too (and so are swapped once more when passed as
  `vendor_uuid`, as upstream);
- `state` is the on-disk byte: a `state` argument is stored inverted (`state ^ 0xFF`), the
  default is a live variable (`0x3F`);
- a variable read from a store has its attribute bits moved out of `flags` into the booleans
  (`volatile`, `boot_access`, `runtime_access`, …): `flags` keeps only unknown bits.

One difference: the variables already in a store that `write_efi_vars` adds to keep their
attributes (upstream rewrites them with the stripped `flags`, attribute bits lost).
"""

import datetime
import uuid
from typing import IO, Any, Self

from ntd import _native
from ntd._native import EfiVars

__all__ = ["EfiGuid", "EfiVariable", "EfiVars", "UEFITime", "lookupUUID", "resolveUUID"]


def resolveUUID(u: uuid.UUID) -> str:
    """The name of a well-known GUID given in on-disk order, else `str(u)`."""
    return _native.efi_resolve_guid(u.bytes)


def lookupUUID(u: str) -> uuid.UUID:
    """The GUID (on-disk order) named `u`, or `u` parsed as a UUID."""
    known = _native.efi_lookup_guid(u)
    return uuid.UUID(bytes=known) if known is not None else uuid.UUID(u)


def _on_disk(canonical: str) -> uuid.UUID:
    """A GUID given in its canonical text, as upstream's constants hold it: on-disk order."""
    return uuid.UUID(bytes=uuid.UUID(canonical).bytes_le)


class EfiGuid:
    """Well-known vendor GUIDs, in on-disk byte order (the values of upstream's constants)."""

    gEfiSystemNvDataFvGuid = _on_disk("fff12b8d-7696-4c8b-a985-2747075b4f50")
    gEfiAuthenticatedVariableGuid = _on_disk("aaf32c78-947b-439a-a180-2e144ec37792")
    gEdkiiVarErrorFlagGuid = _on_disk("04b37fe8-f6ae-480b-bdd5-37d98c5e89aa")
    gEfiMemoryTypeInformationGuid = _on_disk("4c19049f-4137-4dd3-9c10-8b97a83ffdfa")
    gMtcVendorGuid = _on_disk("eb704011-1402-11d3-8e77-00a0c969723b")
    gEfiGlobalVariableGuid = _on_disk("8be4df61-93ca-11d2-aa0d-00e098032b8c")
    gEfiIScsiInitiatorNameProtocolGuid = _on_disk("59324945-ec44-4c0d-b1cd-9db139df070c")
    gEfiIp4Config2ProtocolGuid = _on_disk("5b446ed1-e30b-4faa-871a-3654eca36080")
    gEfiImageSecurityDatabaseGuid = _on_disk("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
    # Upstream's value: edk2's canonical text taken as on-disk bytes.
    gEfiSecureBootEnableDisableGuid = _on_disk("c70ba3f0-08af-5645-99c4-001009c93a44")
    gEfiCustomModeEnableGuid = _on_disk("c076ec0c-7028-4399-a072-71ee5c448b9f")
    gIScsiConfigGuid = _on_disk("4b47d616-a8d6-4552-9d44-ccad2e0f4cf9")
    gEfiCertDbGuid = _on_disk("d9bee56e-75dc-49d9-b4d7-b534210f637a")
    gMicrosoftVendorGuid = _on_disk("77fa9abd-0359-4d32-bd60-28f4e78f784b")
    gEfiVendorKeysNvGuid = _on_disk("9073e4e0-60ec-4b6e-9903-4c223c260f3c")
    mBmHardDriveBootVariableGuid = _on_disk("fab7e9e1-39dd-4f2b-8408-e20e906cb6de")


class UEFITime:
    """`EFI_TIME`: a time-based authenticated variable's timestamp, all zero otherwise."""

    year: int
    month: int
    day: int
    hour: int
    minute: int
    second: int
    pad1: int
    nanosecond: int
    timezone: int
    daylight: int
    pad2: int

    def __init__(self, t: datetime.datetime | None = None) -> None:
        self.year, self.month, self.day, self.hour, self.minute, self.second = 0, 0, 0, 0, 0, 0
        self.pad1, self.nanosecond, self.timezone, self.daylight, self.pad2 = 0, 0, 0, 0, 0
        if t:
            self.year, self.month, self.day = t.year, t.month, t.day
            self.hour, self.minute, self.second = t.hour, t.minute, t.second
            self.nanosecond = t.microsecond * 1000

    @property
    def time(self) -> datetime.datetime | None:
        """The time, or None when unset (year 0); timezone 2047 (unspecified) counts as UTC."""
        if self.year == 0:
            return None
        if self.timezone == 2047:
            tz = datetime.timezone.utc
        else:
            tz = datetime.timezone(datetime.timedelta(minutes=self.timezone))
        return datetime.datetime(
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.nanosecond // 1000, tz
        )

    def __repr__(self) -> str:
        return f"UEFITime({self.time!r})"


class EfiVariable:
    """One UEFI variable (upstream's `EfiVariable`, an ovmfvartool `AuthenticatedVariable`)."""

    class Flags:
        NON_VOLATILE = 0x1
        BOOTSERVICE_ACCESS = 0x2
        RUNTIME_ACCESS = 0x4
        TIME_BASED_AUTHENTICATED_WRITE_ACCESS = 0x20

    class State:
        VAR_HEADER_VALID_ONLY = 0x7F
        VAR_ADDED = 0x3F

    # Set from `flags` by `_read_flags()` on a variable read from a store.
    volatile = False
    boot_access = False
    runtime_access = False
    hardware_error_record = False
    authenticated_write_access = False
    time_based_authenticated_write_access = False
    append_write = False

    magic: int
    state: int
    reserved1: int
    flags: int
    monotonicCount: int
    timestamp: UEFITime
    pubKeyIdx: int
    nameLen: int
    dataLen: int
    vendorUUID: uuid.UUID
    name: str
    data: bytes

    def __init__(
        self,
        vendor_uuid: uuid.UUID | None = None,
        name: str | None = None,
        data: bytes | None = None,
        state: int | None = None,
        flags: int | None = None,
    ) -> None:
        self.magic = 0x55AA
        self.reserved1 = 0
        self.monotonicCount = 0
        self.timestamp = UEFITime()
        self.pubKeyIdx = 0
        self.state = state ^ 0xFF if state is not None else (0x40 | 0x80) ^ 0xFF
        self.flags = flags if flags is not None else 0
        if vendor_uuid is not None:
            self.vendorUUID = uuid.UUID(bytes=vendor_uuid.bytes_le)
        if name is not None:
            self.name = name
            self.nameLen = len(name.encode("utf-16-le")) + 2
        if data is not None:
            self.data = data
            self.dataLen = len(data)

    def __repr__(self) -> str:
        name = getattr(self, "name", None)
        vendor = getattr(self, "vendorUUID", None)
        return f"<EfiVariable {name!r} vendorUUID={vendor} flags=0x{self.flags:x} data={getattr(self, 'data', None)!r}>"

    def _read_flags(self) -> None:
        """Move the attribute bits out of `flags` into the booleans, as upstream does to a
        variable it read."""
        self.volatile = not self.flags & 0x1
        self.boot_access = bool(self.flags & 0x2)
        self.runtime_access = bool(self.flags & 0x4)
        self.hardware_error_record = bool(self.flags & 0x8)
        self.authenticated_write_access = bool(self.flags & 0x10)
        self.time_based_authenticated_write_access = bool(self.flags & 0x20)
        self.append_write = bool(self.flags & 0x40)
        self.flags &= ~0x7F

    @property
    def isDeleted(self) -> bool:
        """Whether the variable is marked deleted (the `VAR_DELETED` state bit is cleared)."""
        return bool((self.state ^ 0xFF) & 2)

    def serialize(self) -> bytes:
        """The variable as stored: header, UTF-16LE name with its NUL, data (no padding). The
        sizes written are those of `name` and `data`, whatever `nameLen`/`dataLen` say."""
        return _native.efi_encode_variable(self)

    @classmethod
    def _from_store(cls, fields: dict[str, Any]) -> Self:
        """A variable of `cls` from the fields the native side decoded, as upstream's
        `deserialize` makes one: constructed bare, fields set, flags read."""
        variable = cls()
        for key, value in fields.items():
            if key == "timestamp":
                value = UEFITime()
                for part, number in fields["timestamp"].items():
                    setattr(value, part, number)
            elif key == "vendorUUID":
                value = uuid.UUID(bytes=value)
            setattr(variable, key, value)
        variable._read_flags()
        return variable

    @classmethod
    def deserialize(cls, f: IO[bytes]) -> Self | None:
        """Read the next variable from a store file positioned at one (4-byte aligned, the
        padding after it consumed); None at the end of the variables."""
        fields = _native.efi_read_variable(f)
        return None if fields is None else cls._from_store(fields)

    @classmethod
    def deserializeFromDocument(
        cls,
        vendorID: str,
        name: str,
        doc: dict[str, Any],
    ) -> Self:
        """A variable from ovmfvartool's YAML document form: `Data`, the attribute keys
        (`Volatile`, `Boot Access`, `Runtime Access`, …), `Flags`, `Timestamp`,
        `Monotonic Count`, `Public Key Index`; `vendorID` a GUID's name or text."""
        flags = int(doc.get("Flags", 0))
        for key, bit in (
            ("Boot Access", 0x2),
            ("Runtime Access", 0x4),
            ("Hardware Error Record", 0x8),
            ("Authenticated Write Access", 0x10),
            ("Time Based Authenticated Write Access", 0x20),
            ("Append Write", 0x40),
        ):
            if doc.get(key):
                flags |= bit
        if not doc.get("Volatile"):
            flags |= 0x1
        variable = cls()
        variable.flags = flags
        variable.timestamp = UEFITime(doc["Timestamp"]) if doc.get("Timestamp") else UEFITime()
        variable.monotonicCount = doc.get("Monotonic Count", 0)
        variable.pubKeyIdx = doc.get("Public Key Index", 0)
        variable.name = name
        variable.nameLen = len(name.encode("utf-16-le")) + 2
        variable.data = doc["Data"]
        variable.dataLen = len(variable.data)
        variable.vendorUUID = lookupUUID(vendorID)
        variable._read_flags()
        return variable

    def print(self) -> bool:
        """Print the variable to stdout as ovmfvartool does; returns True, as it."""
        print(_native.efi_describe_variable(self), end="")
        return True
