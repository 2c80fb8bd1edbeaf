"""Turn a benchmark run (benches/e2e/run) into a Markdown report and a latency plot.

    python report.py DIR    reads DIR/results.json, DIR/boot-*.json and, when the run measured
                            containers, DIR/containers.json (and its driver log); writes
                            DIR/report.md (also printed) and DIR/latency.png

Every ratio compares ntd with the baseline measured in the same run on the same VM: for
times, baseline / ntd (how many times faster ntd is); for throughput, ntd / baseline. The
containers' table compares a container with a VM, both through ntd, in one driver run.
"""

import glob
import json
import os
import platform
import re
import statistics
import subprocess
import sys


def median(values):
    return statistics.median(values) if values else float("nan")


def p90(values):
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def fmt(value, unit):
    if unit == "MiB/s":
        return f"{value:.1f} MiB/s"
    if value >= 100:
        return f"{value:.0f} ms"
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"


def machine_description():
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    cores = os.cpu_count()
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    # The start scripts' own rule (tests/guest/mk-start-script): real KVM, else TCG.
    with open("/proc/cpuinfo") as info:
        virtualisation = any(flag in info.read().split() for flag in ("vmx", "svm"))
    kvm_usable = os.access("/dev/kvm", os.R_OK | os.W_OK) and not os.path.exists("/sys/module/kvm_pvm") and virtualisation
    kvm = "KVM" if kvm_usable else "TCG (no usable KVM)"
    return f"{cpu}, {cores} cores, {platform.system()} {platform.release()}; {qemu}; guests under {kvm}"


def main(directory):
    with open(os.path.join(directory, "results.json")) as f:
        results = json.load(f)
    boots = []
    for path in sorted(glob.glob(os.path.join(directory, "boot-*.json")), key=lambda p: int(p.rsplit("-", 1)[1][:-5])):
        with open(path) as f:
            boots.append(json.load(f))

    lines = [
        f"Machine: {machine_description()}.",
        f"Repetitions: {results['reps']} (per-operation sample counts in parentheses).",
        "",
        "| operation | ntd (median) | baseline: upstream's way (median) | ntd vs baseline |",
        "|---|---|---|---|",
    ]
    plotted = []
    for op, entry in results["ops"].items():
        unit = entry["unit"]
        ntd, base = entry.get("ntd", []), entry.get("baseline", [])
        ntd_m, base_m = median(ntd), median(base)
        if base:
            ratio = ntd_m / base_m if unit == "MiB/s" else base_m / ntd_m
            comparison = f"{ratio:.1f}× {'the throughput' if unit == 'MiB/s' else 'faster'}"
            if unit != "MiB/s":
                plotted.append((op, ntd_m, base_m))
        else:
            comparison = "—"
        base_text = f"{fmt(base_m, unit)} ({len(base)})" if base else "—"
        lines.append(f"| {op} | {fmt(ntd_m, unit)} ({len(ntd)}) | {base_text} | {comparison} |")

    cpu = results["driver_cpu_s"]
    lines += [
        "",
        "| driver | ntd |",
        "|---|---|",
        f"| process start → first test-script line | {results['start_to_first_line_s'] * 1000:.0f} ms |",
        f"| start_all() → shell answers (1 VM, in the operations run) | {results['boot_to_shell_s']:.1f} s |",
        f"| start_all() → multi-user.target (1 VM) | {results['boot_to_multi_user_s']:.1f} s |",
    ]
    for boot in boots:
        lines.append(
            f"| start_all() with {boot['machines']} VMs → every shell / every multi-user.target "
            f"| {boot['shell_s']:.1f} s / {boot['multi_user_s']:.1f} s |"
        )
    for boot in boots:
        lines.append(
            f"| a plain run, {boot['machines']} VM(s) booted to multi-user.target: driver CPU / peak RSS "
            f"| {boot['driver_cpu_s']:.2f} s / {boot['driver_peak_rss_mib']:.1f} MiB |"
        )
    lines += [
        f"| driver CPU during ntd's operations (the process alone, QEMU excluded) | {cpu['ntd']:.2f} s |",
        f"| driver CPU during the baseline's operations (same process) | {cpu['baseline']:.2f} s |",
        f"| driver CPU for the whole run | {cpu['total']:.2f} s |",
        f"| driver peak RSS for the whole run (holds the 64 MiB outputs, both ways) | {results['driver_peak_rss_mib']:.1f} MiB |",
    ]
    lines += containers_section(directory)
    lines += backdoor_section(directory)
    lines += watch_section(directory)
    report = "\n".join(lines) + "\n"
    with open(os.path.join(directory, "report.md"), "w") as f:
        f.write(report)
    print(report)
    plot(plotted, os.path.join(directory, "latency.png"))


