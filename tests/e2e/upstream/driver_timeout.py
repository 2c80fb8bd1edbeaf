# nixpkgs' nixos-test-driver.timeout (registered as driver-timeout), run with a 5 s global
# timeout by crates/cli/tests/e2e/upstream.rs: the test must be stopped by it, saying so, and
# the driver must exit 143 as upstream's, which sends itself SIGTERM.
start_all()
machine.wait_for_unit("multi-user.target")
machine.succeed("sleep 6")
