# A test script that lints badly: `clinet` is no global (pyflakes: undefined name).
start_all()
clinet.succeed("true")
