//! The virtio-serial ports: `/dev/virtio-ports/NAME` in the guest, with the semantics ntd's
//! command channel relies on (one open at a time, flow control, `-ef`), relayed to the
//! chardev sockets the driver listens on. The fake mounts them only as root.

mod common;

use std::time::{Duration, Instant};

use common::{Machine, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const OUT: &str = "/dev/virtio-ports/org.nixos.ntd.out";
const CTL: &str = "/dev/virtio-ports/org.nixos.ntd.ctl";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Skip a test that needs root (the ports are a root-only FUSE mount).
macro_rules! needs_root {
    () => {
        if !is_root() {
            eprintln!("skipped: the fake serves virtio ports only as root");
            return;
        }
    };
}

async fn booted(options: &[&str], no_reboot: bool) -> (Machine, UnixStream, UnixStream) {
    let mut machine = Machine::start_with_ports(options, no_reboot).await;
    machine.wait_marker().await;
    let (out, ctl) = machine.ports.take().expect("the ports' connections");
    (machine, out, ctl)
}

/// Read exactly `n` bytes.
async fn read_exactly(socket: &mut UnixStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(WAIT, socket.read_exact(&mut buf)).await.expect("the bytes arrive in time").expect("read");
    buf
}

/// Read until the bytes end with `end`; returns them all.
async fn read_until(socket: &mut UnixStream, end: &[u8]) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while !all.ends_with(end) {
        let n = tokio::time::timeout(WAIT, socket.read(&mut buf)).await.expect("data in time").expect("read");
        assert!(n > 0, "the socket closed");
        all.extend_from_slice(&buf[..n]);
    }
    all
}

/// Whether nothing arrives for a moment.
async fn silent(socket: &mut UnixStream) -> bool {
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_millis(200), socket.read(&mut byte)).await.is_err()
}

/// The host's mount table never shows the guest's mounts.
fn host_has_port_mount() -> bool {
    std::fs::read_to_string("/proc/self/mounts").expect("host mounts").contains("ntd-fake-ports")
}

#[tokio::test]
async fn guest_writes_reach_the_socket_and_the_mount_stays_in_the_guest() {
    needs_root!();
    let (mut machine, mut out, mut ctl) = booted(&[], true).await;
    assert_eq!(machine.run(&format!("printf hello >{OUT}")).await, (0, Vec::new()));
    assert_eq!(read_exactly(&mut out, 5).await, b"hello");
    assert_eq!(machine.run(&format!("echo to-ctl >{CTL}")).await, (0, Vec::new()));
    assert_eq!(read_exactly(&mut ctl, 7).await, b"to-ctl\n");
    assert!(silent(&mut out).await, "nothing else on the out port");

    let (status, listing) = machine.run("ls /dev/virtio-ports; grep -c ' /dev/virtio-ports fuse ' /proc/mounts").await;
    assert_eq!((status, String::from_utf8_lossy(&listing).as_ref()), (0, "org.nixos.ntd.ctl\norg.nixos.ntd.out\n1\n"));
    assert!(!host_has_port_mount(), "the mount is the guest's only");

    let mut qmp = machine.qmp().await;
    qmp.negotiate().await;
    qmp.send(r#"{"execute": "quit"}"#).await;
    assert_eq!(machine.wait_exit().await.code(), Some(0));
    assert!(!host_has_port_mount(), "nothing left mounted");
}

#[tokio::test]
async fn the_rest_of_dev_still_works() {
    needs_root!();
    let (mut machine, _out, _ctl) = booted(&[], true).await;
    let script = "echo gone >/dev/null; head -c 3 /dev/zero | wc -c; head -c 4 /dev/urandom | wc -c; \
                  head -c 2 /dev/random | wc -c; echo x 2>/dev/null >/dev/full || echo full; \
                  [ -c /dev/tty ] && echo tty; echo shm >/dev/shm/f && cat /dev/shm/f; \
                  readlink /dev/fd /dev/stdin /dev/stdout /dev/stderr; echo via-fd >/dev/fd/1; \
                  [ -d /dev/pts ] && [ -L /dev/ptmx ] && echo pts";
    let (status, output) = machine.run(script).await;
    assert_eq!(
        (status, String::from_utf8_lossy(&output).as_ref()),
        (0, "3\n4\n2\nfull\ntty\nshm\n/proc/self/fd\n/proc/self/fd/0\n/proc/self/fd/1\n/proc/self/fd/2\nvia-fd\npts\n")
    );
    // The host's /sys/class/virtio-ports (a fake run in a VM) is hidden: nothing to find there.
    assert_eq!(machine.run("ls /sys/class/virtio-ports 2>/dev/null | wc -l").await, (0, b"0\n".to_vec()));
}

#[tokio::test]
async fn a_port_opens_once_at_a_time_and_names_one_inode() {
    needs_root!();
    let (mut machine, mut out, _ctl) = booted(&[], true).await;
    let script = format!(
        "sleep 1.5 >{OUT} & sleep 0.3
         [ /proc/$!/fd/1 -ef {OUT} ] && echo same
         [ /proc/$!/fd/1 -ef {CTL} ] || echo other
         {{ printf x >{OUT}; }} 2>&1 || echo busy=$?
         wait
         printf y >{OUT} && echo free"
    );
    let (status, output) = machine.run(&script).await;
    let output = String::from_utf8_lossy(&output);
    assert_eq!(status, 0, "{output}");
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines[..2], ["same", "other"], "{output}");
    assert!(lines[2].ends_with(&format!("{OUT}: Device or resource busy")), "{output}");
    assert_eq!(lines[3..], ["busy=1", "free"], "{output}");
    assert_eq!(read_exactly(&mut out, 1).await, b"y", "the refused write wrote nothing");

    // Descriptors inherited or duplicated share the one open, and the port is free once the last
    // of them closes (the end-of-command marker ntd writes relies on it).
    let script = format!(
        "exec 3>{OUT}; (printf a >&3); exec 4>&3; exec 3>&-; printf b >&4
         {{ printf x >{OUT}; }} 2>/dev/null || echo busy
         exec 4>&-; printf c >{OUT} && echo free"
    );
    assert_eq!(machine.run(&script).await, (0, b"busy\nfree\n".to_vec()));
    assert_eq!(read_exactly(&mut out, 3).await, b"abc");
}

