//! QEMU's JSON layer under QMP (`qobject/json-streamer.c`, `json-parser.c`, `qjson.c`): input
//! split into JSON values by bracket nesting, whatever the line breaks, so a request may span
//! lines and one line may carry several; QEMU's descriptions of syntax errors; and output with
//! QEMU's separators (`", "` and `": "`).

use serde_json::Value;

/// QEMU's description of a JSON syntax error in `text`, from serde's `error`.
pub fn parse_error(text: &[u8], error: &serde_json::Error) -> String {
    if let Some(word) = invalid_keyword(text) {
        return format!("JSON parse error, invalid keyword '{word}'");
    }
    let message = error.to_string();
    let message = message.split(" at line ").next().unwrap_or_default();
    let qemu = if message.starts_with("expected value") || message.starts_with("expected ident") {
        "expecting value"
    } else if message.starts_with("key must be a string") {
        "key is not a string in object"
    } else if message.starts_with("expected `:`") {
        "missing : in object pair"
    } else if message.starts_with("expected `,` or `}`") || message.starts_with("trailing comma") {
        "expected separator in dict"
    } else if message.starts_with("expected `,` or `]`") {
        "expected separator in list"
    } else if message.starts_with("EOF while parsing") {
        "premature EOI"
    } else if message.starts_with("invalid escape") || message.starts_with("invalid unicode") {
        "invalid escape sequence in string"
    } else {
        message
    };
    format!("JSON parse error, {qemu}")
}

/// The first bare word outside strings that is not a JSON keyword: QEMU's lexer makes any run
/// of letters a keyword token, which its parser then rejects by name.
fn invalid_keyword(text: &[u8]) -> Option<String> {
    let mut in_string = false;
    let mut escaped = false;
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if b.is_ascii_alphabetic() {
            let end = text[i..].iter().position(|c| !c.is_ascii_alphabetic()).map_or(text.len(), |n| i + n);
            let word = &text[i..end];
            if !matches!(word, b"true" | b"false" | b"null") {
                return Some(String::from_utf8_lossy(word).into_owned());
            }
            i = end;
            continue;
        } else if b == b'-' || b.is_ascii_digit() {
            // Skip numbers, whose exponent `e` is not a keyword.
            let end = text[i..]
                .iter()
                .position(|c| !(c.is_ascii_digit() || b"+-.eE".contains(c)))
                .map_or(text.len(), |n| i + n);
            i = end;
            continue;
        }
        i += 1;
    }
    None
}

/// Splits QMP input into JSON values as QEMU's JSON streamer does: by bracket nesting, outside
/// strings, whatever the line breaks. A bare token at the top level (`not`, `42`) is a value of
/// its own, ended by whitespace or a bracket, and fails to parse as a request later.
#[derive(Debug, Default)]
pub struct Splitter {
    buf: Vec<u8>,
    depth: usize,
    in_string: bool,
    escaped: bool,
    bare: bool,
}

/// The longest value accepted (QEMU's token size limit is 64 MiB; a fake needs less).
const MAX_VALUE: usize = 16 << 20;

impl Splitter {
    /// Feed input; returns the complete values it ended.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut done = Vec::new();
        for &b in bytes {
            if self.in_string {
                self.buf.push(b);
                match b {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => {
                        self.in_string = false;
                        if self.depth == 0 {
                            done.push(self.take());
                        }
                    }
                    _ => {}
                }
                continue;
            }
            match b {
                b'{' | b'[' => {
                    if self.bare {
                        done.push(self.take());
                    }
                    self.depth += 1;
                    self.buf.push(b);
                }
                b'}' | b']' if self.depth > 0 => {
                    self.buf.push(b);
                    self.depth -= 1;
                    if self.depth == 0 {
                        done.push(self.take());
                    }
                }
                b' ' | b'\t' | b'\r' | b'\n' => {
                    if self.depth > 0 {
                        self.buf.push(b);
                    } else if self.bare {
                        done.push(self.take());
                    }
                }
                b'"' => {
                    if self.bare {
                        done.push(self.take());
                    }
                    self.in_string = true;
                    self.buf.push(b);
                }
                _ => {
                    self.buf.push(b);
                    if self.depth == 0 {
                        self.bare = true;
                        // A stray closing bracket is a value of its own.
                        if b == b'}' || b == b']' {
                            done.push(self.take());
                        }
                    }
                }
            }
            if self.buf.len() > MAX_VALUE {
                done.push(self.take());
            }
        }
        done
    }

    fn take(&mut self) -> Vec<u8> {
        self.depth = 0;
        self.bare = false;
        self.in_string = false;
        self.escaped = false;
        std::mem::take(&mut self.buf)
    }
}

/// JSON with QEMU's separators: `{"a": 1, "b": [1, 2]}`.
pub fn to_qemu_json(value: &Value) -> String {
    let mut out = String::new();
    write_json(value, &mut out);
    out
}

fn write_json(value: &Value, out: &mut String) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json(item, out);
            }
            out.push(']');
        }
        Value::Object(members) => {
            out.push('{');
            for (i, (key, member)) in members.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                // A string's JSON form is its own `Display`.
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push_str(": ");
                write_json(member, out);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitter_follows_json_not_lines() {
        let mut splitter = Splitter::default();
        assert!(splitter.push(b"{\"execute\":\n").is_empty());
        assert_eq!(
            splitter.push(b" \"a}\\\"\"}{\"b\": [1]}\n"),
            vec![b"{\"execute\":\n \"a}\\\"\"}".to_vec(), b"{\"b\": [1]}".to_vec()]
        );
        assert_eq!(splitter.push(b"not json\n"), vec![b"not".to_vec(), b"json".to_vec()]);
        assert_eq!(splitter.push(b"} {}"), vec![b"}".to_vec(), b"{}".to_vec()]);
    }

    #[test]
    fn output_has_qemus_separators() {
        let value = serde_json::json!({"a": [1, "x\"y"], "b": {}, "c": null});
        assert_eq!(to_qemu_json(&value), r#"{"a": [1, "x\"y"], "b": {}, "c": null}"#);
    }
}
