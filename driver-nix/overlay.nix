# Puts ntd in place of nixpkgs' Python test driver. nixpkgs' test framework builds every
# test's driver from `hostPkgs.nixos-test-driver` (overriding its OCR, extra Python packages and
# QEMU per test), so with this overlay on the `pkgs` a test is built with, `runNixOSTest` and
# `nixosTest` tests run on ntd unchanged. Needs a nixpkgs that has `pkgs.nixos-test-driver`;
# with an older one, set `driver` per test (see lib.nix, `testModule`).
final: prev: {
  ntd = final.callPackage ./package.nix { };
  nixos-test-driver = final.ntd;
}
