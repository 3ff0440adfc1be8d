"""Same user by default (contract v3; issue 22 M2): on a loopback bind, a
connection another user's process opened is refused on every port — REST,
SSE, WebSocket, publishing — and ``allow_other_users`` serves it. On a
wildcard bind, publishing without a token is for this user's processes.

A second user is real here: the tests need root (to create the throwaway
user ``sh_test_other`` and to run a client as that user with ``setpriv``),
and skip otherwise. The client is a stdlib-only Python snippet (the other
user may not read this interpreter's packages), run as that user and, for
comparison, as the server's own user.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from stream_hub import TrainingStreamServer

from ..conftest import need

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the check needs Linux")

OTHER_USER = "sh_test_other"

# A client of the three ports that needs only the standard library: prints,
# as JSON, each request's status and the start of its body.
CLIENT = r"""
import http.client, json, socket, sys

ports = json.loads(sys.argv[1])
HOST = "127.0.0.1"


def request(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        streaming = path.startswith("/events") and response.status == 200
        text = b"" if streaming else response.read(2000)
        return {"status": response.status, "body": text.decode("utf-8", "replace")}
    finally:
        conn.close()


def websocket(port):
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(
            (
                f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        if status != 101:
            while True:  # the refusal's body, up to the close
                chunk = sock.recv(4096)
                if not chunk:
                    break
                body += chunk
        return {"status": status, "body": body.decode("utf-8", "replace")}


event = json.dumps({"run": "forged", "metrics": {"loss": 1.0}})
print(json.dumps({
    "rest": request(ports["rest"], "GET", "/api/status"),
    "health": request(ports["rest"], "GET", "/health"),
    "sse": request(ports["sse"], "GET", "/events"),
    "ws": websocket(ports["ws"]),
    "publish": request(ports["rest"], "POST", "/api/publish", event, {"Content-Type": "application/json"}),
}))
"""


def _other_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(OTHER_USER)
    except KeyError:
        useradd = shutil.which("useradd")
        need(useradd is not None, "useradd")
        assert useradd is not None
        subprocess.run(
            [useradd, "--no-create-home", "--shell", "/usr/sbin/nologin", OTHER_USER],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return pwd.getpwnam(OTHER_USER)


def _as(user: pwd.struct_passwd | None, command: list[str]) -> list[str]:
    if user is None:
        return command
    setpriv = shutil.which("setpriv")
    assert setpriv is not None
    return [setpriv, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", *command]


@pytest.fixture(scope="module")
def other_user() -> pwd.struct_passwd:
    need(os.geteuid() == 0, "root (to run a client as a second user)")
    need(shutil.which("setpriv") is not None, "setpriv")
    return _other_user()


@pytest.fixture(scope="module")
def python_for_both(other_user: pwd.struct_passwd) -> str:
    """An interpreter both users can run (this one may live under /root)."""
    for candidate in (sys.executable, shutil.which("python3"), "/usr/bin/python3"):
        if candidate is None:
            continue
        tried = subprocess.run(
            _as(other_user, [candidate, "-I", "-c", "pass"]), capture_output=True, timeout=60, cwd="/"
        )
        if tried.returncode == 0:
            return candidate
    need(False, f"a Python interpreter {OTHER_USER} can run")
    raise AssertionError("unreachable")


Run = Callable[[TrainingStreamServer, "pwd.struct_passwd | None"], dict[str, dict[str, Any]]]


@pytest.fixture
def client(python_for_both: str) -> Run:
    """``client(server, user)``: the stdlib client against ``server``, as ``user``
    (None: as this process's user); each request's status and body."""

    def run(server: TrainingStreamServer, user: pwd.struct_passwd | None) -> dict[str, dict[str, Any]]:
        command = _as(user, [python_for_both, "-I", "-c", CLIENT, json.dumps(server.ports)])
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=60, cwd="/", env={"PATH": "/usr/bin:/bin"}
        )
        assert done.returncode == 0, done.stderr
        answers: dict[str, dict[str, Any]] = json.loads(done.stdout)
        return answers

    return run


def test_another_user_is_refused_on_every_port_by_default(
    make_server: Callable[..., TrainingStreamServer], client: Run, other_user: pwd.struct_passwd
) -> None:
    server = make_server()
    server.log({"loss": 0.5}, step=1, run="mine")
    before = server.hub.last_seq
    answers = client(server, other_user)
    assert {face: answer["status"] for face, answer in answers.items()} == {
        "rest": 403,
        "health": 403,
        "sse": 403,
        "ws": 403,
        "publish": 403,
    }, answers
    for face, answer in answers.items():
        assert "allow_other_users" in answer["body"], (face, answer["body"])
        assert "mine" not in answer["body"] and "loss" not in answer["body"], face
    assert f"uid {other_user.pw_uid}" in answers["rest"]["body"]
    assert server.hub.last_seq == before  # nothing forged
    # The same client, as the server's own user: served.
    answers = client(server, None)
    assert {face: answer["status"] for face, answer in answers.items()} == {
        "rest": 200,
        "health": 200,
        "sse": 200,
        "ws": 101,
        "publish": 200,
    }, answers
    assert server.hub.last_seq == before + 1


def test_allow_other_users_serves_them(
    make_server: Callable[..., TrainingStreamServer], client: Run, other_user: pwd.struct_passwd
) -> None:
    server = make_server(allow_other_users=True)
    answers = client(server, other_user)
    assert {face: answer["status"] for face, answer in answers.items()} == {
        "rest": 200,
        "health": 200,
        "sse": 200,
        "ws": 101,
        "publish": 200,
    }, answers


def test_allow_other_users_is_read_from_its_variable(
    monkeypatch: pytest.MonkeyPatch,
    make_server: Callable[..., TrainingStreamServer],
    client: Run,
    other_user: pwd.struct_passwd,
) -> None:
    monkeypatch.setenv("STREAM_HUB_ALLOW_OTHER_USERS", "1")
    server = make_server()
    assert server.config.allow_other_users is True
    assert client(server, other_user)["rest"]["status"] == 200


def test_on_a_wildcard_bind_another_user_publishes_only_with_the_token(
    make_server: Callable[..., TrainingStreamServer], client: Run, other_user: pwd.struct_passwd
) -> None:
    """Tokens guard a wildcard bind; publishing without one is for local
    processes — of this user: another user's is refused like another machine's."""
    server = make_server(host="0.0.0.0")
    before = server.hub.last_seq
    answers = client(server, other_user)
    assert answers["publish"]["status"] == 403, answers["publish"]
    assert (
        "publish token" in answers["publish"]["body"]
        and f"uid {other_user.pw_uid}" in answers["publish"]["body"]
    )
    assert answers["rest"]["status"] == 200  # reads: open to the network without read_token
    assert server.hub.last_seq == before
    assert client(server, None)["publish"]["status"] == 200


def test_the_peer_is_looked_up_once_per_connection(
    make_server: Callable[..., TrainingStreamServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not per request: a kept-alive connection's requests share its verdict."""
    from stream_hub.transports import access

    server = make_server()
    looked_up: list[Any] = []
    real = access.peer_uid

    def counting(local: Any, remote: Any) -> int | None:
        looked_up.append(remote)
        return real(local, remote)

    monkeypatch.setattr(access, "peer_uid", counting)
    with httpx.Client(base_url=server.urls["rest"], timeout=5) as http:
        for path in ("/health", "/api/status", "/api/runs"):
            assert http.get(path).status_code == 200, path
    assert len(looked_up) == 1
