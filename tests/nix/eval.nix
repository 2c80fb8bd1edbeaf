# Evaluates ntd's Nix files against the stand-ins of stubs.nix and checks what they build:
# the package's override arguments, the overlay, the flake's outputs, the per-test driver, and
# tests run through the test-framework stand-in (framework.nix) with ntd's overlay or its
# `testModule`.
#   nix-instantiate --eval --strict -E 'import ./tests/nix/eval.nix { }'
# prints "ok: N checks", or fails naming every check that did not hold (or with the error that
# stopped one). With `{ nixpkgsLib = "/path/to/nixpkgs/lib"; }` the framework stand-in runs on
# that real nixpkgs `lib` (its evalModules and types) instead of module-system.nix, except for
# the flake's and the templates' tests, which stub-nixpkgs runs on module-system.nix.
{
  nixpkgsLib ? null,
}:
let
  stubs = import ./stubs.nix;
  inherit (stubs) lib pkgs;
  repo = ../..;
  hasInfix = infix: s: builtins.match ".*${escapeRegex infix}.*" s != null;
  escapeRegex = builtins.replaceStrings
    [ "\\" "[" "]" "(" ")" "{" "}" "." "*" "+" "?" "^" "$" "|" ]
    [ "\\\\" "\\[" "\\]" "\\(" "\\)" "\\{" "\\}" "\\." "\\*" "\\+" "\\?" "\\^" "\\$" "\\|" ];

  # --- the package --------------------------------------------------------------------------
  ntd = pkgs.callPackage (repo + "/driver-nix/package.nix") { };
  withOCR = ntd.override { enableOCR = true; };
  withPackages = ntd.override { extraPythonPackages = p: [ p.requests ]; };
  withQemu = ntd.override { qemu_pkg = pkgs.qemu; };
  withNspawn = ntd.override { enableNspawn = true; };
  # What nixpkgs' driver.nix does with the package of `hostPkgs.nixos-test-driver`.
  asTheFrameworkDoes = ntd.override {
    enableOCR = true;
    extraPythonPackages = p: [ ];
    qemu_pkg = pkgs.qemu;
    enableNspawn = false;
  };
  # The tools the wrappers put on PATH, in order.
  toolNames = drv: map (tool: tool.name) drv.passthru.runtimeTools;
  onPath = drv: hasInfix "--prefix PATH : ${lib.makeBinPath drv.passthru.runtimeTools} " drv.postInstall;
  cargoVersion = (builtins.fromTOML (builtins.readFile (repo + "/Cargo.toml"))).workspace.package.version;

  # --- the overlay --------------------------------------------------------------------------
  overlaid = import ./stub-nixpkgs {
    system = "x86_64-linux";
    overlays = [ (import (repo + "/driver-nix/overlay.nix")) ];
  };

  # --- the flake ----------------------------------------------------------------------------
  flake = (import (repo + "/flake.nix")).outputs {
    self = flake;
    nixpkgs = {
      outPath = ./stub-nixpkgs;
      inherit lib;
    };
  };
  minimalTest = flake.checks.x86_64-linux.minimal.testModule;
  minimalNode = import (builtins.head minimalTest.nodes.machine.imports) {
    config.networking.hostName = "machine";
    inherit pkgs;
  };

  # --- the per-test driver ------------------------------------------------------------------
  ntdLib = import (repo + "/driver-nix/lib.nix");
  testConfig = {
    name = "two-nodes";
    nodes = {
      server = { };
      my-client = { };
    };
    containers = { };
    driverConfiguration.vlans = [ 1 ];
    driverConfigurationFile = "/stub/driverConfiguration.json";
    logLevel = "info";
    extraDriverArgs = [ "--junit-xml" "it's.xml" ];
    skipTypeCheck = false;
    skipLint = false;
    enableOCR = true;
    extraPythonPackages = p: [ ];
    qemu.package = pkgs.qemu;
    passthru = { };
    testScriptString = "start_all()";
    hostPkgs = pkgs;
  };
  driver = ntdLib.mkDriver { inherit pkgs ntd; config = testConfig; };
  # Node names the driver pythonizes beyond `-`: as `pythonize_name` does.
  oddDriver = ntdLib.mkDriver {
    inherit pkgs ntd;
    config = testConfig // {
      nodes = {
        "1x" = { };
        "a.b" = { };
      };
    };
  };
  singleDriver = ntdLib.mkDriver {
    inherit pkgs ntd;
    config = testConfig // {
      nodes.vm = { };
      driverConfiguration.vlans = [ ];
      skipTypeCheck = true;
      skipLint = true;
    };
  };

  # --- tests through the test-framework stand-in --------------------------------------------
  framework = import ./framework.nix {
    lib = if nixpkgsLib == null then lib else import (/. + nixpkgsLib);
  };
  twoNodes = {
    name = "two-nodes";
    nodes = {
      server = { };
      my-client = { };
    };
    extraDriverArgs = [
      "--junit-xml"
      "it's.xml"
    ];
    enableOCR = true;
    testScript = "start_all()";
  };
  # Plain nixpkgs: the framework's own driver, built from the Python driver package.
  plainTest = framework.runNixOSTest pkgs twoNodes;
  # ntd's testModule, imported by the test.
  moduleTest = framework.runNixOSTest pkgs (twoNodes // { imports = [ ntdLib.testModule ]; });
  # ntd's overlay on the packages the test is built with.
  overlayTest = framework.runNixOSTest overlaid twoNodes;
  linked = driver: (builtins.head driver.buildInputs).pname;
  flagsOf =
    args: lib.concatMapStringsSep " " (flag: "--add-flags ${lib.escapeShellArg flag}") args;
  ntdFlags = flagsOf [
    "--config"
    "/stub/driverConfiguration-two-nodes.json"
    "--log-level"
    "info"
    "--junit-xml"
    "it's.xml"
  ];

  # --- the templates of `nixos-test-driver new` (test.py is written beside them) -----------
  templateTest = name: import (repo + "/crates/cli/templates/${name}.nix") { pkgs = overlaid; };
  template = name: (templateTest name).testModule;
  hello = import (repo + "/crates/cli/templates/hello.nix") {
    config.networking.hostName = "server";
    inherit pkgs;
  };

  checks = {
    "templates: runNixOSTest tests named by `new`" = builtins.all (t: (template t).name == "@name@") [
      "minimal"
      "multi-machine"
      "graphical"
      "otel"
    ];
    "templates: the hello service where the script talks to it" =
      (template "minimal").nodes.machine.imports == [ (repo + "/crates/cli/templates/hello.nix") ]
      && (template "multi-machine").nodes.server.imports == [ (repo + "/crates/cli/templates/hello.nix") ]
      && hasInfix "hello from server" hello.systemd.services.hello.script
      && hello.networking.firewall.allowedTCPPorts == [ 8080 ];
    "templates: two machines on VLAN 1; OCR for the graphical one" =
      (template "multi-machine").nodes.server.virtualisation.vlans == [ 1 ]
      && ((template "multi-machine").nodes.client { inherit pkgs; }).virtualisation.vlans == [ 1 ]
      && (template "graphical").enableOCR;
    "package: pname and version from Cargo.toml" = ntd.pname == "ntd" && ntd.version == cargoVersion;
    "package: built by maturin from python-shim" =
      ntd.builtBy == "buildPythonApplication" && ntd.buildAndTestSubdir == "python-shim"
      && builtins.elem (repo + "/python-shim") ntd.src.files;
    "package: crates from Cargo.lock" = ntd.cargoDeps.cargoLock == repo + "/Cargo.lock";
    "package: the binaries installed" =
      hasInfix "$out/bin/nixos-test-driver" ntd.postInstall
      && hasInfix "$out/bin/generate-driver-symbols" ntd.postInstall
      && hasInfix "$out/bin/ntd-ssh-proxy" ntd.postInstall;
    "package: on PATH as upstream's: QEMU, vde2, socat, coreutils, util-linux, netpbm, vhost-device-vsock; no OCR tools by default" =
      toolNames ntd == [
        "qemu_test"
        "coreutils"
        "vde2"
        "socat"
        "util-linux"
        "netpbm"
        "vhost-device-vsock"
      ]
      && onPath ntd;
    "override enableRuntimeDeps = false: only QEMU and coreutils, no REPL packages (upstream's switch)" =
      toolNames (ntd.override { enableRuntimeDeps = false; }) == [
        "qemu_test"
        "coreutils"
      ]
      && !(builtins.elem pkgs.python3Packages.ptpython (ntd.override { enableRuntimeDeps = false; }).dependencies);
    "package: mainProgram" = ntd.meta.mainProgram == "nixos-test-driver";
    "package: the web view finds nixpkgs' noVNC; not without the runtime dependencies" =
      hasInfix "--set-default NTD_NOVNC /stub/novnc/share/webapps/novnc" ntd.postInstall
      && !(hasInfix "NTD_NOVNC" (ntd.override { enableRuntimeDeps = false; }).postInstall);
    "override enableOCR: ImageMagick (imagemagick_light) and tesseract (English) on PATH too, as upstream's" =
      toolNames withOCR == [
        "qemu_test"
        "coreutils"
        "vde2"
        "socat"
        "util-linux"
        "netpbm"
        "vhost-device-vsock"
        "imagemagick"
        "tesseract-overridden"
      ]
      && (builtins.elemAt withOCR.passthru.runtimeTools 8).overrideArgs.enableLanguages == [ "eng" ]
      && onPath withOCR
      && withOCR.passthru.enableOCR;
    "override extraPythonPackages: importable and propagated" =
      builtins.elem pkgs.python3Packages.requests withPackages.dependencies
      && hasInfix "/stub/requests/lib" withPackages.postInstall;
    "override qemu_pkg: that QEMU on PATH" =
      hasInfix "/stub/qemu/bin" withQemu.postInstall && !(hasInfix "qemu_test" withQemu.postInstall);
    "override enableNspawn: systemd on PATH for containers, no warning" =
      builtins.elem "systemd" (toolNames withNspawn)
      && !(builtins.elem "systemd" (toolNames ntd))
      && onPath withNspawn
      && !(withNspawn ? warning);
    "override: all four arguments as the framework passes them" = asTheFrameworkDoes.pname == "ntd";
    "overlay: nixos-test-driver is ntd" =
      overlaid.nixos-test-driver.pname == "ntd" && overlaid.ntd.pname == "ntd";
    "overlay: the framework can override it" =
      (overlaid.nixos-test-driver.override { enableOCR = true; }).passthru.enableOCR;
    "flake: overlay, lib, packages, checks, devShells" =
      builtins.isFunction flake.overlays.default
      && flake.lib ? mkDriver && flake.lib ? testModule && flake.lib ? runNixOSTest
      && flake.packages.x86_64-linux.default.pname == "ntd"
      && flake.packages.aarch64-linux.ntd.pname == "ntd"
      && flake.devShells.x86_64-linux.default.builtBy == "mkShell";
    "flake: unit-test check runs cargo test" =
      flake.checks.x86_64-linux.unit.doCheck && hasInfix "cargo test" flake.checks.x86_64-linux.unit.checkPhase;
    "flake: minimal NixOS test uses examples/minimal" =
      minimalTest.name == "ntd-minimal"
      && minimalTest.testScript == builtins.readFile (repo + "/examples/minimal/test.py")
      && hasInfix "hello from machine" minimalNode.systemd.services.hello.script;
    "mkDriver: name and main program" =
      driver.name == "nixos-test-driver-two-nodes" && driver.meta.mainProgram == "nixos-test-driver";
    "mkDriver: node names pythonized as the driver does (1x is _x, a.b is a_b)" =
      hasInfix "_x: QemuMachine;" oddDriver.script && hasInfix "a_b: QemuMachine;" oddDriver.script;
    "mkDriver: typed declarations per node and VLAN" =
      hasInfix "my_client: QemuMachine;" driver.script && hasInfix "server: QemuMachine;" driver.script
      && hasInfix "vlan1: VLan;" driver.script && !(hasInfix "machine: QemuMachine;" driver.script);
    "mkDriver: mypy as upstream runs it" =
      builtins.elem pkgs.mypy driver.nativeBuildInputs
      && hasInfix "mypy --no-implicit-optional --pretty --no-color-output testScriptWithTypes" driver.script
      && hasInfix "test-script-prepend.py" driver.script;
    "mkDriver: pyflakes with the driver's symbols and the machines" =
      hasInfix "PYFLAKES_BUILTINS=\"$(< driver-symbols),my_client,server,vlan1\"" driver.script;
    "mkDriver: wrapper flags, quoted" =
      hasInfix "--add-flags '--config' --add-flags '/stub/driverConfiguration.json' --add-flags '--log-level' --add-flags 'info' --add-flags '--junit-xml' --add-flags 'it'\\''s.xml'" driver.script;
    "mkDriver: the driver package overridden as the framework does" =
      driver.passthru.testDriver.passthru.enableOCR && driver.passthru.testDriver.passthru.qemu_pkg == pkgs.qemu;
    "mkDriver: one machine is also `machine`; skipTypeCheck and skipLint skip" =
      !(hasInfix "mypy" singleDriver.script) && !(hasInfix "pyflakes" singleDriver.script)
      && !(builtins.elem pkgs.mypy singleDriver.nativeBuildInputs);
    "framework: without ntd, .driver and .driverInteractive are nixpkgs' own driver's" =
      linked plainTest.driver == "nixos-test-driver"
      && linked plainTest.driverInteractive == "nixos-test-driver"
      && hasInfix "--add-flags '--interactive'" plainTest.driverInteractive.script
      && !(hasInfix "--interactive" plainTest.driver.script);
    "testModule: the test, .driver and .driverInteractive evaluate (interactive re-imports the test)" =
      moduleTest.name == "vm-test-run-two-nodes"
      && moduleTest.driver.name == "nixos-test-driver-two-nodes"
      && moduleTest.driverInteractive.name == "nixos-test-driver-two-nodes";
    "testModule: .driver is ntd's, from the test's configuration" =
      linked moduleTest.driver == "ntd"
      && moduleTest.driver.testDriver.passthru.enableOCR
      && moduleTest.driver.testDriver.passthru.qemu_pkg.name == "qemu_test"
      && hasInfix ntdFlags moduleTest.driver.script
      && !(hasInfix "--interactive" moduleTest.driver.script);
    "testModule: .driverInteractive is ntd's, from the interactive configuration (--interactive, hostPkgs.qemu)" =
      linked moduleTest.driverInteractive == "ntd"
      && moduleTest.driverInteractive.testDriver.passthru.qemu_pkg.name == "qemu"
      && hasInfix "${ntdFlags} --add-flags '--interactive'" moduleTest.driverInteractive.script;
    "overlay: .driver and .driverInteractive of a runNixOSTest test are built from ntd" =
      linked overlayTest.driver == "ntd"
      && linked overlayTest.driverInteractive == "ntd"
      && hasInfix "--add-flags '--interactive'" overlayTest.driverInteractive.script;
    "flake and templates: their tests evaluate through the framework, drivers from ntd" =
      builtins.all (test: linked test.driver == "ntd" && linked test.driverInteractive == "ntd") (
        [ flake.checks.x86_64-linux.minimal ]
        ++ map templateTest [
          "minimal"
          "multi-machine"
          "graphical"
          "otel"
        ]
      );
  };
  failed = builtins.filter (name: !checks.${name}) (builtins.attrNames checks);
in
if failed == [ ] then
  "ok: ${toString (builtins.length (builtins.attrNames checks))} checks"
else
  throw "Nix checks failed:\n  ${builtins.concatStringsSep "\n  " failed}"
