//! Following a unit's state through systemd's own signals, so that `wait_for_unit` sees the
//! unit turn active within milliseconds instead of at the next `systemctl` check.
//!
//! Under TCG a `systemctl show` costs the guest about 60 ms, so a loop of them either sees a
//! change late or keeps a vCPU busy. systemd announces every change of a unit's state as a
//! `PropertiesChanged` signal on the system bus, to subscribers. The guest's stock tools can
//! subscribe without a process per check: `systemd-stdio-bridge` (part of systemd, on NixOS
//! and Debian alike) connects its stdin and stdout to the system bus, and bash, as a
//! coprocess, speaks D-Bus to it. The wait sends, once:
//!
//! 1. the authentication (`AUTH EXTERNAL`, root) and `Hello`;
//! 2. `AddMatch` for `PropertiesChanged` of the `org.freedesktop.systemd1.Unit` interface of
//!    this one unit's object, so nothing else reaches the guest's shell;
//! 3. `Subscribe` (systemd sends unit signals only while someone is subscribed);
//! 4. a call of a method systemd does not have: its `UnknownMethod` error comes after the
//!    `Subscribe` was handled, so from that answer on every change is seen.
//!
//! Then it checks the state once with `systemctl` (upstream's rules) and sleeps in `read` on
//! the bridge. Each signal carries the new `ActiveState`: `active` ends the wait at once,
//! `failed` and `inactive` are checked with upstream's rules, and a second without signals
//! checks too, so a signal missed for any reason costs at most upstream's own pace. Without
//! bash, the bridge or a running bus (early boot), the wait polls as before.
//!
//! The messages are marshalled here, on the host, as `printf` escapes; only `AddMatch`'s body
//! (the unit's object path, known in the guest after `systemctl` resolved an alias or a name
//! without suffix) is put together in the guest.

use std::fmt::Write as _;

/// D-Bus message types.
const METHOD_CALL: u8 = 1;
#[cfg(test)]
const SIGNAL: u8 = 4;

/// D-Bus header field codes.
const PATH: u8 = 1;
const INTERFACE: u8 = 2;
const MEMBER: u8 = 3;
const DESTINATION: u8 = 6;
const SIGNATURE: u8 = 8;

/// A D-Bus message being marshalled (little-endian, as `l` says).
#[derive(Default)]
struct Marshal {
    bytes: Vec<u8>,
}

impl Marshal {
    fn align(&mut self, to: usize) {
        while !self.bytes.len().is_multiple_of(to) {
            self.bytes.push(0);
        }
    }

