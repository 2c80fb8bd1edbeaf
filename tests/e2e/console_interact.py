# console_interact() forwards the driver's stdin (given by the test) to the serial console.
start_all()
machine.wait_until_succeeds("true")
machine.succeed("(cat /dev/ttyS0 > /tmp/serial-in) >/dev/null 2>&1 &")
machine.console_interact()
machine.wait_until_succeeds("grep -q typed-on-the-console /tmp/serial-in", timeout=30)
