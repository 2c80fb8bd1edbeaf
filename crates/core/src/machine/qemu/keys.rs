//! The keyboard: upstream's `CHAR_TO_KEY` and `send_key`, over QMP `send-key`.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::QemuMachine;
use crate::log;
use crate::machine::Result;

/// The QEMU key name for a character that is not its own key name (upstream's `CHAR_TO_KEY`).
/// Lowercase letters and digits are key names themselves; anything else is passed as given
/// (`ctrl-alt-delete`, `alt-f2`, `esc`).
pub fn key_for_char(c: char) -> Option<&'static str> {
    Some(match c {
        'A' => "shift-a",
        'B' => "shift-b",
        'C' => "shift-c",
        'D' => "shift-d",
        'E' => "shift-e",
        'F' => "shift-f",
        'G' => "shift-g",
        'H' => "shift-h",
        'I' => "shift-i",
        'J' => "shift-j",
        'K' => "shift-k",
        'L' => "shift-l",
        'M' => "shift-m",
        'N' => "shift-n",
        'O' => "shift-o",
        'P' => "shift-p",
        'Q' => "shift-q",
        'R' => "shift-r",
        'S' => "shift-s",
        'T' => "shift-t",
        'U' => "shift-u",
        'V' => "shift-v",
        'W' => "shift-w",
        'X' => "shift-x",
        'Y' => "shift-y",
        'Z' => "shift-z",
        '-' => "0x0C",
        '_' => "shift-0x0C",
        '=' => "0x0D",
        '+' => "shift-0x0D",
        '[' => "0x1A",
        '{' => "shift-0x1A",
        ']' => "0x1B",
        '}' => "shift-0x1B",
        ';' => "0x27",
        ':' => "shift-0x27",
        '\'' => "0x28",
        '"' => "shift-0x28",
        '`' => "0x29",
        '~' => "shift-0x29",
        '\\' => "0x2B",
        '|' => "shift-0x2B",
        ',' => "0x33",
        '<' => "shift-0x33",
        '.' => "0x34",
        '>' => "shift-0x34",
        '/' => "0x35",
        '?' => "shift-0x35",
        ' ' => "spc",
        '\n' => "ret",
        '!' => "shift-0x02",
        '@' => "shift-0x03",
        '#' => "shift-0x04",
        '$' => "shift-0x05",
        '%' => "shift-0x06",
        '^' => "shift-0x07",
        '&' => "shift-0x08",
        '*' => "shift-0x09",
        '(' => "shift-0x0A",
        ')' => "shift-0x0B",
        _ => return None,
    })
}

/// The key name to send for `key`: a single mapped character becomes its key name.
pub fn key_name(key: &str) -> &str {
    let mut chars = key.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => key_for_char(c).unwrap_or(key),
        _ => key,
    }
}

/// A key name as HMP's `sendkey` takes it (`ctrl-alt-delete`, `shift-0x0C`) as the key list
/// of QMP's `send-key`: `0x..` parts are key numbers, the others QKeyCode names.
pub fn qmp_keys(key: &str) -> Vec<Value> {
    key.split('-')
        .filter(|part| !part.is_empty())
        .map(|part| match part.strip_prefix("0x").and_then(|hex| u32::from_str_radix(hex, 16).ok()) {
            Some(number) => json!({"type": "number", "data": number}),
            None => json!({"type": "qcode", "data": part}),
        })
        .collect()
}

impl QemuMachine {
    /// Upstream's `send_key(key, delay=0.01, log=True)`: press a key or a combination, then
    /// pause `delay` (upstream added it because keys were dropped). Upstream goes through the
    /// HMP `sendkey`; ntd uses QMP's `send-key`, so an unknown key is an error instead of a
    /// line of monitor output. The callbacks run first, as they do for monitor commands.
    pub async fn send_key(&self, key: &str, delay: Option<Duration>, log: bool) -> Result<()> {
        let key = key_name(key);
        let press = async {
            self.run_callbacks()?;
            let mut arguments = Map::new();
            arguments.insert("keys".into(), Value::Array(qmp_keys(key)));
            self.qmp("send-key", Some(&arguments)).await?;
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            Ok(())
        };
        if log {
            log::nested(Some(self.name()), &format!("sending key {}", log::str_repr(key)), press).await
        } else {
            press.await
        }
    }

    /// Upstream's `reboot()`: press Ctrl+Alt+Delete and expect the backdoor to reconnect (the
    /// machine survives only if started with `allow_reboot=True`).
    pub async fn reboot(&self) -> Result<()> {
        self.send_key("ctrl-alt-delete", Some(Duration::from_millis(10)), true).await?;
        self.mark_disconnected();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_characters_like_upstream() {
        assert_eq!(key_name("A"), "shift-a");
        assert_eq!(key_name("a"), "a");
        assert_eq!(key_name("7"), "7");
        assert_eq!(key_name("\n"), "ret");
        assert_eq!(key_name(" "), "spc");
        assert_eq!(key_name("?"), "shift-0x35");
        assert_eq!(key_name("ctrl-alt-delete"), "ctrl-alt-delete");
        assert_eq!(key_name("é"), "é");
    }

    #[test]
    fn hmp_key_names_as_qmp_key_lists() {
        assert_eq!(
            qmp_keys("ctrl-alt-delete"),
            vec![
                json!({"type": "qcode", "data": "ctrl"}),
                json!({"type": "qcode", "data": "alt"}),
                json!({"type": "qcode", "data": "delete"})
            ]
        );
        assert_eq!(
            qmp_keys("shift-0x0C"),
            vec![json!({"type": "qcode", "data": "shift"}), json!({"type": "number", "data": 12})]
        );
        assert_eq!(qmp_keys("ret"), vec![json!({"type": "qcode", "data": "ret"})]);
    }
}
