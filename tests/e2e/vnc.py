# Each machine's VNC server, spoken to over RFB 3.8 as a viewer would: on the smoke tier,
# for a machine of the configuration, one made by create_machine, and a machine started
# again. Run by crates/cli/tests/e2e/vnc.rs with --vnc and E2E_OTHER_START_SCRIPT set; it
# writes each frame beside a screenshot taken right after, for the test to compare.
import os
import socket
import struct
from pathlib import Path

out = Path(os.environ["E2E_OUT"])


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, f"the VNC server closed the connection ({len(data)} of {n} bytes)"
        data += chunk
    return bytes(data)


def rfb_frame(path: Path) -> tuple[int, int, bytes, bytes]:
    """Connect as a viewer; return width, height, desktop name and one whole frame, as
    4 bytes per pixel (blue, green, red, unused)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(60)
        sock.connect(str(path))
        version = recv_exactly(sock, 12)
        assert version.startswith(b"RFB 003."), version
        sock.sendall(b"RFB 003.008\n")
        count = recv_exactly(sock, 1)[0]
        assert count > 0, "the server refused the connection"
        types = recv_exactly(sock, count)
        assert 1 in types, f"no 'None' security type: {types!r} (a password was asked for)"
        sock.sendall(b"\x01")
        assert struct.unpack(">I", recv_exactly(sock, 4))[0] == 0, "security handshake failed"
        sock.sendall(b"\x01")  # ClientInit: shared, as a second viewer would
        width, height = struct.unpack(">HH", recv_exactly(sock, 4))
        recv_exactly(sock, 16)  # the server's pixel format, replaced below
        name = recv_exactly(sock, struct.unpack(">I", recv_exactly(sock, 4))[0])
        # SetPixelFormat: 32 bits, depth 24, little endian, true colour, 8 bits per channel.
        sock.sendall(struct.pack(">B3xBBBBHHHBBB3x", 0, 32, 24, 0, 1, 255, 255, 255, 16, 8, 0))
        sock.sendall(struct.pack(">BxHi", 2, 1, 0))  # SetEncodings: raw only
        sock.sendall(struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))  # the whole screen
        frame = bytearray(width * height * 4)
        covered = 0
        while covered < width * height:
            kind = recv_exactly(sock, 1)[0]
            if kind == 2:  # Bell
                continue
            if kind == 3:  # ServerCutText
                recv_exactly(sock, 3)
                recv_exactly(sock, struct.unpack(">I", recv_exactly(sock, 4))[0])
                continue
            assert kind == 0, f"unexpected server message {kind}"
            recv_exactly(sock, 1)
            (rects,) = struct.unpack(">H", recv_exactly(sock, 2))
            for _ in range(rects):
                x, y, w, h, encoding = struct.unpack(">HHHHi", recv_exactly(sock, 12))
                assert encoding == 0, f"asked for raw pixels, got encoding {encoding}"
                data = recv_exactly(sock, w * h * 4)
                for row in range(h):
                    start = ((y + row) * width + x) * 4
                    frame[start : start + w * 4] = data[row * w * 4 : (row + 1) * w * 4]
                covered += w * h
        return width, height, name, bytes(frame)


def capture(machine, label: str) -> None:
    # Something on the screen (the VGA console), so that a blank frame cannot pass.
    machine.succeed(f"echo {label}: vnc-check > /dev/tty0")
    socket_path = machine.vnc_socket
    assert socket_path is not None, f"{machine.name} has no VNC server"
    assert socket_path.parent == Path(machine.state_dir), socket_path
    # The only VNC server QEMU has is that socket: no TCP port.
    vnc = machine.qmp_client.send("query-vnc")["return"]
    assert vnc["enabled"] and vnc["family"] == "unix", vnc
    width, height, name, frame = rfb_frame(socket_path)
    (out / f"{label}-vnc-{width}x{height}.bgrx").write_bytes(frame)
    machine.screenshot(f"{label}-screen")
    machine.log(f"VNC frame {width}x{height} from desktop {name.decode()!r}")


start_all()
machine.wait_until_succeeds("true")
capture(machine, "machine")

# A machine made later gets its own server; the two never share one.
other = create_machine(os.environ["E2E_OTHER_START_SCRIPT"], name="other")
other.start()
other.wait_until_succeeds("true")
assert other.vnc_socket != machine.vnc_socket
capture(other, "other")
other.shutdown()

# QEMU started again makes its socket again.
machine.crash()
machine.start()
machine.wait_until_succeeds("true")
capture(machine, "machine-again")
