"""The I/O-free core of a hub: the intake (numbering and batching of events),
the ring (recent history), the run curves, and the hub that ties them to
subscriber cursors. Nothing in this package touches sockets, threads' event
loops or the clock beyond timestamps; it is tested without any."""
