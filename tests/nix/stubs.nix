# Stand-ins for nixpkgs' `lib` and for the packages ntd's Nix files use, so that the pure parts
# of those files evaluate with plain Nix (no nixpkgs, no store): functions of `lib` written
# with builtins, the module system of module-system.nix, and packages as attribute sets that
# record how they were built (with `type = "derivation"`, so that the module system takes them
# as packages). The checks in eval.nix inspect those records.
let
  baseLib = rec {
    optional = cond: x: if cond then [ x ] else [ ];
    optionals = cond: xs: if cond then xs else [ ];
    optionalString = cond: s: if cond then s else "";
    concatStringsSep = builtins.concatStringsSep;
    concatMapStringsSep = sep: f: xs: builtins.concatStringsSep sep (map f xs);
    makeBinPath = drvs: concatMapStringsSep ":" (d: "${d.outPath}/bin") drvs;
    escapeShellArg = s: "'${builtins.replaceStrings [ "'" ] [ "'\\''" ] (toString s)}'";
    replaceStrings = builtins.replaceStrings;
    attrNames = builtins.attrNames;
    length = builtins.length;
    head = builtins.head;
    importTOML = path: builtins.fromTOML (builtins.readFile path);
    genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
    # Warnings are recorded instead of printed, so a check can see them.
    warnIf = cond: message: value: if cond then value // { warning = message; } else value;
    fileset = {
      unions = paths: paths;
      toSource = { root, fileset }: { inherit root; files = fileset; };
    };
    licenses.mit = "MIT";
    platforms.linux = [ "x86_64-linux" "aarch64-linux" ];
    # nixpkgs' makeOverridable: the result remembers its arguments, `.override` changes some.
    makeOverridable =
      f: args:
      let
        result = f args;
      in
      result // { override = newArgs: makeOverridable f (args // newArgs); };
  };
  lib = import ./module-system.nix { lib = baseLib; };

  package = name: {
    inherit name;
    type = "derivation";
    outPath = "/stub/${name}";
    override = args: package "${name}-overridden" // { overrideArgs = args; };
  };

  pkgs = rec {
    inherit lib;
    callPackage =
      fn: args:
      let
        f = if builtins.isFunction fn then fn else import fn;
        wanted = builtins.functionArgs f;
        auto = builtins.intersectAttrs wanted pkgs;
      in
      lib.makeOverridable f (auto // args);

    python3Packages = {
      python = {
        interpreter = "/stub/python3/bin/python3";
        sitePackages = "lib/python3.13/site-packages";
      };
      ptpython = package "ptpython";
      ipython = package "ipython";
      pyflakes = package "pyflakes";
      requests = package "requests";
      makePythonPath = drvs: lib.concatMapStringsSep ":" (d: "${d.outPath}/lib/python3.13/site-packages") drvs;
      pytest = package "pytest";
      mypy = package "mypy";
      buildPythonApplication =
        attrs:
        attrs
        // {
          type = "derivation";
          outPath = "/stub/ntd";
          builtBy = "buildPythonApplication";
          overridePythonAttrs =
            f: python3Packages.buildPythonApplication (attrs // (if builtins.isFunction f then f attrs else f));
        };
    };
    python3 = {
      withPackages = f: package "python3-with-${toString (builtins.length (f python3Packages))}-packages";
    };
    mkShell = attrs: attrs // { builtBy = "mkShell"; };
    cargo = package "cargo";
    rustc = package "rustc";
    clippy = package "clippy";
    rustfmt = package "rustfmt";
    cargo-nextest = package "cargo-nextest";
    maturin = package "maturin";
    tmux = package "tmux";
    netcat-openbsd = package "netcat-openbsd";
    rustPlatform = {
      importCargoLock = { lockFile }: { cargoLock = lockFile; };
      cargoSetupHook = package "cargoSetupHook";
      maturinBuildHook = package "maturinBuildHook";
    };
    # As stdenv's, the result has the attributes of `passthru` too.
    runCommand =
      name: env: script:
      env
      // {
        inherit name script;
        type = "derivation";
        outPath = "/stub/${name}";
      }
      // env.passthru or { };
    makeWrapper = package "makeWrapper";
    mypy = package "mypy";
    coreutils = package "coreutils";
    socat = package "socat";
    util-linux = package "util-linux";
    vde2 = package "vde2";
    vhost-device-vsock = package "vhost-device-vsock";
    systemd = package "systemd";
    tesseract = package "tesseract";
    qemu_test = package "qemu_test";
    qemu = package "qemu";
    netpbm = package "netpbm";
    novnc = package "novnc";
    imagemagick_light = package "imagemagick";
    # nixpkgs' Python driver (nixos/lib/test-driver), as the framework overrides it.
    nixos-test-driver = lib.makeOverridable (
      {
        enableOCR ? false,
        extraPythonPackages ? (_: [ ]),
        qemu_pkg ? pkgs.qemu_test,
        enableNspawn ? false,
      }:
      package "nixos-test-driver"
      // {
        pname = "nixos-test-driver";
        passthru = { inherit enableOCR qemu_pkg enableNspawn; };
      }
    ) { };
  };
in
{
  inherit lib pkgs package;
}
