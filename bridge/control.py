"""The running instance's control socket: `reshaper stats` reads counters from it, `reshaper trace` frames.

A unix stream socket; a client connects, sends one request line (`stats`, or
`trace {"rule": ...}`: bridge/trace.py) and reads the answer: for stats one
JSON document. A client that sends nothing gets the stats after
REQUEST_WAIT_S, as before requests existed. Its default path names the
network namespace and the instance's interfaces, so `reshaper stats` run
beside the bridge finds it without options, and two instances on other ports
of one namespace never share one.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import socket
import sys
import threading

RUN_DIR = os.environ.get("RESHAPER_RUN_DIR", "/run/reshaper")
REQUEST_WAIT_S = 0.5   # how long the server waits for a client's request line


def netns_id() -> int:
    """The inode of this process's network namespace: names per-namespace files."""
    return os.stat("/proc/self/ns/net").st_ino


def default_control_path(interfaces: list[str]) -> str:
    """One socket per instance: instances on other ports of the same namespace each have one."""
    return os.path.join(RUN_DIR, f"reshaper-{netns_id()}-{'-'.join(sorted(interfaces))}.sock")


def instances_here() -> list[str]:
    """The default control sockets of this network namespace (`reshaper stats` without --control)."""
    return sorted(glob.glob(os.path.join(glob.escape(RUN_DIR), f"reshaper-{netns_id()}-*.sock")))


class ControlInUse(OSError):
    pass


def _answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError:
            return False
    return True


class ControlServer:
    """Serves snapshot() as JSON to every client, from a thread of its own; a trace request
    goes to trace(conn, request, stopping) on a thread of its own (bridge/trace.py)."""

    def __init__(self, path: str, snapshot, trace=None):
        self.path = path
        self._snapshot = snapshot
        self._trace = trace
        self._stopping = threading.Event()
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        if _answers(path):
            raise ControlInUse(f"another reshaper answers on {path}: give this one its own --control")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # left by a killed run: nothing listens on it any more
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(path)
        os.chmod(path, 0o660)
        self._sock.listen(8)
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            verb, request = read_request(conn)
            if verb == "trace" and self._trace is not None:
                threading.Thread(target=self._tracing, args=(conn, request), name="trace", daemon=True).start()
                continue
            with conn:
                if verb != "stats":
                    answer = json.dumps({"error": f"unknown request {verb!r}"})
                else:
                    try:
                        answer = json.dumps(self._snapshot())
                    except Exception as exc:  # noqa: BLE001 - one failed snapshot must not end the thread
                        error = f"snapshot failed: {type(exc).__name__}: {exc}"
                        print(f"reshaper: control: {error}", file=sys.stderr, flush=True)
                        answer = json.dumps({"error": error})
                try:
                    conn.sendall(answer.encode() + b"\n")
                except OSError:
                    pass

    def _tracing(self, conn: socket.socket, request: dict) -> None:
        with conn:
            try:
                self._trace(conn, request, self._stopping)
            except Exception as exc:  # noqa: BLE001 - a failed trace must not end the appliance
                print(f"reshaper: control: trace failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

    def close(self) -> None:
        self._stopping.set()
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def read_request(conn: socket.socket) -> tuple[str, dict]:
    """A client's request line: (verb, its JSON argument); ("stats", {}) when it sends none in time."""
    conn.settimeout(REQUEST_WAIT_S)
    data = b""
    try:
        while b"\n" not in data and len(data) < 4096 and (chunk := conn.recv(4096)):
            data += chunk
    except (TimeoutError, OSError):
        pass
    conn.settimeout(None)
    verb, _, arg = data.partition(b"\n")[0].decode(errors="replace").strip().partition(" ")
    try:
        request = json.loads(arg) if arg else {}
    except ValueError:
        return "bad", {}
    return verb or "stats", request if isinstance(request, dict) else {}


def read_stats(path: str, timeout: float = 2.0) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(b"stats\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return json.loads(b"".join(chunks))
