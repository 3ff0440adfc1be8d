"""Finding the user's hub: where every client-side entry point looks when it
is not given a URL (``stream-hub status|tail|restart|export``, ``follow()``
and ``afollow()`` without one).

1. The registry record keyed by the configured bind address and ports
   (:func:`~stream_hub.processes.registry.record_key`): it names the ports the
   hub really bound, which differ from the configured ones when a foreign
   program held those and the hub had to move.
2. Then the configured ports themselves.

A place counts only once its REST port answers ``GET /health`` as stream_hub
(``"service": "stream_hub"``; for a record, from the pid the record names).
Nothing answering anywhere is :class:`~.follow_errors.HubNotFound`; a
configured REST port that answers as something else is
:class:`~.follow_errors.NotAHub` (its body is never shown).

The decision (:func:`judge`, :func:`decide`) is pure; :func:`find_hub` and
:func:`afind_hub` only read the registry and ask ``/health``. The registry is
only read here: a client never creates it, writes it or takes its lock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Literal

import httpx

from ..config import StreamConfig, base_urls
from ..errors import StreamHubError
from ..processes.registry import Registry, default_directory, record_key
from ..status import HEALTH_BYTES, health_answer
from .follow_errors import HubNotFound, NotAHub

__all__ = [
    "FoundHub",
    "Place",
    "afind_hub",
    "decide",
    "discovery_config",
    "find_hub",
    "judge",
    "places",
    "where_to_look",
]

logger = logging.getLogger("stream_hub.client")

#: The fields discovery reads (flags or ``STREAM_HUB_*``, then defaults).
DISCOVERY_FIELDS = ("host", "sse_port", "ws_port", "rest_port")

Verdict = Literal["hub", "nothing", "foreign", "stale"]


@dataclasses.dataclass(frozen=True)
class Place:
    """Somewhere a hub may be: a registry record's ports, or the configured ones."""

    source: Literal["registry", "configured"]
    host: str
    ports: dict[str, int]
    pid: int | None = None  # a record's: the hub that answers must be that process

    @property
    def rest_url(self) -> str:
        return base_urls(self.host, {"rest": self.ports["rest"]})["rest"]

    def describe(self) -> str:
        if self.source == "registry":
            return f"the registry's record (pid {self.pid}, REST {self.rest_url})"
        return f"the configured REST port ({self.rest_url})"


@dataclasses.dataclass(frozen=True)
class FoundHub:
    """A hub that answered as stream_hub: where its three transports are."""

    host: str
    ports: dict[str, int]
    pid: int | None
    source: Literal["registry", "configured"]

    @property
    def urls(self) -> dict[str, str]:
        """The base URLs (``sse``, ``ws``, ``rest``), as ``server.urls``."""
        return base_urls(self.host, self.ports)

    @property
    def moved(self) -> bool:
        """Found through the registry (the hub may not be on its configured ports)."""
        return self.source == "registry"


def discovery_config(**values: object) -> StreamConfig:
    """The config discovery reads: host and the three ports from ``values``
    (flags), then ``STREAM_HUB_*``, then defaults; nothing else is read.

    Raises:
        ConfigError: one of those four has a bad value (named).
    """
    return StreamConfig.reading(DISCOVERY_FIELDS, **values)


def where_to_look(url: str | None, config: StreamConfig | None) -> StreamConfig | None:
    """What ``follow(url, config=...)`` looks for: None when it was given a
    URL, else the config whose hub it finds (``config``, or :func:`discovery_config`,
    read now so that a bad variable raises at the call, not at the first event).

    Raises:
        TypeError: both a URL and a config.
        ConfigError: the host or a port from the environment is invalid.
    """
    if url is not None:
        if config is not None:
            raise TypeError("pass url (a hub's address) or config (where to look for the hub), not both")
        return None
    if config is not None and not isinstance(config, StreamConfig):
        raise TypeError(f"config must be a StreamConfig, got {type(config).__name__}")
    return config if config is not None else discovery_config()


def places(config: StreamConfig, registry: str | None = None) -> tuple[list[Place], str]:
    """Where to look, in order, and a description of the registry lookup.

    Reads the record of ``config``'s bind address and ports, if the registry
    directory exists (it is never created here) and is this user's.
    """
    configured = {"sse": config.sse_port, "ws": config.ws_port, "rest": config.rest_port}
    key = record_key(config.host, configured)
    found: list[Place] = []
    refused: str | None = None
    try:
        directory = default_directory() if registry is None else registry
        record = Registry(directory).read(key) if os.path.isdir(directory) else None
    except StreamHubError as exc:  # not this user's private directory: nothing in it is trusted
        logger.debug("hub registry not used: %s", exc)
        record, refused = None, str(exc)
    if record is not None and record.ports.get("rest"):
        found.append(Place("registry", record.host, dict(record.ports), record.pid))
        where = f"the registry record {key}"
    elif refused is not None:  # said, or "no record" would hide a wrong STREAM_HUB_REGISTRY
        where = f"the registry (not used: {refused.rstrip('.')})"
    else:
        where = f"the registry (no record for {key})"
    if config.rest_port:
        found.append(Place("configured", config.host, configured))
    return found, where


