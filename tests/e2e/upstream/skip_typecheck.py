# The script of nixpkgs' nixos-test-driver.skip-typecheck (nixosTests.simple-vm; the test
# itself checks the Nix wiring of skipTypeCheck, see tests/nix/eval.nix).
start_all()
machine.wait_for_unit("multi-user.target")
machine.shutdown()
