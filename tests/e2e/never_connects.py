# The guest boots a shell on the serial port instead of the backdoor: connect must give up.
machine.succeed("true")
