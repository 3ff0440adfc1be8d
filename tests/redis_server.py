"""A real ``redis-server`` for the backend tests: one per test, on a free port,
without persistence (unless asked for), that a test can kill, restart empty,
pause (SIGSTOP) and resume.

The ``redis_server`` fixture (tests/conftest.py) needs the ``redis-server``
executable (the Debian package ``scripts/test.sh`` installs) and the
``redis`` package (the ``[redis]`` extra): without them the tests skip, or
fail under ``STREAM_HUB_REQUIRE_ALL=1`` as in CI.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from .processes import free_port

START_TIMEOUT = 10.0


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1.

    Args:
        executable: the path of ``redis-server``.
        workdir: its directory (logs, and nothing else without persistence).
        password: ``requirepass``, when given.
        tls: ``(cert, key, ca)`` files: it then listens with TLS only.
    """

    def __init__(
        self,
        executable: str,
        workdir: Path,
        password: str | None = None,
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        self.executable = executable
        self.workdir = workdir
        self.password = password
        self.tls = tls
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls is not None:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls[2]}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start (again, empty, on the same port) and return once it answers PING."""
        args = [
            self.executable,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--logfile",
            str(self.workdir / f"redis-{self.starts}.log"),
        ]
        if self.tls is not None:
            cert, key, ca = self.tls
            args += ["--port", "0", "--tls-port", str(self.port)]
            args += ["--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca)]
            args += ["--tls-auth-clients", "no"]
        else:
            args += ["--port", str(self.port)]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.starts += 1
        self._wait_ready()
        return self

    def client(self) -> Any:
        """A redis-py client (sync) of this server."""
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5)

    def _wait_ready(self) -> None:
        import redis

        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                log = self.workdir / f"redis-{self.starts - 1}.log"
                text = log.read_text() if log.exists() else ""
                raise AssertionError(f"redis-server exited ({self.proc.returncode}): {err}\n{text[-2000:]}")
            try:
                with self.client() as client:
                    if client.ping():
                        return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"redis-server did not answer on port {self.port} in {START_TIMEOUT} s")
            try:
                self.proc.wait(timeout=0.02)  # a bounded wait between polls
            except subprocess.TimeoutExpired:
                pass

    def kill(self) -> None:
        """SIGKILL: everything in it is lost (no persistence)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()


def make_tls_files(directory: Path, openssl: str) -> tuple[Path, Path, Path]:
    """A self-signed CA and a server certificate for 127.0.0.1 (``openssl``)."""
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", str(ca_key), "-out", str(ca_crt))  # fmt: skip
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        str(key),
        "-out",
        str(csr),
    )
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key), "-CAcreateserial",
        "-days", "2", "-extfile", str(ext), "-out", str(crt))  # fmt: skip
    return crt, key, ca_crt
