# The prelude of the ports of nixpkgs' unmerged driver-coverage suite (nixos-test-driver's
# default.nix builds each test from common.py followed by one script; crates/cli/tests/e2e/
# upstream.rs does the same with this file): an example file and directory on the host, a
# host-side diff, upstream's `must_raise` (an exception whose text contains the given text
# must leave the block), and all machines started.
import contextlib
import os
import subprocess
from pathlib import Path

exampleDir = Path(os.environ["TMPDIR"]) / "exampleDir"
exampleDir.mkdir(parents=True, exist_ok=True)
exampleFile = exampleDir / "exampleFile"
exampleFile.write_bytes(bytes(range(256)))


def host_files_same(a, b):
    subprocess.run(["diff", str(a), str(b)], check=True)


@contextlib.contextmanager
def must_raise(text, kind=Exception):
    try:
        yield
    except kind as e:
        if text not in str(e):
            raise AssertionError(f"{text!r} is not in the exception's text {str(e)!r}") from e
    else:
        raise AssertionError(f"no exception was raised (expected one saying {text!r})")


start_all()
