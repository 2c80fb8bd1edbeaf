# What watching a test costs (benches/e2e/run starts it three times, side by side: without
# VNC, with --vnc, and with --web-view and a headless chromium showing the page): a test script
# run by nixos-test-driver on one VM of the Debian guest. Measures, in the driver process
# alone (QEMU and the browser excluded), succeed("true")'s latency, the driver's CPU during
# 5 s of changing screen (lines written to the VGA console, which a connected page receives)
# and during 10 s of idling, and its peak RSS. Results go to $NTD_BENCH_OUT as JSON. The page's
# address (with its secret path) is read from the driver's own log, which benches/e2e/run
# writes to $NTD_BENCH_OUT.log.
import json
import os
import re
import statistics
import subprocess
import tempfile
import time

REPS = int(os.environ.get("NTD_BENCH_REPS", "30"))
mode = os.environ["NTD_BENCH_WATCH"]
results: dict = {"mode": mode}


def cpu_seconds() -> float:
    # The whole process, every thread, in nanoseconds (os.times() counts 10 ms ticks).
    return time.process_time()


def web_view_url() -> str:
    with open(os.environ["NTD_BENCH_OUT"] + ".log") as log:
        for line in log:
            if line.startswith("web view: "):
                return line.split()[2]
    raise AssertionError("the driver's log names no web view")


machine.wait_for_unit("multi-user.target")
browser = None
if mode == "web":
    profile = tempfile.mkdtemp(prefix="bench-chromium-")
    browser = subprocess.Popen(
        ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
         "--remote-debugging-port=0", web_view_url()],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    # Measured once the page's noVNC is QEMU's VNC client.
    deadline = time.monotonic() + 120
    while not machine.qmp_client.send("query-vnc")["return"].get("clients"):
        assert time.monotonic() < deadline, "the page never connected to the VNC server"
        time.sleep(0.5)
    results["viewers"] = len(machine.qmp_client.send("query-vnc")["return"]["clients"])

latencies = []
for _ in range(REPS * 4):
    start = time.perf_counter()
    machine.succeed("true")
    latencies.append((time.perf_counter() - start) * 1000)
results["succeed_ms"] = {"median": statistics.median(latencies), "samples": len(latencies)}

before = cpu_seconds()
machine.succeed("for i in $(seq 100); do echo line $i > /dev/tty0; sleep 0.05; done")
results["cpu_screen_activity_s"] = cpu_seconds() - before
before = cpu_seconds()
time.sleep(10)
results["cpu_idle_10s"] = cpu_seconds() - before

if browser is not None:
    browser.terminate()
    browser.wait(timeout=30)
with open("/proc/self/status") as status:
    results["peak_rss_mib"] = int(re.search(r"VmHWM:\s+(\d+) kB", status.read()).group(1)) / 1024
with open(os.environ["NTD_BENCH_OUT"], "w") as f:
    json.dump(results, f)
