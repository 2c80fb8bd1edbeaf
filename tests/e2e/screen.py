# Screens, keyboards and OCR on the Debian guest's text console.
# Run by crates/cli/tests/e2e/screen.rs.
import re

from ntd.errors import RequestedAssertionFailed

start_all()
machine.wait_for_unit("multi-user.target")

with subtest("log in by typing, find the output by OCR"):
    machine.wait_for_text("login:")
    machine.send_chars("root\n")
    machine.wait_for_text("root@machine")
    machine.send_chars("echo ocr-$((6 * 7))-word\n")
    machine.wait_for_text("ocr.42.word")
    assert "ocr-42-word" in machine.get_tty_text(1)
    machine.wait_until_tty_matches(1, "ocr-42-word", timeout=30)
    text = machine.get_screen_text()
    assert re.search("ocr.42.word", text), text
    variants = machine.get_screen_text_variants()
    assert len(variants) >= 2 and any(re.search("ocr.42.word", v) for v in variants), variants

with subtest("screenshots"):
    machine.screenshot("console")
    machine.screenshot("named.image.png")
    (machine.out_dir / "sub").mkdir()
    machine.screenshot(str(machine.out_dir / "sub" / "nested.png"))
    size = machine.succeed("cat /sys/class/graphics/fb0/virtual_size").strip()
    (machine.out_dir / "fb-size").write_text(size)

with subtest("keys"):
    # alt-f2 switches to the second virtual console, where logind starts another getty.
    machine.send_key("alt-f2")
    machine.wait_for_text("tty2")
    machine.send_key("alt-f1")
    machine.wait_for_text("ocr.42.word")

with subtest("a wait that times out"):
    try:
        machine.wait_for_text("this-never-shows", timeout=3)
        raise Exception("wait_for_text did not time out")
    except RequestedAssertionFailed as e:
        assert str(e).startswith("action timed out after "), str(e)
