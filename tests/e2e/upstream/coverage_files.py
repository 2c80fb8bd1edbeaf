# files.py of nixpkgs' driver-coverage suite: files in and out of the guest, and
# wait_for_file. (Upstream makes the failing wait instant by patching time.sleep; ntd's waits
# do not sleep in Python, so it takes its 10 s.)
from tempfile import TemporaryDirectory

out = driver.out_dir

with subtest("copying files"):
    for method in [machine.copy_from_host, machine.copy_from_host_via_shell]:
        with subtest(f"{method.__name__} and copy_from_vm of a file"), TemporaryDirectory() as tmp:
            method(exampleFile, "/tmp/file")
            machine.copy_from_vm("/tmp/file", tmp)
            host_files_same(exampleFile, Path(tmp, "file"))
            machine.succeed("rm /tmp/file")

    with subtest("copy_from_host and copy_from_vm of a directory"), TemporaryDirectory() as tmp:
        machine.copy_from_host(exampleDir, "/tmp/dir")
        machine.copy_from_vm("/tmp/dir", tmp)
        host_files_same(exampleFile, Path(tmp, "dir", "exampleFile"))
        machine.succeed("rm -r /tmp/dir")

    with subtest("copy_from_vm into the output directory"):
        machine.succeed("touch /tmp/file")
        machine.copy_from_vm("/tmp/file")
        assert (out / "file").exists()
        (out / "file").unlink()
        machine.succeed("rm /tmp/file")

    with subtest("wait_for_file after a job that holds stdout"):
        machine.succeed("(sleep 5 && echo hello > /tmp/file) &")
        machine.wait_for_file("/tmp/file")
        machine.succeed("rm /tmp/file")

with subtest("wait_for_file"):
    with subtest("a file that appears"):
        machine.succeed("(sleep 5 && echo hello > /tmp/file) >&2 &")
        machine.wait_for_file("/tmp/file")
        machine.succeed("rm /tmp/file")

    with subtest("a file that never does"), must_raise("action timed out"):
        machine.wait_for_file("/will/never/exist", timeout=10)