    fn u32(&mut self, value: u32) {
        self.align(4);
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    /// A string or an object path.
    fn string(&mut self, value: &str) {
        self.u32(value.len() as u32);
        self.bytes.extend_from_slice(value.as_bytes());
        self.bytes.push(0);
    }

    fn signature(&mut self, value: &str) {
        self.bytes.push(value.len() as u8);
        self.bytes.extend_from_slice(value.as_bytes());
        self.bytes.push(0);
    }

    /// An array: its length, then what `elements` marshals (aligned to `align` first).
    fn array(&mut self, align: usize, elements: impl FnOnce(&mut Marshal)) {
        self.u32(0);
        let length_at = self.bytes.len() - 4;
        self.align(align);
        let start = self.bytes.len();
        elements(self);
        let length = (self.bytes.len() - start) as u32;
        self.bytes[length_at..length_at + 4].copy_from_slice(&length.to_le_bytes());
    }
}

/// A whole message: the header with `fields` (code, signature, value), then `body` (already
/// marshalled, starting 8-aligned, with the signature `body_signature`).
fn message(kind: u8, serial: u32, fields: &[(u8, &str, &str)], body_signature: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Marshal::default();
    m.bytes.extend_from_slice(&[b'l', kind, 0, 1]);
    m.u32(body.len() as u32);
    m.u32(serial);
    let signature = (!body_signature.is_empty()).then_some((SIGNATURE, "g", body_signature));
    m.array(8, |m| {
        for &(code, kind, value) in fields.iter().chain(signature.iter()) {
            m.align(8);
            m.bytes.push(code);
            m.signature(kind);
            match kind {
                "g" => m.signature(value),
                _ => m.string(value),
            }
        }
    });
    m.align(8);
    m.bytes.extend_from_slice(body);
    m.bytes
}

/// A method call of `destination`'s `interface.member` on `path`, without arguments.
fn call(serial: u32, destination: &str, path: &str, interface: &str, member: &str) -> Vec<u8> {
    let fields =
        [(PATH, "o", path), (INTERFACE, "s", interface), (MEMBER, "s", member), (DESTINATION, "s", destination)];
    message(METHOD_CALL, serial, &fields, "", &[])
}

const BUS: &str = "org.freedesktop.DBus";
const BUS_PATH: &str = "/org/freedesktop/DBus";
const SYSTEMD: &str = "org.freedesktop.systemd1";
const SYSTEMD_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";

/// The method the barrier calls: systemd has none of that name, so it answers
/// `org.freedesktop.DBus.Error.UnknownMethod`.
const BARRIER: &str = "NtdSubscribed";

/// `bytes` as `printf` escapes (for a format in double quotes: `\\x` pairs, nothing else).
fn escapes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 5);
    for byte in bytes {
        let _ = write!(out, "\\\\x{byte:02x}");
    }
    out
}

