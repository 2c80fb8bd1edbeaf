# Machines named by --vm-names, and the single machine's `machine` alias.
assert [m.name for m in machines] == ["custom-name"]
assert custom_name is machine
custom_name.succeed("true")
