# nixpkgs' nixos-test-driver/qmp-api-error: a QMP command QEMU does not know raises
# QMPAPIError with QEMU's error class and description, and no transaction id.
from test_driver.machine.qmp import QMPAPIError

machine.start()
assert machine.qmp_client is not None
try:
    machine.qmp_client.send("this-command-does-not-exist")
except QMPAPIError as error:
    assert error.class_name == "CommandNotFound", error.class_name
    assert error.description, "no description"
    assert error.transaction_id is None, error.transaction_id
    print(f"refused: {error}")
else:
    raise AssertionError("QEMU accepted a command that does not exist")
assert machine.qmp_client.send("query-status")["return"]["running"] is True
