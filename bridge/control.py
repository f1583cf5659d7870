"""The running instance's control socket: `reshaper stats` reads counters from it.

A unix stream socket; a client connects and reads one JSON document. Its
default path names the network namespace and the instance's interfaces, so
`reshaper stats` run beside the bridge finds it without options, and two
instances on other ports of one namespace never share one.
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
    """Serves snapshot() as JSON to every client, from a thread of its own."""

    def __init__(self, path: str, snapshot):
        self.path = path
        self._snapshot = snapshot
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
            with conn:
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

    def close(self) -> None:
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def read_stats(path: str, timeout: float = 2.0) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return json.loads(b"".join(chunks))
