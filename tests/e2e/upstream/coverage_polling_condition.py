# polling_condition.py of nixpkgs' driver-coverage suite: a condition that is false or raises
# fails the block it guards with upstream's message; conditions that hold, and their
# descriptions (given, or the docstring).
with subtest("polling_condition"):
    with subtest("conditions that fail"):

        @polling_condition
        def never_true():
            return False

        @polling_condition
        def raises():
            machine.succeed("false")

        for condition in [never_true, raises]:
            with must_raise(f"Polling condition failed: {condition.condition.description}"):
                with condition:
                    machine.succeed("true")

    with subtest("conditions that hold"):

        @polling_condition
        def succeeds():
            machine.succeed("true")

        @polling_condition
        def always_true():
            return True

        description = "This is a description"

        @polling_condition(description=description)
        def described():
            pass

        @polling_condition
        def documented():
            "This is a description"

        assert described.condition.description == description, described.condition.description
        assert documented.condition.description == description, documented.condition.description

        for condition in [succeeds, always_true, described, documented]:
            with condition:
                machine.succeed("true")
