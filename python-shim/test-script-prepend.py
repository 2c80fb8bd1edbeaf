# Typed declarations of a test script's globals, for the type check of a NixOS test script.
#
# The Nix build of a test's driver (and scripts/check-test-script) writes this file, then one
# `<node>: QemuMachine` line per machine and one `vlan<n>: VLan` line per VLAN, then the test
# script, and runs `mypy --no-implicit-optional` on the result. Nothing here runs: the globals
# are declared with the types of the objects the driver really gives the script, so a call with
# a wrong argument is a type error, as it would be a failure at run time. Imports this file
# does not use are there for the script: `os` and the classes are globals of every script.

import os
from unittest import TestCase

from test_driver.debug import DebugAbstract
from test_driver.driver import Driver
from test_driver.logger import AbstractLogger, CompositeLogger
from test_driver.machine import BaseMachine, Machine, NspawnMachine, QemuMachine, retry
from test_driver.vlan import VLan

driver: Driver
machines: list[QemuMachine]
machines_qemu: list[QemuMachine]
machines_nspawn: list[NspawnMachine]
vlans: list[VLan]
t: TestCase
debug: DebugAbstract

# The driver's own methods, with their signatures.
start_all = driver.start_all
join_all = driver.join_all
run_tests = driver.run_tests
test_script = driver.test_script
subtest = driver.subtest
create_machine = driver.create_machine
polling_condition = driver.polling_condition
serial_stdout_on = driver.serial_stdout_on
serial_stdout_off = driver.serial_stdout_off
dump_machine_ssh = driver.dump_machine_ssh
log = driver.logger

# Generated per test: the machines and VLANs.
