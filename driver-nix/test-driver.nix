# A test's driver derivation built with ntd, for one test: what nixpkgs'
# nixos/lib/testing/driver.nix builds with its own driver, from the same test options:
#
#   1. unless `skipTypeCheck`: mypy on typed declarations of the globals
#      (python-shim/test-script-prepend.py), one `<node>: QemuMachine` per node and one
#      `vlan<n>: VLan` per VLAN, then the test script;
#   2. `$out/test-script` and `$out/bin/nixos-test-driver`;
#   3. unless `skipLint`: pyflakes on the script with the globals `generate-driver-symbols`
#      writes (and the machines) as builtins;
#   4. the binary wrapped with `--config <driverConfiguration.json> --log-level <level>` and the
#      test's `extraDriverArgs`.
#
# `config` is the test's configuration (the `config` argument of a test module), `pkgs` the
# host packages; `ntd` defaults to the package built from this repository.
{
  pkgs,
  config,
  ntd ? pkgs.callPackage ./package.nix { },
}:

let
  inherit (pkgs) lib;

  testDriver = ntd.override {
    inherit (config) enableOCR extraPythonPackages;
    qemu_pkg = config.qemu.package;
    enableNspawn = (config.containers or { }) != { };
  };

  # As the driver binds them (`pythonize_name`): a first character other than [A-Za-z_], and any
  # other character other than [A-Za-z0-9_], becomes `_` (`my-vm` is `my_vm`, `1x` is `_x`).
  pythonize =
    name:
    builtins.concatStringsSep "" (
      builtins.genList (
        i:
        let
          c = builtins.substring i 1 name;
        in
        if builtins.match (if i == 0 then "[A-Za-z_]" else "[A-Za-z0-9_]") c == null then "_" else c
      ) (builtins.stringLength name)
    );
  machineNames = map pythonize (lib.attrNames config.nodes);
  vlans = config.driverConfiguration.vlans;

  declarations = lib.concatStringsSep "\n" (
    map (name: "${name}: QemuMachine;") machineNames
    ++ lib.optional (
      lib.length machineNames == 1 && lib.head machineNames != "machine"
    ) "machine: QemuMachine;"
    ++ map (vlan: "vlan${toString vlan}: VLan;") vlans
  );
  builtinNames = lib.concatStringsSep "," (
    machineNames
    ++ lib.optional (lib.length machineNames == 1) "machine"
    ++ map (vlan: "vlan${toString vlan}") vlans
  );
  driverFlags = [
    "--config"
    "${config.driverConfigurationFile}"
    "--log-level"
    config.logLevel
  ] ++ config.extraDriverArgs;
in
pkgs.runCommand "nixos-test-driver-${config.name}"
  {
    nativeBuildInputs = [
      pkgs.makeWrapper
    ] ++ lib.optional (!config.skipTypeCheck) pkgs.mypy;
    buildInputs = [ testDriver ];
    testScript = config.testScriptString;
    preferLocalBuild = true;
    passthru = config.passthru // {
      inherit testDriver;
    };
    meta.mainProgram = "nixos-test-driver";
  }
  ''
    mkdir -p $out/bin

    ${lib.optionalString (!config.skipTypeCheck) ''
      cat ${../python-shim/test-script-prepend.py} > testScriptWithTypes
      echo ${lib.escapeShellArg declarations} >> testScriptWithTypes
      echo -n "$testScript" >> testScriptWithTypes
      echo "Running type check (enable/disable: config.skipTypeCheck)"
      mypy --no-implicit-optional --pretty --no-color-output testScriptWithTypes
    ''}

    echo -n "$testScript" > $out/test-script
    ln -s ${testDriver}/bin/nixos-test-driver $out/bin/nixos-test-driver

    ${testDriver}/bin/generate-driver-symbols
    ${lib.optionalString (!config.skipLint) ''
      PYFLAKES_BUILTINS="$(< driver-symbols),${builtinNames}" \
        ${pkgs.python3Packages.pyflakes}/bin/pyflakes $out/test-script
    ''}

    wrapProgram $out/bin/nixos-test-driver \
      ${lib.concatMapStringsSep " " (flag: "--add-flags ${lib.escapeShellArg flag}") driverFlags}
  ''
