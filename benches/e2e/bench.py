# ntd's end-to-end benchmark, a test script run by nixos-test-driver on one machine of the
# built-in Debian guest (benches/e2e/run starts it). Each operation is measured twice on the
# same VM in the same run: through ntd's method, and done the way upstream's Python driver
# does it (the "baseline"): two round trips per command with `timeout … bash -c … | base64`,
# host-side polling once a second, screendump to PPM + pnmtopng, ImageMagick variants and three
# tesseract passes one after another. Results go to $NTD_BENCH_OUT as JSON.
import base64
import json
import os
import random
import re
import shlex
import subprocess
import tempfile
import time

first_line = time.time()
REPS = int(os.environ.get("NTD_BENCH_REPS", "30"))
results: dict = {"reps": REPS, "ops": {}}
process_start = float(os.environ.get("NTD_BENCH_T0", first_line))
results["start_to_first_line_s"] = first_line - process_start


def record(op, mode, value, unit="ms"):
    entry = results["ops"].setdefault(op, {"unit": unit})
    entry.setdefault(mode, []).append(value)


cpu = {"ntd": 0.0, "baseline": 0.0}


def cpu_seconds():
    times = os.times()
    return times.user + times.system


def timed(op, mode, action, unit="ms", scale=1000.0):
    before_cpu = cpu_seconds()
    start = time.monotonic()
    action()
    elapsed = time.monotonic() - start
    cpu[mode] += cpu_seconds() - before_cpu
    record(op, mode, elapsed * scale, unit)
    return elapsed


# --- upstream's way, over the same backdoor shell ----------------------------------------


def upstream_execute(command, timeout=900):
    """Upstream's framing: the command under `timeout … bash -c`, its output base64-encoded on
    one line, then its status asked for in a second round trip."""
    line = f"timeout {timeout} bash -c {shlex.quote('set -euo pipefail; ' + command)} | (base64 -w 0; echo)\n"
    encoded = machine._exchange_raw_line(line)
    status = int(machine._exchange_raw_line("echo ${PIPESTATUS[0]}\n"))
    return status, base64.b64decode(encoded).decode(errors="replace")


def upstream_poll(check):
    """Upstream's retry: check, then once a second until it holds."""
    while not check():
        time.sleep(1)


def upstream_screenshot(path):
    ppm = path + ".ppm"
    machine.send_monitor_command(f"screendump {ppm}")
    subprocess.run(f"pnmtopng {shlex.quote(ppm)} > {shlex.quote(path)}", shell=True, check=True)
    os.unlink(ppm)


IMAGEMAGICK = "-filter Catrom -density 72 -resample 300 -contrast -normalize -despeckle -type grayscale -sharpen 1 -posterize 3"


def upstream_screen_text_matches(regex, directory):
    """Upstream's OCR: a screenshot, two ImageMagick variants, tesseract on the three in turn."""
    shot = os.path.join(directory, "ocr.png")
    upstream_screenshot(shot)
    images = [shot]
    for i, extra in enumerate(["", "-negate"]):
        variant = os.path.join(directory, f"ocr-{i}.png")
        subprocess.run(f"convert {shot} {IMAGEMAGICK} {extra} -gamma 100 -blur 1x65535 {variant}", shell=True, check=True)
        images.append(variant)
    # Debian's tesseract data has no legacy engine: --oem 1 where upstream asks for 2.
    texts = [subprocess.run(["tesseract", image, "-", "--oem", "1", "--psm", "11"], capture_output=True, text=True).stdout for image in images]
    return any(re.search(regex, text) for text in texts)


# --- the clock offset, to date events inside the guest -----------------------------------


def guest_clock_offset():
    """Guest clock minus host clock, from the round trip with the smallest delay."""
    best = None
    for _ in range(5):
        before = time.time()
        guest = float(machine.succeed("date +%s.%N"))
        after = time.time()
        if best is None or after - before < best[0]:
            best = (after - before, guest - (before + after) / 2)
    return best[1]


def detection(op, mode, arm, wait, marker):
    """Arm a condition that becomes true in the guest a moment later; the guest writes its
    clock just before making it true to `marker` (so the figure errs long, by the time the
    guest takes to make it true); record how long after it the wait returned."""
    offset = guest_clock_offset()
    machine.succeed(arm)
    before_cpu = cpu_seconds()
    wait()
    returned = time.time()
    cpu[mode] += cpu_seconds() - before_cpu
    # The marker is written after the clock is read: it may still be on its way.
    machine.wait_until_succeeds(f"test -s {marker}", timeout=30)
    happened = float(machine.succeed(f"cat {marker}")) - offset
    record(op, mode, (returned - happened) * 1000.0)


# --- boot ------------------------------------------------------------------------------

start = time.monotonic()
start_all()
machine.succeed("true")
results["boot_to_shell_s"] = time.monotonic() - start
machine.wait_for_unit("multi-user.target")
results["boot_to_multi_user_s"] = time.monotonic() - start

# --- commands --------------------------------------------------------------------------

for _ in range(REPS * 4):
    timed("channel floor: one echo line", "ntd", lambda: machine._exchange_raw_line("echo x\n"))
