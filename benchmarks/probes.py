"""Is a server serving, has it let go of its ports: checks from the outside, with deadlines."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Mapping

__all__ = ["HOST", "wait_free", "wait_serving"]

HOST = "127.0.0.1"


def _pause(seconds: float) -> None:
    threading.Event().wait(seconds)


def wait_serving(ports: Mapping[str, int], timeout: float = 10.0) -> None:
    """Return once every port accepts connections and REST answers ``GET /health``.

    A TCP connect alone only proves ``listen()`` was called (the kernel
    completes handshakes itself); the health check proves the loop serves.
    """
    deadline = time.monotonic() + timeout
    for name, port in ports.items():
        while True:
            try:
                with socket.create_connection((HOST, port), timeout=1.0) as sock:
                    if name != "rest" or _health_ok(sock):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} port {port} not serving after {timeout} s")
            _pause(0.0002)


def _health_ok(sock: socket.socket) -> bool:
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    head = b""
    while b"\r\n" not in head:
        data = sock.recv(4096)
        if not data:
            return False
        head += data
    return head.split(None, 2)[1:2] == [b"200"]


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def wait_free(ports: Mapping[str, int], timeout: float = 10.0) -> None:
    """Return once every port can be bound again (the server really let go)."""
    deadline = time.monotonic() + timeout
    for name, port in ports.items():
        while not _port_is_free(port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} port {port} still bound {timeout} s after stop")
            _pause(0.0002)
