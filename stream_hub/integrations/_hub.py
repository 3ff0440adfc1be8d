"""What every bridge shares: the server it publishes to, and importing its
framework only when needed."""

from __future__ import annotations

import importlib
import threading
from types import ModuleType
from typing import Any

from ..config import StreamConfig
from ..manager import Lease, get_stream_server_manager
from ..server import TrainingStreamServer

__all__ = ["HubHandle", "flat", "json_value", "require"]


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module``, or raise an ImportError that names the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{what} needs {module.split('.')[0]}, which is not installed: "
            f"pip install 'stream_hub[{extra}]' ({exc})"
        ) from exc


class HubHandle:
    """The server a bridge publishes to.

    Given a ``server``, it is used as it is (its references are the caller's
    business). Otherwise the process's shared server is taken on first use
    (``get_stream_server(config=config)``: it starts or joins the hub) and
    given back by :meth:`release`, once.
    """

    def __init__(
        self, server: TrainingStreamServer | None = None, config: StreamConfig | None = None
    ) -> None:
        self._given = server
        self._config = config
        self._lease: Lease | None = None
        self._lock = threading.Lock()

    @property
    def server(self) -> TrainingStreamServer:
        if self._given is not None:
            return self._given
        lease = self._lease
        if lease is None:
            with self._lock:
                if self._lease is None:
                    self._lease = get_stream_server_manager().lease(config=self._config)
                lease = self._lease
        return lease.server

    def release(self) -> None:
        """Give the shared server's reference back (if one was taken)."""
        with self._lock:
            lease, self._lease = self._lease, None
        # At interpreter exit the manager may already have stopped everything
        # (its count is then 0): nothing to give back, and no warning to log.
        if lease is not None and get_stream_server_manager().ref_count > 0:
            lease.release()


def json_value(value: Any) -> Any:
    """A hyper-parameter as JSON can carry it: numbers, strings, booleans and
    None as they are; numpy/torch scalars as numbers; lists of those; anything
    else as its ``str``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [json_value(item) for item in value]
    item = getattr(value, "item", None)  # numpy and 0-d torch scalars
    if callable(item):
        try:
            result = item()
        except (TypeError, ValueError, RuntimeError):
            return str(value)
        if isinstance(result, (bool, int, float, str)):
            return result
    return str(value)


def flat(values: Any, prefix: str = "", depth: int = 0) -> dict[str, Any]:
    """A nested mapping of hyper-parameters as one flat dict (keys joined with ``/``)."""
    out: dict[str, Any] = {}
    if not hasattr(values, "items"):
        return out
    for key, value in values.items():
        name = f"{prefix}{key}"
        if hasattr(value, "items") and depth < 8:
            out.update(flat(value, name + "/", depth + 1))
        else:
            out[name] = json_value(value)
    return out
