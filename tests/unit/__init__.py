"""I/O-free and in-process pieces: the hub, the notifier, port binding, what we rely on in dependencies."""
