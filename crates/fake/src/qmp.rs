//! QMP, QEMU's JSON machine protocol, as QEMU 10.0 speaks it on `-qmp unix:…,server=on`.
//!
//! Mirrors `monitor/qmp.c` and `qapi/qmp-dispatch.c`: the greeting, capabilities negotiation
//! (until `qmp_capabilities`, any command is `CommandNotFound`), replies that echo the
//! request's `id` whatever JSON value it is, QEMU's error classes and descriptions, and events
//! with a `timestamp`, in QEMU's JSON format with `\r\n` line ends. The JSON layer below it
//! (input split into values, QEMU's parse errors) is [`crate::json`].
//!
//! This module is the protocol only; what the commands do is the machine's ([`crate::vm`]).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::json;

/// The greeting QEMU 10.0.2 sends on a new QMP connection.
pub const GREETING: &str = "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 0, \"major\": 10}, \
                            \"package\": \"fake\"}, \"capabilities\": [\"oob\"]}}\r\n";

/// A QMP error reply's class and description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QmpError {
    /// `GenericError`, `CommandNotFound`, ...
    pub class: &'static str,
    /// The human-readable description.
    pub desc: String,
}

impl QmpError {
    /// A `GenericError`.
    pub fn generic(desc: impl Into<String>) -> QmpError {
        QmpError { class: "GenericError", desc: desc.into() }
    }

    /// A `CommandNotFound`.
    pub fn not_found(desc: impl Into<String>) -> QmpError {
        QmpError { class: "CommandNotFound", desc: desc.into() }
    }
}

/// One well-formed request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The `id` to echo, if the request had one.
    pub id: Option<Value>,
    /// The command (`execute`).
    pub command: String,
    /// The `arguments`.
    pub arguments: Map<String, Value>,
}

/// A QMP command the fake implements, with its arguments checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `qmp_capabilities`.
    Capabilities,
    /// `query-status`.
    QueryStatus,
    /// `query-version`.
    QueryVersion,
    /// `screendump` in PPM.
    Screendump {
        /// The file to write.
        filename: String,
    },
    /// `send-key`: the keys, as HMP names (`ctrl`, `alt`, `delete`, `0x1d`).
    SendKey(Vec<String>),
    /// `human-monitor-command`.
    HumanMonitor(String),
    /// `system_powerdown`: the ACPI power button.
    SystemPowerdown,
    /// `system_reset`: a hard reset.
    SystemReset,
    /// `quit`.
    Quit,
}

impl Command {
    /// Check a request's command and arguments as QEMU's generated marshallers do.
    pub fn parse(request: &Request) -> Result<Command, QmpError> {
        let args = &request.arguments;
        let command = match request.command.as_str() {
            "qmp_capabilities" => {
                allow(args, &["enable"])?;
                Command::Capabilities
            }
            "query-status" => no_arguments(args, Command::QueryStatus)?,
            "query-version" => no_arguments(args, Command::QueryVersion)?,
            "screendump" => {
                allow(args, &["filename", "device", "head", "format"])?;
                let filename = string(args, "filename")?.ok_or_else(|| missing("filename"))?;
                match string(args, "format")?.as_deref() {
                    None | Some("ppm") => {}
                    Some(other) => {
                        return Err(QmpError::generic(format!("Parameter 'format' does not accept value '{other}'")));
                    }
                }
                Command::Screendump { filename }
            }
            "send-key" => {
                allow(args, &["keys", "hold-time"])?;
                let keys = args.get("keys").ok_or_else(|| missing("keys"))?;
                let keys = keys.as_array().ok_or_else(|| wrong_type("keys", "array"))?;
                Command::SendKey(keys.iter().map(key_name).collect::<Result<_, _>>()?)
            }
            "human-monitor-command" => {
                allow(args, &["command-line", "cpu-index"])?;
                Command::HumanMonitor(string(args, "command-line")?.ok_or_else(|| missing("command-line"))?)
            }
            "system_powerdown" => no_arguments(args, Command::SystemPowerdown)?,
            "system_reset" => no_arguments(args, Command::SystemReset)?,
            "quit" => no_arguments(args, Command::Quit)?,
            other => return Err(QmpError::not_found(format!("The command {other} has not been found"))),
        };
        Ok(command)
    }
}