def judge(place: Place, health: Mapping[str, object] | None) -> Verdict:
    """What a ``GET /health`` answer (its JSON, ``{}`` for any other answer,
    None when nothing answered) says about ``place``."""
    if health is None:
        return "nothing"
    if health.get("service") != "stream_hub":
        # A record whose port a foreign program took since: the record is old news.
        return "stale" if place.source == "registry" else "foreign"
    if place.pid is not None and health.get("pid") != place.pid:
        return "stale"  # another hub holds the port the record names
    return "hub"


def decide(
    looked: Sequence[tuple[Place, Verdict, int | None]], registry_note: str, config: StreamConfig
) -> FoundHub:
    """The hub found, from the verdicts in the order the places were looked at.

    Raises:
        NotAHub: the configured REST port answers, but not as stream_hub.
        HubNotFound: nothing answered as a hub.
    """
    for place, verdict, pid in looked:
        if verdict == "hub":
            return FoundHub(place.host, dict(place.ports), pid, place.source)
        if verdict == "foreign":
            raise NotAHub(place.ports["rest"], place.rest_url)
    notes = [registry_note]
    if any(place.source == "registry" and verdict == "stale" for place, verdict, _ in looked):
        notes[0] += " naming a hub that no longer answers there"
    elif any(place.source == "registry" and verdict == "nothing" for place, verdict, _ in looked):
        notes[0] += " naming a hub that does not answer"
    if config.rest_port:
        rest = base_urls(config.host, {"rest": config.rest_port})["rest"]
        notes.append(f"{rest} (the configured REST port)")
    else:
        notes.append("not at the configured ports (the REST port is 0: any free port)")
    raise HubNotFound(", then ".join(notes))


def find_hub(
    config: StreamConfig | None = None, *, timeout: float = 3.0, registry: str | None = None
) -> FoundHub:
    """The user's hub: through the registry first, then the configured ports
    (``config``, by default :func:`discovery_config`).

    Raises:
        HubNotFound: nothing answers as a hub where it looked (the message says where).
        NotAHub: the configured REST port answers, but not as stream_hub.
        ConfigError: the host or a port from the environment is invalid.
    """
    cfg = config if config is not None else discovery_config()
    candidates, note = places(cfg, registry)
    looked: list[tuple[Place, Verdict, int | None]] = []
    with httpx.Client(timeout=timeout) as client:
        for place in candidates:
            health = _ask(client, place)
            verdict = judge(place, health)
            looked.append((place, verdict, _pid(health)))
            logger.debug("discovery: %s: %s", place.describe(), verdict)
            if verdict in ("hub", "foreign"):
                break
    return decide(looked, note, cfg)


async def afind_hub(
    config: StreamConfig | None = None, *, timeout: float = 3.0, registry: str | None = None
) -> FoundHub:
    """:func:`find_hub` for asyncio (the record is read in a thread)."""
    cfg = config if config is not None else discovery_config()
    candidates, note = await asyncio.to_thread(places, cfg, registry)
    looked: list[tuple[Place, Verdict, int | None]] = []
    async with httpx.AsyncClient(timeout=timeout) as client:
        for place in candidates:
            health = await _aask(client, place)
            verdict = judge(place, health)
            looked.append((place, verdict, _pid(health)))
            if verdict in ("hub", "foreign"):
                break
    return decide(looked, note, cfg)


#: The most of a ``/health`` answer read: a hub's is a few dozen bytes, and
#: whatever else answers there may send anything.


def _ask(client: httpx.Client, place: Place) -> dict[str, object] | None:
    """``GET /health`` of ``place``: see :func:`~stream_hub.status.health_answer`."""
    try:
        with client.stream("GET", place.rest_url + "/health") as response:
            body = b""
            if response.status_code == 200:
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > HEALTH_BYTES:
                        break
            return health_answer(response.status_code, body)
    except httpx.HTTPError:
        return None


async def _aask(client: httpx.AsyncClient, place: Place) -> dict[str, object] | None:
    try:
        async with client.stream("GET", place.rest_url + "/health") as response:
            body = b""
            if response.status_code == 200:
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > HEALTH_BYTES:
                        break
            return health_answer(response.status_code, body)
    except httpx.HTTPError:
        return None


def _pid(health: Mapping[str, object] | None) -> int | None:
    pid = None if health is None else health.get("pid")
    return pid if isinstance(pid, int) else None
