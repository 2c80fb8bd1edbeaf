//! Golden output of the three sinks for one scenario that uses every kind of line and block,
//! so that a change to the sinks' shared plumbing shows up as a changed byte. Durations are
//! masked as `T`; everything else is compared exactly.

use tracing_subscriber::layer::SubscriberExt;

use super::terminal::TerminalLayer;
use super::testing::{self, Buffer};
use super::{LogLevel, set_level, set_print_serial};

/// Lines, leveled lines at each level, serial lines, test errors, blocks with attributes,
/// failed blocks and nested subtests, with the level and serial switch changed on the way.
fn scenario() {
    super::log(Some("m"), "a <line> & more");
    super::log(None, "plain \"quoted\"");
    super::info(Some("m"), "info line");
    super::warning(None, "warning line");
    super::debug(Some("m"), "debug line hidden at info");
    super::error(Some("m"), "error line");
    {
        let _shot = super::block(Some("m"), "making screenshot x.png", &[("image", "x.png")]).entered();
        super::serial("m", "boot\u{1b}[0m <ok>");
        super::info(None, "inside the block");
    }
    {
        let outer = super::subtest_block("outer");
        let _outer = outer.enter();
        super::log(Some("m"), "in outer");
        {
            let inner = super::subtest_block("inner <1>");
            let _inner = inner.enter();
            super::log(None, "in inner");
            super::test_error("inner failed");
            super::mark_failed(&inner);
        }
        {
            let nested = super::block(None, "wait for x", &[("b", "two"), ("a", "1")]);
            let _nested = nested.enter();
            super::error(None, "nested error");
            super::mark_failed(&nested);
        }
        super::log(None, "outer again");
    }
    super::test_error("Traceback (most recent call last):");
    set_print_serial(false);
    super::serial("m", "serial line hidden");
    set_print_serial(true);
    set_level(LogLevel::Debug);
    super::debug(Some("m"), "debug line shown at debug");
    set_level(LogLevel::Warning);
    super::info(None, "info line hidden at warning");
    super::warning(Some("m"), "warning line shown at warning");
    set_level(LogLevel::Error);
    super::warning(None, "warning line hidden at error");
    super::error(None, "error line shown at error");
}

/// `text` with the number between each `before` and the next `after` replaced by `T`.
fn mask(text: &str, before: &str, after: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(before) {
        let start = at + before.len();
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        if digits > 0 && rest[digits..].starts_with(after) {
            out.push('T');
            rest = &rest[digits..];
        }
    }
    out.push_str(rest);
    out
}

fn mask_times(text: &str) -> String {
    mask(&mask(text, ", in ", " seconds)"), "time=\"", "\"")
}

const TERMINAL: &str = "\
    m: a <line> & more\n\
    plain \"quoted\"\n\
    m: info line\n\
    warning line\n\
    m: error line\n\
    m: making screenshot x.png\n\
    m # boot\u{1b}[0m <ok>\n\
    inside the block\n\
    m: (finished: making screenshot x.png, in T seconds)\n\
    subtest: outer\n\
    m: in outer\n\
    subtest: inner <1>\n\
    in inner\n\
    !!! inner failed\n\
    wait for x\n\
    nested error\n\
    outer again\n\
    (finished: subtest: outer, in T seconds)\n\
    !!! Traceback (most recent call last):\n\
    m: debug line shown at debug\n\
    m: warning line shown at warning\n\
    error line shown at error\n";

const TERMINAL_COLOURED: &str = "\
    m: a <line> & more\n\
    plain \"quoted\"\n\
    m: info line\n\
    warning line\n\
    m: error line\n\
    m: \u{1b}[1m\u{1b}[32mmaking screenshot x.png\u{1b}[0m\n\
    \u{1b}[2mm # boot\u{1b}[0m <ok>\u{1b}[0m\n\
    inside the block\n\
    m: (finished: making screenshot x.png, in T seconds)\n\
    \u{1b}[1m\u{1b}[32msubtest: outer\u{1b}[0m\n\
    m: in outer\n\
    \u{1b}[1m\u{1b}[32msubtest: inner <1>\u{1b}[0m\n\
    in inner\n\
    \u{1b}[31m!!! \u{1b}[0minner failed\n\
    \u{1b}[1m\u{1b}[32mwait for x\u{1b}[0m\n\
    nested error\n\
    outer again\n\
    (finished: subtest: outer, in T seconds)\n\
    \u{1b}[31m!!! \u{1b}[0mTraceback (most recent call last):\n\
    \u{1b}[2mm: debug line shown at debug\u{1b}[0m\n\
    m: warning line shown at warning\n\
    error line shown at error\n";

