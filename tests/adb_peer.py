"""A device-side adb peer for tests: it stands in for a phone's adbd (no phone is attached here).

It speaks the device side of the adb transport over TCP, so the REAL adb server reaches it with
``adb connect 127.0.0.1:PORT`` and every adbutils call goes through that server, as with a phone:

* the transport: 24-byte headers, CNXN (no AUTH asked), OPEN/OKAY/WRTE/CLSE, one WRTE in flight per
  stream, never more than the agreed maxdata;
* ``shell,v2[,raw]:CMD`` (exit code, separate stderr, close-stdin), plain ``shell:`` and ``exec:``;
* ``sync:`` v1: STAT, LIST, SEND, RECV, QUIT (records never split across WRTEs).

Commands run with ``/bin/sh -c`` in a sandbox directory that stands in for ``/data/local/tmp``, with a
``getprop`` script on the PATH. File transfers outside the sandbox are refused. Facts this relies on
are in ``../shared/NOTES.md`` ("Peers that can run here").

Run: ``python tests/adb_peer.py --sandbox DIR [--port N]``; it prints ``listening PORT`` when ready.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import stat
import struct
import subprocess
import threading
from pathlib import Path

A_CNXN, A_OPEN, A_OKAY, A_WRTE, A_CLSE, A_AUTH = (
    0x4E584E43,
    0x4E45504F,
    0x59414B4F,
    0x45545257,
    0x45534C43,
    0x48545541,
)
VERSION = 0x01000001
OUR_MAXDATA = 256 * 1024
PROPS = {
    "ro.product.model": "ChamlabPeer",
    "ro.product.manufacturer": "chamlab-tests",
    "ro.product.name": "chamlab_peer",
    "ro.board.platform": "peer-soc",
    "ro.soc.model": "PEER1",
    "ro.build.version.release": "14",
    "ro.build.version.sdk": "34",
    "ro.product.cpu.abi": "x86_64",
}


def write_getprop(bin_dir: Path) -> None:
    cases = "".join(f"  {k}) echo {v!s} ;;\n" for k, v in PROPS.items())
    listing = "".join(f"echo '[{k}]: [{v}]'\n" for k, v in PROPS.items())
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "getprop"
    script.write_text(
        "#!/bin/sh\n# the peer's stand-in for Android's getprop\n"
        f'if [ $# -eq 0 ]; then\n{listing}exit 0\nfi\ncase "$1" in\n{cases}  *) echo ;;\nesac\n'
    )
    script.chmod(0o755)


class Link:
    """One TCP connection from the adb server."""

    def __init__(self, sock: socket.socket, sandbox: Path, *, unauthorized: bool = False) -> None:
        self.unauthorized = unauthorized
        self.sock = sock
        self.sandbox = sandbox
        self.wlock = threading.Lock()
        self.streams: dict[int, Stream] = {}
        self.next_id = 1
        self.maxdata = OUR_MAXDATA

    def send(self, cmd: int, a0: int, a1: int, data: bytes = b"") -> None:
        header = struct.pack("<6I", cmd, a0, a1, len(data), 0, cmd ^ 0xFFFFFFFF)
        with self.wlock:
            self.sock.sendall(header + data)

    def recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def serve(self) -> None:
        try:
            while True:
                cmd, a0, a1, length, _, _ = struct.unpack("<6I", self.recv_exact(24))
                data = self.recv_exact(length) if length else b""
                self.dispatch(cmd, a0, a1, data)
        except (EOFError, OSError):
            pass
        finally:
            for st in list(self.streams.values()):
                st.closed_by_server()
            self.sock.close()

    def dispatch(self, cmd: int, a0: int, a1: int, data: bytes) -> None:
        if cmd == A_CNXN and self.unauthorized:
            self.send(A_AUTH, 1, 0, os.urandom(20))  # ask for a signature and never accept one
        elif cmd == A_CNXN:
            for st in list(self.streams.values()):
                st.closed_by_server()
            self.streams.clear()
            self.maxdata = min(a1 or OUR_MAXDATA, OUR_MAXDATA)
            banner = "device::" + ";".join(f"{k}={PROPS[k]}" for k in ("ro.product.name", "ro.product.model"))
            banner += ";ro.product.device=peer;features=shell_v2,cmd"
            self.send(A_CNXN, VERSION, OUR_MAXDATA, banner.encode())  # no trailing NUL
        elif cmd == A_OPEN:
            service = data.rstrip(b"\0").decode("utf-8", "replace")
            local = self.next_id
            self.next_id += 1
            stream = Stream.make(self, local, a0, service)
            if stream is None:
                self.send(A_CLSE, 0, a0)
                return
            self.streams[local] = stream
            self.send(A_OKAY, local, a0)
            stream.start()
        elif cmd == A_OKAY:
            waiting = self.streams.get(a1)
            if waiting is not None:
                waiting.okay.set()
        elif cmd == A_WRTE:
            target = self.streams.get(a1)
            if target is None:
                self.send(A_CLSE, 0, a0)
                return
            target.feed(data)
            self.send(A_OKAY, a1, a0)
        elif cmd == A_CLSE:
            gone = self.streams.pop(a1, None)
            if gone is not None:
                gone.closed_by_server()


class Stream:
    def __init__(self, link: Link, local: int, remote: int) -> None:
        self.link, self.local, self.remote = link, local, remote
        self.okay = threading.Event()
        self.wlock = threading.Lock()
        self.closed = threading.Event()
        self.cond = threading.Condition()
        self.inbox = bytearray()

    @staticmethod
    def make(link: Link, local: int, remote: int, service: str) -> Stream | None:
        name, _, cmd = service.partition(":")
        kind, *opts = name.split(",")
        if kind == "shell" and "v2" in opts:
            return ShellV2(link, local, remote, cmd)
        if kind in ("shell", "exec"):
            return RawShell(link, local, remote, cmd, merge=kind == "shell")
        if kind == "sync":
            return Sync(link, local, remote)
        return None

    def start(self) -> None:
        threading.Thread(target=self.run, daemon=True).start()

    def run(self) -> None:
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        """Send ``data`` in WRTEs of at most maxdata, one in flight (wait for each OKAY)."""
        with self.wlock:
            for i in range(0, len(data), self.link.maxdata):
                if self.closed.is_set():
                    return
                self.okay.clear()
                self.link.send(A_WRTE, self.local, self.remote, data[i : i + self.link.maxdata])
                while not self.okay.wait(0.2):
                    if self.closed.is_set():
                        return

    def close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self.link.streams.pop(self.local, None)
            with contextlib.suppress(OSError):
                self.link.send(A_CLSE, self.local, self.remote)

    def feed(self, data: bytes) -> None:
        with self.cond:
            self.inbox += data
            self.cond.notify_all()

    def closed_by_server(self) -> None:
        self.closed.set()
        with self.cond:
            self.cond.notify_all()

    def read(self, n: int) -> bytes:
        with self.cond:
            while len(self.inbox) < n:
                if self.closed.is_set():
                    raise EOFError
                self.cond.wait(0.5)
            data = bytes(self.inbox[:n])
            del self.inbox[:n]
            return data

    def popen(self, cmd: str, stderr: int) -> subprocess.Popen[bytes]:
        sandbox = self.link.sandbox
        env = {
            "PATH": f"{sandbox / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(sandbox),
            "TMPDIR": str(sandbox),
            "LANG": "C.UTF-8",
        }
        return subprocess.Popen(
            ["/bin/sh", "-c", cmd] if cmd else ["/bin/sh"],
            cwd=sandbox,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
        )


class ShellV2(Stream):
    def __init__(self, link: Link, local: int, remote: int, cmd: str) -> None:
        super().__init__(link, local, remote)
        self.cmd = cmd
        self.proc: subprocess.Popen[bytes] | None = None
        self.frames = b""

    def frame(self, fid: int, data: bytes) -> None:
        self.write(struct.pack("<BI", fid, len(data)) + data)

    def pump(self, pipe: object, fid: int) -> None:
        while chunk := pipe.read1(65536):  # type: ignore[attr-defined]
            self.frame(fid, chunk)

    def run(self) -> None:
        self.proc = self.popen(self.cmd, subprocess.PIPE)
        pumps = [
            threading.Thread(target=self.pump, args=(self.proc.stdout, 1), daemon=True),
            threading.Thread(target=self.pump, args=(self.proc.stderr, 2), daemon=True),
        ]
        for t in pumps:
            t.start()
        self.stdin_loop()
        for t in pumps:
            t.join()
        rc = self.proc.wait()
        self.frame(3, bytes([rc & 0xFF]))
        self.close()

    def stdin_loop(self) -> None:
        """Pass stdin frames to the process until close-stdin, the stream's end or the process's."""
        assert self.proc is not None and self.proc.stdin is not None
        stdin = self.proc.stdin

        def feeder() -> None:
            try:
                while True:
                    fid, n = struct.unpack("<BI", self.read(5))
                    data = self.read(n) if n else b""
                    if fid == 0:
                        stdin.write(data)
                        stdin.flush()
                    elif fid == 4:
                        break
            except (EOFError, OSError, BrokenPipeError):
                pass
            with contextlib.suppress(OSError):
                stdin.close()  # end of input: the command sees EOF on its standard input

        threading.Thread(target=feeder, daemon=True).start()


class RawShell(Stream):
    def __init__(self, link: Link, local: int, remote: int, cmd: str, *, merge: bool) -> None:
        super().__init__(link, local, remote)
        self.cmd, self.merge = cmd, merge

    def run(self) -> None:
        proc = self.popen(self.cmd, subprocess.STDOUT if self.merge else subprocess.DEVNULL)
        assert proc.stdout is not None and proc.stdin is not None
        stdin = proc.stdin

        def feeder() -> None:
            try:
                while True:
                    data = self.read(1)
                    stdin.write(data)
                    stdin.flush()
            except (EOFError, OSError):
                pass
            with contextlib.suppress(OSError):
                stdin.close()

        threading.Thread(target=feeder, daemon=True).start()
        while chunk := proc.stdout.read1(65536):  # type: ignore[attr-defined]
            self.write(chunk)
        proc.wait()
        self.close()


class Sync(Stream):
    def u32(self) -> int:
        return int(struct.unpack("<I", self.read(4))[0])

    def inside(self, path: str) -> Path | None:
        p = Path(os.path.realpath(path))
        box = Path(os.path.realpath(self.link.sandbox))
        return p if p == box or box in p.parents else None

    def fail(self, msg: str) -> None:
        raw = msg.encode()
        self.write(b"FAIL" + struct.pack("<I", len(raw)) + raw)

    def run(self) -> None:
        try:
            while True:
                cmd = self.read(4)
                n = self.u32()
                if cmd == b"QUIT":
                    break
                arg = self.read(n).decode("utf-8", "replace")
                if cmd == b"STAT":
                    self.do_stat(arg)
                elif cmd == b"LIST":
                    self.do_list(arg)
                elif cmd == b"SEND":
                    self.do_send(arg)
                elif cmd == b"RECV":
                    self.do_recv(arg)
                else:
                    self.fail(f"unknown sync request {cmd!r}")
                    break
        except EOFError:
            pass
        self.close()

    def do_stat(self, path: str) -> None:
        p = self.inside(path)
        try:
            if p is None:
                raise OSError
            st = os.stat(p)
            self.write(b"STAT" + struct.pack("<III", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime)))
        except OSError:
            self.write(b"STAT" + bytes(12))  # a missing file STATs as all zeros

    def do_list(self, path: str) -> None:
        p = self.inside(path)
        if p is not None and p.is_dir():
            for entry in sorted(os.listdir(p)):
                try:
                    st = os.lstat(p / entry)
                except OSError:
                    continue
                name = entry.encode()
                self.write(
                    b"DENT"
                    + struct.pack("<IIII", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime), len(name))
                    + name
                )
        self.write(b"DONE" + bytes(16))

    def do_send(self, spec: str) -> None:
        path, _, mode_s = spec.rpartition(",")
        p = self.inside(path) if path else None
        tmp = None
        fh = None
        if p is not None:
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
                tmp = p.with_name(p.name + ".peer-partial")
                fh = open(tmp, "wb")  # noqa: SIM115
            except OSError:
                fh = None
        while True:
            rid = self.read(4)
            n = self.u32()
            if rid == b"DATA":
                chunk = self.read(n)
                if fh is not None:
                    fh.write(chunk)
            elif rid == b"DONE":
                break
            else:
                self.fail(f"unexpected {rid!r} in SEND")
                return
        if fh is None or tmp is None or p is None:
            self.fail(f"cannot write {path}: outside the sandbox or not writable")
            return
        fh.close()
        with contextlib.suppress(ValueError):
            os.chmod(tmp, stat.S_IMODE(int(mode_s or "420")))
        os.replace(tmp, p)
        self.write(b"OKAY" + bytes(4))

    def do_recv(self, path: str) -> None:
        p = self.inside(path)
        try:
            if p is None:
                raise OSError("outside the sandbox")
            fh = open(p, "rb")  # noqa: SIM115
        except OSError as exc:
            self.fail(f"cannot read {path}: {exc}")
            return
        with fh:
            while chunk := fh.read(65536):
                self.write(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
        self.write(b"DONE" + bytes(4))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sandbox", required=True, type=Path)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--unauthorized", action="store_true", help="never accept the host's key")
    args = ap.parse_args()
    sandbox = args.sandbox.resolve()
    sandbox.mkdir(parents=True, exist_ok=True)
    write_getprop(sandbox / "bin")
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", args.port))
    srv.listen(4)
    print(f"listening {srv.getsockname()[1]}", flush=True)
    while True:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(
            target=Link(conn, sandbox, unauthorized=args.unauthorized).serve, daemon=True
        ).start()


if __name__ == "__main__":
    main()
