# nixpkgs' nixos-test-driver.unit-active-state: wait_for_unit_active_state follows a service
# through inactive, activating, active, reloading, active, deactivating and failed.
#
# Upstream's service is Type=notify-reload and uses systemd-notify's --reloading and --stop,
# which came with systemd 253; Debian bookworm has 252. Here it is Type=notify with an
# ExecReload that sends SIGHUP (what notify-reload does itself), and the same notifications as
# plain assignments: RELOADING=1 then READY=1, STOPPING=1. It is written at run time, before
# the first wait (a unit systemd does not know is "inactive" too).
machine.wait_for_unit("multi-user.target")
machine.succeed(
    "cat > /usr/local/bin/test-service <<'EOF'\n"
    "#!/bin/bash\n"
    "set -x\n"
    "notify() { systemd-notify --pid=$$ \"$@\"; }\n"
    "startup() { sleep 5; notify --ready --status='Started up'; }\n"
    "process() { notify --status=Processing; sleep 5; }\n"
    "reload() { notify RELOADING=1 STATUS=Reloading; sleep 5; notify --ready --status=Reloaded; sleep 5; }\n"
    "stop() { notify STOPPING=1 STATUS=Stopping; sleep 5; exit 1; }\n"
    "trap reload HUP\n"
    "trap stop TERM\n"
    "startup\n"
    "while true; do process; done\n"
    "EOF",
    "chmod +x /usr/local/bin/test-service",
    "printf '%s\\n' '[Service]' Type=notify NotifyAccess=all ExecStart=/usr/local/bin/test-service"
    " 'ExecReload=/bin/kill -HUP $MAINPID' > /etc/systemd/system/test.service",
    "systemctl daemon-reload",
)

machine.wait_for_unit_active_state("test.service", "inactive", timeout=10)
machine.succeed("systemctl start --no-block test.service")
machine.wait_for_unit_active_state("test.service", "activating", timeout=10)
machine.wait_for_unit_active_state("test.service", "active", timeout=10)
machine.succeed("systemctl reload --no-block test.service")
machine.wait_for_unit_active_state("test.service", "reloading", timeout=10)
machine.wait_for_unit_active_state("test.service", "active")
machine.succeed("systemctl stop --no-block test.service", timeout=10)
machine.wait_for_unit_active_state("test.service", "deactivating", timeout=10)
machine.wait_for_unit_active_state("test.service", "failed", timeout=10)
