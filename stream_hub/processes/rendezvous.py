"""The facts about a recorded hub that deciding whether to join it needs.

A process whose config uses the registry (fixed ports, ``port_conflict``
``"auto"`` or ``"join"``) reads the record of its configured ports under the
record's lock; :func:`probe` says what the hub the record names is now:

- ``live``: its process answers ``/health`` as that stream_hub hub;
- ``dead``: its process is gone (or the pid was reused);
- ``stopped``: suspended (Ctrl-Z): never ended;
- ``busy``: it holds its REST port and does not answer, but works (its CPU
  time advances, or it waits on the disk): joined, never ended;
- ``wedged``: it holds its port, does not answer for ``stale_timeout``,
  uses no CPU and sleeps: the only hub ever ended (development only);
- ``gone``: it runs but no longer serves those ports;
- ``foreign``: anything else answers there (never ended).

What to do about it is decided in one place, the port resolver
(:mod:`stream_hub.roles.placement`); :func:`end_wedged_hub` carries out its
one drastic decision (development only, each step logged).
"""

from __future__ import annotations

import http.client
import logging
import os
import threading
import time
from collections.abc import Mapping

import psutil

from ..config import StreamConfig, base_urls
from ..errors import PortInUseError
from ..ports.kill import listens_on, refusal, terminate
from ..ports.policy import is_production
from ..ports.probe import describe_process, is_port_in_use, wait_port_free
from ..status import HEALTH_BYTES, health_answer
from .channel import JoinTarget
from .registry import PROTOCOL_VERSION, HubRecord, record_key

__all__ = [
    "SHARED_SETTINGS",
    "end_wedged_hub",
    "my_record",
    "probe",
    "rendezvous_key",
    "to_target",
    "unanswered_state",
]

logger = logging.getLogger(__name__)

PROBE_TIMEOUT = 1.0
# How many probes over stale_timeout get no answer before a hub counts as busy or wedged.
HUNG_PROBES = 3
# How long the ports of a wedged hub that was ended may take to be bindable
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
        return health_answer(response.status, response.read(HEALTH_BYTES + 1))
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def probe(record: HubRecord, stale_timeout: float) -> str:
    """What the hub a record names is now.

    ``"live"`` (answers as that hub), ``"dead"`` (its process is gone),
    ``"stopped"`` (suspended or traced: Ctrl-Z, a debugger), ``"gone"``
    (runs, but does not serve those ports any more), ``"foreign"`` (of
    another protocol version, or someone else answers on its port), or, when
    it holds its port and does not answer for ``stale_timeout``:

    - ``"busy"``: it works — its CPU time advanced while it did not answer,
      or it waits on the disk (a big ``pickle.load``, a long C call holding
      the GIL): it will answer, and must never be ended;
    - ``"wedged"``: its CPU time did not advance and it sleeps (a thread
      holding the GIL in a blocking call, a deadlock): it will not answer.
    """
    if record.version != PROTOCOL_VERSION:
        return "foreign"
    try:
        proc = psutil.Process(record.pid)
        if proc.create_time() > record.started + 1.0:
            return "dead"  # the pid was reused by a later process
        status = proc.status()
        cpu_before, wall_before = _cpu_seconds(proc), time.monotonic()
    except psutil.NoSuchProcess:
        return "dead"
    except psutil.Error:
        return "foreign"
    if status == psutil.STATUS_ZOMBIE:
        return "dead"
    if status in _HALTED:
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
    try:
        status = proc.status()
        worked = _cpu_seconds(proc) - cpu_before
    except psutil.NoSuchProcess:
        return "dead"
    except psutil.Error:
        return "foreign"
    return unanswered_state(status, worked, time.monotonic() - wall_before)


#: Process states of a process that is halted, not wedged: never ended.
_HALTED = frozenset({psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP})
#: The share of a core a process must have used while not answering to count
#: as working (a wedged process uses none; a busy one most of a core, less
#: on a loaded machine).
BUSY_CPU_SHARE = 0.05


def unanswered_state(status: str, cpu_seconds: float, wall_seconds: float) -> str:
    """What a hub that held its port and did not answer for ``wall_seconds``
    is, from its process state and the CPU time it used meanwhile:
    ``"dead"``, ``"stopped"``, ``"busy"`` or ``"wedged"`` (see :func:`probe`)."""
    if status in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
        return "dead"
    if status in _HALTED:
        return "stopped"
    if status == psutil.STATUS_DISK_SLEEP or cpu_seconds > max(0.02, BUSY_CPU_SHARE * wall_seconds):
        return "busy"
    return "wedged"


def _cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def end_wedged_hub(record: HubRecord, config: StreamConfig) -> bool:
    """End the wedged hub ``record`` names (SIGTERM, then SIGKILL) and wait
    for its ports — only once it is proven to hold its REST port. Whether it
    was ended (False: it was gone already, or it does not hold the port and
    is left alone: whatever holds the port is someone else).

    Raises:
        PortInUseError: production, a guard refuses, or it survived SIGKILL.
    """
    rest = record.ports.get("rest", 0)
    label = f"wedged stream_hub hub (pid {record.pid}, REST port {rest})"
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
        return True
    reason = refusal(proc)
    if reason is None and not listens_on(proc, rest):
        # The record names it, but it does not hold the port: nothing to take from it.
        logger.warning("%s does not listen on its REST port; it is left alone", label)
        return False
    if reason is not None:
        raise PortInUseError(rest, record.pid, host=config.host, reason=reason)
    logger.warning(
        "%s has not answered for %.1f s, used no CPU and sleeps; ending it", label, config.stale_timeout
    )
    if not terminate(proc, 5.0, label):
        raise PortInUseError(
            record.ports.get("rest", 0), record.pid, host=config.host, reason="it survived SIGKILL"
        )
    # Its ports are this hub's to take: wait until the kernel has let them
    # go (a port still held then, by someone else, is moved off below).
    for port in record.ports.values():
        if port:
            wait_port_free(port, record.host, RELEASE_WAIT)
    return True


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
