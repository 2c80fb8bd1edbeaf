# Helpers for using ntd from Nix, without the overlay or alongside it.
{
  # The driver derivation of one test, built with ntd (see test-driver.nix):
  #   driver = lib.mkForce (ntd.lib.mkDriver { pkgs = hostPkgs; inherit config; });
  mkDriver = import ./test-driver.nix;

  # A test module that makes one test (and its driverInteractive) run on ntd, for a nixpkgs
  # without `pkgs.nixos-test-driver` or when only some tests should change:
  #   pkgs.testers.runNixOSTest { imports = [ ntd.lib.testModule ]; ... }
  #
  # It sets `driver` only. nixpkgs' test framework (nixos/lib/testing/interactive.nix) declares
  # `interactive` as a submodule of the whole test: every module of the test, this one
  # included, is evaluated again inside it, with `--interactive` added to `extraDriverArgs` and
  # `hostPkgs.qemu` as `qemu.package`. So this definition of `driver` is also the definition of
  # `interactive.driver`, built from the interactive configuration; a second definition of
  # `interactive.driver` here would be rejected as defined twice.
  testModule =
    { config, lib, ... }:
    {
      driver = lib.mkForce (
        import ./test-driver.nix {
          pkgs = config.hostPkgs;
          inherit config;
        }
      );
    };

  # runNixOSTest with ntd as the driver: the same as `pkgs.testers.runNixOSTest` on `pkgs`
  # with the overlay applied.
  runNixOSTest = pkgs: module: (pkgs.extend (import ./overlay.nix)).testers.runNixOSTest module;
}
