# power.py of nixpkgs' driver-coverage suite: shutdown and crash stop the machine, a second
# call is a no-op, and the next wait starts it again.
with subtest("power off"):
    for method in [machine.shutdown, machine.crash]:
        with subtest(method.__name__):
            machine.wait_for_unit("multi-user.target")
            method()
            machine.wait_for_shutdown()
            assert not machine.booted
            method()
            join_all()
