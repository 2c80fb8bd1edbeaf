# Tests that nixpkgs' test framework rejects, and the framework stand-in must reject too, with
# nixpkgs' message (tests/nix/check runs each case and matches the message):
#   nix-instantiate --eval --strict -E '(import tests/nix/must-fail.nix { }).CASE'
# `nixpkgsLib`: as in eval.nix, a real nixpkgs lib to run the stand-in on.
{
  nixpkgsLib ? null,
}:
let
  stubs = import ./stubs.nix;
  framework = import ./framework.nix {
    lib = if nixpkgsLib == null then stubs.lib else import (/. + nixpkgsLib);
  };
  test =
    module:
    framework.runNixOSTest stubs.pkgs {
      imports = [ module ];
      name = "must-fail";
      nodes.machine = { };
      testScript = "start_all()";
    };
in
{
  # ntd's testModule before it was fixed: it set `interactive.driver` as well as `driver`. The
  # framework evaluates every module of the test again inside `interactive`, so this module's
  # `driver` is already a definition of `interactive.driver`, and the second one, at the same
  # priority, makes the option defined twice.
  # Expected: The option `interactive.driver' is defined multiple times while it's expected to be unique.
  interactive-driver-defined-twice =
    (test (
      { config, lib, ... }:
      {
        driver = lib.mkForce (
          import ../../driver-nix/test-driver.nix {
            pkgs = config.hostPkgs;
            inherit config;
          }
        );
        interactive.driver = lib.mkForce (
          import ../../driver-nix/test-driver.nix {
            pkgs = config.hostPkgs;
            config = config.interactive;
          }
        );
      }
    )).driverInteractive.name;

  # A definition of an option nobody declares.
  # Expected: The option `interactiveDriver' does not exist.
  undeclared-option = (test { interactiveDriver = "x"; }).driver.name;

  # Two different values for an option whose definitions must agree.
  # Expected: The option `name' has conflicting definition values
  conflicting-name = (test { name = "another"; }).name;
}