fn allow(args: &Map<String, Value>, known: &[&str]) -> Result<(), QmpError> {
    match args.keys().find(|key| !known.contains(&key.as_str())) {
        Some(key) => Err(QmpError::generic(format!("Parameter '{key}' is unexpected"))),
        None => Ok(()),
    }
}

fn no_arguments(args: &Map<String, Value>, command: Command) -> Result<Command, QmpError> {
    allow(args, &[]).map(|()| command)
}

fn missing(name: &str) -> QmpError {
    QmpError::generic(format!("Parameter '{name}' is missing"))
}

fn wrong_type(name: &str, expected: &str) -> QmpError {
    QmpError::generic(format!("Invalid parameter type for '{name}', expected: {expected}"))
}

fn string(args: &Map<String, Value>, name: &str) -> Result<Option<String>, QmpError> {
    match args.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(wrong_type(name, "string")),
    }
}

/// A `KeyValue` (`{"type": "qcode", "data": "ctrl"}` or `{"type": "number", "data": 29}`) as
/// the name HMP's `sendkey` would use.
fn key_name(key: &Value) -> Result<String, QmpError> {
    match (key.get("type").and_then(Value::as_str), key.get("data")) {
        (Some("qcode"), Some(Value::String(name))) => Ok(name.clone()),
        (Some("number"), Some(Value::Number(n))) => Ok(format!("0x{:02x}", n.as_u64().unwrap_or_default())),
        _ => Err(wrong_type("keys", "KeyValue")),
    }
}

/// Whether a key combination is Ctrl+Alt+Delete, which the guest's systemd turns into a reboot.
pub fn is_ctrl_alt_delete(keys: &[String]) -> bool {
    let has = |names: &[&str]| keys.iter().any(|k| names.contains(&k.as_str()));
    has(&["ctrl", "ctrl_r"]) && has(&["alt", "alt_r"]) && has(&["delete"])
}

/// Check one JSON value of input as `qmp_dispatch` does. The error carries the `id` to echo,
/// which a request that is not even an object cannot have.
pub fn parse_request(text: &[u8]) -> Result<Request, (QmpError, Option<Value>)> {
    let value: Value =
        serde_json::from_slice(text).map_err(|e| (QmpError::generic(json::parse_error(text, &e)), None))?;
    let Value::Object(mut members) = value else {
        return Err((QmpError::generic("QMP input must be a JSON object"), None));
    };
    let id = members.remove("id");
    let fail = |desc: String, id: Option<Value>| Err((QmpError::generic(desc), id));
    let mut command = None;
    let mut arguments = Map::new();
    for (name, member) in members {
        match (name.as_str(), member) {
            ("execute", Value::String(name)) => command = Some(name),
            ("execute", _) => return fail("QMP input member 'execute' must be a string".into(), id),
            ("arguments", Value::Object(map)) => arguments = map,
            ("arguments", _) => return fail("QMP input member 'arguments' must be an object".into(), id),
            (other, _) => return fail(format!("QMP input member '{other}' is unexpected"), id),
        }
    }
    match command {
        Some(command) => Ok(Request { id, command, arguments }),
        None => fail("QMP input lacks member 'execute'".into(), id),
    }
}

/// Whether the client has negotiated capabilities: QEMU's capabilities mode and command mode.
#[derive(Debug, Default)]
pub struct Session {
    negotiated: bool,
}

/// What to do with a request in the session's current mode.
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    /// Answer with this, without running anything.
    Reply(Result<Value, QmpError>),
    /// Run the command.
    Run(Command),
}

impl Session {
    /// Whether events are sent (only in command mode).
    pub fn negotiated(&self) -> bool {
        self.negotiated
    }

