# Load: four machines driven at once from Python threads, 10,000 sequential commands, 64 MiB
# each way and a 100 MiB output, every byte checked. The test script runs inside the driver,
# so /proc/self/status is the driver's own memory. Run by crates/cli/tests/e2e/load.rs, which
# boots `big` with more memory for the transfers.
import hashlib
import os
import threading
import time

MIB = 1024 * 1024


def memory_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise Exception(f"no {field} in /proc/self/status")


def report(name: str, value: object) -> None:
    # One greppable line per figure, for the Rust test and the docs.
    log.info(f"load: {name} = {value}")


start_all()
big = machines[0]
assert big.name == "big", [m.name for m in machines]

with subtest("four machines from four threads"):
    failures: list[str] = []

    def drive(machine) -> None:
        try:
            for i in range(200):
                expected = f"{machine.name} {i} " + "x" * (i * 37 % 4000)
                out = machine.succeed(f"echo '{expected}'")
                if out != expected + "\n":
                    failures.append(f"{machine.name}: {out[:80]!r} != {expected[:80]!r}")
                    return
        except BaseException as e:
            failures.append(f"{machine.name}: {e!r}")

    threads = [threading.Thread(target=drive, args=(m,)) for m in machines]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    report("four machines x 200 commands, seconds", round(time.monotonic() - started, 1))
    for machine in machines[1:]:
        machine.shutdown()

with subtest("10,000 sequential commands"):
    for i in range(500):
        big.succeed("true")
    before = memory_kib("VmRSS")
    started = time.monotonic()
    for i in range(10_000):
        out = big.succeed(f"echo {i}")
        if out != f"{i}\n":
            raise Exception(f"command {i}: {out!r}")
    elapsed = time.monotonic() - started
    after = memory_kib("VmRSS")
    report("10000 commands, ms per command", round(elapsed * 1000 / 10_000, 2))
    report("RSS growth over 10000 commands, KiB", after - before)
    # The bound: 10,000 commands must not leak; 16 MiB is far above allocator noise.
    assert after - before < 16 * 1024, f"the driver grew by {after - before} KiB over 10,000 commands"

with subtest("64 MiB from the guest"):
    # 48 MiB of random bytes, base64 without line breaks: exactly 64 MiB of output.
    digest = big.succeed(
        "head -c 50331648 /dev/urandom | base64 -w 0 > /tmp/out.b64 && sha256sum /tmp/out.b64"
    ).split()[0]
    started = time.monotonic()
    out = big.succeed("cat /tmp/out.b64")
    report("64 MiB guest to host, seconds", round(time.monotonic() - started, 1))
    assert len(out) == 64 * MIB, len(out)
    assert hashlib.sha256(out.encode()).hexdigest() == digest
    del out
    big.succeed("rm /tmp/out.b64")

with subtest("64 MiB to the guest"):
    payload = os.urandom(64 * MIB)
    source = big.out_dir.parent / "payload.bin"
    source.write_bytes(payload)
    started = time.monotonic()
    big.copy_from_host(str(source), "/tmp/payload.bin")
    report("64 MiB host to guest, seconds", round(time.monotonic() - started, 1))
    assert big.succeed("sha256sum /tmp/payload.bin").split()[0] == hashlib.sha256(payload).hexdigest()
    del payload
    source.unlink()
    big.succeed("rm /tmp/payload.bin")

with subtest("100 MiB of output"):
    started = time.monotonic()
    out = big.succeed("head -c 104857600 /dev/zero | tr '\\000' x")
    report("100 MiB output, seconds", round(time.monotonic() - started, 1))
    assert len(out) == 100 * MIB, len(out)
    assert out.count("x") == 100 * MIB
    del out

peak = memory_kib("VmHWM")
report("driver peak RSS, MiB", peak // 1024)
# The stated bound: the biggest single output (100 MiB) held as bytes and as a Python str,
# with headroom; a copy per chunk or an unbounded buffer would go far over it.
assert peak < 768 * 1024, f"the driver's peak RSS was {peak // 1024} MiB"
