# nixpkgs' nixos-test-driver.node-name: machines `ok`, `one_two` and `a-b`. Each is a Python
# variable (`a-b` as `a_b`) reaching its guest, and each guest's hostname is the one NixOS
# derives from the node name (systemd drops the `_` of `one_two`).
start_all()

with subtest("the machines are Python variables and their backdoors answer"):
    ok.succeed("true")
    one_two.succeed("true")
    a_b.succeed("true")

with subtest("the hostname follows the node name"):
    ok.succeed("hostname | tee /dev/stderr | grep -x ok")
    one_two.succeed("hostname | tee /dev/stderr | grep -x onetwo")
    a_b.succeed("hostname | tee /dev/stderr | grep -x a-b")
