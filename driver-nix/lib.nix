# Helpers for using ntd from Nix, without the overlay or alongside it.
{
  # The driver derivation of one test, built with ntd (see test-driver.nix):
  #   driver = lib.mkForce (ntd.lib.mkDriver { pkgs = hostPkgs; inherit config; });
  mkDriver = import ./test-driver.nix;

  # A test module that makes one test (and its driverInteractive) run on ntd, for a nixpkgs
  # without `pkgs.nixos-test-driver` or when only some tests should change:
  #   pkgs.testers.runNixOSTest { imports = [ ntd.lib.testModule ]; ... }
  testModule =
    { config, lib, ... }:
    {
      driver = lib.mkForce (
        import ./test-driver.nix {
          pkgs = config.hostPkgs;
          inherit config;
        }
      );
      interactive.driver = lib.mkForce (
        import ./test-driver.nix {
          pkgs = config.hostPkgs;
          config = config.interactive;
        }
      );
    };

  # runNixOSTest with ntd as the driver: the same as `pkgs.testers.runNixOSTest` on `pkgs`
  # with the overlay applied.
  runNixOSTest = pkgs: module: (pkgs.extend (import ./overlay.nix)).testers.runNixOSTest module;
}
