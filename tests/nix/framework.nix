# A stand-in for nixpkgs' NixOS test framework (nixos/lib/testing/*.nix, `nixos.runTest`,
# `pkgs.testers.runNixOSTest`): the option declarations and definitions a test's `driver` and
# `interactive.driver` come from, with nixpkgs' names, types and module structure, evaluated
# with a `lib` that has `evalModules`:
#   - module-system.nix (what tests/nix/check uses: no nixpkgs here), or
#   - a real nixpkgs `lib` (tests/nix/check with NTD_NIXPKGS_LIB=/path/to/nixpkgs/lib).
#
# What matters and is kept as upstream has it:
#   - interactive.nix: `interactive` is of type `moduleType`, a submodule of *all* the test's
#     modules; it sets `interactive.qemu.package = hostPkgs.qemu` and
#     `interactive.extraDriverArgs = [ "--interactive" ]`, and `.driverInteractive` is
#     `config.interactive.driver`;
#   - testScript.nix: `withoutTestScriptReferences` is another such submodule;
#   - driver.nix: `driver` is of type `package` (defined once, unless priorities tell
#     definitions apart), defined by the framework from `hostPkgs.nixos-test-driver`
#     overridden with the test's OCR, Python packages, QEMU and containers;
#   - run.nix and call-test.nix: `runTest` returns `config.test`, which carries `passthru`
#     (`driver`, `driverInteractive`, `config`);
#   - pkgs.testers.runNixOSTest: the test module imported next to `hostPkgs = pkgs`.
# Left out: the nodes' NixOS evaluation (a node is a deferred module here, never evaluated),
# networking, the SSH backdoor, meta, legacy options, `extend`. The drivers' build scripts are
# reduced to what the checks read: the driver package linked and the wrapper's flags.
{ lib }:
let
  inherit (lib) mkOption types;

  # Always quoted, whichever `lib` this runs on (nixpkgs' escapeShellArg leaves safe words bare).
  quote = s: "'${builtins.replaceStrings [ "'" ] [ "'\\''" ] s}'";

  # nixos/lib/testing/driver.nix
  driverModule =
    { config, hostPkgs, ... }:
    let
      testDriver = config.pythonTestDriverPackage.override {
        inherit (config) enableOCR extraPythonPackages;
        qemu_pkg = config.qemu.package;
        enableNspawn = config.containers != { };
      };
      flags = [
        "--config ${config.driverConfigurationFile}"
        "--log-level ${config.logLevel}"
      ] ++ config.extraDriverArgs;
    in
    {
      _file = "framework.nix: driver.nix";
      options = {
        pythonTestDriverPackage = mkOption {
          type = types.package;
          default = hostPkgs.nixos-test-driver;
          readOnly = true;
        };
        driver = mkOption { type = types.package; };
        hostPkgs = mkOption { type = types.raw; };
        qemu.package = mkOption {
          type = types.package;
          default = hostPkgs.qemu_test;
        };
        globalTimeout = mkOption {
          type = types.int;
          default = 60 * 60;
        };
        enableOCR = mkOption {
          type = types.bool;
          default = false;
        };
        extraPythonPackages = mkOption {
          type = types.functionTo (types.listOf types.package);
          default = ps: [ ];
        };
        extraDriverArgs = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        skipLint = mkOption {
          type = types.bool;
          default = false;
        };
        skipTypeCheck = mkOption {
          type = types.bool;
          default = false;
        };
        logLevel = mkOption {
          type = types.enum [
            "debug"
            "info"
            "warning"
            "error"
          ];
          default = "info";
        };
      };
      config = {
        _module.args.hostPkgs = lib.mkOverride lib.modules.defaultOverridePriority config.hostPkgs;
        driver = hostPkgs.runCommand "nixos-test-driver-${config.name}" {
          buildInputs = [ testDriver ];
          passthru = config.passthru;
        } "ln -s ${testDriver}/bin/nixos-test-driver $out/bin/nixos-test-driver; wrapProgram $out/bin/nixos-test-driver ${
          builtins.concatStringsSep " " (map (flag: "--add-flags ${quote flag}") flags)
        }";
        passthru.driver = config.driver;
      };
    };

  # nixos/lib/testing/interactive.nix
  interactiveModule =
    {
      config,
      moduleType,
      hostPkgs,
      ...
    }:
    {
      _file = "framework.nix: interactive.nix";
      options.interactive = mkOption { type = moduleType; };
      config = {
        interactive.qemu.package = hostPkgs.qemu;
        interactive.extraDriverArgs = [ "--interactive" ];
        passthru.driverInteractive = config.interactive.driver;
      };
    };

  # nixos/lib/testing/name.nix
  nameModule = {
    _file = "framework.nix: name.nix";
    options.name = mkOption { type = types.str; };
  };

  # nixos/lib/testing/nodes.nix: nodes and containers (NixOS configurations there; deferred
  # modules, never evaluated, here), and what `runNixOSTest` sets.
  nodesModule = {
    _file = "framework.nix: nodes.nix";
    options = {
      nodes = mkOption {
        type = types.lazyAttrsOf types.deferredModule;
        default = { };
      };
      containers = mkOption {
        type = types.lazyAttrsOf types.deferredModule;
        default = { };
      };
      defaults = mkOption {
        type = types.deferredModule;
        default = { };
      };
      node.pkgs = mkOption {
        type = types.nullOr types.raw;
        default = null;
      };
    };
  };

  # nixos/lib/testing/driver-configuration.nix: the JSON configuration the driver reads (its
  # VLANs are the nodes' there; one VLAN per test here, the nodes are not evaluated).
  driverConfigurationModule =
    { config, ... }:
    {
      _file = "framework.nix: driver-configuration.nix";
      options = {
        driverConfiguration = mkOption { type = types.raw; };
        driverConfigurationFile = mkOption { type = types.path; };
      };
      config = {
        driverConfiguration = {
          vms = builtins.mapAttrs (name: _: {
            inherit name;
            start_script = "/stub/run-${name}-vm/bin/run-${name}-vm";
          }) config.nodes;
          containers = { };
          vlans = if config.nodes == { } then [ ] else [ 1 ];
          global_timeout = config.globalTimeout;
        };
        driverConfigurationFile = "/stub/driverConfiguration-${config.name}.json";
      };
    };

  # nixos/lib/testing/testScript.nix
  testScriptModule =
    { config, moduleType, ... }:
    {
      _file = "framework.nix: testScript.nix";
      options = {
        testScript = mkOption { type = types.either types.str (types.functionTo types.str); };
        testScriptString = mkOption {
          type = types.str;
          readOnly = true;
        };
        withoutTestScriptReferences = mkOption { type = moduleType; };
      };
      config = {
        withoutTestScriptReferences.testScript = lib.mkForce "testscript omitted";
        testScriptString =
          if builtins.isFunction config.testScript then
            config.testScript { nodes = config.nodes; }
          else
            config.testScript;
      };
    };

  # nixos/lib/testing/run.nix and call-test.nix
  runModule =
    { config, hostPkgs, ... }:
    {
      _file = "framework.nix: run.nix";
      options = {
        passthru = mkOption { type = types.lazyAttrsOf types.raw; };
        test = mkOption { type = types.package; };
        result = mkOption { default = config; };
      };
      config = {
        test = hostPkgs.runCommand "vm-test-run-${config.name}" {
          passthru = config.passthru;
        } "${config.driver}/bin/nixos-test-driver -o $out";
        passthru.config = config;
      };
    };

  testModules = [
    driverModule
    interactiveModule
    nameModule
    nodesModule
    driverConfigurationModule
    testScriptModule
    runModule
  ];

  # nixos/lib/testing/default.nix
  evalTest =
    module:
    lib.evalModules {
      modules = testModules ++ [ module ];
      class = "nixosTest";
    };
  runTest =
    module:
    (evalTest (
      { config, ... }:
      {
        imports = [ module ];
        result = config.test;
      }
    )).config.result;
in
{
  inherit evalTest runTest testModules;

  # pkgs/build-support/testers/default.nix: `pkgs.testers.runNixOSTest`.
  runNixOSTest =
    pkgs: testModule:
    runTest {
      _file = "pkgs.runNixOSTest implementation";
      imports = [
        {
          _file = "the argument that was passed to pkgs.runNixOSTest";
          imports = [ testModule ];
        }
      ];
      hostPkgs = pkgs;
      node.pkgs = pkgs;
    };
}
