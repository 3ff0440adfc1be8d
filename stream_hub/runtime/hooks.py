"""The process-wide hooks stream_hub installs (at exit, an uncaught exception,
after ``fork`` in the child), each once, when the first object that needs it
is created — never by an import: ``import stream_hub`` runs in training
scripts, DataLoader workers and spawned children that may never build a
server.

Fork hooks go through one dispatcher registered with ``os.register_at_fork``
the first time one is asked for. It runs them in :data:`CHILD_ORDER`, not in
the order their objects happened to be created: a store must let go of the
parent's SQLite connections and lock before a server drops its references to
that store (closing an inherited connection could delete the parent's WAL),
and the manager resets its locks last.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

__all__ = ["CHILD_ORDER", "after_fork_in_child", "install_once", "installed"]

logger = logging.getLogger(__name__)

#: The fork hooks there are, in the order a forked child runs them.
CHILD_ORDER = ("store.lock", "store", "server", "manager")

_lock = threading.RLock()
_installed: set[str] = set()
_child_hooks: dict[str, Callable[[], None]] = {}


def install_once(key: str, install: Callable[[], None]) -> bool:
    """Call ``install`` unless something was installed under ``key`` already.

    Returns True if it was called now. Safe from any number of threads: a
    second caller waits until the first one's ``install`` has returned (which
    may itself install other keys).
    """
    with _lock:
        if key in _installed:
            return False
        install()
        _installed.add(key)
        return True


def after_fork_in_child(key: str, hook: Callable[[], None]) -> bool:
    """Have ``hook`` run in every child this process forks from now on, in
    its place in :data:`CHILD_ORDER` (``key``); the first hook of a key is
    kept, later ones are ignored.

    Returns True if it was installed now.

    Raises:
        ValueError: ``key`` is not in :data:`CHILD_ORDER`.
    """
    if key not in CHILD_ORDER:
        raise ValueError(f"unknown fork hook {key!r}; known: {', '.join(CHILD_ORDER)}")
    if hasattr(os, "register_at_fork"):  # not on Windows: no fork there
        install_once("fork", lambda: os.register_at_fork(after_in_child=_run_child_hooks))

    def install() -> None:
        _child_hooks[key] = hook

    return install_once(f"fork:{key}", install)


def installed() -> frozenset[str]:
    """What this process installed (``"fork:server"``, ``"manager.exit"``, ...)."""
    with _lock:
        return frozenset(_installed)


def _run_child_hooks() -> None:
    global _lock
    # A thread of the parent may have held the lock when it forked: the
    # child has only this thread, so nobody would ever release it.
    _lock = threading.RLock()
    for key in CHILD_ORDER:
        hook = _child_hooks.get(key)
        if hook is None:
            continue
        # As os.register_at_fork does with hooks that raise: say so, go on.
        try:
            hook()
        except Exception:
            logger.exception("stream_hub's %s hook failed in a forked child", key)