# What a command costs the guest, without the driver's framing and logging: the subshell with
# its status on the console (the console fallback's floor), and the same with stdout on the
# output port and the port reopened once, as for the end marker (the port framing's floor).
for _ in range(REPS * 4):
    timed(
        "guest floor: subshell, status on the console",
        "ntd",
        lambda: machine._exchange_raw_line("( eval 'set -euo pipefail; true' ) </dev/null; echo $?\n"),
    )
    timed(
        "guest floor: subshell on the output port, port reopened",
        "ntd",
        lambda: machine._exchange_raw_line(
            "( eval 'set -euo pipefail; true' ) </dev/null >\"$__ntd_out\"; __ntd_s=$?; "
            ": >\"$__ntd_out\"; echo $__ntd_s\n"
        ),
    )
for _ in range(REPS * 4):
    timed('succeed("true")', "ntd", lambda: machine.succeed("true"))
    timed('succeed("true")', "baseline", lambda: upstream_execute("true"))
# execute's default timeout (900 s): upstream runs `timeout 900 bash -c` for every command; ntd
# keeps the timeout on the host (the control port kills), so it should cost what succeed does.
for _ in range(REPS * 4):
    timed('execute("true") with its default timeout', "ntd", lambda: machine.execute("true"))
    timed('execute("true") with its default timeout', "baseline", lambda: upstream_execute("true"))

for label, size, reps in [("1 MiB", 1 << 20, REPS), ("64 MiB", 64 << 20, max(1, REPS // 10))]:
    # The output is made once, so that the guest only has to send it.
    machine.succeed(f"head -c {size} /dev/zero | tr '\\0' a > /tmp/output-{size}")
    command = f"cat /tmp/output-{size}"
    for _ in range(reps):
        ntd_s = timed(f"output {label}", "ntd", lambda: machine.succeed(command), unit="s", scale=1.0)
        record(f"output {label} throughput", "ntd", size / ntd_s / (1 << 20), unit="MiB/s")
        base_s = timed(f"output {label}", "baseline", lambda: upstream_execute(command), unit="s", scale=1.0)
        record(f"output {label} throughput", "baseline", size / base_s / (1 << 20), unit="MiB/s")
    del results["ops"][f"output {label}"]

# --- waits: detection latency after the condition holds ----------------------------------

# Each condition turns true after a delay drawn between 1 and 2 s, the same delays for ntd and
# the baseline: the baseline's once-a-second polling then finds it half a second late on
# average, as it would a condition that turns true at any moment.
waits = max(3, REPS // 5)
delays = random.Random(7)
for i in range(waits):
    delay = [delays.uniform(1, 2) for _ in range(3)]
    for mode in ("ntd", "baseline"):
        path = f"/tmp/bench-file-{mode}-{i}"
        # bash's own clock and redirection: no process between reading the clock and the file.
        arm = f"(sleep {delay[0]:.3f}; t=$EPOCHREALTIME; : > {path}; echo $t > {path}.t) >/dev/null 2>&1 &"
        if mode == "ntd":
            wait = lambda: machine.wait_for_file(path)
        else:
            wait = lambda: upstream_poll(lambda: upstream_execute(f"test -e {path}")[0] == 0)
        detection("wait_for_file latency", mode, arm, wait, f"{path}.t")

        unit = f"bench-{mode}-{i}"
        arm = (
            f"systemd-run --no-block --unit={unit} --service-type=oneshot --remain-after-exit "
            f"sh -c 'sleep {delay[1]:.3f}; date +%s.%N > /tmp/{unit}.t'"
        )
        if mode == "ntd":
            wait = lambda: machine.wait_for_unit(f"{unit}.service")
        else:
            wait = lambda: upstream_poll(
                lambda: upstream_execute(f"systemctl show {unit}.service --property=ActiveState")[1].strip()
                == "ActiveState=active"
            )
        detection("wait_for_unit latency", mode, arm, wait, f"/tmp/{unit}.t")

        port = 9000 + i * 2 + (mode == "baseline")
        arm = (
            f"(sleep {delay[2]:.3f}; t=$EPOCHREALTIME; nc -l -p {port} >/dev/null & echo $t > /tmp/port-{port}.t) "
            ">/dev/null 2>&1 &"
        )
        if mode == "ntd":
            wait = lambda: machine.wait_for_open_port(port)
        else:
            wait = lambda: upstream_poll(lambda: upstream_execute(f"nc -z localhost {port}")[0] == 0)
        detection("wait_for_open_port latency", mode, arm, wait, f"/tmp/port-{port}.t")

# --- the screen --------------------------------------------------------------------------

machine.wait_for_text("login:")
screens = tempfile.mkdtemp()
for i in range(REPS):
    timed("screenshot", "ntd", lambda: machine.screenshot(os.path.join(screens, f"ntd-{i}")))
    timed("screenshot", "baseline", lambda: upstream_screenshot(os.path.join(screens, f"upstream-{i}.png")))


def upstream_wait_for_login_prompt():
    if not upstream_screen_text_matches("login:", screens):
        raise AssertionError("upstream's OCR did not read the login prompt")


for _ in range(max(2, REPS // 10)):
    timed("wait_for_text (first screenshot matches)", "ntd", lambda: machine.wait_for_text("login:"))
    timed("wait_for_text (first screenshot matches)", "baseline", upstream_wait_for_login_prompt)

# --- the driver process -------------------------------------------------------------------

with open("/proc/self/status") as status:
    peak_kib = int(re.search(r"VmHWM:\s+(\d+) kB", status.read()).group(1))
results["driver_peak_rss_mib"] = peak_kib / 1024
results["driver_cpu_s"] = {"total": cpu_seconds(), **cpu}
with open(os.environ["NTD_BENCH_OUT"], "w") as out:
    json.dump(results, out, indent=1)
