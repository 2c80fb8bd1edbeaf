# nixpkgs' nixos-test-driver.ssh-backdoor, on the Debian guest with mk-start-script
# --ssh-backdoor (sshd on vsock, as sshBackdoor.enable sets up a NixOS node); run by
# crates/cli/tests/e2e/upstream.rs with enable_ssh_backdoor in the driver configuration.
#
# Upstream's ssh configuration names systemd-ssh-proxy from nixpkgs' systemd; this host's
# systemd 252 has none, so the port names ntd's (NTD_SSH_PROXY), which does the same, and
# passes it `%n` (the host as typed) where upstream passes `%h`: ssh lower-cases `%h`, and the
# harness's TMPDIR has capitals (the Nix sandbox's /build has none).
import os
import subprocess
import tempfile

start_all()
machine.wait_for_unit("multi-user.target")

assert driver.vhost_vsock is not None
host_socket = driver.vhost_vsock.sockets["machine"].host

with tempfile.NamedTemporaryFile("w", suffix=".conf") as ssh_conf:
    ssh_conf.write(
        "Host vsock-mux/*\n"
        f"  ProxyCommand {os.environ['NTD_SSH_PROXY']} %n %p\n"
        "  ProxyUseFdpass yes\n"
        "  CheckHostIP no\n"
        "  StrictHostKeyChecking no\n"
        "  UserKnownHostsFile /dev/null\n"
    )
    ssh_conf.flush()
    with subtest("ssh from the host via systemd-ssh-proxy"):
        subprocess.run(
            [
                "ssh",
                "-vvv",
                f"vsock-mux/{host_socket}",
                "-o",
                "User=root",
                "-F",
                ssh_conf.name,
                "--",
                "true",
            ],
            check=True,
        )
