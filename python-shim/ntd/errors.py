"""Exceptions with upstream's names and hierarchy (nixpkgs `test_driver/errors.py`)."""


class TestScriptError(Exception):
    """Base of the errors a test script is expected to raise."""


class RequestedAssertionFailed(TestScriptError, AssertionError):
    """Something the test asked for did not hold: a failed `succeed`, a wait that timed out,
    a failed `t.assertEqual`. Only the test script's own frames are shown for it."""


class MachineError(Exception):
    """A failure that is not the test's fault: QEMU died, the guest never connected, a
    screenshot could not be written. Shown with its full traceback."""
