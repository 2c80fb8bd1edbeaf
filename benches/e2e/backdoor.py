# What the SSH backdoor costs (benches/e2e/run starts it twice, side by side: without the
# backdoor, then with it): a test script run by nixos-test-driver on one VM of the Debian
# guest, booted NTD_BENCH_BOOTS times (start() → multi-user.target; shut down between boots).
# Measures the driver's start (the launch → the script's first line: with the backdoor,
# vhost-device-vsock and its sockets are part of it), each boot, and with the backdoor the
# first ssh through the printed command after each boot (sshd starts per connection, under
# emulation). Results go to $NTD_BENCH_OUT as JSON.
import json
import os
import subprocess
import time

started = time.time() - float(os.environ["NTD_BENCH_T0"])
BOOTS = int(os.environ.get("NTD_BENCH_BOOTS", "5"))
backdoor = driver.enable_ssh_backdoor
results: dict = {"backdoor": backdoor, "driver_start_s": started, "boots_s": [], "ssh_s": []}

for boot in range(BOOTS):
    if boot:
        machine.shutdown()
    start = time.monotonic()
    machine.start()
    machine.wait_for_unit("multi-user.target")
    results["boots_s"].append(time.monotonic() - start)
    if backdoor:
        pair = driver.vhost_vsock.sockets["machine"]
        config = driver.native.ssh_config
        start = time.monotonic()
        subprocess.run(
            ["ssh", "-F", str(config), "-o", "User=root", f"vsock-mux/{pair.host}", "--", "true"],
            check=True,
            stdin=subprocess.DEVNULL,
        )
        results["ssh_s"].append(time.monotonic() - start)

with open(os.environ["NTD_BENCH_OUT"], "w") as f:
    json.dump(results, f)
