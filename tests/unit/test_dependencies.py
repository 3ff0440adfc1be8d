"""What stream_hub relies on in uvicorn and websockets beyond their documented
API, checked so that a release that changes it fails here, loudly, by name.

pyproject.toml bounds both versions; when one of these fails after a bump,
adapt stream_hub/transports/http.py or ws.py, then move the bound.
"""

from __future__ import annotations

import asyncio
import inspect

import uvicorn
import websockets
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState
from websockets.asyncio.server import ServerConnection, serve

from stream_hub.transports.access import PEER_REFUSAL
from stream_hub.transports.http import TrackedH11Protocol


def _versions() -> str:
    return f"uvicorn {uvicorn.__version__}, websockets {websockets.__version__}"


def test_uvicorn_h11_protocol_has_what_our_subclass_overrides_and_reads() -> None:
    params = list(inspect.signature(H11Protocol.__init__).parameters)
    assert params[:4] == ["self", "config", "server_state", "app_state"], (
        f"H11Protocol's constructor changed ({_versions()}): {params}"
    )
    for method in (
        "connection_made",
        "connection_lost",
        "data_received",
        "pause_writing",
        "resume_writing",
        "shutdown",
    ):
        assert callable(getattr(H11Protocol, method, None)), f"H11Protocol.{method} is gone ({_versions()})"
    state = ServerState()
    for name in ("connections", "tasks", "default_headers"):
        assert hasattr(state, name), f"uvicorn ServerState.{name} is gone ({_versions()})"


async def test_uvicorn_protocol_sets_the_attributes_we_read() -> None:
    config = uvicorn.Config(lambda *a: None, lifespan="off", log_config=None, proxy_headers=False)
    config.load()

    class Transport(asyncio.Transport):
        def get_extra_info(self, name: str, default: object = None) -> object:
            return {"peername": ("127.0.0.1", 5555), "sockname": ("127.0.0.1", 80)}.get(name, default)

    from stream_hub.transports.clients import ClientRegistry

    registry = ClientRegistry(send_timeout=1.0, buffer_limit=1 << 20)
    checked: list[object] = []

    def check_peer(local: object, remote: object) -> str:
        checked.append((local, remote))
        return "refused"

    protocol = TrackedH11Protocol(config, ServerState(), registry, request_timeout=1.0, check_peer=check_peer)
    protocol.connection_made(Transport())
    try:
        assert protocol.client == ("127.0.0.1", 5555), f"H11Protocol.client ({_versions()})"
        assert protocol.conn.their_state is not None, f"H11Protocol.conn ({_versions()})"
        assert registry.by_peer[("127.0.0.1", 5555)] is protocol
        assert checked == [(("127.0.0.1", 80), ("127.0.0.1", 5555))]
        # Each request's scope["state"] is a copy of app_state: the connection's verdict.
        assert protocol.app_state == {PEER_REFUSAL: "refused"}, f"H11Protocol.app_state ({_versions()})"
    finally:
        protocol._disarm()


def test_websockets_serve_takes_a_connection_class_and_connections_are_protocols() -> None:
    params = inspect.signature(serve).parameters
    for name in ("create_connection", "process_request", "compression", "server_header", "kwargs"):
        assert name in params, f"websockets serve() lost {name!r} ({_versions()})"
    for method in ("connection_made", "connection_lost", "pause_writing", "resume_writing"):
        assert callable(getattr(ServerConnection, method, None)), (
            f"ServerConnection.{method} is gone ({_versions()})"
        )
    assert isinstance(ServerConnection.state, property), f"ServerConnection.state ({_versions()})"
