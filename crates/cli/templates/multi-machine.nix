# @name@: a NixOS test with a server and a client on a virtual LAN, run by ntd.
#
#   nix-build . -I ntd=PATH-TO-NTD                      # run it
#   $(nix-build . -A driverInteractive -I ntd=PATH-TO-NTD)/bin/nixos-test-driver   # REPL
#
# Machines on the same VLAN reach each other by name (NixOS writes /etc/hosts for them).
{
  pkgs ? import <nixpkgs> { overlays = [ (import <ntd/driver-nix/overlay.nix>) ]; },
}:

pkgs.testers.runNixOSTest {
  name = "@name@";

  nodes.server = {
    imports = [ ./hello.nix ];   # the service test.py talks to
    virtualisation.vlans = [ 1 ];
  };
  nodes.client =
    { pkgs, ... }:
    {
      virtualisation.vlans = [ 1 ];
      environment.systemPackages = [ pkgs.netcat-openbsd ];
    };

  testScript = builtins.readFile ./test.py;
}
