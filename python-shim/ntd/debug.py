"""Breakpoints for failing tests (upstream's `test_driver/debug.py`).

`debug.breakpoint()` is a no-op (`DebugNop`) unless the driver runs with
`--debug-hook-attach`, which the Nix sandbox's debug hook uses: then a failure (or an explicit
`debug.breakpoint()`) pauses the test with a debugger on a TCP port (`Debug`).
"""

import os
import pdb
import random
import shutil
import socket
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from types import FrameType
from typing import Any


class DebugAbstract(ABC):
    @abstractmethod
    def breakpoint(self, host: str = "127.0.0.1", port: int = 4444) -> None:
        pass


class DebugNop(DebugAbstract):
    def __init__(self) -> None:
        pass

    def breakpoint(self, host: str = "127.0.0.1", port: int = 4444) -> None:
        pass


class Debug(DebugAbstract):
    """Upstream's debug hook. At a breakpoint the log says how to get into the build sandbox
    (`sudo <attach command> <pattern>`: the attach command finds the sandbox by a process
    running `sleep <pattern>`, which this starts), and a pdb session waits on `host:port` for
    `nc`/`telnet` from inside it. `continue` (or closing the connection) resumes the test."""

    def __init__(self, logger: Any, attach_command: str) -> None:
        self.logger = logger
        self.attach = attach_command
        # More to say at a breakpoint: the driver adds how to reach its machines over the SSH
        # backdoor. Each gives text or None.
        self.hints: list[Callable[[], "str | None"]] = []

    def breakpoint(self, host: str = "127.0.0.1", port: int = 4444) -> None:
        pattern = str(random.randrange(999999, 9999999))
        self.logger.log_test_error(f"Breakpoint reached, run 'sudo {self.attach} {pattern}'")
        for hint in self.hints:
            text = hint()
            if text:
                for line in text.splitlines():
                    self.logger.log(line)
        # The attach command opens an interactive shell with $bashInteractive.
        bash = shutil.which("bash")
        if bash is not None:
            os.environ["bashInteractive"] = bash
        marker = subprocess.Popen(["sleep", pattern])
        try:
            # At a failure, the prompt opens where the test script failed, with its globals
            # (`machine`, …) at hand; elsewhere in the caller's frame.
            frame = _failing_script_frame() or sys._getframe(1)
            _serve_pdb(frame, host, port, self.logger)
        finally:
            marker.kill()
            marker.wait()


def _failing_script_frame() -> "FrameType | None":
    """The innermost test-script frame (the script runs as `<string>`) of the exception being
    handled, if any."""
    found = None
    tb = sys.exc_info()[2]
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<string>":
            found = tb.tb_frame
        tb = tb.tb_next
    return found


def _serve_pdb(frame: FrameType, host: str, port: int, logger: Any) -> None:
    """Accept one connection on host:port and run a pdb prompt on it in `frame`, until the
    user continues, quits or hangs up."""
    with socket.create_server((host, port)) as server:
        logger.log(f"pdb is listening on {host}:{port}")
        connection, _ = server.accept()
    with connection, connection.makefile("rw", buffering=1) as stream:
        debugger = pdb.Pdb(stdin=stream, stdout=stream)
        debugger.use_rawinput = False
        # A prompt in this frame: inspect the script's state and call machine methods. The
        # test is not traced afterwards, so `step` and `next` resume like `continue`.
        debugger.reset()
        try:
            debugger.interaction(frame, None)
        except (BrokenPipeError, ConnectionResetError):
            pass
