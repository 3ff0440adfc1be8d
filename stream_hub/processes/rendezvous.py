"""The facts about a recorded hub that deciding whether to join it needs.

A process whose config uses the registry (fixed ports, ``port_conflict``
``"auto"`` or ``"join"``) reads the record of its configured ports under the
record's lock; :func:`probe` says what the hub the record names is now:

- ``live``: its process answers ``/health`` as that stream_hub hub;
- ``dead``: its process is gone (or the pid was reused);
- ``stopped``: suspended (Ctrl-Z): never ended;
- ``hung``: it runs, its REST port takes connections, and ``/health`` gets
  no answer in three probes over ``stale_timeout``;
- ``gone``: it runs but no longer serves those ports;
- ``foreign``: anything else answers there (never ended).

What to do about it is decided in one place, the port resolver
(:mod:`stream_hub.roles.placement`); :func:`end_hung_hub` carries out its
one drastic decision (development only, each step logged).
"""

from __future__ import annotations

import http.client
import logging
import os
import threading
from collections.abc import Mapping

import orjson
import psutil

from ..config import StreamConfig, base_urls
from ..errors import PortInUseError
from ..ports.kill import refusal, terminate
from ..ports.policy import is_production
from ..ports.probe import describe_process, is_port_in_use, wait_port_free
from .channel import JoinTarget
from .registry import PROTOCOL_VERSION, HubRecord, record_key

__all__ = ["SHARED_SETTINGS", "end_hung_hub", "my_record", "probe", "rendezvous_key", "to_target"]

logger = logging.getLogger(__name__)

PROBE_TIMEOUT = 1.0
# How many probes over stale_timeout get no answer before a hub counts as hung.
HUNG_PROBES = 3
# How long the ports of a hung hub that was ended may take to be bindable
# (the kernel normally frees them as it exits; a margin for a loaded machine).
RELEASE_WAIT = 2.0


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


def end_hung_hub(record: HubRecord, config: StreamConfig) -> None:
    """End the hung hub ``record`` names (SIGTERM, then SIGKILL) and wait for its ports.

    Raises:
        PortInUseError: production, a guard refuses, or it survived SIGKILL.
    """
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