#[tokio::test]
async fn a_writer_waits_for_the_driver_and_loses_nothing() {
    needs_root!();
    let (mut machine, mut out, _ctl) = booted(&[], true).await;
    let size = 8 * 1024 * 1024;
    let script = format!(
        "head -c {size} /dev/urandom >/tmp/shared/data
         (cat /tmp/shared/data >{OUT}; touch /tmp/shared/done) >/dev/null 2>&1 &"
    );
    assert_eq!(machine.run(&script).await, (0, Vec::new()));
    // The driver reads nothing for two seconds: the writer waits.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!machine.shared.join("done").exists(), "8 MiB cannot fit in a socket: the writer must wait");
    let received = read_exactly(&mut out, size).await;
    let sent = std::fs::read(machine.shared.join("data")).expect("the data the guest wrote");
    assert_eq!(received.len(), sent.len());
    assert!(received == sent, "the bytes arrive exactly, in order");
    common::wait_until(|| machine.shared.join("done").exists()).await;
    assert!(silent(&mut out).await, "and nothing more");
}

#[tokio::test]
async fn a_waiting_writer_survives_a_handled_signal_and_dies_of_a_fatal_one() {
    needs_root!();
    let (mut machine, mut out, _ctl) = booted(&[], true).await;
    // bash's SIGCHLD handler runs while its `printf` waits for the driver: the write goes on,
    // as a real port's write is restarted.
    let reader = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let bytes = read_exactly(&mut out, 1_000_000).await;
        (out, bytes)
    });
    let script = format!("x=$(head -c 1000000 /dev/zero | tr '\\0' a); sleep 0.2 & printf %s \"$x\" >{OUT}; echo $?");
    assert_eq!(machine.run(&script).await, (0, b"0\n".to_vec()));
    let (mut out, bytes) = reader.await.expect("reader");
    assert!(bytes.iter().all(|&b| b == b'a'));

    // A writer killed while it waits dies at once (the driver's kill helper relies on it), and
    // the port is free again.
    let script = format!(
        "head -c 50000000 /dev/zero >{OUT} & w=$!; sleep 0.5
         kill -KILL $w; wait $w || echo status=$?"
    );
    let started = Instant::now();
    let (status, output) = machine.run(&script).await;
    assert_eq!((status, String::from_utf8_lossy(&output).as_ref()), (0, "status=137\n"));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // What the killed writer had handed over, nothing more.
    let drain = tokio::spawn(async move { read_until(&mut out, b"x").await });
    assert_eq!(machine.run(&format!("printf x >{OUT}")).await, (0, Vec::new()));
    let drained = drain.await.expect("reader");
    assert!(drained[..drained.len() - 1].iter().all(|&b| b == 0));
}

#[tokio::test]
async fn the_driver_writes_and_the_guest_reads() {
    needs_root!();
    let (mut machine, _out, mut ctl) = booted(&[], true).await;
    // Bytes the driver sends wait until the guest reads them.
    ctl.write_all(b"first line\n").await.expect("write");
    assert_eq!(
        machine.run(&format!("read -r line <{CTL}; echo \"got $line\"")).await,
        (0, b"got first line\n".to_vec())
    );

    // A helper with the port open read-write, as ntd's kill helper: it reads requests and
    // answers on the same port.
    let helper = format!(
        "sh -c 'echo ready; while read -r a b; do printf \"%s-%s\\n\" \"$b\" \"$a\"; done' <>{CTL} >&0 2>/dev/null &"
    );
    assert_eq!(machine.run(&helper).await, (0, Vec::new()));
    assert_eq!(read_exactly(&mut ctl, 6).await, b"ready\n");
    for (request, answer) in [("k 1\n", "1-k\n"), ("x yz\n", "yz-x\n")] {
        ctl.write_all(request.as_bytes()).await.expect("write");
        assert_eq!(read_exactly(&mut ctl, answer.len()).await, answer.as_bytes());
    }
    // The helper holds the port: it is busy for anyone else.
    let (status, _) = machine.run(&format!("printf z >{CTL}")).await;
    assert_eq!(status, 1);
}

