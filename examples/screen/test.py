# Look at the screen and type, as graphical and console NixOS tests do: wait for the login
# prompt by OCR, log in by typing, run a command and find its output on the screen.
start_all()
machine.wait_for_unit("multi-user.target")

with subtest("log in on the text console"):
    machine.wait_for_text("login:")
    machine.screenshot("login-prompt")
    machine.send_chars("root\n")
    machine.wait_for_text("root@machine")

with subtest("type a command and read its output"):
    machine.send_chars("echo The answer is $((6 * 7))\n")
    # OCR is not exact (0 and o, - and an em dash): match words, not punctuation.
    machine.wait_for_text("answer is 42")
    # The same text, read from the console's memory instead of the screen's pixels: exact.
    machine.wait_until_tty_matches("1", "The answer is 42")
    machine.screenshot("after-command")
