# nixpkgs' nixos-test-driver.extra-python-packages: the script imports a package the driver's
# Python only has through extraPythonPackages, which ntd's package.nix (as upstream's) puts on
# PYTHONPATH. Upstream imports numpy; crates/cli/tests/e2e/upstream.rs writes a tiny package
# of its own and points PYTHONPATH at it. No machines.
import tinyarray

assert repr(tinyarray.zeros(4)) == "array([0., 0., 0., 0.])", repr(tinyarray.zeros(4))
