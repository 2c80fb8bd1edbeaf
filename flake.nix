{
  description = "ntd: a native (Rust) NixOS test driver, a drop-in for runNixOSTest's driver";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      # nixpkgs for each system, with ntd in place of the Python driver.
      forAllSystems =
        f:
        nixpkgs.lib.genAttrs systems (
          system:
          f (
            import nixpkgs {
              inherit system;
              overlays = [ self.overlays.default ];
            }
          )
        );
    in
    {
      overlays.default = import ./driver-nix/overlay.nix;

      # mkDriver, testModule, runNixOSTest: see driver-nix/lib.nix.
      lib = import ./driver-nix/lib.nix;

      packages = forAllSystems (pkgs: {
        default = pkgs.ntd;
        ntd = pkgs.ntd;
      });

      checks = forAllSystems (pkgs: {
        # The unit tests (the end-to-end tests need a test guest built as root: scripts/test).
        unit = pkgs.ntd.overridePythonAttrs {
          pname = "ntd-unit-tests";
          doCheck = true;
          nativeCheckInputs = [ pkgs.cargo ];
          checkPhase = ''
            PYO3_PYTHON=${pkgs.python3Packages.python.interpreter} \
              cargo test --release --offline --locked --workspace --lib --bins
          '';
        };
        # A NixOS test, run by ntd through the overlay.
        minimal = pkgs.testers.runNixOSTest (import ./driver-nix/tests/minimal.nix);
      });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ pkgs.ntd ];
          packages = with pkgs; [
            cargo
            rustc
            clippy
            rustfmt
            cargo-nextest
            maturin
            qemu
            vde2
            socat
            tesseract
            tmux
            (python3.withPackages (p: [
              p.pytest
              p.mypy
              p.pyflakes
              p.ptpython
            ]))
          ];
        };
      });
    };
}