    /// Decide what a request gets in the current mode.
    pub fn gate(&mut self, request: &Request) -> Gate {
        let command = match Command::parse(request) {
            Ok(command) => command,
            // Before negotiation even unknown commands get the negotiation error.
            Err(_) if !self.negotiated && request.command != "qmp_capabilities" => {
                return Gate::Reply(Err(expecting_negotiation()));
            }
            Err(error) => return Gate::Reply(Err(error)),
        };
        match (self.negotiated, command) {
            (false, Command::Capabilities) => {
                self.negotiated = true;
                Gate::Reply(Ok(Value::Object(Map::new())))
            }
            (false, _) => Gate::Reply(Err(expecting_negotiation())),
            (true, Command::Capabilities) => {
                Gate::Reply(Err(QmpError::not_found("Capabilities negotiation is already complete, command ignored")))
            }
            (true, command) => Gate::Run(command),
        }
    }
}

fn expecting_negotiation() -> QmpError {
    QmpError::not_found("Expecting capabilities negotiation with 'qmp_capabilities'")
}

/// `{"return": VALUE, "id": ID}` and its line end.
pub fn encode_return(value: &Value, id: Option<&Value>) -> String {
    let mut line = format!("{{\"return\": {}", json::to_qemu_json(value));
    push_id(&mut line, id);
    line.push_str("}\r\n");
    line
}

/// `{"error": {"class": ..., "desc": ...}, "id": ID}` and its line end.
pub fn encode_error(error: &QmpError, id: Option<&Value>) -> String {
    let mut line = format!(
        "{{\"error\": {{\"class\": {}, \"desc\": {}}}",
        json::to_qemu_json(&Value::from(error.class)),
        json::to_qemu_json(&Value::from(error.desc.as_str()))
    );
    push_id(&mut line, id);
    line.push_str("}\r\n");
    line
}

fn push_id(line: &mut String, id: Option<&Value>) {
    if let Some(id) = id {
        line.push_str(", \"id\": ");
        line.push_str(&json::to_qemu_json(id));
    }
}

