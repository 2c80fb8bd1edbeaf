# The flake's NixOS check: examples/minimal's test script on a NixOS machine, run by ntd.
{
  name = "ntd-minimal";

  # The service the script waits for (the built-in guest has the same one).
  nodes.machine.imports = [ ../../crates/cli/templates/hello.nix ];

  testScript = builtins.readFile ../../examples/minimal/test.py;
}