#[tokio::test]
async fn port_stall_holds_the_writer_back_without_losing_bytes() {
    needs_root!();
    let (mut machine, mut out, _ctl) =
        booted(&["--fake-port-stall", "org.nixos.ntd.out:1000:1500", "--fake-port-stall", "other:1:1"], true).await;
    let reader = tokio::spawn(async move {
        let mut chunks = Vec::new();
        let mut total = 0;
        let mut buf = vec![0u8; 8192];
        while total < 5000 {
            let n = tokio::time::timeout(WAIT, out.read(&mut buf)).await.expect("data").expect("read");
            assert!(n > 0, "the socket closed");
            chunks.push((Instant::now(), buf[..n].to_vec()));
            total += n;
        }
        chunks
    });
    let started = Instant::now();
    assert_eq!(machine.run(&format!("head -c 5000 /dev/zero | tr '\\0' b >{OUT}")).await, (0, Vec::new()));
    assert!(started.elapsed() >= Duration::from_millis(1500), "the writer waited: {:?}", started.elapsed());
    let chunks = reader.await.expect("reader");
    let bytes: Vec<u8> = chunks.iter().flat_map(|(_, c)| c.clone()).collect();
    assert_eq!(bytes, vec![b'b'; 5000]);
    // The first 1000 bytes came at once, the rest only after the pause.
    let mut seen = 0;
    let first = chunks[0].0;
    for (at, chunk) in &chunks {
        let late = at.duration_since(first) >= Duration::from_millis(1400);
        assert_eq!(seen >= 1000, late, "{seen} bytes after {:?}", at.duration_since(first));
        seen += chunk.len();
    }
    // Once only.
    let started = Instant::now();
    assert_eq!(machine.run(&format!("printf again >{OUT}")).await, (0, Vec::new()));
    assert!(started.elapsed() < Duration::from_millis(1500));
}

#[tokio::test]
async fn no_ports_fault_shows_the_guest_no_ports() {
    // The chardevs are connected all the same (Machine accepted them), as QEMU connects them.
    let (mut machine, mut out, _ctl) = booted(&["--fake-no-ports"], true).await;
    let script = format!(
        "[ -e {OUT} ] || echo no-out; [ -e {CTL} ] || echo no-ctl
         for d in /sys/class/virtio-ports/*; do [ -e \"$d/name\" ] && echo \"found $d\"; done; echo done"
    );
    assert_eq!(machine.run(&script).await, (0, b"no-out\nno-ctl\ndone\n".to_vec()));
    assert!(silent(&mut out).await);
    assert!(!machine.console().contains("virtio_console: no virtio ports"), "{}", machine.console());
}

#[tokio::test]
async fn a_reboot_with_a_waiting_writer_serves_the_ports_again() {
    needs_root!();
    let (mut machine, mut out, _ctl) = booted(&[], false).await;
    let script = format!("(head -c 50000000 /dev/zero >{OUT}) >/dev/null 2>&1 & sleep 0.3; echo started");
    assert_eq!(machine.run(&script).await, (0, b"started\n".to_vec()));
    machine.send("reboot", "0000000000000000").await;
    let started = Instant::now();
    machine.wait_marker().await;
    assert!(started.elapsed() < Duration::from_secs(5), "the guest went down at once: {:?}", started.elapsed());
    // The new guest's port: open (the old open died with the old guest), and written in order
    // after what the old writer had handed over (which fills the socket: read it meanwhile).
    let drain = tokio::spawn(async move { read_until(&mut out, b"NEW").await });
    assert_eq!(machine.run(&format!("printf NEW >{OUT}")).await, (0, Vec::new()));
    let drained = drain.await.expect("reader");
    assert!(drained[..drained.len() - 3].iter().all(|&b| b == 0));
    assert!(!host_has_port_mount());
}

#[tokio::test]
async fn a_port_chardev_that_is_not_there_fails_as_qemu_fails() {
    let state = tempfile::tempdir().expect("temp dir");
    let dir = state.path().display().to_string();
    let _shell = std::os::unix::net::UnixListener::bind(state.path().join("shell")).expect("listen on shell");
    let output = tokio::process::Command::new(common::fake_binary())
        .args(["-qmp", &format!("unix:{dir}/qmp,server=on,wait=off")])
        .args(["-chardev", &format!("socket,id=shell,path={dir}/shell"), "-device", "virtconsole,chardev=shell"])
        .args(["-chardev", &format!("socket,id=ntd-out,path={dir}/absent")])
        .args(["-device", "virtserialport,chardev=ntd-out,name=org.nixos.ntd.out"])
        .env("TMPDIR", state.path())
        .output()
        .await
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "qemu-system-x86_64: -chardev socket,id=ntd-out: Failed to connect to '{dir}/absent': No such file or directory\n"
        )
    );
}
