# @name@: a NixOS test that reads the screen and types, run by ntd.
#
#   nix-build . -I ntd=PATH-TO-NTD                      # run it; screenshots land in ./result
#   $(nix-build . -A driverInteractive -I ntd=PATH-TO-NTD)/bin/nixos-test-driver   # REPL
#
# The screen is the text console (tty1) with a login prompt; root logs in without a password
# in NixOS test VMs. For a desktop, enable it on the node and wait for its windows instead.
{
  pkgs ? import <nixpkgs> { overlays = [ (import <ntd/driver-nix/overlay.nix>) ]; },
}:

pkgs.testers.runNixOSTest {
  name = "@name@";

  # OCR (wait_for_text, get_screen_text) needs tesseract in the driver.
  enableOCR = true;

  nodes.machine = { };

  testScript = builtins.readFile ./test.py;
}
