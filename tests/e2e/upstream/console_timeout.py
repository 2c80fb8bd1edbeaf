# nixpkgs' nixos-test-driver.console-timeout: a service prints a line, then a second later 15
# more and a last one; waiting for the last with a 10 s timeout must not fall behind the
# console (upstream once read one line per second when given a timeout).
#
# Upstream's node declares the service; here it is written at run time. Its output reaches the
# serial console through journald, as on a NixOS test VM.
machine.start()
machine.wait_for_unit("multi-user.target")
machine.succeed(
    "cat > /usr/local/bin/generate-output <<'EOF'\n"
    "#!/bin/bash\n"
    'echo "match that"\n'
    "sleep 1\n"
    'for i in $(seq 15); do echo "line $i"; done\n'
    'echo "match this"\n'
    "EOF",
    "chmod +x /usr/local/bin/generate-output",
    "printf '[Service]\\nExecStart=/usr/local/bin/generate-output\\n' > /etc/systemd/system/generate-output.service",
    "systemctl daemon-reload",
)

machine.systemctl("start generate-output")
machine.wait_for_console_text("match that")
machine.wait_for_console_text("match this", timeout=10)
