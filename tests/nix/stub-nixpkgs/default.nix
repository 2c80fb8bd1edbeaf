# A stand-in for `import nixpkgs { system; overlays; }` (see ../stubs.nix): the stub packages
# with the overlays applied, and a `testers.runNixOSTest` that records the test module.
{
  system,
  overlays ? [ ],
}:
let
  stubs = import ../stubs.nix;
  base = stubs.pkgs // {
    inherit system;
    testers.runNixOSTest = module: { testModule = module; };
  };
  final = builtins.foldl' (pkgs: overlay: pkgs // overlay final pkgs) base overlays // {
    callPackage = fn: args: stubs.pkgs.callPackage fn args;
  };
in
final
