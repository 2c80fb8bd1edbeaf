# A test that fails on purpose, to show what a failure looks like: the driver prints the
# failing line of the script and the reason, and exits with status 1.
start_all()
machine.wait_until_succeeds("true")

with subtest("the guest has a file it does not have"):
    machine.succeed("cat /etc/this-file-does-not-exist")
