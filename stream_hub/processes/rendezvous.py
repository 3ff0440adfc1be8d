"""Join or host: what a starting process does about the hub of its ports.

With ``port_conflict="auto"`` (the default) or ``"join"``, and fixed ports,
a starting process takes the registry lock of its configured ports, reads the
record there and probes the hub it names:

- a **live hub of this user** (the record's process answers ``/health`` as
  stream_hub, with the record's pid) -> join it;
- a **hung hub of this user** (its process runs — it is not stopped with
  Ctrl-Z — its REST port takes connections, and ``/health`` gets no answer
  in three probes over ``stale_timeout``) -> in development end it as seed
  000 says (SIGTERM, wait, SIGKILL, verify, each step logged); in production
  refuse;
- a record whose process is gone, or that serves nothing any more -> remove
  the record and host;
- anything else on the ports — a foreign program, another user's hub, a hub
  of another protocol version, a process stopped with Ctrl-Z, anything that
  answers — is never ended: in development the new hub takes the next free
  ports (with a warning naming the holder) and records them under the
  configured key, so later processes still find it; in production start-up
  is refused with the four steps.

The REST port is bound first: it is the lock against processes that do not
use the registry (other versions of stream_hub).
"""

from __future__ import annotations

import dataclasses
import http.client
import logging
import os
import threading
import time
from collections.abc import Mapping

import orjson
import psutil

from ..config import StreamConfig, base_urls
from ..errors import PortInUseError, StreamHubError
from ..ports.kill import refusal, terminate
from ..ports.policy import is_production, next_free
from ..ports.probe import describe_process, find_holder, is_port_in_use, wait_port_free
from .channel import JoinTarget
from .registry import PROTOCOL_VERSION, HubRecord, Registry, record_key

__all__ = [
    "HostOn",
    "JoinHub",
    "WaitForHandover",
    "decide",
    "my_record",
    "probe",
    "rendezvous_key",
    "resolve_ports",
    "to_target",
    "uses_rendezvous",
]

logger = logging.getLogger(__name__)

PROBE_TIMEOUT = 1.0
# How many probes over stale_timeout get no answer before a hub counts as hung.
HUNG_PROBES = 3
# The order ports are taken in: REST first, it is the lock.
BIND_ORDER = ("rest", "sse", "ws")
# How long the ports of a hung hub that was ended may take to be bindable
# (the kernel normally frees them as it exits; a margin for a loaded machine).
RELEASE_WAIT = 2.0


@dataclasses.dataclass(frozen=True)
class HostOn:
    """Host on these ports (resolved, not yet bound)."""

    ports: dict[str, int]


@dataclasses.dataclass(frozen=True)
class JoinHub:
    """Join this hub."""

    target: JoinTarget


@dataclasses.dataclass(frozen=True)
class WaitForHandover:
    """A host is handing over to a successor until ``until``: ask again shortly."""

    until: float


def uses_rendezvous(config: StreamConfig) -> bool:
    """Whether a server with ``config`` meets others through the registry."""
    configured = (config.sse_port, config.ws_port, config.rest_port)
    return config.port_conflict in ("auto", "join") and all(configured)


def rendezvous_key(config: StreamConfig) -> str:
    return record_key(config.host, _configured(config))


def _configured(config: StreamConfig) -> dict[str, int]:
    return {"sse": config.sse_port, "ws": config.ws_port, "rest": config.rest_port}


def to_target(record: HubRecord) -> JoinTarget:
    return JoinTarget(
        settings=dict(record.settings),
        channel=record.channel,
        token=record.token,
        pid=record.pid,
        ports=dict(record.ports),
        urls=base_urls(record.host, record.ports),
        epoch=record.epoch,
    )


# -- probing a recorded hub --------------------------------------------------------------


def _health(host: str, port: int, timeout: float) -> dict[str, object] | None:
    """``GET /health`` of a REST port: the JSON answer (``{}`` for any other
    HTTP answer), or None when nothing answered (refused, or no answer in time)."""
    target = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host.strip("[]")
    conn = http.client.HTTPConnection(target, port, timeout=timeout)
    try:
        conn.request("GET", "/health", headers={"Host": "localhost"})
        response = conn.getresponse()
        body = response.read(4096)
        if response.status != 200:
            return {}
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            return {}
        return answer if isinstance(answer, dict) else {}
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def probe(record: HubRecord, stale_timeout: float) -> str:
    """What the hub a record names is now.

    ``"live"`` (answers as that hub), ``"dead"`` (its process is gone),
    ``"stopped"`` (suspended, e.g. Ctrl-Z), ``"hung"`` (runs, holds its port,
    never answers), ``"gone"`` (runs, but does not serve those ports any
    more), or ``"foreign"`` (of another protocol version, or someone else
    answers on its port).
    """
    if record.version != PROTOCOL_VERSION:
        return "foreign"
    try:
        proc = psutil.Process(record.pid)
        if proc.create_time() > record.started + 1.0:
            return "dead"  # the pid was reused by a later process
        status = proc.status()
    except psutil.NoSuchProcess:
        return "dead"
    except psutil.Error:
        return "foreign"
    if status == psutil.STATUS_ZOMBIE:
        return "dead"
    if status == psutil.STATUS_STOPPED:
        return "stopped"
    rest = record.ports.get("rest", 0)
    interval = stale_timeout / HUNG_PROBES
    pause = threading.Event()  # never set: a bounded wait between probes
    for attempt in range(HUNG_PROBES):
        answer = _health(record.host, rest, min(PROBE_TIMEOUT, interval))
        if answer is not None:  # anything that answers is never ended
            if answer.get("service") == "stream_hub" and answer.get("pid") == record.pid:
                return "live"
            return "foreign"
        if not is_port_in_use(rest, record.host):
            return "gone"
        if attempt < HUNG_PROBES - 1:
            pause.wait(interval)
    return "hung"


