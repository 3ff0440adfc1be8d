"""The durable store (``StreamConfig(store="runs.db")``): an embedded SQLite
file that keeps a hub's events and run curves across processes.

- :mod:`.sqlite` — the file: schema, upgrades, connections, journal mode
- :mod:`.lock` — one writer per file
- :mod:`.chunks` — how events are kept (compressed columns)
- :mod:`.writer` — the thread that makes committed batches durable;
  :mod:`.retention` — which chunks go
- :mod:`.reader` — reads for the hub's loop, and what a continuing hub loads
- :mod:`.hubstore` — the store of a hosting hub, and its ``Archive``
- :mod:`.export` — reading a store file without a hub
"""

from .hubstore import HubStore, StoreArchive

__all__ = ["HubStore", "StoreArchive"]