def containers_section(directory):
    """A container beside a VM (containers.py), or why there is none."""
    path = os.path.join(directory, "containers.json")
    if not os.path.exists(path):
        return ["", "Containers: not measured in this run (they need root and systemd-nspawn)."]
    with open(path) as f:
        c = json.load(f)
    first, restarts, vm = c["container_first_start"], c["container_restarts"], c["vm_start"]
    # The start script says how long copying the root filesystem into the empty root took.
    copy = None
    try:
        with open(path + ".log") as log:
            found = re.search(r"copied the root filesystem into \S+ in ([0-9.]+) s", log.read())
            copy = float(found.group(1)) if found else None
    except OSError:
        pass

    def restart(key):
        return f"{median([r[key] for r in restarts]):.2f} s" if restarts else "—"

    n = len(restarts)
    lines = [
        "",
        "Containers beside VMs: one container (container guest) and one VM (Debian guest) on VLAN 1, in one driver run.",
        "",
        f"| start() → | container, first start (empty root{f', copy {copy:.2f} s' if copy is not None else ''}) "
        f"| container, restart (kept root; median of {n}) | VM |",
        "|---|---|---|---|",
        f"| ready (READY=1 on NOTIFY_SOCKET) | {first['ready_s']:.2f} s | {restart('ready_s')} | — |",
        f"| first succeed(\"true\") answered | {first['first_command_s']:.2f} s | {restart('first_command_s')} "
        f"| {vm['first_command_s']:.1f} s |",
        f"| multi-user.target | {first['multi_user_s']:.2f} s | {restart('multi_user_s')} | {vm['multi_user_s']:.1f} s |",
    ]
    if c["container_shutdown_s"]:
        lines += [
            "",
            f"The container's shutdown() before each restart (power-off, the start script ended): median "
            f"{median(c['container_shutdown_s']):.2f} s.",
        ]
    commands = c["commands_ms"]
    rows = [
        ('succeed("true") on the container (ntd: nsenter per command)', "container"),
        ('succeed("true") on the container, upstream\'s way (Python subprocess.run of nsenter … sh -c)', "container_baseline"),
        ("floor: nsenter /bin/true into the container from Python (no shell)", "container_floor"),
        ('succeed("true") on the VM (ntd: backdoor shell)', "vm"),
    ]
    lines += ["", "| command, interleaved | median | p90 | samples |", "|---|---|---|---|"]
    for label, key in rows:
        values = commands[key]
        lines.append(f"| {label} | {fmt(median(values), 'ms')} | {fmt(p90(values), 'ms')} | {len(values)} |")
    return lines


def backdoor_section(directory):
    """One VM without and with the SSH backdoor (backdoor.py), or why there is none."""
    runs = {}
    for mode in ("off", "on"):
        path = os.path.join(directory, f"backdoor-{mode}.json")
        if not os.path.exists(path):
            return ["", "The SSH backdoor: not measured in this run (no vhost-device-vsock or ssh)."]
        with open(path) as f:
            runs[mode] = json.load(f)
    off, on = runs["off"], runs["on"]
    n = len(on["boots_s"])
    boot_off, boot_on = median(off["boots_s"]), median(on["boots_s"])
    lines = [
        "",
        f"The SSH backdoor: one VM (Debian guest), without it and then with it, {n} boot(s) each, in two driver runs.",
        "",
        "| | without | with the backdoor | difference |",
        "|---|---|---|---|",
        f"| the driver's start (launch → the script's first line) | {off['driver_start_s'] * 1000:.0f} ms "
        f"| {on['driver_start_s'] * 1000:.0f} ms | {(on['driver_start_s'] - off['driver_start_s']) * 1000:+.0f} ms |",
        f"| start() → multi-user.target (median) | {boot_off:.2f} s | {boot_on:.2f} s | {boot_on - boot_off:+.2f} s |",
        f"| the first ssh through the printed command, after boot (median) | — | {median(on['ssh_s']):.2f} s | |",
    ]
    return lines


def watch_section(directory):
    """One VM without VNC, with --vnc, and with the web view in a browser (watch.py)."""
    runs = {}
    for mode in ("off", "vnc", "web"):
        path = os.path.join(directory, f"watch-{mode}.json")
        if os.path.exists(path):
            with open(path) as f:
                runs[mode] = json.load(f)
    if "off" not in runs:
        return []
    columns = [("off", "without"), ("vnc", "--vnc"), ("web", "--web-view, page open in chromium")]
    columns = [(mode, title) for mode, title in columns if mode in runs]
    row = lambda label, value: f"| {label} | " + " | ".join(value(runs[mode]) for mode, _ in columns) + " |"
    n = runs["off"]["succeed_ms"]["samples"]
    return [
        "",
        "Watching a test: one VM (Debian guest) in one driver run per column; the driver process alone "
        "(QEMU and the browser excluded).",
        "",
        "| | " + " | ".join(title for _, title in columns) + " |",
        "|---|" + "---|" * len(columns),
        row(f'succeed("true"), median of {n}', lambda r: fmt(r["succeed_ms"]["median"], "ms")),
        row("driver CPU during 5 s of changing screen", lambda r: f"{r['cpu_screen_activity_s'] * 1000:.0f} ms"),
        row("driver CPU during 10 s idle", lambda r: f"{r['cpu_idle_10s'] * 1000:.0f} ms"),
        row("driver peak RSS", lambda r: f"{r['peak_rss_mib']:.1f} MiB"),
    ]


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [op for op, _, _ in rows]
    positions = range(len(rows))
    figure, axes = plt.subplots(figsize=(9, 0.6 * len(rows) + 1.5))
    axes.barh([p + 0.2 for p in positions], [b for _, _, b in rows], height=0.4, label="baseline (upstream's way)", color="#bbbbbb")
    axes.barh([p - 0.2 for p in positions], [n for _, n, _ in rows], height=0.4, label="ntd", color="#3465a4")
    axes.set_yticks(list(positions), labels)
    axes.invert_yaxis()
    axes.set_xscale("log")
    axes.set_xlabel("median latency, ms (log scale)")
    axes.set_title("ntd vs upstream's way, same VM, same run")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: report.py DIR")
    main(sys.argv[1])