# -- the decision ------------------------------------------------------------------------------


def decide(config: StreamConfig, registry: Registry, key: str) -> HostOn | JoinHub | WaitForHandover:
    """Join, wait, or host on which ports (call with ``registry.lock(key)`` held).

    Raises:
        PortInUseError: production refuses a hung hub or a foreign holder.
        StreamHubError: ``port_conflict="join"`` and there is no live hub.
    """
    record = registry.read(key)
    if record is not None:
        if record.successor is not None and (record.handover_until or 0) > time.time():
            return WaitForHandover(record.handover_until or 0)
        verdict = probe(record, config.stale_timeout)
        logger.debug("hub record %s names pid %d: %s", key, record.pid, verdict)
        if verdict == "live":
            return JoinHub(to_target(record))
        if verdict in ("dead", "gone"):
            registry.remove(key, record.pid)
        elif verdict == "hung":
            _end_hung_hub(record, config)
            registry.remove(key, record.pid)
    if config.port_conflict == "join":
        raise StreamHubError(
            f'port_conflict="join": no live stream_hub hub of this user to join on ports '
            f"{config.sse_port}/{config.ws_port}/{config.rest_port} (start one with `stream-hub serve`)"
        )
    return HostOn(resolve_ports(config, _configured(config)))


def _end_hung_hub(record: HubRecord, config: StreamConfig) -> None:
    label = f"hung stream_hub hub (pid {record.pid}, REST port {record.ports.get('rest')})"
    if is_production():
        raise PortInUseError(
            record.ports.get("rest", 0),
            record.pid,
            describe_process(record.pid),
            host=config.host,
            transport="rest",
            reason=f"a {label} holds it, and ENVIRONMENT=production never ends a process",
        )
    try:
        proc = psutil.Process(record.pid)
    except psutil.NoSuchProcess:
        return
    reason = refusal(proc)
    if reason is not None:
        raise PortInUseError(record.ports.get("rest", 0), record.pid, host=config.host, reason=reason)
    logger.warning("%s has not answered for %.1f s; ending it", label, config.stale_timeout)
    if not terminate(proc, 5.0, label):
        raise PortInUseError(
            record.ports.get("rest", 0), record.pid, host=config.host, reason="it survived SIGKILL"
        )
    # Its ports are this hub's to take: wait until the kernel has let them
    # go (a port still held then, by someone else, is moved off below).
    for port in record.ports.values():
        if port:
            wait_port_free(port, record.host, RELEASE_WAIT)


def resolve_ports(config: StreamConfig, wanted: Mapping[str, int]) -> dict[str, int]:
    """The ports a new hub binds: each wanted one if free; if something else
    holds it, the next free one in development (never ending the holder),
    or a refusal in production."""
    taken: set[int] = set()
    out: dict[str, int] = {}
    for name in BIND_ORDER:
        port = wanted[name]
        if port and (port in taken or is_port_in_use(port, config.host)):
            holder = find_holder(port, config.host)
            what = (
                f"pid {holder} ({describe_process(holder) or 'unknown'})" if holder else "an unknown process"
            )
            if is_production():
                raise PortInUseError(
                    port,
                    holder,
                    describe_process(holder) if holder else None,
                    host=config.host,
                    transport=name,
                    reason="it is not a stream_hub hub this process can join, and ENVIRONMENT=production "
                    "never takes other ports by itself",
                )
            new = next_free(
                port, config.host, name, taken | {p for p in wanted.values() if p != port}, policy=None
            )
            logger.warning(
                "%s port %d is held by %s, which is not a hub to join; this hub takes port %d instead "
                "(other processes find it through the registry)",
                name,
                port,
                what,
                new,
            )
            port = new
        out[name] = port
        if port:
            taken.add(port)
    return out


def my_record(
    key: str,
    config: StreamConfig,
    ports: Mapping[str, int],
    epoch: str,
    token: str,
    channel: str,
) -> HubRecord:
    """The record a new host writes about itself."""
    return HubRecord(
        key=key,
        pid=os.getpid(),
        host=config.host,
        configured=_configured(config),
        ports=dict(ports),
        epoch=epoch,
        token=token,
        channel=channel,
        started=psutil.Process().create_time(),
        settings={name: getattr(config, name, None) for name in SHARED_SETTINGS},
    )


#: The settings that matter for a whole hub: a joiner whose config differs is warned.
SHARED_SETTINGS = ("history_size", "store", "backend")
