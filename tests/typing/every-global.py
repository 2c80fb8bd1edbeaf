# A test script touching every global a script gets, written as scripts in nixpkgs write them:
# it must type-check and lint clean (scripts/check-test-script --vlan 1 every-global.py server client).
import datetime
import uuid

from test_driver.efi import EfiGuid, EfiVariable

start_all()
server.wait_for_unit("multi-user.target", timeout=60)
client.wait_for_open_port(80, timeout=datetime.timedelta(seconds=30))
log.info(f"VLAN {vlan1.nr} switch at {vlan1.socket_dir}")


@polling_condition(seconds_interval=5.0, description="the server is up")
def server_is_up() -> None:
    server.succeed("true")


with server_is_up, subtest("the client reaches the server"):
    client.wait_until_succeeds("curl http://server/", timeout=30)
    status, output = client.execute("echo hi", check_return=False)
    t.assertEqual(status, 0)
    t.assertIn("hi", output)


def server_answers(last_try: bool) -> bool:
    return server.execute("true")[0] == 0


retry(server_answers, timeout=10)

with log.nested("looking around"):
    log.info(f"{len(machines)} machines, {len(vlans)} VLANs, out dir {driver.out_dir}")
    for m in machines:
        m.screenshot(os.path.join(str(driver.out_dir), m.name))

client.create_efi_vars()
client.write_efi_vars(
    [EfiVariable(vendor_uuid=uuid.uuid4(), name="Demo", data=b"\x2a", flags=EfiVariable.Flags.NON_VOLATILE)]
)
for variable in client.read_efi_vars():
    if variable.vendorUUID == EfiGuid.gEfiGlobalVariableGuid and not variable.isDeleted:
        variable.print()
client.dump_efi_vars()
log.info(f"UEFI variables in {client.efi_vars_path}")

extra = create_machine("run-extra-vm", name="extra", keep_vm_state=True)
extra.start(allow_reboot=True)
extra.crash()
server.shutdown()
client.send_key("ctrl-alt-delete")
client.send_chars("root\n", delay=None)
client.wait_for_text("login:")
join_all()
serial_stdout_off()
serial_stdout_on()
debug.breakpoint()
