"""What runs a hub in a process: the dedicated event-loop thread, the
notifier that commits the hub's batches on it and wakes the writers, and what
a forked child does with the server's sockets."""