/// The bash code (a function body, run through `eval` so that other shells only see a
/// string) that follows `$id`'s state through the bus, calling `check` (upstream's rules, which
/// exits when the wait is decided) at the start, on `failed` and `inactive` signals and after
/// a quiet second, and running `on_state` (bash, with the new state in `$st`) for every
/// signal. It returns when the bus cannot be used; the caller then polls.
pub(crate) fn follow_script(on_state: &str) -> String {
    // AUTH and Hello, then (AddMatch's header around its body, put together in the guest),
    // then Subscribe and the barrier.
    let mut start = b"\0AUTH EXTERNAL 30\r\nBEGIN\r\n".to_vec();
    start.extend(call(1, BUS, BUS_PATH, BUS, "Hello"));
    let add_match = {
        let fields = [(PATH, "o", BUS_PATH), (INTERFACE, "s", BUS), (MEMBER, "s", "AddMatch"), (DESTINATION, "s", BUS)];
        message(METHOD_CALL, 2, &fields, "s", &[])
    };
    let mut end = call(3, SYSTEMD, SYSTEMD_PATH, MANAGER, "Subscribe");
    end.extend(call(4, SYSTEMD, SYSTEMD_PATH, MANAGER, BARRIER));
    format!(
        r#"local LC_ALL=C p= c i h b st v len data bus_in bus_out rule sent
for ((i = 0; i < ${{#id}}; i++)); do
  c=${{id:i:1}}
  case $c in
    [a-zA-Z]) p+=$c ;;
    [0-9]) if ((i)); then p+=$c; else printf -v h _%02x "'$c"; p+=$h; fi ;;
    *) printf -v h _%02x "'$c"; p+=$h ;;
  esac
done
p=/org/freedesktop/systemd1/unit/$p
rule="type='signal',sender='{SYSTEMD}',path='$p',interface='org.freedesktop.DBus.Properties',member='PropertiesChanged',arg0='org.freedesktop.systemd1.Unit'"
le32() {{ printf -v b '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 & 255)) $(($1 >> 8 & 255)) $(($1 >> 16 & 255)) $(($1 >> 24 & 255)); }}
coproc __ntd_bus {{ exec systemd-stdio-bridge 2>/dev/null; }}
bus_in=${{__ntd_bus[0]}} bus_out=${{__ntd_bus[1]}}
le32 $((${{#rule}} + 5)); local body_length=$b
le32 ${{#rule}}; local rule_length=$b
# A bridge that died already must not end the wait with SIGPIPE (the caller polls then).
trap '' PIPE
{{ printf "{start}"; printf "{head}$body_length{rest}$rule_length"; printf '%s\0' "$rule"; printf "{end}"; }} >&"$bus_out" 2>/dev/null
sent=$?
trap - PIPE
((sent == 0)) || return
data=
until [[ $data == *UnknownMetho ]]; do
  IFS= read -r -d d -t 2 -u "$bus_in" c || return
  data+=$c
done
IFS= read -r -N 65536 -t 0.01 -u "$bus_in" data
check
while :; do
  if IFS= read -r -N 1 -t 1 -u "$bus_in" c; then
    IFS= read -r -N 1048576 -t 0.005 -u "$bus_in" data
    data=$c$data
    [[ $data == *ActiveState$'\001's* ]] || continue
    v=${{data##*ActiveState$'\001's}}
    printf -v len %d "'${{v:0:1}}"
    st=${{v:1:len}}
{on_state}
  elif (($? > 128)); then
    check
  else
    return
  fi
done
"#,
        start = escapes(&start),
        head = escapes(&add_match[..4]),
        rest = escapes(&add_match[8..]),
        end = escapes(&end),
    )
}

/// A `PropertiesChanged` signal of a unit's `ActiveState`, as systemd sends it (for tests that
/// play the bus).
#[cfg(test)]
pub(crate) fn active_state_signal(unit_path: &str, state: &str) -> Vec<u8> {
    let mut body = Marshal::default();
    body.string("org.freedesktop.systemd1.Unit");
    body.array(8, |m| {
        for (key, value) in [("ActiveState", state), ("SubState", "running")] {
            m.align(8);
            m.string(key);
            m.signature("s");
            m.string(value);
        }
    });
    body.array(4, |_| {});
    let fields = [
        (PATH, "o", unit_path),
        (INTERFACE, "s", "org.freedesktop.DBus.Properties"),
        (MEMBER, "s", "PropertiesChanged"),
    ];
    message(SIGNAL, 7, &fields, "sa{sv}as", &body.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_marshalled_as_the_specification_says() {
        let hello = call(1, BUS, BUS_PATH, BUS, "Hello");
        assert_eq!(&hello[..4], b"l\x01\x00\x01");
        assert_eq!(u32::from_le_bytes(hello[4..8].try_into().expect("four bytes")), 0, "no body");
        assert_eq!(u32::from_le_bytes(hello[8..12].try_into().expect("four bytes")), 1, "serial");
        let fields = u32::from_le_bytes(hello[12..16].try_into().expect("four bytes")) as usize;
        // The header ends 8-aligned after the fields, and the message with it.
        assert_eq!(hello.len(), (16 + fields).next_multiple_of(8));
        // The first field: PATH, signature "o", the path's length and bytes.
        assert_eq!(&hello[16..20], b"\x01\x01o\x00");
        assert_eq!(u32::from_le_bytes(hello[20..24].try_into().expect("four bytes")) as usize, BUS_PATH.len());
        assert_eq!(&hello[24..24 + BUS_PATH.len()], BUS_PATH.as_bytes());
        // Every field starts 8-aligned.
        let interface_at = (24 + BUS_PATH.len() + 1).next_multiple_of(8);
        assert_eq!(&hello[interface_at..interface_at + 4], b"\x02\x01s\x00");
    }

    #[test]
    fn a_signal_carries_the_state_where_the_script_reads_it() {
        let signal = active_state_signal("/org/freedesktop/systemd1/unit/x_2eservice", "activating");
        // What bash's `read` keeps of it (it drops NUL bytes).
        let kept: Vec<u8> = signal.iter().copied().filter(|&b| b != 0).collect();
        let marker = b"ActiveState\x01s";
        let at = memchr::memmem::find(&kept, marker).expect("the state") + marker.len();
        assert_eq!(usize::from(kept[at]), "activating".len());
        assert_eq!(&kept[at + 1..at + 11], b"activating");
    }
}
