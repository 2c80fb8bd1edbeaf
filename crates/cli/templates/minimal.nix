# @name@: a NixOS test, run by ntd (https://nixos.org/manual/nixos/stable/#sec-nixos-tests).
#
#   nix-build . -I ntd=PATH-TO-NTD                      # run it (test.py against a NixOS VM)
#   $(nix-build . -A driverInteractive -I ntd=PATH-TO-NTD)/bin/nixos-test-driver   # REPL
#
# `pkgs` has ntd's overlay, so runNixOSTest builds the test's driver with ntd.
{
  pkgs ? import <nixpkgs> { overlays = [ (import <ntd/driver-nix/overlay.nix>) ]; },
}:

pkgs.testers.runNixOSTest {
  name = "@name@";

  # Add the machine's configuration here; hello.nix is the service test.py waits for.
  nodes.machine = {
    imports = [ ./hello.nix ];
  };

  testScript = builtins.readFile ./test.py;
}
