"""Upstream's `test_driver.machine`: the machine classes (native, `ntd._native`) and `retry`."""

from ntd._native import BaseMachine, QemuMachine
from ntd.driver import Machine, NspawnMachine, retry

__all__ = ["BaseMachine", "Machine", "NspawnMachine", "QemuMachine", "retry"]
