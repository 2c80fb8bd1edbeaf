# A test script with a type error: wait_for_unit takes the unit's name, not a number.
start_all()
machine.wait_for_unit(22)
