"""The running instance's control socket: `reshaper stats` reads counters from it.

A unix stream socket; a client connects and reads one JSON document. Its
default path is per network namespace, so `reshaper stats` run beside the
bridge finds it without options.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import threading

RUN_DIR = os.environ.get("RESHAPER_RUN_DIR", "/run/reshaper")


def netns_id() -> int:
    """The inode of this process's network namespace: names per-namespace files."""
    return os.stat("/proc/self/ns/net").st_ino


def default_control_path() -> str:
    return os.path.join(RUN_DIR, f"reshaper-{netns_id()}.sock")


class ControlServer:
    """Serves snapshot() as JSON to every client, from a thread of its own."""

    def __init__(self, path: str, snapshot):
        self.path = path
        self._snapshot = snapshot
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
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
                    conn.sendall(json.dumps(self._snapshot()).encode() + b"\n")
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
