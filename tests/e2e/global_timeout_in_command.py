# The global timeout fires while the script is blocked in a guest command.
start_all()
machine.succeed("sleep 600")