/// An event as QEMU emits it, stamped with `now`.
pub fn encode_event(event: &str, data: Option<&Value>, now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut line = format!(
        "{{\"timestamp\": {{\"seconds\": {}, \"microseconds\": {}}}, \"event\": {}",
        since.as_secs(),
        since.subsec_micros(),
        json::to_qemu_json(&Value::from(event))
    );
    if let Some(data) = data {
        line.push_str(", \"data\": ");
        line.push_str(&json::to_qemu_json(data));
    }
    line.push_str("}\r\n");
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(text: &str) -> Request {
        parse_request(text.as_bytes()).expect("well-formed request")
    }

    #[test]
    fn greeting_is_qemus() {
        let greeting: Value = serde_json::from_str(GREETING.trim_end()).expect("JSON greeting");
        assert_eq!(greeting["QMP"]["version"]["qemu"], json!({"major": 10, "minor": 0, "micro": 2}));
        assert!(GREETING.ends_with("}\r\n"));
    }

    #[test]
    fn negotiation_comes_first() {
        let mut session = Session::default();
        let not_yet =
            Gate::Reply(Err(QmpError::not_found("Expecting capabilities negotiation with 'qmp_capabilities'")));
        assert_eq!(session.gate(&request(r#"{"execute": "query-status"}"#)), not_yet);
        assert_eq!(session.gate(&request(r#"{"execute": "bogus"}"#)), not_yet);
        assert!(!session.negotiated());
        assert_eq!(
            session.gate(&request(r#"{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}"#)),
            Gate::Reply(Ok(json!({})))
        );
        assert!(session.negotiated());
        assert_eq!(session.gate(&request(r#"{"execute": "query-status"}"#)), Gate::Run(Command::QueryStatus));
        assert!(
            matches!(session.gate(&request(r#"{"execute": "qmp_capabilities"}"#)), Gate::Reply(Err(e)) if e.class == "CommandNotFound")
        );
        assert_eq!(
            session.gate(&request(r#"{"execute": "bogus"}"#)),
            Gate::Reply(Err(QmpError::not_found("The command bogus has not been found")))
        );
    }

    #[test]
    fn ids_of_any_type_are_echoed() {
        for id in [json!(1), json!("a"), json!({"x": [1, null]}), json!(null), json!(2.5)] {
            let text = json!({"execute": "query-status", "id": id}).to_string();
            let parsed = request(&text);
            assert_eq!(parsed.id.as_ref(), Some(&id));
            let reply: Value =
                serde_json::from_str(encode_return(&json!({}), parsed.id.as_ref()).trim_end()).expect("JSON");
            assert_eq!(reply["id"], id);
        }
        assert_eq!(
            encode_return(&json!({"running": true, "status": "running"}), None),
            "{\"return\": {\"running\": true, \"status\": \"running\"}}\r\n"
        );
        assert_eq!(
            encode_error(&QmpError::generic("x \"y\""), Some(&json!(7))),
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"x \\\"y\\\"\"}, \"id\": 7}\r\n"
        );
    }

    #[test]
    fn malformed_input_gets_qemus_errors() {
        let desc = |text: &str| parse_request(text.as_bytes()).expect_err("malformed").0.desc;
        assert_eq!(desc("not"), "JSON parse error, invalid keyword 'not'");
        assert_eq!(desc("{\"execute\": tru}"), "JSON parse error, invalid keyword 'tru'");
        assert_eq!(desc("{\"execute\" \"x\"}"), "JSON parse error, missing : in object pair");
        assert_eq!(desc("{\"execute\": \"x\" \"y\": 1}"), "JSON parse error, expected separator in dict");
        assert_eq!(desc("{1: 2}"), "JSON parse error, key is not a string in object");
        assert_eq!(desc("{\"a\": 1e5,}"), "JSON parse error, expected separator in dict");
        assert_eq!(desc("[1]"), "QMP input must be a JSON object");
        assert_eq!(desc("{}"), "QMP input lacks member 'execute'");
        let (error, id) = parse_request(br#"{"execute": 1, "id": "q"}"#).expect_err("bad execute");
        assert_eq!(error.desc, "QMP input member 'execute' must be a string");
        assert_eq!(id, Some(json!("q")), "errors after parsing keep the id");
        assert_eq!(desc(r#"{"execute": "quit", "extra": 1}"#), "QMP input member 'extra' is unexpected");
        assert_eq!(desc(r#"{"execute": "quit", "arguments": []}"#), "QMP input member 'arguments' must be an object");
    }

    #[test]
    fn commands_check_their_arguments() {
        let parse = |text: &str| Command::parse(&request(text));
        assert_eq!(
            parse(r#"{"execute": "screendump", "arguments": {"filename": "/x.ppm"}}"#),
            Ok(Command::Screendump { filename: "/x.ppm".into() })
        );
        assert_eq!(parse(r#"{"execute": "screendump"}"#), Err(QmpError::generic("Parameter 'filename' is missing")));
        assert!(parse(r#"{"execute": "screendump", "arguments": {"filename": "/x", "format": "png"}}"#).is_err());
        assert_eq!(
            parse(r#"{"execute": "quit", "arguments": {"now": true}}"#),
            Err(QmpError::generic("Parameter 'now' is unexpected"))
        );
        let keys = parse(
            r#"{"execute": "send-key", "arguments": {"keys": [{"type": "qcode", "data": "ctrl"},
                {"type": "qcode", "data": "alt"}, {"type": "number", "data": 211}]}}"#,
        );
        assert_eq!(keys, Ok(Command::SendKey(vec!["ctrl".into(), "alt".into(), "0xd3".into()])));
        assert!(is_ctrl_alt_delete(&["ctrl".into(), "alt".into(), "delete".into()]));
        assert!(!is_ctrl_alt_delete(&["ctrl".into(), "delete".into()]));
    }

    #[test]
    fn events_carry_a_timestamp() {
        let now = UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 123_456_789);
        let line = encode_event("SHUTDOWN", Some(&json!({"guest": true, "reason": "guest-shutdown"})), now);
        assert_eq!(
            line,
            "{\"timestamp\": {\"seconds\": 1700000000, \"microseconds\": 123456}, \"event\": \"SHUTDOWN\", \
             \"data\": {\"guest\": true, \"reason\": \"guest-shutdown\"}}\r\n"
        );
        assert!(!encode_event("RESUME", None, now).contains("data"));
    }
}