const XML: &str = "\
    <?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
    <logfile><line machine=\"m\">a &lt;line&gt; &amp; more</line>\
    <line>plain &quot;quoted&quot;</line>\
    <line machine=\"m\">info line</line>\
    <line>warning line</line>\
    <line machine=\"m\">error line</line>\
    <nest><head machine=\"m\" image=\"x.png\">making screenshot x.png</head>\
    <line machine=\"m\" type=\"serial\">boot[0m &lt;ok&gt;</line>\
    <line>inside the block</line>\
    <line>(finished: making screenshot x.png, in T seconds)</line>\
    </nest>\
    <nest><head>subtest: outer</head>\
    <line machine=\"m\">in outer</line>\
    <nest><head>subtest: inner &lt;1&gt;</head>\
    <line>in inner</line>\
    <line>inner failed</line>\
    </nest>\
    <nest><head a=\"1\" b=\"two\">wait for x</head>\
    <line>nested error</line>\
    </nest>\
    <line>outer again</line>\
    <line>(finished: subtest: outer, in T seconds)</line>\
    </nest>\
    <line>Traceback (most recent call last):</line>\
    <line machine=\"m\">debug line shown at debug</line>\
    <line machine=\"m\">warning line shown at warning</line>\
    <line>error line shown at error</line>\
    </logfile>\n";

const JUNIT: &str = "\
    <?xml version=\"1.0\" ?>\n\
    <testsuites disabled=\"0\" errors=\"0\" failures=\"2\" tests=\"2\" time=\"T\">\n\
    \t<testsuite disabled=\"0\" errors=\"0\" failures=\"2\" name=\"NixOS integration test\" skipped=\"0\" tests=\"2\" time=\"T\">\n\
    \t\t<system-out>a &lt;line&gt; &amp; more\n\
    plain &quot;quoted&quot;\n\
    info line\n\
    warning line\n\
    making screenshot x.png\n\
    m # boot[0m &lt;ok&gt;\n\
    inside the block\n\
    in outer\n\
    in inner\n\
    wait for x\n\
    outer again\n\
    debug line shown at debug\n\
    warning line shown at warning\n\
    </system-out>\n\
    \t\t<system-err>error line\n\
    inner failed\n\
    nested error\n\
    Traceback (most recent call last):\n\
    error line shown at error\n\
    </system-err>\n\
    \t\t<testcase name=\"outer\" time=\"T\">\n\
    \t\t\t<failure type=\"failure\" message=\"test case failed\"/>\n\
    \t\t\t<system-out>in outer\n\
    wait for x\n\
    outer again\n\
    </system-out>\n\
    \t\t\t<system-err>nested error\n\
    </system-err>\n\
    \t\t</testcase>\n\
    \t\t<testcase name=\"inner &lt;1&gt;\" time=\"T\">\n\
    \t\t\t<failure type=\"failure\" message=\"test case failed\"/>\n\
    \t\t\t<system-out>in inner\n\
    </system-out>\n\
    \t\t\t<system-err>inner failed\n\
    </system-err>\n\
    \t\t</testcase>\n\
    \t</testsuite>\n\
    </testsuites>\n";

#[test]
fn every_sink_writes_upstreams_bytes() {
    let _settings = testing::defaults();
    let out = testing::all_sinks(scenario);
    assert_eq!(mask_times(&out.terminal), TERMINAL);
    assert_eq!(mask_times(&out.xml), XML);
    assert_eq!(mask_times(&out.junit), JUNIT);
}

#[test]
fn the_terminal_colours_as_upstream() {
    let _settings = testing::defaults();
    let terminal = Buffer::default();
    let subscriber = tracing_subscriber::registry().with(TerminalLayer::coloured(terminal.clone()));
    tracing::subscriber::with_default(subscriber, scenario);
    assert_eq!(mask_times(&terminal.text()), TERMINAL_COLOURED);
}
