"""One interface over the two hubs under test, so each figure measures both alike.

A side has ``start()``, ``log(metrics, step=, run=)`` (returns the event's
seq), ``ports`` (``{"sse", "ws", "rest"}``), ``force_restart()`` and
``stop()``. stream_hub is driven only through its public API, the way a
training script and an ops script would use it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .baseline import BaselineHub

__all__ = ["SIDES", "BaselineSide", "Side", "StreamHubSide", "make_side"]

SIDES = ("stream_hub", "baseline")


class Side(Protocol):
    name: str
    log: Callable[..., int]

    @property
    def ports(self) -> dict[str, int]: ...
    def start(self) -> None: ...
    def force_restart(self) -> None: ...
    def stop(self) -> None: ...


class StreamHubSide:
    """stream_hub through ``get_stream_server`` / ``release_stream_server``."""

    name = "stream_hub"

    def __init__(self, **config: Any) -> None:
        self._config = config
        self._server: Any = None
        self.log: Callable[..., int] = _not_started

    def _make_config(self) -> Any:
        from stream_hub import StreamConfig

        known = {f.name for f in dataclasses.fields(StreamConfig)}
        wanted = {"host": "127.0.0.1", "sse_port": 0, "ws_port": 0, "rest_port": 0, **self._config}
        # Settings the core may not have (yet) are left out rather than fail.
        return StreamConfig(**{k: v for k, v in wanted.items() if k in known})

    @property
    def ports(self) -> dict[str, int]:
        return dict(self._server.ports)

    def start(self) -> None:
        from stream_hub import get_stream_server

        self._server = get_stream_server(config=self._make_config())
        self.log = self._server.log

    def force_restart(self) -> None:
        from stream_hub import get_stream_server_manager

        server = get_stream_server_manager().force_restart()
        if server is not None and server is not self._server:
            self._server = server
            self.log = server.log

    def stop(self) -> None:
        from stream_hub import release_stream_server

        release_stream_server()
        self.log = _not_started


class BaselineSide:
    """The hand-written hub of :mod:`benchmarks.baseline`."""

    name = "baseline"

    def __init__(self, **config: Any) -> None:
        self._config = config
        self._hub: BaselineHub | None = None
        self.log: Callable[..., int] = _not_started

    @property
    def ports(self) -> dict[str, int]:
        assert self._hub is not None
        return dict(self._hub.ports)

    def start(self) -> None:
        self._hub = BaselineHub(host="127.0.0.1")
        self._hub.start()
        self.log = self._hub.log

    def force_restart(self) -> None:
        assert self._hub is not None
        self._hub.force_restart()

    def stop(self) -> None:
        if self._hub is not None:
            self._hub.stop()
        self.log = _not_started


def _not_started(metrics: Mapping[str, float], step: int | None = None, run: str | None = None) -> int:
    raise RuntimeError("the side is not started")


def make_side(name: str, **config: Any) -> Side:
    if name == "stream_hub":
        return StreamHubSide(**config)
    if name == "baseline":
        return BaselineSide(**config)
    raise ValueError(f"unknown side {name!r}; expected one of {SIDES}")
