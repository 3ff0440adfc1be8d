"""StreamServerManager: the one server of a process, shared by reference count.

Training threads call :func:`get_stream_server` (one reference more; the
first starts the server) and :func:`release_stream_server` (one fewer; the
last stops it). Ops call :func:`get_stream_server_manager` for status,
``force_restart`` and ``cleanup``. Every method is safe from any number of
threads at once.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .config import StreamConfig
from .errors import StreamHubError
from .runtime import hooks
from .runtime.signals import end_on_sigterm
from .status import Status

if TYPE_CHECKING:
    from .server import TrainingStreamServer

__all__ = [
    "Lease",
    "StreamServerManager",
    "get_stream_server",
    "get_stream_server_manager",
    "release_stream_server",
]

logger = logging.getLogger(__name__)


class Lease:
    """One reference to the shared server that can be released only once.

    ``with manager.lease(config=cfg) as server: ...`` releases on exit;
    ``lease.release()`` may be called any number of times.
    """

    def __init__(self, manager: StreamServerManager, server: TrainingStreamServer) -> None:
        self._manager = manager
        self.server = server
        self._released = False
        self._lock = threading.Lock()

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> bool:
        """Give the reference back; False if it was already given back."""
        with self._lock:
            if self._released:
                return False
            self._released = True
        self._manager.release()
        return True

    def __enter__(self) -> TrainingStreamServer:
        return self.server

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class StreamServerManager:
    """The process-wide owner of at most one :class:`TrainingStreamServer`.

    ``StreamServerManager()`` always returns the same object (created with
    double-checked locking). The server starts on the first reference and
    stops when the count returns to zero; the object is kept, so a later
    reference with the same config restarts it with its history.
    """

    _instance: StreamServerManager | None = None
    _instance_lock = threading.Lock()

    _lock: threading.RLock
    _server: TrainingStreamServer | None
    _refs: int

    def __new__(cls) -> StreamServerManager:
        instance = cls._instance
        if instance is None:
            # Before any of the manager's locks is taken: a child forked
            # while a thread holds one must not inherit it held.
            hooks.after_fork_in_child("manager", _reset_after_fork)
            with cls._instance_lock:
                instance = cls._instance
                if instance is None:
                    instance = super().__new__(cls)
                    instance._reset()
                    cls._instance = instance
        return instance

    def _reset(self) -> None:
        self._lock = threading.RLock()
        self._server = None
        self._refs = 0

    # -- references ---------------------------------------------------------------

    def get_server(
        self, training_system: Any = None, config: StreamConfig | None = None
    ) -> TrainingStreamServer:
        """Add a reference; start the server if it is not running.

        Raises:
            StreamHubError: ``config`` differs from the running server's (the
                differing fields are named; the server is not touched).
            PortInUseError: the server could not bind its ports (the count is
                unchanged).
            LoopThreadError: called from the server's own loop thread.
        """
        if config is not None and not isinstance(config, StreamConfig):
            raise TypeError(f"config must be a StreamConfig, got {type(config).__name__}")
        self._check_not_in_loop("get_stream_server()")
        with self._lock:
            server = self._server
            if server is not None and config is not None:
                diffs = config.differences(server.config)
                if diffs and server.running:
                    raise StreamHubError(
                        "a stream server with a different config is already running; "
                        f"differing fields: {', '.join(diffs)}. Pass config=None to share it, "
                        "or release every reference before starting one with a new config."
                    )
                if diffs:
                    server = None  # stopped: the new config replaces it
            if server is None:
                server = _new_server(config, training_system)
                server.owner = self
                self._server = server
            elif training_system is not None and server.training_system is None:
                server.training_system = training_system
            if not server.running:
                server.start()
            self._refs += 1
            logger.debug("stream server reference acquired (count %d)", self._refs)
            return server

    def release(self) -> int:
        """Remove a reference; stop the server when none are left.

        Releasing with no reference held logs a warning and changes nothing.
        Returns the count after the release.
        """
        self._check_not_in_loop("release_stream_server()")
        with self._lock:
            if self._refs == 0:
                logger.warning("release_stream_server() called with no reference held; ignored")
                return 0
            self._refs -= 1
            if self._refs == 0 and self._server is not None:
                logger.info("last stream server reference released; stopping")
                # Done with it: the runs this process logged to end here (logging
                # to one again later starts it again). Released while an
                # exception propagates, they failed (or were interrupted).
                self._server.finish_local_runs(_ending_status(), forget=True)
                self._server.stop()
            return self._refs

    def lease(self, training_system: Any = None, config: StreamConfig | None = None) -> Lease:
        """A reference as an object whose release is idempotent."""
        return Lease(self, self.get_server(training_system, config))

    # -- ops ----------------------------------------------------------------------

    def is_server_running(self) -> bool:
        server = self._server
        return server is not None and server.running

    @property
    def ref_count(self) -> int:
        return self._refs

    @property
    def server(self) -> TrainingStreamServer | None:
        """The managed server object, running or not (None before the first get)."""
        return self._server

    def force_restart(self) -> TrainingStreamServer:
        """Restart the server in place: same object, same references, same history.

        Raises:
            StreamHubError: there is no server, or it could not start again (it
                is then stopped with its count kept; the next
                ``get_stream_server`` or ``force_restart`` retries).
        """
        self._check_not_in_loop("force_restart()")
        with self._lock:
            server = self._server
            if server is None or (self._refs == 0 and not server.running):
                raise StreamHubError(
                    "no stream server to restart: none is running and no "
                    "reference is held; call get_stream_server() first"
                )
            logger.info("force restart requested (references: %d)", self._refs)
            server.restart()
            return server

    def recover(self, server: TrainingStreamServer, cause: str) -> None:
        """After a fault (dead loop thread, dead listener): restart in place.

        Called by the server, on a thread of its own.
        """
        with self._lock:
            if server is not self._server or self._refs == 0:
                return
            try:
                server.restart()
                logger.warning(
                    "stream server recovered from a fault (%s); restarts: %d", cause, server.restarts
                )
            except Exception:
                logger.exception(
                    "stream server could not recover from a fault (%s); the next "
                    "get_stream_server() or force_restart() retries",
                    cause,
                )

    def cleanup(self) -> None:
        """Stop the server whatever the count, set the count to zero and forget
        the server: the next ``get_stream_server`` starts a fresh one.

        Raises:
            StreamHubError: the server could not be stopped (it is kept, with
                a count of zero, so ``cleanup()`` can be called again).
        """
        self._check_not_in_loop("cleanup()")
        with self._lock:
            refs, self._refs = self._refs, 0
            server = self._server
            if server is not None and (server.running or server.loop_thread_alive):
                logger.info("cleanup: stopping the stream server (%d reference(s) dropped)", refs)
                # Forgotten only once stopped: if stop() raises, the server stays
                # known, so a later cleanup() can still end its loop thread.
                server.stop()
            self._server = None

    def status(self) -> dict[str, Any]:
        """The status dict of the contract, also when no server exists."""
        server = self._server
        if server is not None:
            return server.status()
        return Status(ref_count=self._refs).to_dict()

    def _check_not_in_loop(self, what: str) -> None:
        server = self._server
        if server is not None:
            server.check_not_in_loop(what)


def get_stream_server_manager() -> StreamServerManager:
    """The process-wide manager (the same object as ``StreamServerManager()``)."""
    return StreamServerManager()


def get_stream_server(
    training_system: Any = None, config: StreamConfig | None = None
) -> TrainingStreamServer:
    """Add a reference to the shared server, starting it on the first."""
    return StreamServerManager().get_server(training_system, config)


def release_stream_server() -> int:
    """Remove a reference; the server stops when the count reaches zero."""
    return StreamServerManager().release()


def _new_server(config: StreamConfig | None, training_system: Any) -> TrainingStreamServer:
    # The server module brings the web frameworks, SQLite and asyncio with it:
    # imported only here, when a process asks for its first server.
    from .server import TrainingStreamServer

    hooks.install_once("manager.exit", _install_exit_hooks)
    if threading.current_thread() is threading.main_thread():  # (a handler is set from there only)
        hooks.install_once("manager.sigterm", _install_sigterm_end)
    return TrainingStreamServer(config, training_system)


def _install_exit_hooks() -> None:
    """Once this process has a server: at exit its runs end and it stops; an
    uncaught exception ends the runs as failed (or killed, for Ctrl-C)."""
    global _previous_excepthook
    _previous_excepthook = sys.excepthook
    sys.excepthook = _note_uncaught
    atexit.register(_cleanup_at_exit)


def _install_sigterm_end() -> None:
    """Once this process has a server, from the main thread: SIGTERM ends it
    as an exit does, runs ``killed``, then does what it did before (see
    :mod:`stream_hub.runtime.signals`). A launcher ends ranks with SIGTERM:
    its default action would skip the end at exit and lose their last events."""
    end_on_sigterm(_cleanup_at_exit, ending=_note_sigterm, within=_end_within)


def _note_sigterm() -> None:
    _UNCAUGHT.append("killed")


def _end_within() -> float:
    """How long the end on SIGTERM may take: a host waits for its joined
    processes (``drain_timeout``), then stops and closes its store (each
    bounded by ``shutdown_timeout``); a little more, then the process ends anyway."""
    instance = StreamServerManager._instance
    server = instance.server if instance is not None else None
    config = server.config if server is not None else StreamConfig()
    return config.drain_timeout + 2 * config.shutdown_timeout + 5.0


def _cleanup_at_exit() -> None:
    """At exit: finish the runs this process logged to, then stop its server."""
    instance = StreamServerManager._instance
    if instance is None:
        return
    server = instance.server
    status = _UNCAUGHT[-1] if _UNCAUGHT else "finished"
    try:
        if not instance.is_server_running():
            if server is not None:
                server.finish_into_backend(status)
            return
        if server is not None:
            server.finish_local_runs(status)
        instance.cleanup()
    except Exception:  # pragma: no cover - nothing useful left to do at exit
        logger.exception("stream server cleanup at exit failed")


# How the main thread ended, when an uncaught exception or SIGTERM ended it:
# "failed", or "killed" by Ctrl-C or SIGTERM (the status of the runs still open at exit).
_UNCAUGHT: list[str] = []
# The hook _note_uncaught passes the exception on to (set when it is installed).
_previous_excepthook = sys.__excepthook__


def _note_uncaught(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    _UNCAUGHT.append("killed" if issubclass(kind, KeyboardInterrupt) else "failed")
    _previous_excepthook(kind, value, tb)


def _ending_status() -> str:
    """How runs end when released now: ``failed`` while an exception propagates
    (a ``finally`` or ``with`` block releasing), ``killed`` for Ctrl-C."""
    kind = sys.exc_info()[0]
    if kind is None:
        return "finished"
    return "killed" if issubclass(kind, KeyboardInterrupt) else "failed"


def _reset_after_fork() -> None:
    # The child holds none of the parent's threads or sockets (the server let
    # go of them, and forwards to the parent's hub: see TrainingStreamServer),
    # nor any of its references.
    instance = StreamServerManager._instance
    StreamServerManager._instance_lock = threading.Lock()
    if instance is not None:
        server = instance._server
        instance._reset()
        instance._server = server
