# A stand-in for `import nixpkgs { system; overlays; }` (see ../stubs.nix): the stub packages
# with the overlays applied, and a `testers.runNixOSTest` that evaluates the test through the
# test-framework stand-in (../framework.nix) on these packages and also keeps the test module
# it was given (`testModule`), for the checks that read it.
{
  system,
  overlays ? [ ],
}:
let
  stubs = import ../stubs.nix;
  framework = import ../framework.nix { inherit (stubs) lib; };
  base = stubs.pkgs // {
    inherit system;
    testers.runNixOSTest = module: framework.runNixOSTest final module // { testModule = module; };
  };
  final = builtins.foldl' (pkgs: overlay: pkgs // overlay final pkgs) base overlays // {
    callPackage = fn: args: stubs.pkgs.callPackage fn args;
  };
in
final
