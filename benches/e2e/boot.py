# Boot benchmark (benches/e2e/run): start_all() until every machine's shell answers, and until
# every machine reached multi-user.target. Results go to $NTD_BENCH_OUT as JSON.
import json
import os
import re
import time

start = time.monotonic()
start_all()
for m in machines:
    m.succeed("true")
shell = time.monotonic() - start
for m in machines:
    m.wait_for_unit("multi-user.target")
multi_user = time.monotonic() - start
# The driver process alone (QEMU is another process): a plain run's CPU time and peak memory.
times = os.times()
with open("/proc/self/status") as status:
    peak_kib = int(re.search(r"VmHWM:\s+(\d+) kB", status.read()).group(1))
with open(os.environ["NTD_BENCH_OUT"], "w") as out:
    json.dump(
        {
            "machines": len(machines),
            "shell_s": shell,
            "multi_user_s": multi_user,
            "driver_cpu_s": times.user + times.system,
            "driver_peak_rss_mib": peak_kib / 1024,
        },
        out,
    )
